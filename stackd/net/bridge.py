"""Bridges: names, options (MTU, bridge name from driver_opts) and their create/delete steps."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping

from stackd.errors import ConflictError, UsageError
from stackd.net.ipam import SubnetConfig
from stackd.net.kernel import Kernel

OPT_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
IFNAMSIZ = 15


def bridge_name(prefix: str, network_id: str, options: Mapping[str, str]) -> str:
    """The bridge's name: driver_opts' bridge name, else `<prefix>br-<id>` cut to 15 chars."""
    name = options.get(OPT_NAME, "")
    if name:
        if len(name) > IFNAMSIZ or "/" in name or " " in name:
            raise UsageError(f"invalid bridge name {name!r} (at most {IFNAMSIZ} characters)")
        return name
    return (prefix + "br-" + network_id)[:IFNAMSIZ]


def mtu(options: Mapping[str, str], default: int = 1500) -> int:
    raw = options.get(OPT_MTU, "")
    if not raw:
        return default
    value = int(raw)
    if not 68 <= value <= 65535:
        raise UsageError(f"invalid MTU {raw!r} in driver_opts {OPT_MTU}")
    return value


def network_id(name: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}/{name}".encode()).hexdigest()


def gateway_cidrs(subnets: list[SubnetConfig]) -> tuple[str, ...]:
    return tuple(f"{s.gateway}/{ipaddress.ip_network(s.subnet).prefixlen}" for s in subnets)


def create(kernel: Kernel, name: str, mtu_: int, subnets: list[SubnetConfig], *, adopt: bool) -> None:
    """Create the bridge with its gateway addresses; an existing link is adopted only if asked."""
    if kernel.link_exists(name) and not adopt:
        raise ConflictError(f"cannot create network bridge {name}: a link with that name exists")
    kernel.bridge_create(name, mtu_, gateway_cidrs(subnets))


def delete(kernel: Kernel, name: str) -> None:
    kernel.link_delete(name)
