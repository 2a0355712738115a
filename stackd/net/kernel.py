"""The `Kernel` seam: every netlink, sysctl and nftables call the network layer makes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from stackd.errors import EngineError


class NetKernelError(EngineError):
    """A kernel network operation failed; names the object, the step and the errno."""


@dataclass(frozen=True, slots=True)
class NsLink:
    """How the container end of a veth pair is set up inside the container's netns."""

    temp_name: str
    name: str
    addresses: tuple[str, ...]  # CIDRs, e.g. "172.18.0.2/16"
    mtu: int = 1500
    mac: str = ""
    gateways: tuple[str, ...] = ()  # default routes via these (one per family)
    extra: dict[str, Any] = field(default_factory=dict)


class Kernel(Protocol):
    """What the network layer needs from the kernel; `linux.LinuxKernel` and `fake.FakeKernel`."""

    # links in the host namespace
    def link_exists(self, name: str) -> bool: ...

    def bridge_create(self, name: str, mtu: int, addresses: tuple[str, ...]) -> None:
        """Create (or adopt) a bridge with its MTU and addresses, and bring it up."""

    def link_delete(self, name: str) -> None:
        """Delete a link in the host namespace; a missing link is not an error."""

    def veth_create(
        self, host_name: str, bridge: str, netns_path: str, link: NsLink, *, hairpin: bool = True
    ) -> None:
        """Create a veth pair: host end enslaved to `bridge` and up, peer moved into the netns
        at `netns_path`, renamed, addressed, routed, with loopback up."""

    def ns_link_delete(self, netns_path: str, name: str) -> None:
        """Delete a link inside a netns (its peer in the host goes with it)."""

    def links_wait_gone(self, names: list[str], timeout: float) -> list[str]:
        """Wait until these host links are gone (the kernel deletes a dropped netns's veth pairs
        asynchronously); return those still there after `timeout` seconds."""

    # network namespaces bind-mounted on files
    def netns_create(self, path: str) -> None:
        """A new netns mounted on `path` (the file is created if missing) with loopback up."""

    def netns_delete(self, path: str) -> None:
        """Unmount and remove `path` (missing is fine); its links go with the netns."""

    def host_routes(self) -> list[str]:
        """Every IPv4/IPv6 route destination of the host's main table, as CIDRs."""

    # sysctls (paths under /proc/sys, e.g. "net/ipv4/ip_forward")
    def sysctl_get(self, key: str) -> str | None: ...

    def sysctl_set(self, key: str, value: str) -> None: ...

    # nftables (JSON rulesets, libnftables schema)
    def nft_apply(self, commands: list[dict[str, Any]]) -> None:
        """Apply a list of JSON nftables commands atomically."""

    def nft_table_exists(self, family: str, name: str) -> bool: ...

    def nft_delete_table(self, family: str, name: str) -> None: ...

    # iptables (only to open a Docker-style FORWARD DROP policy for stackd bridges)
    def forward_policy_drops(self) -> bool:
        """Whether iptables' `filter FORWARD` chain drops by default (Docker, podman)."""

    def iptables_forward_rules(self) -> list[list[str]]:
        """The `-A FORWARD ...` rules (as argv lists) of the iptables filter table."""

    def iptables(self, args: list[str]) -> None:
        """Run one iptables(-nft) command (e.g. `-I FORWARD ...`, `-D FORWARD ...`)."""

    def iptables_batch(self, commands: list[list[str]]) -> None:
        """Run filter-table commands in order, all or none (one `iptables-restore --noflush`)."""
