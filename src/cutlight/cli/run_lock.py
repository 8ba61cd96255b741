"""One run per folder: ``<run>/run.lock``, taken before a training run writes anything in its folder.

Two training processes in one run folder (the same ``hydra.run.dir``, or ``resume=`` of a run that is still
going) would interleave their rows in ``metrics.csv`` and overwrite each other's checkpoints. The train command
therefore takes an exclusive lock file in the run folder first (``RunLockCallback``, a Hydra callback that runs
before Hydra writes ``.hydra/`` and the log file); a second process is refused with the owner named (pid, host,
since when). The file is created with ``O_EXCL`` (atomic on local and NFS v3+ filesystems) and holds
``{"pid", "host", "since", "command"}``. A lock whose process is dead (same host, no such pid) is stale: it is taken
over with a warning. A lock from another host cannot be checked: it is refused, and the message says how to remove
it. The lock is released on every exit path: at the end of the Hydra run or job, and by ``atexit`` (an exception,
``sys.exit``, Ctrl-C); a process killed outright (SIGKILL) leaves a stale lock, which the next run takes over.

Only the process of rank 0 locks: the other processes of a multi-process job (DDP children re-running the
command, SLURM tasks) share the folder with it.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"


class RunLockError(RuntimeError):
    """The run folder is in use by another live process."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class RunLock:
    """The lock of one run folder (see the module docstring); ``acquire`` / ``release``, re-entrant per process."""

    _held: dict[Path, RunLock] = {}  # folder -> lock held by this process

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).resolve()
        self.path = self.folder / LOCK_FILE
        self.depth = 0

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> RunLock:
        """Lock ``folder`` (created) for this process; :class:`RunLockError` naming the owner when a live process
        holds it. Taking an already held lock again only counts (release it as many times)."""
        folder = Path(folder).resolve()
        lock = cls._held.get(folder)
        if lock is None:
            lock = cls(folder)
            lock._take()
            cls._held[folder] = lock
            atexit.register(lock.release, force=True)
        lock.depth += 1
        return lock

    def _take(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)[:500]}
        for _ in range(3):  # a stale lock removed, then taken (another process may take it first)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = read_lock(self.path)
                if owner is None:  # vanished between the two calls, or unreadable (being written): try again
                    if self.path.exists() and not _fresh(self.path):
                        log.warning("removing unreadable lock file %s", self.path)
                        self.path.unlink(missing_ok=True)
                    continue
                if not self._stale(owner):
                    raise RunLockError(self._refusal(owner)) from None
                log.warning("taking over the stale lock of %s: its process (pid %s on %s, since %s) is gone",
                            self.folder, owner.get("pid"), owner.get("host"), owner.get("since"))
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            return
        raise RunLockError(f"could not lock the run folder {self.folder}: {self.path} keeps changing (another run "
                           "is starting there)")

    @staticmethod
    def _stale(owner: dict[str, Any]) -> bool:
        pid = owner.get("pid")
        if owner.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False  # another machine's process cannot be checked from here
        return pid != os.getpid() and not _alive(pid)

    def _refusal(self, owner: dict[str, Any]) -> str:
        here = owner.get("host") == socket.gethostname()
        how = ("" if here else f"; if no run is going there any more (the lock comes from another machine, which this "
               f"one cannot check), delete {self.path}")
        return (f"the run folder {self.folder} is in use by another training run (pid {owner.get('pid')} on "
                f"{owner.get('host')}, since {owner.get('since')}): two runs in one folder would mix their "
                f"metrics and checkpoints. Wait for it to end (or stop it: Ctrl-C saves its last.ckpt), then "
                f"resume=<that folder>; or start this run in another folder{how}")

    def release(self, force: bool = False) -> None:
        """Give the lock back (the file is removed when this process still owns it)."""
        if self.depth <= 0 and not force:
            return
        self.depth = 0 if force else self.depth - 1
        if self.depth > 0:
            return
        if RunLock._held.get(self.folder) is self:
            del RunLock._held[self.folder]
            owner = read_lock(self.path)
            if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)


def _fresh(path: Path, seconds: float = 5.0) -> bool:
    """True for a file modified within ``seconds``: a lock that another process is still writing."""
    import time

    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return False


def read_lock(path: str | os.PathLike) -> dict[str, Any] | None:
    """The owner recorded in a lock file, or None when it is missing or unreadable."""
    try:
        owner = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        if isinstance(err, OSError) and err.errno not in (errno.ENOENT, None):
            log.warning("cannot read lock file %s: %s", path, err)
        return None
    return owner if isinstance(owner, dict) else None


def _rank_zero() -> bool:
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))


class RunLockCallback(Callback):
    """Hydra callback holding ``<run>/run.lock`` around a training run (see the module docstring).

    A single run is locked at ``on_run_start``, before Hydra writes ``.hydra/`` or the log file there; each job
    of a multirun at ``on_job_start`` (its folder is known only then). List it before the callbacks that write
    into the run folder (``run_record``)."""

    def __init__(self) -> None:
        self._run: RunLock | None = None
        self._job: RunLock | None = None

    @staticmethod
    def _acquire(folder: str) -> RunLock:
        """Hydra turns a callback's exception into a warning and goes on: a refusal ends the process here (exit
        status 1, the error on stderr), before anything is written."""
        try:
            return RunLock.acquire(folder)
        except RunLockError as err:
            print(f"{RunLockError.__module__}.{RunLockError.__name__}: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _rank_zero():
            self._run = self._acquire(OmegaConf.select(config, "hydra.run.dir"))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._run is not None:
            self._run.release()
            self._run = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _rank_zero() and self._run is None:  # a multirun job
            self._job = self._acquire(config.hydra.runtime.output_dir)

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._job is not None:
            self._job.release()
            self._job = None
