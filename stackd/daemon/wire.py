"""The CLI socket's messages: one JSON object per SOCK_SEQPACKET packet, file descriptors beside it.

The thin client imports this, so it uses only C modules (`_socket`, `_json`): `socket`, `json`
and `signal` would pull in `enum` and `re` and add 12 ms to every command. A request carries the command
(argv, environment, umask) and, as SCM_RIGHTS, the client's stdin, stdout, stderr and working
directory; the daemon answers `{"pid": N}` (running), `{"fallback": why}` (run it yourself) or
`{"error": message}`, then `{"exit": code}` or `{"signal": n}` when the command ends. The client
may send `{"signal": n}` at any time to have it delivered to the command.
"""

from __future__ import annotations

import _json
import _socket
import array
import os

SOCKET_NAME = "stackd.sock"
PID_NAME = "stackd.pid"
MAX_PACKET = 1 << 20  # a request with a large environment still fits
MAX_FDS = 8


def socket_path(run_root: str) -> str:
    """Where the daemon of `run_root` listens."""
    return os.path.join(run_root, SOCKET_NAME)


def encode(value: object) -> str:
    """JSON text of `value` (dicts with string keys, lists, tuples, str, int, bool, None)."""
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, dict):
        return "{" + ",".join(f"{encode(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")


class _Context:
    """What `_json.make_scanner` reads from a json.JSONDecoder, with the standard settings."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(lambda name: {"NaN": float("nan"), "Infinity": float("inf"),
                                                "-Infinity": float("-inf")}[name])
    memo: dict[str, str] = {}


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]


def decode(text: str) -> object:
    """The value of JSON `text` (ValueError if it is not exactly one JSON value)."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if text[end:].strip():
        raise ValueError("trailing data")
    return value


def send(sock: _socket.socket, message: dict[str, object], fds: list[int] | tuple[int, ...] = ()) -> None:
    """Send one message (and `fds`) as a single packet."""
    data = encode(message).encode()
    if fds:
        sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def recv(sock: _socket.socket) -> tuple[dict[str, object] | None, list[int]]:
    """One message and the descriptors that came with it; (None, []) at end of stream.

    Raises ValueError for a packet that is not a JSON object (its descriptors are closed)."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_PACKET, _socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    try:
        message = decode(data.decode())
        if not isinstance(message, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError, RecursionError):
        for fd in fds:
            os.close(fd)
        raise ValueError("malformed message") from None
    return message, list(fds)
