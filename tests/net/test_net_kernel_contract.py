"""The same contract for `LinuxKernel` (as root, real netlink/nft/iptables) and `FakeKernel`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from netkit import Netns, sh, worker_pool

from stackd.net.fake import FakeKernel
from stackd.net.kernel import Kernel, NetKernelError, NsLink
from stackd.net.linux import LinuxKernel


@dataclass
class World:
    kernel: Kernel
    netns: str
    tag: str


@pytest.fixture(params=["fake", "linux"])
def world(request: pytest.FixtureRequest, netns: Netns, tag: str) -> Iterator[World]:
    if request.param == "linux":
        if os.geteuid() != 0:
            pytest.skip("needs root")
        k = LinuxKernel()
        try:
            yield World(k, netns.path(netns.new()), tag)
        finally:
            for name in (f"{tag}br", f"{tag}v"):
                k.link_delete(name)
            k.nft_delete_table("inet", tag)
            k.close()
    else:
        fk = FakeKernel()
        fk.netns_paths.add("/run/netns/fake")
        yield World(fk, "/run/netns/fake", tag)


def subnet() -> str:
    return str(next(worker_pool().subnets()).network_address + (62 << 8))


def test_bridge_lifecycle_and_routes(world: World) -> None:
    k, br = world.kernel, f"{world.tag}br"
    base = subnet()
    assert not k.link_exists(br)
    k.bridge_create(br, 1400, (f"{base[:-1]}1/24",))
    k.bridge_create(br, 1400, (f"{base[:-1]}1/24",))  # idempotent
    assert k.link_exists(br)
    assert f"{base}/24" in k.host_routes()
    k.link_delete(br)
    k.link_delete(br)  # a missing link is fine
    assert not k.link_exists(br)
    assert f"{base}/24" not in k.host_routes()


def test_veth_into_netns_and_removal(world: World) -> None:
    k, br, host = world.kernel, f"{world.tag}br", f"{world.tag}v"
    base = subnet()[:-1]
    link = NsLink("eth0", "eth0", (f"{base}2/24",), 1400, "02:42:00:00:00:01", (f"{base}1",))
    with pytest.raises(NetKernelError):
        k.veth_create(host, br, world.netns, link)  # no bridge yet
    k.bridge_create(br, 1400, (f"{base}1/24",))
    k.veth_create(host, br, world.netns, link)
    assert k.link_exists(host)
    with pytest.raises(NetKernelError):
        k.veth_create(host, br, world.netns, link)  # exists
    k.ns_link_delete(world.netns, "eth0")
    assert not k.link_exists(host)
    k.link_delete(br)


def test_sysctl_roundtrip(world: World) -> None:
    k, br = world.kernel, f"{world.tag}br"
    k.bridge_create(br, 1500, ())
    key = f"net/ipv4/conf/{br}/route_localnet"
    k.sysctl_set(key, "1")
    assert k.sysctl_get(key) == "1"
    k.link_delete(br)


def test_nft_tables(world: World) -> None:
    k, t = world.kernel, world.tag
    tbl = {"table": {"family": "inet", "name": t}}
    chain = {"chain": {"family": "inet", "table": t, "name": "c"}}
    assert not k.nft_table_exists("inet", t)
    k.nft_apply([{"add": tbl}, {"add": chain}])
    assert k.nft_table_exists("inet", t)
    with pytest.raises(NetKernelError):
        k.nft_apply([{"add": {"chain": {"family": "inet", "table": t + "x", "name": "c"}}}])
    k.nft_apply([{"add": tbl}, {"delete": tbl}])
    assert not k.nft_table_exists("inet", t)
    k.nft_delete_table("inet", t)  # missing is fine


def test_iptables_forward_rules(world: World) -> None:
    k, t = world.kernel, world.tag
    rule = ["-i", f"{t}none", "-m", "comment", "--comment", f"{t}:x", "-j", "ACCEPT"]
    k.iptables(["-I", "FORWARD", "1", *rule])
    try:
        assert ["-A", "FORWARD", *rule] in k.iptables_forward_rules()
        isinstance(k.forward_policy_drops(), bool)
    finally:
        k.iptables(["-D", "FORWARD", *rule])
    assert ["-A", "FORWARD", *rule] not in k.iptables_forward_rules()
    with pytest.raises(NetKernelError):
        k.iptables(["-D", "FORWARD", *rule])


def test_fake_records_calls() -> None:
    k = FakeKernel()
    k.bridge_create("b", 1500, ("10.0.0.1/24",))
    assert k.calls == [("bridge_create", "b", 1500, ("10.0.0.1/24",))]
    assert sh("true").returncode == 0


def test_netns_lifecycle_takes_its_links_along(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    k, br, host = world.kernel, f"{world.tag}br", f"{world.tag}v"
    path = str(tmp_path / "ns")
    with pytest.raises(NetKernelError):
        k.netns_create(str(tmp_path / "missing-dir" / "ns"))
    k.netns_create(path)
    try:
        base = subnet()[:-1]
        k.bridge_create(br, 1400, (f"{base}1/24",))
        k.veth_create(host, br, path, NsLink("eth0", "eth0", (f"{base}2/24",), 1400, "02:42:00:00:00:02",
                                             (f"{base}1",)))
        assert k.link_exists(host)
    finally:
        k.netns_delete(path)
    k.netns_delete(path)  # a missing netns is fine
    assert k.links_wait_gone([host], 5.0) == []  # the kernel deleted the pair with the netns
    assert not k.link_exists(host)
    k.link_delete(br)
