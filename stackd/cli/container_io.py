"""Terminal plumbing for `container run/attach/exec`: raw mode, window size, stdin pumping, output.

Output of a started container is read from its json-file log (from the first byte, so nothing
written before we looked is lost); stdin goes through the shim's attach or exec stream.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Put stdin's terminal in raw mode (Ctrl-C reaches the container), restoring it after."""
    if not enabled or not os.isatty(0):
        yield
        return
    import termios
    import tty

    old = termios.tcgetattr(0)
    try:
        tty.setraw(0)
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, old)


def terminal_size() -> tuple[int, int] | None:
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            sz = os.get_terminal_size(fd)
            return sz.lines, sz.columns
    return None


def on_winch(resize: Callable[[int, int], None]) -> None:
    """Forward window size changes (SIGWINCH) to `resize(rows, cols)`."""
    def handler(_sig: int, _frame: Any) -> None:
        size = terminal_size()
        if size:
            with contextlib.suppress(Exception):
                resize(*size)

    signal.signal(signal.SIGWINCH, handler)


def pump_stdin(stream: Any, *, close: bool = True) -> threading.Thread:
    """Copy our stdin into `stream` (a shim Stream) in a daemon thread; EOF closes its stdin."""
    def run() -> None:
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                stream.write(data)
            if close:
                stream.close_stdin()
        except OSError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def write_out(stream: str, data: bytes) -> None:
    out = sys.stderr.buffer if stream == "stderr" else sys.stdout.buffer
    out.write(data)
    out.flush()


def forward_signals(kill: Callable[[int], None]) -> None:
    """Docker's sig-proxy: SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/2 go to the container."""
    def handler(sig: int, _frame: Any) -> None:
        with contextlib.suppress(Exception):
            kill(sig)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, handler)


def copy_stream(stream: Any) -> int | None:
    """Write a shim Stream's output to ours until its exit event; returns the exit code."""
    from stackd.engine.shim import protocol as P

    for which, data in stream.events(None):
        if data:
            write_out("stderr" if which == P.STDERR else "stdout", data)
    return stream.exit_code  # type: ignore[no-any-return]
