"""Docker-like host: iptables FORWARD policy DROP and br_netfilter, and stackd traffic still flows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from netkit import Netns, forward_rules, root_only, sh, worker_pool

from stackd.net import nat
from stackd.net.manager import NetManager, NetworkSpec

pytestmark = root_only

BRNF = "/proc/sys/net/bridge/bridge-nf-call-iptables"


@pytest.fixture
def docker_like(forward_policy_lock: None) -> Iterator[None]:
    """FORWARD DROP + bridge-nf-call-iptables=1, restoring the host's own settings afterwards."""
    policy = "DROP" if "-P FORWARD DROP" in forward_rules() else "ACCEPT"
    if not os.path.exists(BRNF):
        sh("modprobe", "br_netfilter")
    if not os.path.exists(BRNF):
        pytest.skip("br_netfilter is not available")
    with open(BRNF) as f:
        brnf = f.read().strip()
    try:
        sh("iptables", "-w", "-P", "FORWARD", "DROP", check=True)
        with open(BRNF, "w") as f:
            f.write("1")
        yield
    finally:
        sh("iptables", "-w", "-P", "FORWARD", policy)
        with open(BRNF, "w") as f:
            f.write(brnf)


@pytest.fixture
def outside(netns: Netns, tag: str) -> Iterator[tuple[str, str]]:
    """A namespace standing for the outside world, routed through the host: (name, its address)."""
    base = worker_pool().subnets().__next__().network_address + (63 << 8) + 252
    host_ip, ext_ip = str(base + 1), str(base + 2)
    ns = netns.new()
    host_end = f"{tag}ext"
    sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns, check=True)
    try:
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_end, check=True)
        sh("ip", "link", "set", host_end, "up", check=True)
        netns.run(ns, "ip", "addr", "add", f"{ext_ip}/30", "dev", "eth0")
        netns.run(ns, "ip", "link", "set", "eth0", "up")
        netns.run(ns, "ip", "link", "set", "lo", "up")
        netns.run(ns, "ip", "route", "add", "default", "via", host_ip)
        yield ns, ext_ip
    finally:
        sh("ip", "link", "del", host_end)


def test_traffic_flows_despite_forward_drop(
    docker_like: None, manager: NetManager, netns: Netns, outside: tuple[str, str], tmp_path: Path
) -> None:
    ext, ext_ip = outside
    manager.create_network(NetworkSpec("dk"))
    a = netns.new()
    b = netns.new()
    manager.attach("cid-a", netns.path(a), "dk")
    ip_b = manager.attach("cid-b", netns.path(b), "dk").ipv4
    assert f"--comment \"{manager.table}:" in forward_rules()

    def flows() -> bool:
        same = netns.run(a, "busybox", "ping", "-c1", "-W2", ip_b).returncode == 0  # bridged
        out = netns.run(a, "busybox", "ping", "-c1", "-W2", ext_ip).returncode == 0  # NAT out
        return same and out

    assert flows()
    # published port reached from outside (eth-side -> bridge, DNAT, FORWARD)
    (tmp_path / "index.html").write_text("through FORWARD DROP\n")
    netns.spawn(b, "busybox", "httpd", "-f", "-p", "80", "-h", str(tmp_path))
    port = 18000 + os.getpid() % 1000
    manager.publish("cid-b", [f"{port}:80"])
    host_ip = ext_ip.rsplit(".", 1)[0] + "." + str(int(ext_ip.rsplit(".", 1)[1]) - 1)
    r = sh("ip", "netns", "exec", ext, "sh", "-c",
           f"for i in 1 2 3 4 5 6 7 8 9 10; do timeout 3 busybox wget -q -O- http://{host_ip}:{port}/ && exit 0; sleep 0.1; done; exit 1")
    assert r.returncode == 0 and r.stdout == "through FORWARD DROP\n", r.stderr
    # without stackd's FORWARD accepts the same traffic is dropped: the test is meaningful
    nat.sync_forward_accepts(manager.kernel, [], manager.table)
    assert netns.run(a, "busybox", "ping", "-c1", "-W1", ip_b).returncode != 0
    manager.restore()
    assert flows()
