"""Container logs as Docker json-file lines: writer with size rotation, and a following reader.

Each record is ``{"log": text, "stream": "stdout"|"stderr", "time": RFC3339Nano}``. A complete
line keeps its ``\\n``; a line longer than 16 KiB, or output left at EOF without a newline, is
written in pieces without ``\\n`` and flagged ``"partial": true``, so concatenating the ``log``
fields of a stream gives back exactly what the container wrote. Bytes that are not UTF-8 are
decoded with ``surrogateescape`` and written as ``\\udcXX`` escapes (lossless; read back with
``encode("utf-8", "surrogateescape")``). Rotation follows ``max-size``/``max-file``: ``P`` is the
live file, ``P.1`` … ``P.<max-file - 1>`` the older ones. A failed write (ENOSPC, EIO…) never
raises: the record is dropped, counted, and the file truncated back to its last whole record.
"""

from __future__ import annotations

import os
import time

from stackd.engine.shim.protocol import encode_str, loads

TYPE_CHECKING = False  # typing would cost the shim RSS; mypy honours this name
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MAX_LINE = 16 * 1024
STREAMS = ("stdin", "stdout", "stderr")


def format_time(t: float) -> str:
    """RFC3339Nano in UTC of epoch seconds ``t`` (trailing zeros trimmed, as Go does)."""
    return format_time_ns(int(t * 1_000_000_000))


def format_time_ns(ns: int) -> str:
    """RFC3339Nano in UTC of epoch nanoseconds ``ns``."""
    sec, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


def parse_time_ns(text: str) -> int:
    """Epoch nanoseconds of an RFC3339(Nano) time, or of plain epoch seconds (``--since``)."""
    try:
        return int(float(text) * 1_000_000_000)
    except ValueError:
        pass
    from datetime import datetime

    main, frac = text, ""
    tz = ""
    if text.endswith(("Z", "z")):
        main, tz = text[:-1], "+00:00"
    elif len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
        main, tz = text[:-6], text[-6:]
    if "." in main:
        main, frac = main.split(".", 1)
    dt = datetime.fromisoformat(main + (tz or "+00:00"))
    return int(dt.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


class LogWriter:
    """Appends records for one container, rotating by size; never raises on write failure."""

    def __init__(
        self,
        path: str,
        *,
        max_size: int = 0,
        max_file: int = 1,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self._clock_ns = clock_ns
        self._pending: dict[str, bytes] = {}
        self.dropped = 0
        self.dropped_bytes = 0
        self.last_error = ""
        self._fd = -1
        self._size = 0
        self._open()

    def _open(self) -> None:
        try:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
            )
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            self._fd = -1
            self.last_error = f"open {self.path}: {exc.strerror}"

    def write(self, stream: str, data: bytes) -> None:
        """Log ``data`` read from ``stream``; whole lines now, a trailing partial line later."""
        buf = self._pending.pop(stream, b"") + data
        if not buf:
            return
        ts = format_time_ns(self._clock_ns())
        out: list[str] = []
        start = 0
        n = len(buf)
        while start < n:
            nl = buf.find(b"\n", start, start + MAX_LINE)
            if nl >= 0:
                out.append(self._record(buf[start : nl + 1], stream, ts, False))
                start = nl + 1
            elif n - start >= MAX_LINE:
                out.append(self._record(buf[start : start + MAX_LINE], stream, ts, True))
                start += MAX_LINE
            else:
                self._pending[stream] = buf[start:]
                break
        if out and self.max_size:  # record by record, so rotation happens between them
            for rec in out:
                self._append(rec.encode("ascii"))
        elif out:
            self._append("".join(out).encode("ascii"))

    def flush(self, stream: str | None = None) -> None:
        """Write pending partial lines (of one stream or all) as partial records: at EOF."""
        ts = format_time_ns(self._clock_ns())
        for s in [stream] if stream else list(self._pending):
            data = self._pending.pop(s, b"")
            if data:
                self._append(self._record(data, s, ts, True).encode("ascii"))

    @staticmethod
    def _record(chunk: bytes, stream: str, ts: str, partial: bool) -> str:
        text = encode_str(chunk.decode("utf-8", "surrogateescape"))
        extra = ',"partial":true' if partial else ""
        return f'{{"log":{text},"stream":"{stream}","time":"{ts}"{extra}}}\n'

    def _append(self, blob: bytes) -> None:
        if self.max_size and self._size and self._size + len(blob) > self.max_size:
            self._rotate()
        if self._fd < 0:
            self._open()
            if self._fd < 0:
                self._drop(blob, self.last_error)
                return
        try:
            written = os.write(self._fd, blob)
        except OSError as exc:
            self._drop(blob, f"write {self.path}: {exc.strerror}")
            return
        if written != len(blob):  # disk full midway: keep the whole records that fit
            keep = blob.rfind(b"\n", 0, written) + 1
            try:
                os.ftruncate(self._fd, self._size + keep)
            except OSError:
                pass
            self._size += keep
            self._drop(blob[keep:], f"write {self.path}: {os.strerror(28)} (short write)")
            return
        self._size += written

    def _drop(self, blob: bytes, why: str) -> None:
        self.dropped += blob.count(b"\n")
        self.dropped_bytes += len(blob)
        self.last_error = why

    def _rotate(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            if self.max_file > 1:
                for i in range(self.max_file - 1, 1, -1):
                    src = f"{self.path}.{i - 1}"
                    if os.path.exists(src):
                        os.replace(src, f"{self.path}.{i}")
                os.replace(self.path, f"{self.path}.1")
            else:
                os.truncate(self.path, 0)
        except OSError as exc:
            self.last_error = f"rotate {self.path}: {exc.strerror}"
        self._open()

    def close(self) -> None:
        """Flush partial lines and close the file."""
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# --- reading ---------------------------------------------------------------------------------


class LogRecord:
    """One decoded record: ``time_ns``, ``stream``, ``data`` (the original bytes), ``partial``."""

    __slots__ = ("data", "partial", "stream", "time", "time_ns")

    def __init__(self, stream: str, data: bytes, time_str: str, partial: bool) -> None:
        self.stream = stream
        self.data = data
        self.time = time_str
        self.partial = partial
        self.time_ns = -1

    def timestamp_ns(self) -> int:
        if self.time_ns < 0:
            self.time_ns = parse_time_ns(self.time)
        return self.time_ns

    def __repr__(self) -> str:
        return f"LogRecord({self.stream}, {self.data[:40]!r}, {self.time})"


def decode_line(line: bytes) -> LogRecord | None:
    """Decode one JSON line; None for a torn or foreign line."""
    try:
        obj = loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("log"), str):
        return None
    data = obj["log"].encode("utf-8", "surrogateescape")
    return LogRecord(
        str(obj.get("stream", "stdout")), data, str(obj.get("time", "")), bool(obj.get("partial"))
    )


def log_files(path: str, max_file: int = 100) -> list[str]:
    """The existing files of a log, oldest first."""
    older = [f"{path}.{i}" for i in range(max_file, 0, -1) if os.path.exists(f"{path}.{i}")]
    return [*older, path] if os.path.exists(path) else older


def read_logs(
    path: str, *, tail: int | None = None, since_ns: int = 0, max_file: int = 100
) -> Iterator[LogRecord]:
    """The records currently stored, oldest first; ``tail`` keeps the last N, ``since_ns`` filters."""
    from collections import deque

    records: Iterator[LogRecord] = _iter_files(log_files(path, max_file))
    if since_ns:
        records = (r for r in records if r.timestamp_ns() >= since_ns)
    if tail is not None:
        yield from deque(records, maxlen=tail) if tail > 0 else ()
        return
    yield from records


def _iter_files(files: list[str]) -> Iterator[LogRecord]:
    for name in files:
        try:
            f = open(name, "rb")  # noqa: SIM115
        except FileNotFoundError:
            continue
        with f:
            for line in f:
                rec = decode_line(line)
                if rec is not None:
                    yield rec


def follow_logs(
    path: str,
    *,
    tail: int | None = None,
    since_ns: int = 0,
    stop: Callable[[], bool],
    poll: float = 0.1,
    max_file: int = 100,
) -> Iterator[LogRecord]:
    """Like ``read_logs``, then new records as they come, across rotations, until ``stop()``."""
    from collections import deque

    f = _open_follow(path)
    ino = os.fstat(f.fileno()).st_ino if f else -1
    pos = f.seek(0, os.SEEK_END) if f else 0
    older = [p for p in log_files(path, max_file) if p != path]
    current = []
    if f:
        f.seek(0)
        current = [line for line in f.read(pos).splitlines(keepends=True) if line.endswith(b"\n")]
        pos = sum(len(line) for line in current)
    backlog = (
        r
        for r in _chain(_iter_files(older), (decode_line(line) for line in current))
        if r is not None
    )
    if since_ns:
        backlog = (r for r in backlog if r.timestamp_ns() >= since_ns)
    yield from (deque(backlog, maxlen=tail) if tail is not None else backlog)
    partial = b""
    while True:
        if f is None:
            f = _open_follow(path)
            ino, pos, partial = (os.fstat(f.fileno()).st_ino, 0, b"") if f else (-1, 0, b"")
        if f is not None:
            if os.fstat(f.fileno()).st_size < pos:  # truncated in place (max-file 1)
                pos, partial = 0, b""
            f.seek(pos)
            chunk = f.read()
            try:
                rotated = os.stat(path).st_ino != ino
            except FileNotFoundError:
                rotated = True
            if rotated:  # the writer moved on: drain the old file, then switch
                chunk += f.read()
                f.close()
                f = None
            if chunk:
                pos += len(chunk)
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                for line in lines:
                    rec = decode_line(line)
                    if rec is not None and rec.timestamp_ns() >= since_ns:
                        yield rec
            if chunk or rotated:
                continue
        if stop():
            if f is not None:
                f.close()
            return
        time.sleep(poll)


def _open_follow(path: str):  # type: ignore[no-untyped-def]
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _chain(*its: Iterator[LogRecord | None]) -> Iterator[LogRecord | None]:
    for it in its:
        yield from it
