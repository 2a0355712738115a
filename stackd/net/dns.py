"""DNS messages, sans-IO: parse a query, build answers (A, AAAA, PTR), NXDOMAIN, SERVFAIL, TC."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

A, NS, CNAME, PTR, AAAA, OPT = 1, 2, 5, 12, 28, 41
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
UDP_MAX = 512


class DnsFormatError(ValueError):
    """The bytes are not a DNS query we can answer."""


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    name: str  # lower-case, no trailing dot
    qtype: int
    qclass: int
    question: bytes  # the question section as received (echoed back)
    udp_size: int = UDP_MAX  # from EDNS0, else 512

    @property
    def rd(self) -> bool:
        return bool(self.flags & 0x0100)


def _read_name(data: bytes, off: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    hops = 0
    while True:
        if off >= len(data):
            raise DnsFormatError("name runs past the message")
        n = data[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(data) or hops > 20:
                raise DnsFormatError("bad compression pointer")
            if end < 0:
                end = off + 2
            off = ((n & 0x3F) << 8) | data[off + 1]
            hops += 1
            continue
        off += 1
        if n == 0:
            break
        labels.append(data[off:off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels), (end if end >= 0 else off)


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("idna") if not label.isascii() else label.encode()
            if len(raw) > 63:
                raise DnsFormatError(f"label too long in {name!r}")
            out += bytes([len(raw)]) + raw
    return bytes(out) + b"\x00"


def parse_query(data: bytes) -> Query:
    """Parse a standard query with one question (EDNS0 OPT read for the UDP size)."""
    if len(data) < 12:
        raise DnsFormatError("short message")
    qid, flags, qd, _an, _ns, ar = struct.unpack("!6H", data[:12])
    if flags & 0x8000 or qd != 1:
        raise DnsFormatError("not a query with one question")
    name, off = _read_name(data, 12)
    if off + 4 > len(data):
        raise DnsFormatError("short question")
    qtype, qclass = struct.unpack("!HH", data[off:off + 4])
    question = data[12:off + 4]
    udp = UDP_MAX
    off += 4
    for _ in range(ar):
        try:
            _n, off = _read_name(data, off)
            rtype, rclass, _ttl, rdlen = struct.unpack("!HHIH", data[off:off + 10])
        except (struct.error, DnsFormatError):
            break
        if rtype == OPT:
            udp = max(UDP_MAX, min(rclass, 4096))
        off += 10 + rdlen
    return Query(qid, flags, name.lower(), qtype, qclass, question, udp)


def build_query(name: str, qtype: int = A, qid: int = 0x1234) -> bytes:
    """A recursive query (used by tests and the forwarder's health checks)."""
    return struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)


def _rdata(qtype: int, value: str) -> bytes:
    if qtype == A:
        return ipaddress.IPv4Address(value).packed
    if qtype == AAAA:
        return ipaddress.IPv6Address(value).packed
    return encode_name(value)


def build_response(
    q: Query, answers: list[str] = [], *, rcode: int = NOERROR, ttl: int = 600  # noqa: B006
) -> bytes:
    """A response to `q`: `answers` are addresses (A/AAAA) or names (PTR); truncated with TC
    when it does not fit the client's UDP size."""
    flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | (rcode & 0xF)  # QR AA RD RA
    body = bytearray()
    count = 0
    for value in answers:
        rd = _rdata(q.qtype, value)
        body += b"\xc0\x0c" + struct.pack("!HHIH", q.qtype, 1, ttl, len(rd)) + rd
        count += 1
    msg = struct.pack("!6H", q.id, flags, 1, count, 0, 0) + q.question + bytes(body)
    if len(msg) > q.udp_size:
        flags |= 0x0200  # TC: the client retries over TCP
        msg = struct.pack("!6H", q.id, flags, 1, 0, 0, 0) + q.question
    return msg


def error_response(data: bytes, rcode: int) -> bytes:
    """SERVFAIL/FORMERR/REFUSED for a message we may not even fully parse."""
    try:
        q = parse_query(data)
    except DnsFormatError:
        qid = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 0
        return struct.pack("!6H", qid, 0x8000 | (rcode & 0xF), 0, 0, 0, 0)
    return build_response(q, [], rcode=rcode)


@dataclass(frozen=True, slots=True)
class Response:
    id: int
    rcode: int
    truncated: bool
    answers: list[tuple[int, str]]


def parse_response(data: bytes) -> Response:
    """Parse a response's answers (A, AAAA, PTR, CNAME as text), for clients and tests."""
    qid, flags, qd, an, _ns, _ar = struct.unpack("!6H", data[:12])
    off = 12
    for _ in range(qd):
        _n, off = _read_name(data, off)
        off += 4
    out: list[tuple[int, str]] = []
    for _ in range(an):
        _n, off = _read_name(data, off)
        rtype, _rc, _ttl, rdlen = struct.unpack("!HHIH", data[off:off + 10])
        off += 10
        rd = data[off:off + rdlen]
        if rtype == A:
            out.append((rtype, str(ipaddress.IPv4Address(rd))))
        elif rtype == AAAA:
            out.append((rtype, str(ipaddress.IPv6Address(rd))))
        elif rtype in (PTR, CNAME):
            out.append((rtype, _read_name(data, off)[0]))
        off += rdlen
    return Response(qid, flags & 0xF, bool(flags & 0x0200), out)


def reverse_name(ip: str) -> str:
    """`2.0.18.172.in-addr.arpa` for 172.18.0.2 (and ip6.arpa for IPv6)."""
    return ipaddress.ip_address(ip).reverse_pointer
