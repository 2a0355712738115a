"""stackd's own nftables table (`inet stackd`): isolation, outbound NAT, published-port DNAT.

The whole table is regenerated from the records and replaced in one nft transaction, so the
rules always equal the state (conntrack keeps existing flows). Other tables are never touched.

Docker/podman hosts: an nftables `accept` cannot override a `drop` in another table at the same
hook, so when iptables' `filter FORWARD` chain has policy DROP (Docker sets it; with
br_netfilter `bridge-nf-call-iptables=1` even bridged traffic crosses it) stackd inserts
commented ACCEPT rules for its own bridges at the top of that chain (`<table>:<bridge>:…`) and
removes them with the network. Nothing is inserted when the policy is ACCEPT.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stackd.net.kernel import Kernel

FAMILY = "inet"
TABLE = "stackd"


@dataclass(frozen=True, slots=True)
class NatNetwork:
    """What the rules need to know of a network."""

    bridge: str
    subnets: tuple[str, ...]
    internal: bool


@dataclass(frozen=True, slots=True)
class Dnat:
    """One published port: traffic to host_ip:host_port/proto goes to addr:port."""

    host_ip: str  # "" or 0.0.0.0 / :: for every local address
    host_port: int
    proto: str
    addr: str
    port: int
    bridge: str


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _saddr(cidr: str) -> dict[str, Any]:
    net = ipaddress.ip_network(cidr)
    proto = "ip" if net.version == 4 else "ip6"
    return _match({"payload": {"protocol": proto, "field": "saddr"}},
                  {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}})


def ruleset(
    networks: Sequence[NatNetwork], dnats: Sequence[Dnat], table: str = TABLE
) -> list[dict[str, Any]]:
    """The JSON commands that replace the stackd table with the rules for these records."""

    def _rule(chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
        return {"add": {"rule": {"family": FAMILY, "table": table, "chain": chain,
                                 "expr": list(expr)}}}

    def _chain(name: str, kind: str, hook: str, prio: int) -> dict[str, Any]:
        return {"add": {"chain": {"family": FAMILY, "table": table, "name": name, "type": kind,
                                  "hook": hook, "prio": prio, "policy": "accept"}}}

    tbl = {"table": {"family": FAMILY, "name": table}}
    cmds: list[dict[str, Any]] = [{"add": tbl}, {"delete": tbl}]
    if not networks:
        return cmds
    cmds += [
        {"add": tbl},
        _chain("forward", "filter", "forward", 0),
        _chain("prerouting", "nat", "prerouting", -100),
        _chain("output", "nat", "output", -100),
        _chain("postrouting", "nat", "postrouting", 100),
    ]
    bridges = [n.bridge for n in networks]
    for net in networks:
        others = [b for b in bridges if b != net.bridge]
        if net.internal:
            cmds.append(_rule("forward", _match(_meta("iifname"), net.bridge),
                              _match(_meta("oifname"), net.bridge, "!="), {"drop": None}))
            cmds.append(_rule("forward", _match(_meta("oifname"), net.bridge),
                              _match(_meta("iifname"), net.bridge, "!="), {"drop": None}))
            continue
        if others:
            cmds.append(_rule("forward", _match(_meta("iifname"), net.bridge),
                              _match(_meta("oifname"), {"set": others}), {"drop": None}))
        for cidr in net.subnets:
            cmds.append(_rule("postrouting", _saddr(cidr),
                              _match(_meta("oifname"), net.bridge, "!="), {"masquerade": None}))
        # hairpin: a container reaching a published port of its own network via a host address
        cmds.append(_rule("postrouting", _match(_meta("iifname"), net.bridge),
                          _match(_meta("oifname"), net.bridge),
                          _match({"ct": {"key": "status"}}, "dnat", "in"), {"masquerade": None}))
        # the host itself reaching a published port through 127.0.0.1 (route_localnet)
        cmds.append(_rule("postrouting", _saddr("127.0.0.0/8"),
                          _match(_meta("oifname"), net.bridge), {"masquerade": None}))
    for d in dnats:
        ver = 6 if ":" in d.addr else 4
        proto = "ip" if ver == 4 else "ip6"
        exprs: list[dict[str, Any]] = []
        if d.host_ip and d.host_ip not in ("0.0.0.0", "::"):
            exprs.append(_match({"payload": {"protocol": proto, "field": "daddr"}}, d.host_ip))
        else:
            exprs.append(_match(_meta("nfproto"), "ipv4" if ver == 4 else "ipv6"))
            exprs.append(_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"))
        exprs.append(_match({"payload": {"protocol": d.proto, "field": "dport"}}, d.host_port))
        exprs.append({"dnat": {"family": proto, "addr": d.addr, "port": d.port}})
        cmds.append(_rule("prerouting", *exprs))
        cmds.append(_rule("output", *exprs))
        # a container reaching its own published port (br_netfilter bridges it back unNATed)
        plen = 32 if ver == 4 else 128
        cmds.append(_rule("postrouting", _saddr(f"{d.addr}/{plen}"),
                          _match({"payload": {"protocol": proto, "field": "daddr"}}, d.addr),
                          _match({"payload": {"protocol": d.proto, "field": "dport"}}, d.port),
                          {"masquerade": None}))
    return cmds


def forwarding_needed(networks: Sequence[NatNetwork]) -> tuple[bool, bool]:
    """Whether IPv4 / IPv6 forwarding must be on (only for non-internal networks)."""
    v4 = any(not n.internal and any(":" not in s for s in n.subnets) for n in networks)
    v6 = any(not n.internal and any(":" in s for s in n.subnets) for n in networks)
    return v4, v6


def _forward_rules(net: NatNetwork, table: str) -> dict[str, list[str]]:
    br = net.bridge
    if net.internal:
        return {f"{table}:{br}:int": ["-i", br, "-o", br]}
    return {
        f"{table}:{br}:out": ["-i", br],
        f"{table}:{br}:in": ["-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT"],
    }


def sync_forward_accepts(
    kernel: Kernel, networks: Sequence[NatNetwork], table: str = TABLE
) -> None:
    """Keep stackd's ACCEPT rules in iptables' FORWARD chain equal to `networks` when it drops."""
    want: dict[str, list[str]] = {}
    if networks and kernel.forward_policy_drops():
        for net in networks:
            want.update(_forward_rules(net, table))
    have: dict[str, list[str]] = {}
    for rule in kernel.iptables_forward_rules():
        if "--comment" in rule:
            comment = rule[rule.index("--comment") + 1]
            if comment.startswith(f"{table}:"):
                have[comment] = rule
    commands = [["-D", "FORWARD", *rule[2:]] for comment, rule in have.items() if comment not in want]
    commands += [["-I", "FORWARD", "1", *match, "-m", "comment", "--comment", comment, "-j", "ACCEPT"]
                 for comment, match in want.items() if comment not in have]
    kernel.iptables_batch(commands)  # one iptables-restore, not one iptables per rule


def apply(
    kernel: Kernel, networks: Sequence[NatNetwork], dnats: Sequence[Dnat], table: str = TABLE,
    *, forward: bool = True,
) -> None:
    """Make the kernel match the records: sysctls, the stackd table, and (with `forward`, when
    the networks changed) the FORWARD accepts."""
    v4, v6 = forwarding_needed(networks)
    if v4 and kernel.sysctl_get("net/ipv4/ip_forward") != "1":
        kernel.sysctl_set("net/ipv4/ip_forward", "1")
    if v6 and kernel.sysctl_get("net/ipv6/conf/all/forwarding") != "1":
        kernel.sysctl_set("net/ipv6/conf/all/forwarding", "1")
    for net in networks:
        if not net.internal:
            key = f"net/ipv4/conf/{net.bridge}/route_localnet"
            if kernel.sysctl_get(key) not in (None, "1"):
                kernel.sysctl_set(key, "1")
    kernel.nft_apply(ruleset(networks, dnats, table))
    if forward:
        sync_forward_accepts(kernel, networks, table)
