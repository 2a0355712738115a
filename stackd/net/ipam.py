"""IP address management, pure: choose non-overlapping subnets and allocate addresses in them."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from stackd.errors import ConflictError, EngineError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class IpamError(EngineError):
    """A subnet or an address could not be chosen (pool exhausted, bad configuration)."""


@dataclass(frozen=True, slots=True)
class Pool:
    """A base network cut into subnets of prefix length `size` (Docker's default-address-pools)."""

    base: str
    size: int

    def subnets(self) -> Iterator[Network]:
        net = ipaddress.ip_network(self.base)
        if self.size < net.prefixlen:
            raise IpamError(f"pool {self.base}: size /{self.size} is larger than the base")
        return net.subnets(new_prefix=self.size)


# Docker's defaults: 172.17-172.31 as /16s, then 192.168.0.0/16 cut into /20s.
DEFAULT_POOLS: tuple[Pool, ...] = (
    *(Pool(f"172.{i}.0.0/16", 16) for i in range(17, 32)),
    Pool("192.168.0.0/16", 20),
)


def parse_pools(text: str) -> tuple[Pool, ...]:
    """Parse `base/len:size,base/len:size` (e.g. `10.213.0.0/16:24`) into pools."""
    pools = []
    for part in text.split(","):
        base, _, size = part.strip().partition(":")
        net = ipaddress.ip_network(base)
        pools.append(Pool(str(net), int(size) if size else net.prefixlen))
    return tuple(pools)


def _overlaps(net: Network, taken: Iterable[Network]) -> bool:
    return any(net.version == t.version and net.overlaps(t) for t in taken)


def routes_in_the_way(routes: Iterable[str]) -> list[Network]:
    """Host routes that a new subnet must avoid (default routes and host routes excluded)."""
    out: list[Network] = []
    for r in routes:
        net = ipaddress.ip_network(r, strict=False)
        if net.prefixlen == 0:
            continue
        out.append(net)
    return out


def choose_subnet(pools: Iterable[Pool], taken: Iterable[Network]) -> Network:
    """The first subnet of the pools that overlaps none of `taken` (deterministic)."""
    taken = list(taken)
    for pool in pools:
        for candidate in pool.subnets():
            if not _overlaps(candidate, taken):
                return candidate
    raise IpamError("all predefined address pools have been fully subnetted")


def ula_subnet(seed: str, taken: Iterable[Network]) -> ipaddress.IPv6Network:
    """A deterministic IPv6 ULA /64 (fdXX:XXXX:XXXX::/48 from `seed`) that overlaps none of `taken`."""
    digest = hashlib.sha256(seed.encode()).digest()
    glob = int.from_bytes(digest[:5], "big")
    taken = list(taken)
    base = (0xFD << 120) | (glob << 80)
    for sub in range(0x10000):
        net = ipaddress.IPv6Network((base | (sub << 64), 64))
        if not _overlaps(net, taken):
            return net
    raise IpamError(f"no free IPv6 ULA subnet for {seed}")


@dataclass(frozen=True, slots=True)
class SubnetConfig:
    """One subnet of a network: where addresses come from and which are reserved."""

    subnet: str
    gateway: str
    ip_range: str = ""
    aux: Mapping[str, str] = field(default_factory=dict)

    @property
    def network(self) -> Network:
        return ipaddress.ip_network(self.subnet)

    def reserved(self) -> set[Address]:
        net = self.network
        out: set[Address] = {net.network_address, ipaddress.ip_address(self.gateway)}
        if net.version == 4:
            out.add(net.broadcast_address)
        out.update(ipaddress.ip_address(a) for a in self.aux.values())
        return out

    def prefix(self) -> int:
        return self.network.prefixlen


def make_subnet_config(
    subnet: Network,
    *,
    gateway: str = "",
    ip_range: str = "",
    aux: Mapping[str, str] | None = None,
) -> SubnetConfig:
    """Validate a user's (or chosen) subnet configuration; the gateway defaults to the first host."""
    aux = dict(aux or {})
    if subnet.num_addresses < 4:
        raise IpamError(f"subnet {subnet} is too small")
    gw = ipaddress.ip_address(gateway) if gateway else subnet.network_address + 1
    if gw not in subnet:
        raise IpamError(f"gateway {gw} is not in subnet {subnet}")
    if ip_range:
        rng = ipaddress.ip_network(ip_range)
        if rng.version != subnet.version or not rng.subnet_of(subnet):  # type: ignore[arg-type]
            raise IpamError(f"ip_range {ip_range} is not inside subnet {subnet}")
    for name, addr in aux.items():
        if ipaddress.ip_address(addr) not in subnet:
            raise IpamError(f"aux address {name}={addr} is not in subnet {subnet}")
    return SubnetConfig(str(subnet), str(gw), ip_range, aux)


def allocate(cfg: SubnetConfig, used: Iterable[str], requested: str = "") -> str:
    """An address of `cfg` not in `used`: `requested` if given (refused on conflict), else the lowest free."""
    used_set = {ipaddress.ip_address(u) for u in used}
    reserved = cfg.reserved()
    net = cfg.network
    if requested:
        addr = ipaddress.ip_address(requested)
        if addr not in net:
            raise IpamError(f"address {addr} is not in subnet {net}")
        if addr in used_set or addr in reserved:
            raise ConflictError(f"address {addr} is already in use on subnet {net}")
        return str(addr)
    rng = ipaddress.ip_network(cfg.ip_range) if cfg.ip_range else net
    first = int(rng.network_address)
    last = int(rng.broadcast_address)
    skip = used_set | reserved
    cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    n = first
    while n <= last:
        addr = cls(n)
        if addr not in skip:
            return str(addr)
        n += 1  # at most len(skip) + 1 steps, so huge IPv6 ranges are cheap
    raise IpamError(f"no free address left in {rng}")
