"""``python -m MODULE ARGS`` for the tests, without paying the imports each time (tests/README.md, "Commands").

A fresh interpreter spends about 5 s of CPU importing torch, Lightning (and with it torchmetrics, scipy,
matplotlib), Hydra and cutlight before a command does anything; the suite runs dozens of commands. So each
test process keeps one warm interpreter (``warm_server.py``) per start environment (the ``PYTHON*``, thread and
library variables, which act while Python starts and the libraries load), which has imported ``WARM_MODULES``
once; a command is a fork of it that becomes ``python -m MODULE ARGS`` in the given folder with exactly the given
environment and output files, and exits, takes signals and reports its status as a fresh process would.

What only a fresh interpreter shows still runs fresh: the import-layer tests, the processes DDP and the sweep
launchers spawn, the notebook kernels. ``CUTLIGHT_TEST_FRESH=1`` runs every command fresh (the whole suite passes
either way), and so does any system but Linux.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = Path(__file__).with_name("warm_server.py")
# the command modules and, through them, everything they import at start
WARM_MODULES = ("cutlight.cli.train", "cutlight.cli.report", "cutlight.cli.translate", "cutlight.cli.export",
                "cutlight.cli.evaluate", "cutlight.cli.analyze")
# read while the interpreter starts or a library loads: a different value needs its own warm interpreter
_START_PREFIXES = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "GOMP_", "KMP_", "ATEN_", "LD_", "MALLOC_", "LC_", "LANG")
_START_EXCEPT = ("PYTHONUNBUFFERED",)  # the child sets it on its own streams


def _fresh() -> bool:
    """Run commands fresh: asked for, or not on Linux (forking an interpreter that has loaded torch is not safe on
    macOS, whose system libraries refuse to continue in a forked child)."""
    return os.environ.get("CUTLIGHT_TEST_FRESH") == "1" or not sys.platform.startswith("linux")


def _is_start_variable(name: str) -> bool:
    return name.startswith(_START_PREFIXES) and name not in _START_EXCEPT


def _start_key(env: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in env.items() if _is_start_variable(k)))


def start_env(env: dict | None = None) -> dict:
    """This test process's start variables (locale, Python flags, threads) with the code under test first on the
    path (the ``cutlight`` this process imported, also from a checkout that is not the installed one, then tests/
    for the test helpers), and ``env``: the base of the commands' environments, so that they share one warm
    interpreter."""
    import cutlight

    path = os.pathsep.join([str(Path(cutlight.__file__).parents[1]), str(Path(__file__).parent)])
    return {**{k: v for k, v in os.environ.items() if _is_start_variable(k)}, "PYTHONPATH": path, **(env or {})}


class _Server:
    """One warm interpreter and what it has said: the children it started and their exit statuses."""

    def __init__(self, env: dict) -> None:
        home = tempfile.mkdtemp(prefix="cutlight-warm-")  # its working directory: nothing to import by accident
        self.log = Path(home, "server.log")  # what it printed itself (e.g. an import that failed)
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, str(SERVER), *WARM_MODULES], cwd=home, env=env, bufsize=0,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self.buffer, self.started, self.exits = b"", [], {}

    def pump(self, wait: float | None) -> None:
        """Read what the server has said, waiting at most ``wait`` seconds (None: until it says something)."""
        if not select.select([self.proc.stdout], [], [], wait)[0]:
            return
        data = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not data:
            raise RuntimeError(f"the warm interpreter ({SERVER.name}) ended with exit status {self.proc.wait()}; "
                               f"it printed:\n{self.log.read_text()[-4000:]}")
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            word, *values = line.decode().split()
            if word == "started":
                self.started.append(int(values[0]))
                self.exits.pop(int(values[0]), None)  # a reused pid: the status of an earlier child nobody waited for
            else:
                self.exits[int(values[0])] = int(values[1])

    def start(self, request: dict) -> int:
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        while not self.started:
            self.pump(None)
        return self.started.pop(0)


_servers: dict[tuple, _Server] = {}


def _server(env: dict) -> _Server:
    key = _start_key(env)
    if key not in _servers or _servers[key].proc.poll() is not None:
        _servers[key] = _Server(env)
    return _servers[key]


@atexit.register
def _stop() -> None:
    for server in _servers.values():
        if server.proc.poll() is None:
            server.proc.stdin.close()  # it exits at the end of its input
            try:
                server.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.proc.kill()


class WarmProcess:
    """A command started by ``start_module``: the part of ``subprocess.Popen`` the tests use."""

    def __init__(self, server: _Server, pid: int, args: list[str]) -> None:
        self._server, self.pid, self.args, self.returncode = server, pid, args, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._server.pump(0)
            self.returncode = self._server.exits.pop(self.pid, None)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._server.pump(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start_module(module: str, args: list[str], cwd: str | Path, env: dict, stdout: str | Path | None = None,
                 stderr: str | Path | None = None, new_session: bool = False) -> WarmProcess | subprocess.Popen:
    """``subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env, ...)`` with stdout written to
    the file ``stdout`` and stderr to ``stderr`` (None: discarded; ``"stdout"``: with stdout), in a new session
    if ``new_session`` (``start_new_session=True``)."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    env = {k: str(v) for k, v in env.items()}
    if _fresh():
        out = open(stdout, "w") if stdout else subprocess.DEVNULL
        err = subprocess.STDOUT if stderr == "stdout" else open(stderr, "w") if stderr else subprocess.DEVNULL
        try:
            return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=new_session)
        finally:  # the child has its own copies
            for f in (out, err):
                if hasattr(f, "close"):
                    f.close()
    server = _server(env)
    pid = server.start({"module": module, "args": cmd[3:], "cwd": str(cwd), "env": env,
                        "stdout": str(stdout) if stdout else None, "stderr": str(stderr) if stderr else None,
                        "new_session": new_session})
    return WarmProcess(server, pid, cmd)


def run_module(module: str, args: list[str], cwd: str | Path, env: dict, timeout: float | None = None
               ) -> subprocess.CompletedProcess:
    """What ``subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
    text=True, timeout=timeout)`` returns (``subprocess.TimeoutExpired`` after killing the command on a timeout)."""
    with tempfile.TemporaryDirectory(prefix="cutlight-cmd-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        proc = start_module(module, args, cwd, env, stdout=out, stderr=err)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(proc.args, timeout, out.read_text(), err.read_text()) from None
        return subprocess.CompletedProcess(proc.args, code, out.read_text(), err.read_text())
