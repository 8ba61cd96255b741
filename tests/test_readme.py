"""The README's code snippets run (on tiny data)."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_core_snippet_runs_without_lightning():
    core = python_blocks()[0]
    assert "PatchNCELoss" in core and len(core.strip().splitlines()) <= 10
    exec(compile(core.replace("256, 256", "32, 32").replace("num_patches=256", "num_patches=16"), "README", "exec"), {})


def test_lightning_snippet_runs(tmp_path):
    from cutlight.data import ensure_builtin_dataset

    root = ensure_builtin_dataset(size=32, num_train=4, num_test=2, cache_dir=str(tmp_path / "cache"))
    snippet = python_blocks()[1]
    assert "trainer.fit(model, datamodule=data)" in snippet
    small = (
        snippet.replace('"datasets/horse2zebra"', repr(str(root)))
        .replace("load_size=286, crop_size=256", "load_size=32, crop_size=32")
        .replace("pl.Trainer(", f"pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, "
                                f"default_root_dir={str(tmp_path)!r}, logger=False, enable_checkpointing=False, ")
        .replace('objective={', 'generator={"ngf": 8, "n_blocks": 1}, objective={"num_patches": 16, ')
    )
    scope = {}
    exec(compile(small, "README", "exec"), scope)
    assert scope["trainer"].global_step == 4  # 2 iterations x (D step + G step)
