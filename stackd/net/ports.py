"""Published ports: parse short/long syntax, refuse ports in use, and turn them into DNAT rules.

stackd publishes with kernel DNAT only (no userland proxy): traffic from outside, from other
containers through a host address (hairpin, masqueraded) and from the host itself (the output
hook, with `route_localnet` on the bridge and masquerade of 127.0.0.0/8 so 127.0.0.1 works)
all go straight to the container, at kernel speed. IPv6 host addresses are DNATed in the ip6
family when the container has an IPv6 address; `::1` cannot be DNATed (no route_localnet for
IPv6) and is refused with a clear error.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stackd.errors import ConflictError, UsageError


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One published port as the user wrote it (host_port 0: choose a free one)."""

    container_port: int
    host_port: int = 0
    host_ip: str = ""
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True)
class PortBinding:
    """A published port as it is in effect."""

    container_id: str
    host_ip: str
    host_port: int
    protocol: str
    container_ip: str
    container_port: int

    def key(self) -> tuple[str, int, str]:
        return (self.host_ip or "0.0.0.0", self.host_port, self.protocol)


_SHORT = re.compile(
    r"^(?:(?:\[(?P<ip6>[0-9a-fA-F:.]+)\]|(?P<ip>\d+\.\d+\.\d+\.\d+)):)?"
    r"(?:(?P<hp>\d*(?:-\d+)?):)?(?P<cp>\d+(?:-\d+)?)(?:/(?P<proto>tcp|udp|sctp))?$"
)


def _range(text: str, what: str, spec: str) -> list[int]:
    lo, _, hi = text.partition("-")
    a, b = int(lo), int(hi or lo)
    if not (0 < a <= b <= 65535):
        raise UsageError(f"port spec {spec!r}: invalid {what} {text!r} (ports are 1-65535)")
    return list(range(a, b + 1))


def parse_short(spec: str) -> list[PortSpec]:
    """`[IP:][HOST[-HOST]:]CONTAINER[-CONTAINER][/PROTO]`, IPv6 hosts in brackets."""
    m = _SHORT.match(spec.strip())
    if not m:
        raise UsageError(f"invalid port spec {spec!r}")
    host_ip = m["ip6"] or m["ip"] or ""
    if host_ip:
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise UsageError(f"port spec {spec!r}: invalid host IP {host_ip!r}")
    cps = _range(m["cp"], "container port", spec)
    proto = m["proto"] or "tcp"
    if not m["hp"]:
        return [PortSpec(cp, 0, host_ip, proto) for cp in cps]
    hps = _range(m["hp"], "host port", spec)
    if len(hps) != len(cps):
        if len(cps) == 1:  # Docker: a host range for one container port picks one free port
            return [PortSpec(cps[0], hps[0], host_ip, proto)]
        raise UsageError(f"port spec {spec!r}: host and container ranges differ in length")
    return [PortSpec(cp, hp, host_ip, proto) for hp, cp in zip(hps, cps, strict=True)]


def parse_long(entry: Mapping[str, Any]) -> list[PortSpec]:
    """Compose's long syntax: target, published (port or range), host_ip, protocol."""
    target = str(entry["target"])
    published = str(entry.get("published") or "")
    proto = str(entry.get("protocol") or "tcp")
    host_ip = str(entry.get("host_ip") or "")
    short = f"{published}:{target}/{proto}" if published else f"{target}/{proto}"
    if host_ip:
        short = (f"[{host_ip}]" if ":" in host_ip else host_ip) + ":" + (short if published else f":{short}")
    return parse_short(short)


def parse(entries: Iterable[str | Mapping[str, Any] | PortSpec]) -> list[PortSpec]:
    out: list[PortSpec] = []
    for e in entries:
        if isinstance(e, PortSpec):
            out.append(e)
        elif isinstance(e, str):
            out.extend(parse_short(e))
        else:
            out.extend(parse_long(e))
    return out


def _family(host_ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host_ip else socket.AF_INET


def probe(host_ip: str, port: int, protocol: str) -> None:
    """Bind host_ip:port briefly; a port in use by anything raises ConflictError."""
    ip = host_ip or "0.0.0.0"
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    s = socket.socket(_family(ip), kind)
    try:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        if kind == socket.SOCK_STREAM:
            s.listen(1)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConflictError(
                f"cannot publish {ip}:{port}/{protocol}: the port is already in use on the host"
            )
        raise ConflictError(f"cannot publish {ip}:{port}/{protocol}: {exc.strerror}")
    finally:
        s.close()


def free_port(host_ip: str, protocol: str) -> int:
    """An ephemeral port free right now (Docker's behaviour for a port published without a host port)."""
    ip = host_ip or "0.0.0.0"
    s = socket.socket(_family(ip), socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM)
    try:
        s.bind((ip, 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


def _overlap(a: tuple[str, int, str], b: tuple[str, int, str]) -> bool:
    if a[1] != b[1] or a[2] != b[2]:
        return False
    wild = ("0.0.0.0", "::")
    return a[0] == b[0] or a[0] in wild or b[0] in wild


def plan(
    container_id: str,
    specs: Iterable[PortSpec],
    container_ip4: str,
    container_ip6: str,
    existing: Iterable[PortBinding],
) -> list[PortBinding]:
    """Check every spec against our records and the host, then return the bindings to make."""
    taken = [b.key() for b in existing]
    out: list[PortBinding] = []
    for spec in specs:
        v6 = ":" in spec.host_ip
        if v6 and ipaddress.ip_address(spec.host_ip).is_loopback:
            raise UsageError(f"publishing on [::1]:{spec.host_port} is not supported; use 127.0.0.1")
        target = container_ip6 if v6 else container_ip4
        if not target:
            raise UsageError(
                f"cannot publish port {spec.container_port}/{spec.protocol}: the container has no "
                f"{'IPv6' if v6 else 'IPv4'} address on a network that allows publishing"
            )
        host_port = spec.host_port or free_port(spec.host_ip, spec.protocol)
        b = PortBinding(container_id, spec.host_ip, host_port, spec.protocol, target,
                        spec.container_port)
        if any(_overlap(b.key(), t) for t in taken):
            raise ConflictError(
                f"cannot publish {b.key()[0]}:{host_port}/{spec.protocol}: the port is already "
                "published by another stackd container"
            )
        probe(spec.host_ip, host_port, spec.protocol)
        taken.append(b.key())
        out.append(b)
    return out
