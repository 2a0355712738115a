"""Entry point of the shim process: ``python -S -c BOOT spawn|serve DIR READY_FD``.

``python -m`` would load runpy and importlib's helpers (+0.5-0.9 MB RSS), hence ``-c`` with the
tiny ``BOOT`` snippet; ``python -S -m stackd.engine.shim`` works too.

``spawn`` (started by the client in a new session) forks; the child makes itself a child
subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``, kept across exec) and execs a fresh interpreter
with ``serve``, so ctypes never weighs on the long-lived shim; the parent exits at once, so the
shim is reparented away from the engine. ``serve`` writes ``shim.pid`` and runs the loop.

``adopt DIR READY_FD PID IN OUT ERR MASTER STARTED`` is the fast path for stackd-runtime
(``shim.adopt``): the engine's detached fork already is the subreaper, made the container
in-process (its init is our child) and exec'd this stage with the container's stdio fds.
"""

from __future__ import annotations

import os
import sys

PR_SET_CHILD_SUBREAPER = 36
BOOT = "import sys;from stackd.engine.shim.__main__ import main;sys.exit(main(sys.argv[1:]))"


def command(python: str, verb: str, directory: str, ready_fd: int) -> list[str]:
    """The argv that runs the shim stage ``verb`` (spawn or serve)."""
    return [python, "-S", "-c", BOOT, verb, directory, str(ready_fd)]


def _spawn(directory: str, ready_fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid:
        os._exit(0)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        os.write(
            ready_fd,
            f"error: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}\n".encode(),
        )
        os._exit(1)
    os.set_inheritable(ready_fd, True)
    os.execv(sys.executable, command(sys.executable, "serve", directory, ready_fd))


def _serve(directory: str, ready_fd: int, adopted: list[str] | None = None) -> None:
    from stackd.engine.shim.proc import write_atomic
    from stackd.engine.shim.server import Shim

    os.set_inheritable(ready_fd, False)
    write_atomic(os.path.join(directory, "shim.pid"), f"{os.getpid()}\n".encode())
    try:
        shim = Shim(directory)
    except Exception as exc:
        os.write(ready_fd, f"error: shim config: {exc}\n".encode())
        if adopted:  # the container exists already: do not leave it behind
            os.kill(int(adopted[0]), 9)
        raise
    if adopted is None:
        shim.serve(ready_fd)
        return
    pid, in_fd, out_fd, err_fd, master, started = (int(a) for a in adopted)
    shim.serve(ready_fd, (pid, in_fd, out_fd, err_fd, master, bool(started)))


def main(argv: list[str]) -> int:
    if not (
        (len(argv) == 3 and argv[0] in ("spawn", "serve"))
        or (len(argv) == 9 and argv[0] == "adopt")
    ):
        sys.stderr.write("usage: stackd.engine.shim spawn|serve|adopt DIR READY_FD [...]\n")
        return 2
    verb, directory, ready = argv[:3]
    if verb == "spawn":
        _spawn(directory, int(ready))
    else:
        _serve(directory, int(ready), argv[3:] if verb == "adopt" else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
