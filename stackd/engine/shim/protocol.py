"""Sans-IO framing and encoding of the shim's control socket (no I/O here).

A frame is an 8-byte header ``>BBHI`` (kind, stream, channel, payload length) and a payload.

- ``MSG``: a JSON object. Requests carry ``id`` and ``op``; replies carry the same ``id`` and
  ``ok`` (true with ``result``, false with ``error``); events carry ``event`` and no ``id``.
- ``DATA``: raw bytes of ``stream`` (0 stdin, 1 stdout, 2 stderr) on ``channel`` (an attach or
  exec session; channel 0 is the container itself).
- ``EOF``: ``stream`` on ``channel`` is closed (stdin closed by the client, output ended).

The JSON codec uses CPython's ``_json`` accelerator directly: ``import json`` would pull in ``re``
and cost the shim about a megabyte of RSS. Strings that came from bytes with ``surrogateescape``
round-trip as ``\\udcXX`` escapes, so binary output survives losslessly.
"""

from __future__ import annotations

import _struct
from _json import encode_basestring_ascii as _encode_basestring_ascii
from _json import make_scanner as _make_scanner

encode_str = _encode_basestring_ascii  # JSON string literal of a str, non-ASCII escaped

MSG = 1
DATA = 2
EOF = 3
KINDS = (MSG, DATA, EOF)

STDIN = 0
STDOUT = 1
STDERR = 2

HEADER = _struct.Struct(">BBHI")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 16 * 1024 * 1024
MAX_DATA = 64 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame or message."""


# --- JSON (no `re`, no `json` import) -------------------------------------------------------


def _dump(obj: object, out: list[str]) -> None:
    if isinstance(obj, str):
        out.append(encode_str(obj))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError(f"cannot encode {obj!r} as JSON")
        out.append(float.__repr__(obj))
    elif isinstance(obj, dict):
        out.append("{")
        first = True
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"JSON object keys must be str, not {type(k).__name__}")
            if not first:
                out.append(",")
            first = False
            out.append(encode_str(k))
            out.append(":")
            _dump(v, out)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(",")
            _dump(v, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(obj: object) -> str:
    """Encode ``obj`` (dict, list, str, int, float, bool, None) as compact ASCII JSON."""
    out: list[str] = []
    _dump(obj, out)
    return "".join(out)


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.lower())


_scan = _make_scanner(_Ctx())  # type: ignore[arg-type]


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in " \t\r\n":
        i += 1
    return i


def loads(data: str | bytes) -> object:
    """Decode one JSON document; raise ``ValueError`` on malformed input or trailing data."""
    s = data.decode("utf-8", "surrogatepass") if isinstance(data, bytes) else data
    i = _skip_ws(s, 0)
    try:
        obj, end = _scan(s, i)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at offset {exc.value}") from None
    finally:
        _Ctx.memo.clear()
    if _skip_ws(s, end) != len(s):
        raise ValueError(f"trailing data after JSON at offset {end}")
    return obj


# --- frames ---------------------------------------------------------------------------------


def encode_frame(kind: int, payload: bytes, *, channel: int = 0, stream: int = 0) -> bytes:
    """One frame: header and payload."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(kind, stream, channel, len(payload)) + payload


def encode_msg(msg: dict[str, object]) -> bytes:
    """A MSG frame carrying ``msg`` as JSON."""
    return encode_frame(MSG, dumps(msg).encode("ascii"))


def request(req_id: int, op: str, **args: object) -> bytes:
    """A request frame: ``{"id": req_id, "op": op, ...args}``."""
    return encode_msg({"id": req_id, "op": op, **args})


def reply(req_id: int, result: object = None) -> bytes:
    """A successful reply to request ``req_id``."""
    return encode_msg({"id": req_id, "ok": True, "result": result})


def error(req_id: int, message: str) -> bytes:
    """A failed reply to request ``req_id``."""
    return encode_msg({"id": req_id, "ok": False, "error": message})


def event(name: str, **fields: object) -> bytes:
    """An unsolicited event (exec exit, attach end)."""
    return encode_msg({"event": name, **fields})


def data(channel: int, stream: int, payload: bytes) -> bytes:
    """DATA frames for ``payload`` (split into chunks of at most MAX_DATA bytes)."""
    if len(payload) <= MAX_DATA:
        return encode_frame(DATA, payload, channel=channel, stream=stream)
    return b"".join(
        encode_frame(DATA, payload[i : i + MAX_DATA], channel=channel, stream=stream)
        for i in range(0, len(payload), MAX_DATA)
    )


def eof(channel: int, stream: int) -> bytes:
    """An EOF frame: ``stream`` of ``channel`` is closed."""
    return encode_frame(EOF, b"", channel=channel, stream=stream)


class Frame:
    """A decoded frame; ``msg`` is the decoded JSON object for MSG frames."""

    __slots__ = ("channel", "kind", "msg", "payload", "stream")

    def __init__(self, kind: int, stream: int, channel: int, payload: bytes) -> None:
        self.kind = kind
        self.stream = stream
        self.channel = channel
        self.payload = payload
        self.msg: dict[str, object] | None = None

    def __repr__(self) -> str:
        return f"Frame(kind={self.kind}, stream={self.stream}, channel={self.channel}, payload={self.payload[:40]!r})"


class Decoder:
    """Incremental frame decoder: ``feed(bytes)`` returns the complete frames received so far."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buf += chunk
        frames: list[Frame] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER_SIZE:
            kind, stream, channel, length = HEADER.unpack_from(buf, pos)
            if kind not in KINDS:
                raise ProtocolError(f"unknown frame kind {kind}")
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"frame payload of {length} bytes exceeds {MAX_PAYLOAD}")
            end = pos + HEADER_SIZE + length
            if len(buf) < end:
                break
            frame = Frame(kind, stream, channel, bytes(buf[pos + HEADER_SIZE : end]))
            if kind == MSG:
                try:
                    msg = loads(frame.payload)
                except ValueError as exc:
                    raise ProtocolError(f"bad message: {exc}") from None
                if not isinstance(msg, dict):
                    raise ProtocolError("a message must be a JSON object")
                frame.msg = msg
            frames.append(frame)
            pos = end
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes buffered for an incomplete frame."""
        return len(self._buf)
