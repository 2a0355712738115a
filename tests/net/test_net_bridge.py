"""Real bridges, veths and the DNS server: names, isolation, internal networks, forwarding, restart."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from netkit import Netns, container_resolv, links, root_only, sh

from stackd.errors import ConflictError
from stackd.net import dns
from stackd.net.manager import IpamConfig, NetManager, NetworkSpec

pytestmark = root_only


def nslookup(ns: Netns, name: str, host: str) -> list[str]:
    r = ns.run(name, "busybox", "nslookup", host)
    if r.returncode != 0:
        return []
    lines = r.stdout.split("Name:", 1)[-1].splitlines() if "Name:" in r.stdout else []
    return [ln.split()[-1] for ln in lines if ln.startswith("Address")]


def two_on(manager: NetManager, netns: Netns, network: str) -> tuple[str, str]:
    a = netns.new(container_resolv(manager, network))
    b = netns.new(container_resolv(manager, network))
    manager.attach("cid-a", netns.path(a), network, names=("alpha", "hosta", "web"), aliases=("db",))
    manager.attach("cid-b", netns.path(b), network, names=("beta", "hostb", "web"), aliases=("cache",))
    return a, b


def test_two_on_one_network_reach_each_other_by_names(manager: NetManager, netns: Netns) -> None:
    rec = manager.create_network(NetworkSpec("front"))
    a, b = two_on(manager, netns, "front")
    ip_a, ip_b = (x.ipv4 for x in manager.attachments())
    assert nslookup(netns, a, "beta") == [ip_b]  # container name
    assert nslookup(netns, a, "hostb") == [ip_b]  # hostname
    assert nslookup(netns, b, "db") == [ip_a]  # alias
    assert nslookup(netns, b, "alpha.front") == [ip_a]  # <name>.<network>
    assert sorted(nslookup(netns, a, "web")) == sorted([ip_a, ip_b])  # service: all replicas
    assert netns.run(a, "busybox", "ping", "-c1", "-W2", "cache").returncode == 0
    r = netns.run(a, "busybox", "nslookup", "nosuchservice")
    assert "NXDOMAIN" in r.stdout + r.stderr
    # a default route via the gateway, MTU and loopback
    route = netns.run(a, "ip", "route").stdout
    assert f"default via {rec.subnets[0].gateway}" in route
    assert "UP" in netns.run(a, "ip", "-br", "link", "show", "lo").stdout


def test_round_robin_and_reverse_lookup(manager: NetManager, netns: Netns) -> None:
    manager.create_network(NetworkSpec("rr"))
    a, _b = two_on(manager, netns, "rr")
    ip_a = manager.attachments("cid-a")[0].ipv4
    firsts = {nslookup(netns, a, "web")[0] for _ in range(4)}
    assert len(firsts) == 2
    r = netns.run(a, "busybox", "nslookup", ip_a)
    assert "alpha.rr" in r.stdout


def test_different_networks_cannot_reach_each_other(manager: NetManager, netns: Netns) -> None:
    manager.create_network(NetworkSpec("one"))
    manager.create_network(NetworkSpec("two"))
    a = netns.new(container_resolv(manager, "one"))
    b = netns.new(container_resolv(manager, "two"))
    manager.attach("cid-a", netns.path(a), "one", names=("alpha",))
    att_b = manager.attach("cid-b", netns.path(b), "two", names=("beta",))
    assert nslookup(netns, a, "beta") == []  # not visible in one's DNS
    assert netns.run(a, "busybox", "ping", "-c1", "-W1", att_b.ipv4).returncode != 0
    # but each reaches its own gateway
    assert netns.run(a, "busybox", "ping", "-c1", "-W2", manager.network("one").gateway(4)).returncode == 0


def test_internal_network_has_no_route_out(manager: NetManager, netns: Netns) -> None:
    manager.create_network(NetworkSpec("priv", internal=True))
    a, _b = two_on(manager, netns, "priv")
    assert "default" not in netns.run(a, "ip", "route").stdout
    assert netns.run(a, "busybox", "ping", "-c1", "-W1", "192.0.2.2").returncode != 0
    ip_b = manager.attachments("cid-b")[0].ipv4
    assert netns.run(a, "busybox", "ping", "-c1", "-W2", ip_b).returncode == 0
    assert nslookup(netns, a, "beta") == [ip_b]


def test_custom_ipam_static_address_and_conflicts(manager: NetManager, netns: Netns, tag: str) -> None:
    rec = manager.create_network(NetworkSpec(
        "static", ipam=(IpamConfig(subnet="10.213.250.0/24", gateway="10.213.250.254",
                                   ip_range="10.213.250.128/25", aux_addresses={"r": "10.213.250.130"}),),
        options={"com.docker.network.driver.mtu": "1400", "com.docker.network.bridge.name": tag + "x"},
    ))
    assert rec.bridge == tag + "x" and rec.mtu == 1400
    a = netns.new()
    b = netns.new()
    att = manager.attach("cid-a", netns.path(a), "static", mac="02:42:0a:00:00:09")
    assert att.ipv4 == "10.213.250.128"
    with pytest.raises(ConflictError):
        manager.attach("cid-b", netns.path(b), "static", ipv4="10.213.250.128")
    att_b = manager.attach("cid-b", netns.path(b), "static", ipv4="10.213.250.7")
    assert att_b.ipv4 == "10.213.250.7"
    link = netns.run(a, "ip", "link", "show", "eth0").stdout
    assert "mtu 1400" in link and "02:42:0a:00:00:09" in link
    with pytest.raises(ConflictError):
        manager.create_network(NetworkSpec("overlap", ipam=(IpamConfig(subnet="10.213.250.0/25"),)))


@pytest.fixture
def upstream() -> Iterator[tuple[str, int]]:
    """A resolver on loopback answering external.example with 203.0.113.7."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = s.recvfrom(4096)
            except TimeoutError:
                continue
            q = dns.parse_query(data)
            if q.name == "external.example":
                answers = ["203.0.113.7"] if q.qtype == dns.A else []
                s.sendto(dns.build_response(q, answers), addr)
            else:
                s.sendto(dns.build_response(q, [], rcode=dns.NXDOMAIN), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield s.getsockname()
    finally:
        stop.set()
        t.join()
        s.close()


def test_dns_forwards_other_names_upstream(
    make_manager: Callable[..., NetManager], netns: Netns, upstream: tuple[str, int]
) -> None:
    manager = make_manager(upstreams=[upstream])
    manager.create_network(NetworkSpec("fwd"))
    a = netns.new(container_resolv(manager, "fwd"))
    manager.attach("cid-a", netns.path(a), "fwd", names=("alpha",))
    assert nslookup(netns, a, "external.example") == ["203.0.113.7"]
    r = netns.run(a, "busybox", "nslookup", "missing.example")
    assert "NXDOMAIN" in r.stdout + r.stderr


def test_engine_restart_keeps_networks_addresses_and_dns(
    make_manager: Callable[..., NetManager], netns: Netns
) -> None:
    first = make_manager()
    first.create_network(NetworkSpec("keep"))
    a, b = two_on(first, netns, "keep")
    ip_b = first.attachments("cid-b")[0].ipv4
    from stackd.net import dns_server

    dns_server.stop(first.root)  # the engine and its DNS server go away
    del first
    second = make_manager()  # a new engine process re-creates its objects from state
    second.restore()
    assert [n.name for n in second.networks()] == ["keep"]
    assert second.attachments("cid-b")[0].ipv4 == ip_b
    assert nslookup(netns, a, "beta") == [ip_b]
    assert netns.run(a, "busybox", "ping", "-c1", "-W2", ip_b).returncode == 0
    # a netns that went away (its container died with the engine down) is released on restore
    assert sh("ip", "netns", "del", b).returncode == 0
    second.restore()
    assert [x.container_id for x in second.attachments()] == ["cid-a"]
    c = netns.new()
    assert second.attach("cid-c", netns.path(c), "keep").ipv4 == ip_b


def test_remove_network_in_use_is_refused_and_removal_cleans(manager: NetManager, netns: Netns) -> None:
    rec = manager.create_network(NetworkSpec("gone"))
    a = netns.new()
    manager.attach("cid-a", netns.path(a), "gone")
    with pytest.raises(ConflictError, match="active endpoints"):
        manager.remove_network("gone")
    manager.detach("cid-a")
    assert "eth0" not in netns.run(a, "ip", "-br", "link").stdout
    manager.remove_network("gone")
    assert rec.bridge not in links()


def test_ipv6_network_addresses_and_aaaa(manager: NetManager, netns: Netns) -> None:
    rec = manager.create_network(NetworkSpec("six", enable_ipv6=True))
    gw6 = rec.gateway(6)
    assert gw6.startswith("fd")
    a, b = two_on(manager, netns, "six")
    ip6_b = manager.attachments("cid-b")[0].ipv6
    assert ip6_b and ip6_b in netns.run(b, "ip", "-6", "addr").stdout
    assert f"default via {gw6}" in netns.run(a, "ip", "-6", "route").stdout
    assert netns.run(a, "busybox", "ping", "-6", "-c1", "-W2", ip6_b).returncode == 0
    assert ip6_b in nslookup(netns, a, "beta")


def test_container_on_two_networks_resolves_both(manager: NetManager, netns: Netns) -> None:
    manager.create_network(NetworkSpec("fe"))
    manager.create_network(NetworkSpec("be"))
    app = netns.new(container_resolv(manager, "fe"))
    web = netns.new(container_resolv(manager, "fe"))
    db = netns.new(container_resolv(manager, "be"))
    manager.attach("cid-app", netns.path(app), "fe", names=("app",))
    manager.attach("cid-app", netns.path(app), "be", names=("app",))
    ip_web = manager.attach("cid-web", netns.path(web), "fe", names=("web",)).ipv4
    ip_db = manager.attach("cid-db", netns.path(db), "be", names=("db",)).ipv4
    assert nslookup(netns, app, "web") == [ip_web]
    assert nslookup(netns, app, "db") == [ip_db]  # through fe's server, from be's records
    assert nslookup(netns, web, "db") == []  # web is not on be
    assert netns.run(app, "busybox", "ping", "-c1", "-W2", "db").returncode == 0


TCP_QUERY = """
import socket, struct, sys
sys.path.insert(0, sys.argv[3])
from stackd.net import dns
q = dns.build_query(sys.argv[2], dns.A, qid=9)
s = socket.create_connection((sys.argv[1], 53), timeout=5)
s.sendall(struct.pack("!H", len(q)) + q)
n = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
r = dns.parse_response(s.recv(n, socket.MSG_WAITALL))
print(r.id, r.rcode, " ".join(a for _, a in r.answers))
"""


def test_dns_over_tcp(manager: NetManager, netns: Netns) -> None:
    import sys
    from pathlib import Path

    import stackd

    rec = manager.create_network(NetworkSpec("tcpdns"))
    a, _b = two_on(manager, netns, "tcpdns")
    ip_b = manager.attachments("cid-b")[0].ipv4
    src = str(Path(stackd.__file__).parents[1])
    r = netns.run(a, sys.executable, "-c", TCP_QUERY, rec.gateway(4), "beta", src)
    assert r.stdout.split() == ["9", "0", ip_b], r.stderr
