"""veth pairs: names, and joining a container's netns to a bridge (address, route, MTU, MAC)."""

from __future__ import annotations

import hashlib
import random

from stackd.errors import UsageError
from stackd.net.kernel import Kernel, NsLink

IFNAMSIZ = 15


def host_name(prefix: str, container_id: str, network: str) -> str:
    """A stable host-side name, `<prefix>v<hash>` in 15 characters."""
    digest = hashlib.sha256(f"{container_id}/{network}".encode()).hexdigest()
    return (prefix + "v" + digest)[:IFNAMSIZ]


def random_mac() -> str:
    """A locally administered unicast MAC (02:42:… as Docker's)."""
    rest = [random.randrange(256) for _ in range(4)]
    return "02:42:" + ":".join(f"{b:02x}" for b in rest)


def mac_for(ipv4: str) -> str:
    """Docker's MAC for an IPv4 address: 02:42 then the address's four bytes. An address that is
    released and handed to a new container keeps its MAC, so neighbours' ARP caches stay right."""
    if not ipv4:
        return random_mac()
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ipv4.split("."))


def check_mac(mac: str) -> str:
    parts = mac.lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise UsageError(f"invalid MAC address {mac!r}")
    if int(parts[0], 16) & 1:
        raise UsageError(f"invalid MAC address {mac!r}: multicast")
    return ":".join(parts)


def join(
    kernel: Kernel,
    host: str,
    bridge: str,
    netns_path: str,
    ifname: str,
    addresses: tuple[str, ...],
    *,
    mtu: int,
    mac: str,
    gateways: tuple[str, ...],
) -> None:
    kernel.veth_create(host, bridge, netns_path,
                       NsLink(ifname, ifname, addresses, mtu, mac, gateways))


def leave(kernel: Kernel, host: str, netns_path: str, ifname: str) -> None:
    """Remove the pair: deleting the host end deletes its peer in the netns too; only when the
    host end is missing is the netns looked into (one process less per container)."""
    if kernel.link_exists(host):
        kernel.link_delete(host)
        return
    try:
        kernel.ns_link_delete(netns_path, ifname)
    except OSError:
        pass
