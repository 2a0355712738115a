"""A recording, in-memory `Kernel` for unit tests; behaves like `LinuxKernel` on the contract."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

from stackd.net.kernel import NetKernelError, NsLink


@dataclass
class FakeLink:
    name: str
    kind: str
    mtu: int = 1500
    addresses: list[str] = field(default_factory=list)
    master: str = ""
    netns: str = ""  # "" is the host
    up: bool = False
    mac: str = ""
    gateways: tuple[str, ...] = ()


class FakeKernel:
    """Keeps links, routes, sysctls and nftables tables as data; `calls` records every call."""

    def __init__(self, routes: list[str] | None = None, *, forward_drop: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.links: dict[tuple[str, str], FakeLink] = {}
        self.routes = list(routes or ["0.0.0.0/0", "192.0.2.0/24"])
        self.sysctls: dict[str, str] = {"net/ipv4/ip_forward": "0"}
        self.tables: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.forward_drop = forward_drop
        self.forward_rules: list[list[str]] = []
        self.netns_paths: set[str] = set()

    def link_exists(self, name: str) -> bool:
        return ("", name) in self.links

    def bridge_create(self, name: str, mtu: int, addresses: tuple[str, ...]) -> None:
        self.calls.append(("bridge_create", name, mtu, addresses))
        link = self.links.setdefault(("", name), FakeLink(name, "bridge"))
        link.mtu = mtu
        link.addresses = sorted(set(link.addresses) | set(addresses))
        link.up = True
        for cidr in addresses:
            import ipaddress

            net = str(ipaddress.ip_interface(cidr).network)
            if net not in self.routes:
                self.routes.append(net)

    def link_delete(self, name: str) -> None:
        self.calls.append(("link_delete", name))
        link = self.links.pop(("", name), None)
        if link is None:
            return
        if link.kind == "bridge":
            import ipaddress

            for cidr in link.addresses:
                net = str(ipaddress.ip_interface(cidr).network)
                if net in self.routes:
                    self.routes.remove(net)
            for other in self.links.values():
                if other.master == name:
                    other.master = ""
        if link.kind == "veth":
            for key, other in list(self.links.items()):
                if other.kind == "veth-peer" and other.master == name:
                    del self.links[key]

    def veth_create(
        self, host_name: str, bridge: str, netns_path: str, link: NsLink, *, hairpin: bool = True
    ) -> None:
        self.calls.append(("veth_create", host_name, bridge, netns_path, link))
        if ("", bridge) not in self.links:
            raise NetKernelError(f"attaching {host_name}: bridge {bridge} does not exist")
        if self.netns_paths and netns_path not in self.netns_paths:
            raise NetKernelError(f"opening netns {netns_path}: No such file or directory (ENOENT)")
        if ("", host_name) in self.links or (netns_path, link.name) in self.links:
            raise NetKernelError(f"creating veth {host_name} in {netns_path}: File exists (EEXIST)")
        self.links[("", host_name)] = FakeLink(host_name, "veth", link.mtu, master=bridge, up=True)
        self.links[(netns_path, link.name)] = FakeLink(
            link.name, "veth-peer", link.mtu, list(link.addresses), master=host_name,
            netns=netns_path, up=True, mac=link.mac, gateways=link.gateways,
        )

    def ns_link_delete(self, netns_path: str, name: str) -> None:
        self.calls.append(("ns_link_delete", netns_path, name))
        peer = self.links.pop((netns_path, name), None)
        if peer is not None:
            self.links.pop(("", peer.master), None)

    def links_wait_gone(self, names: list[str], timeout: float) -> list[str]:
        return [n for n in names if ("", n) in self.links]

    def netns_create(self, path: str) -> None:
        self.calls.append(("netns_create", path))
        if not path.startswith("/") or path.endswith("/") or not os.path.isdir(os.path.dirname(path)):
            raise NetKernelError(f"network namespace {path}: creating the mount point: "
                                 "No such file or directory (ENOENT)")
        self.netns_paths.add(path)

    def netns_delete(self, path: str) -> None:
        self.calls.append(("netns_delete", path))
        self.netns_paths.discard(path)
        for key, link in list(self.links.items()):
            if link.netns == path:
                del self.links[key]
                self.links.pop(("", link.master), None)

    def host_routes(self) -> list[str]:
        return list(self.routes)

    def sysctl_get(self, key: str) -> str | None:
        return self.sysctls.get(key)

    def sysctl_set(self, key: str, value: str) -> None:
        self.calls.append(("sysctl_set", key, value))
        self.sysctls[key] = value

    def nft_apply(self, commands: list[dict[str, Any]]) -> None:
        self.calls.append(("nft_apply", copy.deepcopy(commands)))
        for cmd in commands:
            (verb, body), = cmd.items()
            (kind, obj), = body.items()
            if kind == "table":
                key = (obj["family"], obj["name"])
                if verb == "add":
                    self.tables.setdefault(key, [])
                elif verb == "delete":
                    if key not in self.tables:
                        raise NetKernelError(f"nft: no such table {key}")
                    del self.tables[key]
            else:
                key = (obj["family"], obj["table"])
                if key not in self.tables:
                    raise NetKernelError(f"nft: no such table {key}")
                self.tables[key].append({kind: obj})

    def nft_table_exists(self, family: str, name: str) -> bool:
        return (family, name) in self.tables

    def nft_delete_table(self, family: str, name: str) -> None:
        self.calls.append(("nft_delete_table", family, name))
        self.tables.pop((family, name), None)

    def forward_policy_drops(self) -> bool:
        return self.forward_drop

    def iptables_forward_rules(self) -> list[list[str]]:
        return [list(r) for r in self.forward_rules]

    def iptables_batch(self, commands: list[list[str]]) -> None:
        saved = [list(r) for r in self.forward_rules]
        try:
            for args in commands:
                self.iptables(args)
        except NetKernelError:
            self.forward_rules = saved  # all or none, as iptables-restore
            raise

    def iptables(self, args: list[str]) -> None:
        self.calls.append(("iptables", list(args)))
        op, chain, *rest = args
        rule = ["-A", chain, *rest]
        if op == "-I":
            if rest and rest[0].isdigit():
                rule = ["-A", chain, *rest[1:]]
            self.forward_rules.insert(0, rule)
        elif op == "-A":
            self.forward_rules.append(rule)
        elif op == "-D":
            if rule not in self.forward_rules:
                raise NetKernelError(f"iptables {' '.join(args)}: Bad rule")
            self.forward_rules.remove(rule)
