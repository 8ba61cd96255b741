"""Execute the notebooks and save them with their outputs (used by ``make notebooks`` and tests/test_notebooks.py).

    python notebooks/run.py                       # every notebooks/NN_*.ipynb, full mode, saved in place
    python notebooks/run.py --quick               # tiny settings (CUTLIGHT_NB_QUICK=1), copies in notebooks/runs/quick
    python notebooks/run.py --quick --output DIR  # the executed copies in DIR
    python notebooks/run.py notebooks/01_quickstart.ipynb --timeout 600

Each notebook runs in its own folder (relative paths in it resolve there) on a kernel started with this
interpreter (``sys.executable``: the virtualenv running this script, whatever ``python3`` kernel spec Jupyter has
installed elsewhere). Runs the notebooks make go to ``--workdir`` (``CUTLIGHT_NB_WORKDIR``; default
``notebooks/runs``), so later notebooks find what earlier ones trained. Paths in ``CUTLIGHT_NB_WORKDIR``,
``CUTLIGHT_ABLATE_DIR`` (02: report this sweep) and ``CUTLIGHT_CKPT`` (03: analyse this checkpoint) are relative to
where this script is started. A failing or timed-out cell stops that notebook with an error naming the notebook,
the cell and the exception; the notebook is then not saved.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK_ENV, WORKDIR_ENV = "CUTLIGHT_NB_QUICK", "CUTLIGHT_NB_WORKDIR"
PATH_ENVS = (WORKDIR_ENV, "CUTLIGHT_ABLATE_DIR", "CUTLIGHT_CKPT")  # relative paths: from where run.py was started


class NotebookError(RuntimeError):
    """A notebook's cell failed or timed out."""


def notebooks() -> list[Path]:
    """The notebooks of this folder, in the order they tell the story (``01_...``, ``02_...``)."""
    return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def kernel_manager_class():
    """A kernel manager class whose ``python3`` kernel is *this* interpreter: it looks up only ipykernel's
    built-in spec, which runs ``sys.executable -m ipykernel_launcher`` (kernel specs installed elsewhere, e.g. a
    system ``python3``, do not apply)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class ThisInterpreterKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self) -> KernelSpecManager:
            return KernelSpecManager(kernel_dirs=[])

    return ThisInterpreterKernelManager


def _cell_excerpt(cell, lines: int = 6) -> str:
    source = cell.source.strip().splitlines()
    shown = "\n".join(f"    {line}" for line in source[:lines])
    return shown + ("\n    ..." if len(source) > lines else "")


def execute(path: str | os.PathLike, output: str | os.PathLike | None = None, quick: bool = False,
            workdir: str | os.PathLike | None = None, timeout: int = 1800, env: dict | None = None) -> Path:
    """Execute one notebook in its folder and write it, outputs included, to ``output`` (default: in place).

    Args:
        quick: set ``CUTLIGHT_NB_QUICK=1`` for the kernel (tiny settings, seconds of CPU).
        workdir: ``CUTLIGHT_NB_WORKDIR`` for the kernel (where the notebooks put their runs).
        timeout: seconds allowed for each cell.
        env: more environment variables for the kernel.
    Raises:
        NotebookError: a cell failed or ran past ``timeout``; names the notebook and the cell.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    path = Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    kernel_env = {**os.environ, **(env or {}), QUICK_ENV: "1" if quick else "0"}
    if workdir is not None:
        kernel_env[WORKDIR_ENV] = str(workdir)
    for key in PATH_ENVS:  # the kernel runs in the notebook's folder
        if kernel_env.get(key):
            kernel_env[key] = str(Path(kernel_env[key]).resolve())
    current: dict = {}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", kernel_manager_class=kernel_manager_class(),
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_start=lambda cell, cell_index: current.update(cell=cell, index=cell_index))
    try:
        client.execute(env=kernel_env)
    except CellExecutionError as err:
        raise NotebookError(f"{path.name}: cell {current.get('index')} failed: {err.ename}: {err.evalue}\n\n{err}") from None
    except CellTimeoutError:
        raise NotebookError(f"{path.name}: cell {current.get('index')} ran past the timeout of {timeout} s:\n"
                            f"{_cell_excerpt(current['cell'])}") from None
    out = Path(output) if output else path
    if out.is_dir():
        out = out / path.name
    nbformat.write(nb, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9][0-9]_*.ipynb in order")
    parser.add_argument("--quick", action="store_true", help="tiny settings (CUTLIGHT_NB_QUICK=1)")
    parser.add_argument("--output", type=Path, default=None,
                        help="folder for the executed copies (default: in place; with --quick <workdir>/quick, so that "
                             "the committed full-mode notebooks are never replaced by quick ones)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help=f"where the notebooks' runs go ({WORKDIR_ENV}; default notebooks/runs)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    args = parser.parse_args(argv)
    if args.quick and args.output is None:
        args.output = (args.workdir or HERE / "runs") / "quick"
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
    for nb in args.notebooks or notebooks():
        start = time.perf_counter()
        print(f"executing {nb} ({'quick' if args.quick else 'full'} mode) ...", flush=True)
        try:
            out = execute(nb, args.output, args.quick, args.workdir, args.timeout)
        except NotebookError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"  wrote {out} ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
