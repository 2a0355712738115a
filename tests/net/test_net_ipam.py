"""IPAM: deterministic, non-overlapping subnets; address allocation, reservations and conflicts."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stackd.errors import ConflictError
from stackd.net import ipam
from stackd.net.ipam import DEFAULT_POOLS, IpamError, Pool


def test_docker_default_pools_skip_host_routes() -> None:
    taken = ipam.routes_in_the_way(["0.0.0.0/0", "172.17.0.0/16", "192.0.2.0/24", "::/0"])
    assert str(ipam.choose_subnet(DEFAULT_POOLS, taken)) == "172.18.0.0/16"
    all16 = [ipaddress.ip_network(f"172.{i}.0.0/16") for i in range(17, 32)]
    assert str(ipam.choose_subnet(DEFAULT_POOLS, all16)) == "192.168.0.0/20"
    assert str(ipam.choose_subnet(DEFAULT_POOLS, [*all16, ipaddress.ip_network("192.168.0.0/24")])) == "192.168.16.0/20"


def test_exhausted_pool_and_parse() -> None:
    pools = ipam.parse_pools("10.9.0.0/23:24")
    assert pools == (Pool("10.9.0.0/23", 24),)
    taken = [ipaddress.ip_network("10.9.0.0/24"), ipaddress.ip_network("10.9.1.0/25")]
    with pytest.raises(IpamError, match="fully subnetted"):
        ipam.choose_subnet(pools, taken)


@settings(max_examples=60, deadline=None)
@given(
    routes=st.lists(st.tuples(st.integers(0, 255), st.integers(16, 28)), max_size=8),
    n=st.integers(1, 12),
)
def test_chosen_subnets_never_overlap(routes: list[tuple[int, int]], n: int) -> None:
    pools = (Pool("10.50.0.0/16", 24), Pool("10.60.0.0/16", 20))
    taken: list[ipam.Network] = [
        ipaddress.ip_network(f"10.50.{third}.0/{plen}", strict=False) for third, plen in routes
    ]
    host = list(taken)
    chosen = []
    for _ in range(n):
        net = ipam.choose_subnet(pools, taken)
        chosen.append(net)
        taken.append(net)
    for i, a in enumerate(chosen):
        assert not any(a.overlaps(h) for h in host)  # type: ignore[arg-type]
        assert not any(a.overlaps(b) for b in chosen[i + 1:])  # type: ignore[arg-type]
    # deterministic: the same inputs choose the same subnets
    again: list[ipam.Network] = list(host)
    for c in chosen:
        assert ipam.choose_subnet(pools, again) == c
        again.append(c)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=60))
def test_allocations_are_unique_and_avoid_reserved(ops: list[tuple[bool, int]]) -> None:
    cfg = ipam.make_subnet_config(ipaddress.ip_network("10.7.0.0/26"), aux={"r": "10.7.0.5"})
    used: list[str] = []
    for alloc, k in ops:
        if alloc or not used:
            try:
                addr = ipam.allocate(cfg, used)
            except IpamError:
                assert len(used) == 64 - 4  # network, gateway, broadcast, aux
                continue
            assert addr not in used
            assert addr not in ("10.7.0.0", "10.7.0.1", "10.7.0.63", "10.7.0.5")
            used.append(addr)
        else:
            used.pop(k % len(used))  # release


def test_requested_address_gateway_range_aux() -> None:
    cfg = ipam.make_subnet_config(ipaddress.ip_network("10.8.0.0/24"), gateway="10.8.0.254",
                                  ip_range="10.8.0.128/25", aux={"router": "10.8.0.130"})
    assert cfg.gateway == "10.8.0.254"
    assert ipam.allocate(cfg, []) == "10.8.0.128"
    assert ipam.allocate(cfg, ["10.8.0.128", "10.8.0.129"]) == "10.8.0.131"
    assert ipam.allocate(cfg, [], "10.8.0.9") == "10.8.0.9"  # static addresses may be outside ip_range
    with pytest.raises(ConflictError):
        ipam.allocate(cfg, ["10.8.0.9"], "10.8.0.9")
    with pytest.raises(ConflictError):
        ipam.allocate(cfg, [], "10.8.0.254")
    with pytest.raises(IpamError):
        ipam.allocate(cfg, [], "10.9.0.1")
    with pytest.raises(IpamError):
        ipam.make_subnet_config(ipaddress.ip_network("10.8.0.0/24"), gateway="10.9.0.1")
    with pytest.raises(IpamError):
        ipam.make_subnet_config(ipaddress.ip_network("10.8.0.0/24"), ip_range="10.8.1.0/25")


def test_ipv6_ula() -> None:
    a = ipam.ula_subnet("net-a", [])
    assert a.prefixlen == 64 and a.subnet_of(ipaddress.ip_network("fd00::/8"))
    assert ipam.ula_subnet("net-a", []) == a
    b = ipam.ula_subnet("net-a", [a])
    assert b != a and not b.overlaps(a)
    cfg = ipam.make_subnet_config(a)
    assert ipam.allocate(cfg, []) == str(a.network_address + 2)
