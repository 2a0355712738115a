"""Published ports: syntax, conflicts, and real DNAT from 127.0.0.1, the host address and hairpin."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from netkit import Netns, root_only, sh

from stackd.errors import ConflictError, UsageError
from stackd.net import nat, ports
from stackd.net.manager import NetManager, NetworkSpec
from stackd.net.ports import PortSpec, parse_long, parse_short


def test_short_syntax() -> None:
    assert parse_short("80") == [PortSpec(80)]
    assert parse_short("8080:80") == [PortSpec(80, 8080)]
    assert parse_short("127.0.0.1:8080:80/udp") == [PortSpec(80, 8080, "127.0.0.1", "udp")]
    assert parse_short("127.0.0.1::80") == [PortSpec(80, 0, "127.0.0.1")]
    assert parse_short("[::1]:8080:80") == [PortSpec(80, 8080, "::1")]
    assert parse_short("9000-9002:8000-8002") == [PortSpec(8000, 9000), PortSpec(8001, 9001), PortSpec(8002, 9002)]
    assert parse_short("9000-9010:80") == [PortSpec(80, 9000)]
    for bad in ("0:80", "70000:80", "a:b", "1.2.3:80:80", "9000-9001:80-82", "80/icmp"):
        with pytest.raises(UsageError):
            parse_short(bad)


def test_long_syntax() -> None:
    assert parse_long({"target": 80, "published": "8080", "protocol": "udp"}) == [PortSpec(80, 8080, "", "udp")]
    assert parse_long({"target": 80, "host_ip": "127.0.0.1"}) == [PortSpec(80, 0, "127.0.0.1")]
    assert parse_long({"target": 80, "published": "8080-8081"}) == [PortSpec(80, 8080)]


def test_conflicts_with_own_records_and_the_host() -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    try:
        with pytest.raises(ConflictError, match="already in use"):
            ports.plan("c", [PortSpec(80, port, "127.0.0.1")], "10.0.0.2", "", [])
        with pytest.raises(ConflictError, match="already in use"):
            ports.plan("c", [PortSpec(80, port)], "10.0.0.2", "", [])  # 0.0.0.0 covers 127.0.0.1
    finally:
        held.close()
    mine = ports.PortBinding("other", "", 18555, "tcp", "10.0.0.3", 80)
    with pytest.raises(ConflictError, match="another stackd container"):
        ports.plan("c", [PortSpec(80, 18555, "127.0.0.1")], "10.0.0.2", "", [mine])
    assert ports.plan("c", [PortSpec(80, 18555, "", "udp")], "10.0.0.2", "", [mine])[0].host_port == 18555
    with pytest.raises(UsageError, match="::1"):
        ports.plan("c", [PortSpec(80, 18556, "::1")], "10.0.0.2", "fd00::2", [])


def test_ruleset_has_dnat_in_prerouting_and_output() -> None:
    cmds = nat.ruleset([nat.NatNetwork("br1", ("10.1.0.0/24",), False)],
                       [nat.Dnat("127.0.0.1", 8080, "tcp", "10.1.0.2", 80, "br1")], "t")
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    dn = [r for r in rules if any("dnat" in e for e in r["expr"])]
    assert {r["chain"] for r in dn} == {"prerouting", "output"}
    assert all(r["expr"][-1] == {"dnat": {"family": "ip", "addr": "10.1.0.2", "port": 80}} for r in dn)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("0.0.0.0", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def fetch(url: str, tries: int = 50) -> str:
    last: Exception | None = None
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.read().decode()
        except OSError as exc:  # the server may still be starting
            last = exc
            time.sleep(0.05)
    raise AssertionError(f"{url}: {last}")


def primary_address() -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
        return str(s.getsockname()[0])
    finally:
        s.close()


UDP_ECHO = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',5353))\n"
    "print('ready',flush=True)\n"
    "while True:\n d,a=s.recvfrom(100);s.sendto(b'echo:'+d,a)\n"
)


@root_only
def test_published_tcp_and_udp_reachable_then_closed(
    manager: NetManager, netns: Netns, tmp_path: Path
) -> None:
    manager.create_network(NetworkSpec("pub"))
    web = netns.new()
    client = netns.new()
    manager.attach("cid-web", netns.path(web), "pub", names=("web",))
    manager.attach("cid-client", netns.path(client), "pub", names=("client",))
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from the netns\n")
    netns.spawn(web, "busybox", "httpd", "-f", "-p", "80", "-h", str(www))
    echo = subprocess.Popen(["ip", "netns", "exec", web, sys.executable, "-c", UDP_ECHO],
                            stdout=subprocess.PIPE)
    netns.procs.append(echo)  # type: ignore[arg-type]
    assert echo.stdout is not None and echo.stdout.readline().strip() == b"ready"

    tcp, tcp_local, udp = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    made = manager.publish("cid-web", [f"{tcp}:80", f"127.0.0.1:{tcp_local}:80", f"{udp}:5353/udp"])
    assert [b.host_port for b in made] == [tcp, tcp_local, udp]
    host_ip = primary_address()
    assert fetch(f"http://127.0.0.1:{tcp}/") == "hello from the netns\n"
    assert fetch(f"http://{host_ip}:{tcp}/") == "hello from the netns\n"
    assert fetch(f"http://127.0.0.1:{tcp_local}/") == "hello from the netns\n"
    # hairpin: another container through the host's address
    r = netns.run(client, "timeout", "5", "busybox", "wget", "-q", "-O-", f"http://{host_ip}:{tcp}/")
    assert r.stdout == "hello from the netns\n", r.stderr
    r = netns.run(web, "timeout", "5", "busybox", "wget", "-q", "-O-", f"http://{host_ip}:{tcp}/")
    assert r.stdout == "hello from the netns\n", r.stderr  # its own published port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"ping", ("127.0.0.1", udp))
        assert s.recvfrom(100)[0] == b"echo:ping"
    # a second publish of the same port is refused before anything changes
    with pytest.raises(ConflictError):
        manager.publish("cid-client", [f"{tcp}:80"])
    manager.unpublish("cid-web")
    assert manager.published() == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{tcp}/", timeout=2)
    ports.probe("", tcp, "tcp")  # free again on the host
    assert str(tcp) not in sh("nft", "list", "table", "inet", manager.table).stdout
