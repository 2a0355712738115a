"""A forked worker: become the client's command (its stdio, cwd, environment, umask) and run it.

The worker is a fork of the warm daemon, so `stackd.cli.main` runs with nothing left to import.
It starts a session of its own (signals for the daemon's process group do not reach it), takes
the client's descriptors as 0, 1 and 2, and exits with the command's code through `os._exit`,
so nothing of the daemon's stack (its `finally` blocks) runs in the worker.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import sys
from collections.abc import MutableMapping
from typing import NoReturn


def _text_stream(fd: int, mode: str, errors: str, line_buffering: bool) -> io.TextIOWrapper:
    buffered = open(fd, mode + "b", closefd=False)  # noqa: SIM115
    return io.TextIOWrapper(buffered, encoding="utf-8", errors=errors, line_buffering=line_buffering)


SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sanitize_environment(env: MutableMapping[str, str]) -> None:
    """For a client that is not root: the worker runs as root, so what steers the programs it
    starts (iptables, nft, the shim's interpreter) is not the client's to set: PATH becomes the
    system's, LD_* and PYTHON* go. Everything else (${VAR}s of stack files, STACKD_*) stays."""
    for key in [k for k in env if k.startswith(("LD_", "PYTHON"))]:
        del env[key]
    env["PATH"] = SAFE_PATH


def adopt_client(request: dict[str, object], fds: list[int], *, trusted: bool = True) -> list[str]:
    """Take over the client's stdio, working directory, environment and umask; return argv.
    A client that is not root gets a sanitized environment (see sanitize_environment)."""
    stdin, stdout, stderr, cwd = fds
    os.setsid()
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
    os.fchdir(cwd)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    if not trusted:
        sanitize_environment(os.environ)
    umask = request.get("umask")
    os.umask(umask if isinstance(umask, int) else 0o022)
    sys.stdin = _text_stream(0, "r", "surrogateescape", False)
    sys.stdout = _text_stream(1, "w", "surrogateescape", os.isatty(1))
    sys.stderr = _text_stream(2, "w", "backslashreplace", True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr  # type: ignore[misc]
    argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
    sys.argv = ["stackd", *argv]
    return argv


def run(request: dict[str, object], fds: list[int], *, trusted: bool = True) -> NoReturn:
    """Run the client's command line and exit with its code."""
    code: int = 70
    try:
        argv = adopt_client(request, fds, trusted=trusted)
        from stackd.cli import main

        code = main(argv)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # a bug: as the embedded CLI would, but never in the daemon's stack
        import traceback

        traceback.print_exc()
        code = 70
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    os._exit(code & 0xFF if code >= 0 else 1)
