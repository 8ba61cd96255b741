"""The warm interpreter behind ``warm.start_module`` (see there).

It imports the modules named on its command line once, then reads requests from standard input, one JSON line
each (module, args, cwd, env, stdout, stderr, new_session), and forks a child per request that becomes
``python -m module args`` in ``cwd`` with exactly ``env``, its output in the given files (``null``: /dev/null;
stderr ``"stdout"``: with stdout). It answers ``started <pid>`` per request, in order, and ``exit <pid> <status>``
(``subprocess``'s returncode: negative for a signal) when a child ends. Children run side by side.

A child runs the module the way ``python -m`` does (``runpy._run_module_as_main``: ``__main__``, ``sys.argv[0]``
the module's file, ``sys.path[0]`` the working directory) and ends through the interpreter's normal shutdown
(threads joined, ``atexit``, streams flushed), so its exit status is the one a fresh process would have.
"""

import importlib
import json
import os
import select
import sys

REQUESTS = os.dup(0)
REPLIES = os.dup(1)
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
os.dup2(2, 1)  # nothing the imports print can reach the protocol

for name in sys.argv[1:]:
    importlib.import_module(name)


def reply(text: str) -> None:
    os.write(REPLIES, (text + "\n").encode())


def become(request: dict) -> None:
    """In the forked child: turn this process into ``python -m request["module"] *request["args"]``."""
    os.close(REQUESTS)
    os.close(REPLIES)
    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    # LC_CTYPE: what Python's start adds to the environment when the locale is C (PEP 538); the locale variables
    # are start variables (warm.py), so this server started as the command would have
    coerced = {k: v for k, v in os.environ.items() if k == "LC_CTYPE" and k not in request["env"]}
    os.environ.clear()
    os.environ.update(request["env"], **coerced)
    stdout, stderr = request["stdout"] or os.devnull, request["stderr"]
    os.dup2(os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
    if stderr == "stdout":
        os.dup2(1, 2)
    else:
        os.dup2(os.open(stderr or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    if os.environ.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)
    module = request["module"]
    for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
        del sys.modules[name]  # imported warm: run as __main__ afresh (no "found in sys.modules" warning)
    parent, _, child = module.rpartition(".")
    if parent in sys.modules and hasattr(sys.modules[parent], child):
        delattr(sys.modules[parent], child)
    sys.path[0] = os.getcwd()  # as python -m
    sys.argv = ["-m", *request["args"]]
    import runpy

    run = runpy._run_module_as_main
    main = sys.modules["__main__"].__dict__
    builtins = main["__builtins__"]
    main.clear()  # this server's names are not the module's
    main["__builtins__"] = builtins
    run(module, True)


def serve() -> None:
    pending, children = b"", 0
    while True:
        readable = select.select([REQUESTS], [], [], 0.02 if children else None)[0]
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children -= 1
            reply(f"exit {pid} {os.waitstatus_to_exitcode(status)}")
        if not readable:
            continue
        data = os.read(REQUESTS, 1 << 16)
        if not data:
            return  # the tests are done
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            pid = os.fork()
            if pid == 0:
                become(json.loads(line))
                raise SystemExit(0)  # the module returned: exit 0 through the normal shutdown, as python -m
            children += 1
            reply(f"started {pid}")


serve()
