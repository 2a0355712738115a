"""Containers on networks for real: names and aliases through the DNS server, isolation, internal
networks, `container:` mode, and an engine restart that keeps addresses and names working."""

from __future__ import annotations

import json
import os
import signal

from tests.engine.containers.conftest import World


def run(w: World, *args: str, check: bool = True) -> str:
    return w.cli("container", "run", *args, check=check).stdout.decode()


def sh(w: World, name: str, script: str) -> tuple[int, str]:
    res = w.cli("container", "exec", name, "sh", "-c", script)
    return res.returncode, (res.stdout + res.stderr).decode()


# busybox-static (glibc) segfaults in wget and in name lookups of ping/nc, so HTTP goes through
# nc and names through busybox's own resolver (nslookup), then the address is used.
def via(name: str) -> str:
    return f"$(nslookup {name} | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -1)"


def get(host: str, port: int = 80, path: str = "/", wait: int = 3) -> str:
    return f"printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w {wait} {host} {port}"


def inspect(w: World, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(w.cli("container", "inspect", name, check=True).stdout)[0]  # type: ignore[no-any-return]


def test_ctr_net_names_aliases_and_isolation(world: World) -> None:
    w = world
    w.cli("network", "create", "front", check=True)
    w.cli("network", "create", "back", check=True)
    try:
        run(w, "-d", "--name", "web", "--network", "front", "--network-alias", "www", "busybox",
            "sh", "-c", "echo hello-web > /tmp/index.html; httpd -f -p 80 -h /tmp")
        run(w, "-d", "--name", "client", "--network", "front", "busybox", "sleep", "300")
        run(w, "-d", "--name", "other", "--network", "back", "busybox", "sleep", "300")
        web_ip = inspect(w, "web")["NetworkSettings"]["Networks"]["front"]["IPAddress"]
        assert web_ip
        code, out = sh(w, "client", "nslookup web")
        assert code == 0 and web_ip in out, out
        code, out = sh(w, "client", get(via("web")) + " && " + get(via("www")))
        assert code == 0 and out.count("hello-web") == 2, out
        code, out = sh(w, "client", f"ping -c1 -W2 {via('www')}")
        assert code == 0, out
        code, out = sh(w, "client", "cat /etc/resolv.conf")
        assert "nameserver " in out and "ndots:0" in out, out
        # another network: no name, no route to the address
        code, out = sh(w, "other", "nslookup web")
        assert code != 0 or web_ip not in out, out
        code, out = sh(w, "other", get(web_ip, wait=2))
        assert code != 0 and "hello-web" not in out, out
        # an engine restart (the DNS server died with it) keeps addresses and names working
        pid = int((w.state / "net" / "dns.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        w.cli("container", "ls", check=True)  # the next engine restores the network layer
        assert inspect(w, "web")["NetworkSettings"]["Networks"]["front"]["IPAddress"] == web_ip
        code, out = sh(w, "client", get(via("www")))
        assert code == 0 and "hello-web" in out, out
    finally:
        w.cli("container", "rm", "-f", "web", "client", "other")
        w.cli("network", "rm", "front", "back")


def test_ctr_net_internal_default_bridge_and_container_mode(world: World) -> None:
    w = world
    w.cli("network", "create", "--internal", "inner", check=True)
    try:
        run(w, "-d", "--name", "in", "--network", "inner", "busybox", "sleep", "300")
        code, out = sh(w, "in", "ip route; ping -c1 -W1 192.0.2.1")
        assert "default" not in out and code != 0, out
        # the default bridge: an address and a default route, host resolvers, no name resolution
        run(w, "-d", "--name", "a", "--add-host", "db.local:10.9.8.7", "--dns-search", "example.org",
            "busybox", "sh", "-c", "echo shared > /tmp/i.html; httpd -f -p 8080 -h /tmp")
        ip = inspect(w, "a")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        code, out = sh(w, "a", "ip route; cat /etc/hosts /etc/resolv.conf")
        assert "default via" in out and "10.9.8.7\tdb.local" in out and "search example.org" in out, out
        assert ip in out
        # container:a shares the netns (same address, a's loopback)
        run(w, "-d", "--name", "b", "--network", "container:a", "busybox", "sleep", "300")
        code, out = sh(w, "b", "ip -4 addr; " + get("127.0.0.1", 8080, "/i.html"))
        assert code == 0 and ip in out and "shared" in out, out
        none = run(w, "--rm", "--network", "none", "busybox", "ip", "-o", "link")
        assert "lo" in none and "eth0" not in none, none
    finally:
        w.cli("container", "rm", "-f", "in", "b", "a")
        w.cli("network", "rm", "inner")
    assert not (w.run / "netns").exists() or os.listdir(w.run / "netns") == []


def test_ctr_net_connect_is_recorded_and_reattached_after_the_netns_is_lost(world: World) -> None:
    w = world
    w.cli("network", "create", "extra", check=True)
    try:
        run(w, "-d", "--name", "c", "--stop-signal", "KILL", "busybox", "sleep", "300")
        w.cli("network", "connect", "--alias", "side", "extra", "c", check=True)
        code, out = sh(w, "c", "ip -o -4 addr")
        assert code == 0 and "eth0" in out and "eth1" in out, out
        w.cli("container", "stop", "c", check=True)
        # a reboot empties the run root: the netns goes, the network records drop its endpoints
        from stackd.engine.containers_net import delete_netns

        eng = w.engine()
        cid = eng.containers.get("c").id
        delete_netns(eng.containers.run_root / "netns" / cid)
        eng.networks.restore()
        assert eng.networks.attachments(cid) == []
        eng.close()
        w.cli("container", "start", "c", check=True)
        code, out = sh(w, "c", "ip -o -4 addr")
        assert code == 0 and "eth0" in out and "eth1" in out, out
        code, out = sh(w, "c", "cat /etc/hosts")
        assert cid[:12] in out, out
        w.cli("network", "disconnect", "extra", "c", check=True)
        code, out = sh(w, "c", "ip -o link")
        assert "eth1" not in out, out
    finally:
        w.cli("container", "rm", "-f", "c")
        w.cli("network", "rm", "extra")


def test_ctr_net_rename_moves_the_dns_name(world: World) -> None:
    """A recreate renames the new container into place: its DNS name must follow the rename."""
    w = world
    w.cli("network", "create", "ren", check=True)
    try:
        run(w, "-d", "--name", "tmp_app-1", "--network", "ren", "busybox", "sleep", "300")
        run(w, "-d", "--name", "peer", "--network", "ren", "busybox", "sleep", "300")
        ip = inspect(w, "tmp_app-1")["NetworkSettings"]["Networks"]["ren"]["IPAddress"]
        w.cli("container", "rename", "tmp_app-1", "app-1", check=True)
        code, out = sh(w, "peer", "nslookup app-1")
        assert code == 0 and ip in out, out
        code, out = sh(w, "peer", "nslookup tmp_app-1")
        assert code != 0 or ip not in out, out
    finally:
        w.cli("container", "rm", "-f", "app-1", "tmp_app-1", "peer")
        w.cli("network", "rm", "ren")
