"""NetManager logic on the recording FakeKernel: records, addresses, routes, rules, restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackd.errors import ConflictError, NotFoundError, UsageError
from stackd.net.fake import FakeKernel
from stackd.net.ipam import Pool
from stackd.net.manager import IpamConfig, NetManager, NetworkSpec


@pytest.fixture
def fk() -> FakeKernel:
    return FakeKernel(routes=["0.0.0.0/0", "10.99.0.0/24"], forward_drop=True)


@pytest.fixture
def mgr(tmp_path: Path, fk: FakeKernel) -> NetManager:
    return NetManager(tmp_path, fk, pools=[Pool("10.99.0.0/16", 24)], link_prefix="sdf",
                      table="sdf", upstreams=[("127.0.0.1", 53)], run_dns=False)


def nsfile(tmp_path: Path, name: str) -> str:
    p = tmp_path / name
    p.touch()
    return str(p)


def test_subnets_skip_routes_and_each_other(mgr: NetManager, fk: FakeKernel) -> None:
    a = mgr.create_network(NetworkSpec("a"))
    b = mgr.create_network(NetworkSpec("b", enable_ipv6=True))
    assert a.subnets[0].subnet == "10.99.1.0/24" and a.subnets[0].gateway == "10.99.1.1"
    assert b.subnets[0].subnet == "10.99.2.0/24" and b.subnets[1].subnet.startswith("fd")
    assert fk.links[("", a.bridge)].up and fk.sysctls["net/ipv4/ip_forward"] == "1"
    assert fk.sysctls["net/ipv6/conf/all/forwarding"] == "1"
    with pytest.raises(ConflictError):
        mgr.create_network(NetworkSpec("a"))
    with pytest.raises(UsageError):
        mgr.create_network(NetworkSpec("o", driver="overlay"))
    assert [r[-1] for r in fk.forward_rules] == ["ACCEPT"] * 4  # FORWARD DROP: in+out per net
    mgr.remove_network("a")
    mgr.remove_network("b")
    assert fk.forward_rules == [] and ("inet", "sdf") not in fk.tables
    assert not any(k[0] == "" and k[1].startswith("sdf") for k in fk.links)


def test_attach_addresses_routes_and_names(mgr: NetManager, fk: FakeKernel, tmp_path: Path) -> None:
    mgr.create_network(NetworkSpec("front"))
    mgr.create_network(NetworkSpec("back", internal=True))
    mgr.create_network(NetworkSpec("side"))
    ns = nsfile(tmp_path, "ns1")
    back = mgr.attach("c1", ns, "back", names=("one",))
    front = mgr.attach("c1", ns, "front", names=("one",), aliases=("web", "web"))
    side = mgr.attach("c1", ns, "side", names=("one",))
    assert (back.ifname, front.ifname, side.ifname) == ("eth0", "eth1", "eth2")
    assert not back.gateway and front.gateway and not side.gateway  # first non-internal wins
    peer = fk.links[(ns, "eth1")]
    assert peer.gateways == ("10.99.1.1",) and peer.addresses == ["10.99.1.2/24"]
    assert fk.links[(ns, "eth0")].gateways == ()
    assert front.aliases == ("web",)
    with pytest.raises(ConflictError):
        mgr.attach("c1", ns, "front")
    with pytest.raises(ConflictError):
        mgr.attach("c2", nsfile(tmp_path, "ns2"), "front", mac=front.mac)
    with pytest.raises(NotFoundError):
        mgr.attach("c2", ns, "nope")
    dns = json.loads((mgr.dir / "dns.json").read_text())
    names = {n["name"]: n for n in dns["networks"]}
    assert names["front"]["records"] == {"one": ["10.99.1.2"], "web": ["10.99.1.2"]}
    assert names["front"]["listen"] == ["10.99.1.1"]
    mgr.detach("c1", "back")
    assert ("", back.host_veth) not in fk.links
    c2 = mgr.attach("c2", nsfile(tmp_path, "ns2"), "back")
    assert c2.ipv4 == back.ipv4  # released addresses are reused


def test_publish_unpublish_and_conflicts(mgr: NetManager, fk: FakeKernel, tmp_path: Path) -> None:
    mgr.create_network(NetworkSpec("priv", internal=True))
    mgr.create_network(NetworkSpec("pub"))
    mgr.attach("c1", nsfile(tmp_path, "a"), "priv")
    with pytest.raises(UsageError, match="no IPv4 address"):
        mgr.publish("c1", ["18777:80"])
    att = mgr.attach("c1", nsfile(tmp_path, "a"), "pub")
    made = mgr.publish("c1", ["18777:80", "127.0.0.1:18778:53/udp"])
    assert [(b.container_ip, b.host_port, b.protocol) for b in made] == [
        (att.ipv4, 18777, "tcp"), (att.ipv4, 18778, "udp")]
    table = json.dumps(fk.tables[("inet", "sdf")])
    assert f'"dnat": {{"family": "ip", "addr": "{att.ipv4}", "port": 80}}' in table
    with pytest.raises(ConflictError):
        mgr.publish("c1", ["127.0.0.1:18777:81"])
    mgr.detach("c1")  # the last network goes: its ports go too
    assert mgr.published() == [] and '"dnat": {' not in json.dumps(fk.tables[("inet", "sdf")])


def test_restore_rebuilds_from_state(mgr: NetManager, fk: FakeKernel, tmp_path: Path) -> None:
    rec = mgr.create_network(NetworkSpec("keep", ipam=(IpamConfig(subnet="10.98.0.0/24"),)))
    live = nsfile(tmp_path, "live")
    dead = nsfile(tmp_path, "dead")
    mgr.attach("c1", live, "keep")
    mgr.attach("c2", dead, "keep")
    mgr.publish("c2", ["18779:80"])
    Path(dead).unlink()
    fk2 = FakeKernel(forward_drop=True)  # after a reboot: nothing in the kernel
    again = NetManager(tmp_path, fk2, pools=[Pool("10.99.0.0/16", 24)], link_prefix="sdf",
                       table="sdf", run_dns=False)
    again.restore()
    assert fk2.links[("", rec.bridge)].addresses == ["10.98.0.1/24"]
    assert [a.container_id for a in again.attachments()] == ["c1"]
    assert again.published() == [] and ("inet", "sdf") in fk2.tables
    assert len(fk2.forward_rules) == 2


def test_batched_attachments_reach_dns_records_when_flushed(mgr: NetManager, tmp_path: Path) -> None:
    mgr.create_network(NetworkSpec("app"))

    def names() -> set[str]:
        cfg = json.loads((tmp_path / "net" / "dns.json").read_text())
        return {n for net in cfg["networks"] for n in net["records"]}

    with mgr.batch():
        mgr.attach("c1" * 32, nsfile(tmp_path, "ns1"), "app", names=["web"])
        mgr.attach("c2" * 32, nsfile(tmp_path, "ns2"), "app", names=["db"])
        before = names() if (tmp_path / "net" / "dns.json").exists() else set()
        assert not {"web", "db"} & before  # held back while the batch lasts
        mgr.flush_dns()  # what a container's start does before it runs
        assert {"web", "db"} <= names()
        mgr.attach("c3" * 32, nsfile(tmp_path, "ns3"), "app", names=["cache"])
        assert "cache" not in names()
    assert {"web", "db", "cache"} <= names()  # the batch's end writes what is left
    mgr.flush_dns()  # nothing pending: a no-op
    assert {"web", "db", "cache"} <= names()


def test_two_managers_of_one_root_see_each_others_writes(mgr: NetManager, fk: FakeKernel, tmp_path: Path) -> None:
    other = NetManager(tmp_path, fk, pools=[Pool("10.99.0.0/16", 24)], link_prefix="sdf", table="sdf",
                       upstreams=[("127.0.0.1", 53)], run_dns=False)
    mgr.create_network(NetworkSpec("app"))
    assert other.attachments() == []  # read (and kept) before the other one writes
    for i in range(6):  # same-sized records, written back to back by the other manager
        mgr.attach(f"{i}" * 64, nsfile(tmp_path, f"ns{i}"), "app")
        if i % 2:
            mgr.detach(f"{i - 1}" * 64)
        detached = {k - 1 for k in range(1, i + 1, 2)}
        expected = [f"{k}" * 64 for k in range(i + 1) if k not in detached]
        assert [a.container_id for a in mgr.attachments()] == expected
        assert [a.container_id for a in other.attachments()] == expected
