"""The notebooks (notebooks/NN_*.ipynb) run end to end in quick mode through ``notebooks/run.py``, the runner
``make notebooks`` uses: on a kernel of this interpreter, in their own folder, each showing pictures. The executed
copies and the runs go to tmp_path; the committed notebooks are left as they are (and hold their outputs)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbclient", reason="pip install 'cutlight[notebooks]'")
pytest.importorskip("nbformat", reason="pip install 'cutlight[notebooks]'")
pytest.importorskip("ipykernel", reason="pip install 'cutlight[notebooks]'")
import nbformat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_runner():
    spec = importlib.util.spec_from_file_location("notebooks_run", ROOT / "notebooks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = load_runner()
NOTEBOOKS = run.notebooks()


def kernel_env(tmp_path: Path) -> dict:
    """The kernel imports the cutlight under test (also from a checkout that is not the installed one) and
    tests/; built-in data cached under tmp_path; one CPU thread; W&B off; no checkpoint or sweep given."""
    import cutlight

    path = os.pathsep.join([str(Path(cutlight.__file__).parents[1]), str(ROOT / "tests")])
    return {"PYTHONPATH": path, "CUTLIGHT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "CUTLIGHT_CKPT": "", "CUTLIGHT_ABLATE_DIR": ""}


def write_notebook(path: Path, *sources: str) -> Path:
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources]), path)
    return path


def outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if kind in o.get("data", {}) or o.get("output_type") == kind]


def mode(nb) -> str:
    """What the first code cell says: every notebook prints ``mode: quick ...`` or ``mode: full ...`` there."""
    first = next(c for c in nb.cells if c.cell_type == "code")
    text = "".join(o.get("text", "") for o in first.outputs)
    return text.split("mode: ", 1)[1].split()[0] if "mode: " in text else ""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_story_is_three_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_ablation.ipynb", "03_learned_similarity.ipynb"]
    assert sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebooks_hold_their_outputs(path):
    """``make notebooks`` was run before committing: full mode, pictures embedded, no error."""
    nb = nbformat.read(path, as_version=4)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), "not executed"
    assert outputs(nb, "image/png"), "no picture"
    assert not outputs(nb, "error")
    assert mode(nb) == "full"


def test_kernel_is_this_interpreter_in_the_notebooks_folder(tmp_path):
    nb = write_notebook(tmp_path / "where.ipynb",
                        "import os, sys\nprint(sys.executable)\nprint(os.getcwd())\n"
                        "print(os.environ['CUTLIGHT_NB_QUICK'], os.environ['CUTLIGHT_NB_WORKDIR'])")
    out = run.execute(nb, tmp_path / "out.ipynb", quick=True, workdir=tmp_path / "runs", timeout=60)
    text = "".join(o.text for o in outputs(nbformat.read(out, as_version=4), "stream"))
    assert text.splitlines() == [sys.executable, str(tmp_path), f"1 {tmp_path / 'runs'}"]


def test_failing_cell_names_notebook_and_cell_and_saves_nothing(tmp_path):
    nb = write_notebook(tmp_path / "broken.ipynb", "x = 1", "print(x)", "{}['missing key']", "print('never')")
    before = digest(nb)
    with pytest.raises(run.NotebookError, match=r"^broken\.ipynb: cell 2 failed: KeyError: 'missing key'"):
        run.execute(nb, timeout=60)
    assert digest(nb) == before  # the notebook is not overwritten by the failed execution
    assert run.main([str(nb), "--output", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out" / "broken.ipynb").exists()


def test_quick_mode_writes_copies_and_leaves_the_notebook(tmp_path):
    nb = write_notebook(tmp_path / "story.ipynb", "print('quick' if __import__('os').environ['CUTLIGHT_NB_QUICK'] == '1' "
                                                  "else 'full')")
    before = digest(nb)
    assert run.main([str(nb), "--quick", "--workdir", str(tmp_path / "runs")]) == 0
    assert digest(nb) == before
    copy = nbformat.read(tmp_path / "runs" / "quick" / "story.ipynb", as_version=4)
    assert copy.cells[0].outputs[0].text == "quick\n"


@pytest.mark.slow
def test_notebooks_execute_in_quick_mode(tmp_path):
    committed = {p: digest(p) for p in NOTEBOOKS}
    for path in NOTEBOOKS:  # in order: 03 analyses the checkpoint 01 trained
        out = run.execute(path, tmp_path / path.name, quick=True, workdir=tmp_path / "runs", timeout=600,
                          env=kernel_env(tmp_path))
        nb = nbformat.read(out, as_version=4)
        assert outputs(nb, "image/png"), f"{path.name} shows no picture"
        assert mode(nb) == "quick"
    assert {p: digest(p) for p in NOTEBOOKS} == committed
    runs = sorted(p.name.split("-")[0] for p in (tmp_path / "runs").iterdir())
    assert runs == ["ablation", "analysis", "quickstart"]  # 03 used 01's run, nothing trained twice


@pytest.mark.slow
def test_learned_similarity_alone_trains_the_run_it_analyses(tmp_path):
    """Opened without a quickstart run (and without CUTLIGHT_CKPT), 03 trains one itself."""
    path = ROOT / "notebooks" / "03_learned_similarity.ipynb"
    out = run.execute(path, tmp_path / path.name, quick=True, workdir=tmp_path / "runs", timeout=600,
                      env=kernel_env(tmp_path))
    assert outputs(nbformat.read(out, as_version=4), "image/png")
    assert list((tmp_path / "runs").glob("quickstart-*/checkpoints/last.ckpt"))
