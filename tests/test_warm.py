"""The tests' warm interpreter (``tests/warm.py``) runs a command as a fresh ``python -m`` would: the same
``__main__``, ``sys.argv``, ``sys.path[0]``, working directory and environment, the same output, exit status,
shutdown (non-daemon threads joined, ``atexit``) and response to signals. Each case runs a probe module both ways
and compares what the two processes report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import warm

PROBE = '''
import atexit, json, os, sys, threading, time

print(json.dumps({"name": __name__, "argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(),
                  "env": dict(os.environ), "names": sorted(k for k in globals() if not k.startswith("__")),
                  "threads": threading.active_count()}), flush=True)
mode = sys.argv[1]
if mode == "exit":
    sys.exit(3)
if mode == "raise":
    raise ValueError("from the probe")
if mode == "shutdown":  # a non-daemon thread outlives the module; atexit runs after it
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread done", flush=True))).start()
    atexit.register(lambda: print("atexit ran", flush=True))
if mode == "wait":
    signal_file = sys.argv[2]
    import signal
    signal.signal(signal.SIGTERM, lambda *a: (print("SIGTERM", flush=True), sys.exit(143)))
    open(signal_file, "w").close()
    time.sleep(60)
print("stderr line", file=sys.stderr)
'''


def _env(tmp_path: Path) -> dict:
    # the start environment of the suite's commands: the warm interpreter they already use
    return warm.start_env({"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PROBE_VALUE": "x y"})


@pytest.fixture
def probe(tmp_path) -> Path:
    (tmp_path / "cutlight_probe.py").write_text(PROBE)
    return tmp_path


def _both(probe: Path, *args: str):
    env = _env(probe)
    fresh = subprocess.run([sys.executable, "-m", "cutlight_probe", *args], cwd=probe, env=env,
                           capture_output=True, text=True, timeout=60)
    forked = warm.run_module("cutlight_probe", list(args), probe, env, timeout=60)
    return fresh, forked


@pytest.mark.parametrize("mode,code", [("ok", 0), ("exit", 3), ("raise", 1), ("shutdown", 0)])
def test_a_command_runs_as_under_python_m(probe, mode, code):
    fresh, forked = _both(probe, mode)
    assert (fresh.returncode, forked.returncode) == (code, code), forked.stderr
    seen_fresh, seen_forked = (json.loads(p.stdout.splitlines()[0]) for p in (fresh, forked))
    assert seen_forked == seen_fresh  # argv, path, environment, the module's names (none of the server's)
    assert seen_forked["name"] == "__main__" and seen_forked["argv"] == [str(probe / "cutlight_probe.py"), mode]
    assert seen_forked["path0"] == str(probe) and seen_forked["cwd"] == str(probe)
    assert seen_forked["env"]["PROBE_VALUE"] == "x y" and "PYTEST_CURRENT_TEST" not in seen_forked["env"]
    assert fresh.stdout.splitlines()[1:] == forked.stdout.splitlines()[1:]
    assert fresh.stderr.splitlines()[-1:] == forked.stderr.splitlines()[-1:]  # e.g. ValueError: from the probe
    if mode == "shutdown":
        assert forked.stdout.splitlines()[1:] == ["thread done", "atexit ran"]


def test_signals_reach_the_command_as_a_fresh_process(probe):
    ready = probe / "ready"
    proc = warm.start_module("cutlight_probe", ["wait", str(ready)], probe, _env(probe), stdout=probe / "out",
                             stderr="stdout", new_session=True)
    end = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < end, (probe / "out").read_text()
        time.sleep(0.02)
    assert os.getpgid(proc.pid) == proc.pid  # its own session and process group
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 143 and "SIGTERM" in (probe / "out").read_text()

    ready.unlink()
    proc = warm.start_module("cutlight_probe", ["wait", str(ready)], probe, _env(probe))
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < end
        time.sleep(0.02)
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL


def test_a_timeout_kills_the_command(probe):
    (probe / "ready").unlink(missing_ok=True)
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run_module("cutlight_probe", ["wait", str(probe / "ready")], probe, _env(probe), timeout=3)
