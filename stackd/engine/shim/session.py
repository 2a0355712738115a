"""The shim's I/O objects: client connections, stdio sessions (container or exec), timers."""

from __future__ import annotations

import errno
import os
import select
import time

from stackd.engine.shim import protocol as P

TYPE_CHECKING = False  # typing would cost the shim RSS; mypy honours this name
if TYPE_CHECKING:
    from collections.abc import Callable

    from stackd.engine.shim.server import Shim

MAX_CONN_BUFFER = 64 * 1024 * 1024
STREAM_NAMES = {P.STDOUT: "stdout", P.STDERR: "stderr"}


class Timers:
    """One-shot timers on the monotonic clock; entries are ``[when, fn, alive]``."""

    def __init__(self) -> None:
        self._entries: list[list[object]] = []

    def add(self, delay: float, fn: Callable[[], None]) -> list[object]:
        entry: list[object] = [time.monotonic() + delay, fn, True]
        self._entries.append(entry)
        return entry

    def cancel(self, entry: list[object]) -> None:
        entry[2] = False

    def timeout(self) -> float:
        """Seconds until the next timer (-1: none), as epoll wants it."""
        self._entries = [e for e in self._entries if e[2]]
        if not self._entries:
            return -1
        return max(0.0, min(float(e[0]) for e in self._entries) - time.monotonic())  # type: ignore[arg-type]

    def run(self) -> None:
        now = time.monotonic()
        due = [e for e in self._entries if e[2] and float(e[0]) <= now]  # type: ignore[arg-type]
        for e in due:
            e[2] = False
            e[1]()  # type: ignore[operator]


class Conn:
    """A control-socket connection: frame decoder and a non-blocking output buffer."""

    def __init__(self, fd: int, ep: select.epoll) -> None:
        self.fd = fd
        self.ep = ep
        self.decoder = P.Decoder()
        self.out = bytearray()
        self.attached = False
        self.streams: set[int] = set()
        self.closed = False

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.out:
            self.out += data
        else:
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                n = 0
            except OSError:
                return  # peer gone; the read side will notice
            if n < len(data):
                self.out += data[n:]
                self.ep.modify(self.fd, select.EPOLLIN | select.EPOLLOUT)
        if len(self.out) > MAX_CONN_BUFFER:  # a consumer that does not read: stop feeding it
            self.out.clear()
            self.attached = False

    def flush(self, shim: Shim) -> None:
        while self.out:
            try:
                n = os.write(self.fd, self.out)
            except BlockingIOError:
                return
            except OSError:
                self.out.clear()
                break
            del self.out[:n]
        if not self.closed:
            self.ep.modify(self.fd, select.EPOLLIN)


class Session:
    """Stdio of the container (channel 0) or of one exec (channel N > 0)."""

    def __init__(self, channel: int, *, tty: bool = False, conn: Conn | None = None) -> None:
        self.channel = channel
        self.tty = tty
        self.conn = conn
        self.out_fds: dict[int, int] = {}
        self.stdin_fd = -1
        self.master = -1
        self.pid = 0
        self.stdin_buf = bytearray()
        self.close_stdin_after = False
        self.retry: list[object] | None = None

    # output

    def read_ready(self, shim: Shim, fd: int) -> None:
        stream = self.out_fds.get(fd)
        if stream is None:
            return
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO on a pty master once the slave side is gone
            if exc.errno != errno.EIO:
                raise
            chunk = b""
        if chunk:
            self.deliver(shim, stream, chunk)
        else:
            self.close_output(shim, fd)

    def deliver(self, shim: Shim, stream: int, chunk: bytes) -> None:
        if self.channel == 0:
            shim.logs.write(STREAM_NAMES[stream], chunk)
            frame = P.data(0, stream, chunk)
            for conn in shim.conns.values():
                if conn.attached and stream in conn.streams:
                    conn.send(frame)
        elif self.conn is not None:
            self.conn.send(P.data(self.channel, stream, chunk))

    def close_output(self, shim: Shim, fd: int) -> None:
        stream = self.out_fds.pop(fd, None)
        shim.unregister(fd)
        if fd == self.master:
            self.master = -1
            if self.stdin_fd == fd:
                self.stdin_fd = -1
        os.close(fd)
        if stream is not None and self.channel == 0:
            shim.logs.flush(STREAM_NAMES[stream])
        elif stream is not None and self.conn is not None:
            self.conn.send(P.eof(self.channel, stream))

    def drain(self, shim: Shim) -> None:
        """Read whatever output is buffered (after the process exited)."""
        for fd in list(self.out_fds):
            while fd in self.out_fds:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    chunk = b""
                if chunk:
                    self.deliver(shim, self.out_fds[fd], chunk)
                else:
                    self.close_output(shim, fd)

    def close_all(self, shim: Shim) -> None:
        for fd in list(self.out_fds):
            self.close_output(shim, fd)
        if self.retry is not None:
            shim.timers.cancel(self.retry)
            self.retry = None
        if self.stdin_fd >= 0:
            if self.stdin_fd != self.master:
                os.close(self.stdin_fd)
            self.stdin_fd = -1
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    # input

    def write_stdin(self, shim: Shim, data: bytes) -> None:
        if self.stdin_fd < 0:
            return
        self.stdin_buf += data
        self._push(shim)

    def _push(self, shim: Shim) -> None:
        self.retry = None
        while self.stdin_buf and self.stdin_fd >= 0:
            try:
                n = os.write(self.stdin_fd, self.stdin_buf)
            except BlockingIOError:
                self.retry = shim.timers.add(0.01, lambda: self._push(shim))
                return
            except OSError:  # reader gone (EPIPE)
                self.stdin_buf.clear()
                break
            del self.stdin_buf[:n]
        if self.close_stdin_after:
            self.close_stdin(shim)

    def close_stdin(self, shim: Shim) -> None:
        if self.stdin_buf and self.stdin_fd >= 0:
            self.close_stdin_after = True
            return
        if self.stdin_fd >= 0 and self.stdin_fd == self.master:
            try:
                os.write(self.master, b"\x04")  # EOF for a terminal's line discipline
            except OSError:
                pass
            return
        if self.stdin_fd >= 0:
            os.close(self.stdin_fd)
            self.stdin_fd = -1

    # exec

    def process_exited(self, shim: Shim, code: int) -> None:
        self.drain(shim)
        self.close_all(shim)
        shim.sessions.pop(self.channel, None)
        if self.conn is not None:
            self.conn.send(P.event("exit", channel=self.channel, exit_code=code))
