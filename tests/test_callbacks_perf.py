"""PerfMonitor, called directly: seconds per iteration between batches, peak memory every batch."""

import time

from cutlight.lightning.callbacks import PerfMonitor
from fake_trainer import FakeModule, fake_trainer


def test_perf_monitor_logs_time_between_batches_and_peak_memory():
    monitor, module, trainer = PerfMonitor(), FakeModule(), fake_trainer()
    monitor.on_train_epoch_start(trainer, module)
    monitor.on_train_batch_end(trainer, module, None, None, 0)
    assert "perf/sec_per_iter" not in module.logged  # no previous batch: no interval yet
    assert module.logged["perf/peak_mem_mb"] > 1  # the process's peak RSS on a CPU, in MiB
    time.sleep(0.05)
    monitor.on_train_batch_end(trainer, module, None, None, 1)
    assert 0.05 <= module.logged["perf/sec_per_iter"] < 5
    module.logged.clear()
    monitor.on_train_epoch_start(trainer, module)  # validation and epoch boundaries are not iteration time
    monitor.on_train_batch_end(trainer, module, None, None, 0)
    assert "perf/sec_per_iter" not in module.logged
