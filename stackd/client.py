"""The `stackd` executable: hand the command to a running daemon, else run it in this process.

With `stackd daemon` running on this run root, the command (argv, environment, umask) goes over
its socket together with this process's stdin, stdout, stderr and working directory, and a warm
worker forked by the daemon runs it on them: same output, same exit code, same terminal, but no
interpreter start-up or import costs. Signals this process receives are passed on to the worker.
Without a daemon (or with STACKD_NO_DAEMON=1, or for `stackd daemon` itself) the command runs
here, as it always did: the embedded mode. This module imports only C modules of the standard
library (see stackd.daemon.wire): the client costs a bare interpreter start and nothing more.
"""

from __future__ import annotations

import _signal
import _socket
import os
import sys

from stackd.daemon import wire
from stackd.roots import DEFAULT_RUN_ROOT, DEFAULT_STATE_ROOT

FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGWINCH,
             _signal.SIGUSR1, _signal.SIGUSR2)
EMBEDDED_VERBS = ("daemon",)


def main() -> int:
    """The console entry point."""
    argv = sys.argv[1:]
    env = os.environ
    if env.get("STACKD_NO_DAEMON") or (argv and argv[0] in EMBEDDED_VERBS):
        return embedded(argv)
    sock = connect(wire.socket_path(env.get("STACKD_RUN_ROOT") or DEFAULT_RUN_ROOT))
    if sock is None:
        return embedded(argv)
    try:
        outcome = delegate(sock, argv)
    finally:
        sock.close()
    if outcome is None:
        return embedded(argv)
    return outcome


def embedded(argv: list[str]) -> int:
    """Run the command in this process."""
    from stackd.cli import main as cli_main

    return cli_main(argv)


def connect(path: str) -> _socket.socket | None:
    """A connection to the daemon listening on `path`, or None if there is none."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _stdio() -> tuple[list[int], list[int]]:
    """Descriptors to hand over (0, 1, 2, cwd) and those opened here to close afterwards."""
    fds, opened = [], []
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:  # closed: the worker gets /dev/null, as a child of a shell would
            null = os.open(os.devnull, mode | os.O_CLOEXEC)
            fds.append(null)
            opened.append(null)
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fds.append(cwd)
    opened.append(cwd)
    return fds, opened


def delegate(sock: _socket.socket, argv: list[str]) -> int | None:
    """Run `argv` through the daemon; its exit code, or None if the daemon says to run it here."""
    try:
        fds, opened = _stdio()
    except OSError:  # no working directory to hand over (removed): let the embedded CLI say so
        return None
    umask = os.umask(0o022)
    os.umask(umask)
    request = {"argv": argv, "env": dict(os.environ), "umask": umask,
               "state_root": os.environ.get("STACKD_STATE_ROOT") or DEFAULT_STATE_ROOT}
    try:
        wire.send(sock, request, fds)
    except OSError:
        pass  # a refusal may be waiting to be read
    finally:
        for fd in opened:
            os.close(fd)
    try:
        answer, _ = wire.recv(sock)
    except (OSError, ValueError):
        return None  # the daemon went away before it started anything: run it here
    if answer is None or "fallback" in answer:
        return None
    if "error" in answer:
        sys.stderr.write(f"error: stackd daemon: {answer['error']}\n")
        return 1
    return _follow(sock)


def _follow(sock: _socket.socket) -> int:
    """Pass signals on until the command ends; its exit code (or its death by a signal)."""

    def forward(signum: int, _frame: object) -> None:
        try:
            wire.send(sock, {"signal": signum})
        except OSError:
            pass

    for s in FORWARDED:
        if _signal.getsignal(s) != _signal.SIG_IGN:  # what this process ignores, the command ignores
            _signal.signal(s, forward)
    while True:
        try:
            message, _ = wire.recv(sock)
        except ValueError:
            continue
        except OSError:
            message = None
        if message is None:
            sys.stderr.write("error: the stackd daemon went away while running the command\n")
            return 1
        code, signum = message.get("exit"), message.get("signal")
        if isinstance(code, int):
            return code
        if isinstance(signum, int):
            _signal.signal(signum, _signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return 128 + signum
