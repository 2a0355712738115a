"""A container's /etc/resolv.conf and /etc/hosts, from dns, dns_search, dns_opt, extra_hosts."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from stackd.errors import UsageError

FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")


@dataclass(frozen=True, slots=True)
class HostResolv:
    """The parts of the host's resolv.conf that containers inherit."""

    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def parse_resolv_conf(text: str) -> HostResolv:
    ns: list[str] = []
    search: list[str] = []
    opts: list[str] = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split(";", 1)[0].split()
        if not parts:
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            ns.append(parts[1])
        elif parts[0] in ("search", "domain"):
            search = parts[1:]
        elif parts[0] == "options":
            opts.extend(parts[1:])
    return HostResolv(tuple(ns), tuple(search), tuple(opts))


def read_host_resolv(path: str = "/etc/resolv.conf") -> HostResolv:
    try:
        with open(path) as f:
            return parse_resolv_conf(f.read())
    except FileNotFoundError:
        return HostResolv()


def upstreams(host: HostResolv) -> list[tuple[str, int]]:
    """Resolvers the DNS server forwards to (the host's, as Docker's embedded DNS does)."""
    return [(ip, 53) for ip in host.nameservers] or [(ip, 53) for ip in FALLBACK_DNS]


@dataclass(frozen=True, slots=True)
class ResolvOptions:
    dns: Sequence[str] = ()
    dns_search: Sequence[str] = ()
    dns_opt: Sequence[str] = ()


def resolv_conf(host: HostResolv, opts: ResolvOptions, *, embedded_dns: str = "") -> str:
    """resolv.conf content: the embedded server (on the network gateway) when the container is on
    a DNS-enabled network, else the host's non-loopback resolvers (Docker's fallback to 8.8.8.8)."""
    if opts.dns:
        servers = list(opts.dns)
    elif embedded_dns:
        servers = [embedded_dns]
    else:
        servers = [s for s in host.nameservers if not ipaddress.ip_address(s.split("%")[0]).is_loopback]
        servers = servers or list(FALLBACK_DNS)
    search = list(opts.dns_search) if opts.dns_search else list(host.search)
    options = list(opts.dns_opt) if opts.dns_opt else list(host.options)
    if embedded_dns and not opts.dns_opt and not any(o.startswith("ndots") for o in options):
        options.append("ndots:0")
    lines = [f"nameserver {s}" for s in servers]
    if search and search != ["."]:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def parse_extra_hosts(entries: Iterable[str] | Mapping[str, str | Sequence[str]]) -> list[tuple[str, str]]:
    """`host:ip`, `host=ip` (list) or {host: ip | [ips]} (mapping) into (host, ip) pairs."""
    out: list[tuple[str, str]] = []
    if isinstance(entries, Mapping):
        for host, ips in entries.items():
            for ip in [ips] if isinstance(ips, str) else ips:
                out.append((host, ip))
        return out
    for e in entries:
        sep = "=" if "=" in e else ":"
        host, _, ip = e.partition(sep)
        ip = ip.strip("[]")
        if not host or not ip:
            raise UsageError(f"invalid extra_hosts entry {e!r}: expected HOST:IP")
        out.append((host, ip))
    return out


@dataclass(frozen=True, slots=True)
class HostsEntry:
    ip: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HostsOptions:
    hostname: str = ""
    domainname: str = ""
    own: Sequence[str] = ()  # the container's addresses
    extra_hosts: Sequence[tuple[str, str]] = field(default_factory=list)
    host_gateway: str = ""  # what `host-gateway` maps to


def hosts_file(opts: HostsOptions) -> str:
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    for host, ip in opts.extra_hosts:
        if ip == "host-gateway":
            if not opts.host_gateway:
                raise UsageError(f"extra_hosts {host}: host-gateway has no address on this network")
            ip = opts.host_gateway
        lines.append(f"{ip}\t{host}")
    if opts.hostname:
        names = [opts.hostname]
        if opts.domainname:
            names.insert(0, f"{opts.hostname}.{opts.domainname}")
        for ip in opts.own:
            lines.append(f"{ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"
