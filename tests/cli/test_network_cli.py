"""`stackd network …` for real: bridges, nftables table, errors (one line, no traceback), filters."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackd.cli import main
from stackd.cli.network import net_manager
from stackd.net import dns_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

FORWARD_LOCK = "/tmp/stackd-tests-net-forward.lock"  # shared with tests/net (FORWARD policy flips)


def _worker() -> int:
    w = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(w[2:]) % 16 if w[2:].isdigit() else 0


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A state root, a test-only nft table, link prefix and address pool; everything removed after."""
    tag = "sdc" + secrets.token_hex(2)
    values = {"STACKD_STATE_ROOT": str(tmp_path / "state"), "STACKD_RUN_ROOT": str(tmp_path / "run"),
              "STACKD_NET_TABLE": tag,
              "STACKD_NET_LINK_PREFIX": tag, "STACKD_NET_POOLS": f"10.214.{_worker() * 16}.0/20:24"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    before = links()
    with open(FORWARD_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield {**values, "tag": tag}
        finally:
            m = net_manager(values)
            try:
                for a in m.attachments():
                    m.detach(a.container_id)
                for n in m.networks():
                    m.remove_network(n.name)
                dns_server.stop(m.root)
            finally:
                m.kernel.close()  # type: ignore[attr-defined]
            leaked = {n for n in links() - before if n.startswith(tag)}
            assert not leaked, f"leaked links {leaked}"
            assert tag not in nft_tables(), "leaked nftables table"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = run(capsys, *args)
    assert code == 0, err
    return out


def one_error(capsys: pytest.CaptureFixture[str], *args: str, code: int = 1) -> str:
    got, out, err = run(capsys, *args)
    assert got == code, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def addresses(link: str) -> list[str]:
    raw = subprocess.run(["ip", "-j", "addr", "show", "dev", link], capture_output=True, text=True,
                         check=True).stdout
    return [f"{a['local']}/{a['prefixlen']}" for i in json.loads(raw) for a in i["addr_info"]
            if a["family"] == "inet"]


def test_create_ls_inspect_rm_makes_and_removes_a_bridge(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    net_id = ok(capsys, "network", "create", "-l", "team=a", "web").strip()
    assert len(net_id) == 64 and int(net_id, 16) >= 0
    [info] = json.loads(ok(capsys, "network", "inspect", "web"))
    assert (info["Name"], info["Id"], info["Driver"], info["Scope"]) == ("web", net_id, "bridge", "local")
    assert info["Internal"] is False and info["EnableIPv6"] is False
    assert info["Labels"] == {"team": "a"} and info["Containers"] == {}
    [cfg] = info["IPAM"]["Config"]
    assert cfg["Subnet"].startswith("10.214.") and cfg["Gateway"].endswith(".1")
    bridge = info["Bridge"]
    assert bridge.startswith(env["tag"]) and bridge in links()
    assert addresses(bridge) == [f"{cfg['Gateway']}/24"]
    assert f"inet {env['tag']}" in nft_tables()

    out = ok(capsys, "network", "ls").splitlines()
    assert out[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    row = next(r for r in out if " web " in r)
    assert row.split() == [net_id[:12], "web", "bridge", "local"]
    assert out[0].index("NAME") == row.index("web")  # aligned columns
    objs = [json.loads(ln) for ln in ok(capsys, "network", "ls", "--format", "json").splitlines()]
    web = next(o for o in objs if o["Name"] == "web")
    assert web["ID"] == net_id[:12] and web["Labels"] == "team=a" and web["Internal"] == "false"
    assert {o["Name"] for o in objs} == {"web", "host", "none"}
    assert ok(capsys, "network", "ls", "-q", "--filter", "label=team=a").split() == [net_id[:12]]
    assert ok(capsys, "network", "ls", "--format", "{{.Name}}", "-f", "type=custom").split() == ["web"]
    assert ok(capsys, "network", "inspect", "-f", "{{.Id}}", net_id[:10]).strip() == net_id

    assert ok(capsys, "network", "rm", "web").strip() == "web"
    assert bridge not in links()
    assert env["tag"] not in nft_tables()
    assert "web" not in ok(capsys, "network", "ls")


def test_internal_network_with_custom_subnet_and_options(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    sub = f"10.215.{_worker()}.0/24"
    gw = f"10.215.{_worker()}.254"
    name = f"{env['tag']}x"
    ok(capsys, "network", "create", "--internal", "--subnet", sub, "--gateway", gw,
       "--ip-range", sub.replace(".0/24", ".128/25"), "--aux-address", f"router={sub[:-5]}.10",
       "-o", f"com.docker.network.bridge.name={name}", "-o", "com.docker.network.driver.mtu=1400",
       "--attachable", "back")
    [info] = json.loads(ok(capsys, "network", "inspect", "back"))
    assert info["Internal"] is True and info["Attachable"] is True
    assert info["IPAM"]["Config"] == [{"Subnet": sub, "Gateway": gw, "IPRange": sub.replace(".0/24", ".128/25"),
                                       "AuxiliaryAddresses": {"router": f"{sub[:-5]}.10"}}]
    assert info["Options"]["com.docker.network.driver.mtu"] == "1400"
    assert info["Bridge"] == name and addresses(name) == [f"{gw}/24"]
    assert Path(f"/sys/class/net/{name}/mtu").read_text().strip() == "1400"
    # the internal network's bridge is in stackd's table, with no masquerade for its subnet
    rules = subprocess.run(["nft", "list", "table", "inet", env["tag"]], capture_output=True, text=True).stdout
    assert name in rules and "masquerade" not in rules
    # an overlapping subnet is refused
    msg = one_error(capsys, "network", "create", "--subnet", sub, "other")
    assert "overlaps" in msg
    ok(capsys, "network", "rm", "back")
    assert name not in links()


def test_name_conflict_unknown_and_bad_flags_are_one_line_errors(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "network", "create", "dup")
    assert "network with name dup already exists" in one_error(capsys, "network", "create", "dup")
    assert one_error(capsys, "network", "rm", "nope") == "error: network nope not found"
    code, out, err = run(capsys, "network", "rm", "-f", "nope")
    assert code == 0 and out == err == ""
    assert "pre-defined" in one_error(capsys, "network", "rm", "host")
    assert "pre-defined" in one_error(capsys, "network", "create", "none")
    assert "it should be 10.9.9.0/24" in one_error(capsys, "network", "create", "--subnet", "10.9.9.9/24", "x", code=2)
    assert "no matching subnet" in one_error(capsys, "network", "create", "--gateway", "10.9.9.1", "x", code=2)
    assert "invalid network name" in one_error(capsys, "network", "create", "bad name", code=2)
    assert "not supported" in one_error(capsys, "network", "create", "-d", "overlay", "x", code=2)
    assert "invalid filter" in one_error(capsys, "network", "ls", "--filter", "color=red", code=2)
    # inspect prints what it found, then the miss; rm goes on past a miss and fails at the end
    code, out, err = run(capsys, "network", "inspect", "dup", "nope")
    assert code == 1 and [n["Name"] for n in json.loads(out)] == ["dup"] and "nope not found" in err
    code, out, err = run(capsys, "network", "rm", "nope", "dup")
    assert code == 1 and out.split() == ["dup"] and "nope not found" in err
    assert "dup" not in ok(capsys, "network", "ls")


def test_rm_refuses_a_network_in_use_and_prune_keeps_it(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    ns = f"{env['tag']}ns"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    m = net_manager(env)
    m.run_dns = False  # no DNS server needed for an attachment record
    try:
        ok(capsys, "network", "create", "-l", "keep=no", "used")
        ok(capsys, "network", "create", "-l", "keep=no", "idle1")
        ok(capsys, "network", "create", "-l", "keep=yes", "idle2")
        att = m.attach("c0ffee" * 10 + "abcd", f"/run/netns/{ns}", "used", names=("alpha",))
        msg = one_error(capsys, "network", "rm", "used")
        assert "in use by 1 container(s) (alpha)" in msg
        [info] = json.loads(ok(capsys, "network", "inspect", "used"))
        [(cid, ep)] = info["Containers"].items()
        assert cid == att.container_id and ep["Name"] == "alpha"
        assert ep["IPv4Address"] == f"{att.ipv4}/24" and ep["MacAddress"] == att.mac
        assert ok(capsys, "network", "ls", "-q", "-f", "dangling=true").split() == [
            json.loads(ok(capsys, "network", "inspect", "idle1"))[0]["Id"][:12],
            json.loads(ok(capsys, "network", "inspect", "idle2"))[0]["Id"][:12]]
        out = ok(capsys, "network", "prune", "-f", "--filter", "label=keep=no")
        assert out.splitlines() == ["Deleted Networks:", "idle1"]
        out = ok(capsys, "network", "prune", "-f")
        assert out.splitlines() == ["Deleted Networks:", "idle2"]
        names = [o.split()[1] for o in ok(capsys, "network", "ls").splitlines()[1:]]
        assert names == ["host", "none", "used"]
        m.detach(att.container_id)
        assert ok(capsys, "network", "rm", "used").strip() == "used"
    finally:
        m.kernel.close()  # type: ignore[attr-defined]
        subprocess.run(["ip", "netns", "del", ns])


def test_prune_never_removes_the_default_bridge(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    m = net_manager(env)
    try:
        default = m.ensure_default()
    finally:
        m.kernel.close()  # type: ignore[attr-defined]
    assert ok(capsys, "network", "prune", "-f") == ""
    assert "bridge" in ok(capsys, "network", "ls", "--format", "{{.Name}}").split()
    assert "pre-defined" in one_error(capsys, "network", "rm", "bridge")
    assert "pre-defined" in one_error(capsys, "network", "create", "bridge")
    assert default.bridge in links()
    assert ok(capsys, "network", "ls", "-q", "-f", "type=builtin").split() == [
        json.loads(ok(capsys, "network", "inspect", n))[0]["Id"][:12] for n in ("bridge", "host", "none")]


def test_subprocess_exit_codes_and_lean_imports(env: dict[str, str]) -> None:
    envs = {**os.environ, **{k: v for k, v in env.items() if k != "tag"}}
    code = "import sys; from stackd.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code, "network", "ls"],
                       capture_output=True, text=True, env=envs, timeout=60)
    assert r.returncode == 0 and r.stdout.splitlines()[0].split()[:3] == ["NETWORK", "ID", "NAME"]
    heavy = [ln for ln in r.stderr.splitlines() if any(f" {m}" in ln for m in ("pyroute2", "trio", "httpx", "pydantic"))]
    assert not heavy, heavy
    r = subprocess.run([sys.executable, "-c", code, "network", "rm", "ghost"], capture_output=True,
                       text=True, env=envs, timeout=60)
    assert r.returncode == 1 and r.stderr == "error: network ghost not found\n"


def test_connect_and_disconnect_a_running_container(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """A container record (running, with the netns a container start would have) joins a second
    network with an alias and a fixed address, and leaves it again; the veth is real."""
    from stackd.engine.container_config import ContainerConfig
    from stackd.engine.containers_store import ContainerRecord, ContainerStore

    ns = f"{env['tag']}ns"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    m = net_manager(env)
    m.run_dns = False
    cid = secrets.token_hex(32)
    try:
        ok(capsys, "network", "create", "--subnet", f"10.215.{16 + _worker()}.0/24", "extra")
        ok(capsys, "network", "create", "front")
        m.attach(cid, f"/run/netns/{ns}", "front", names=("app",))  # what `container run` did
        store = ContainerStore(Path(env["STACKD_STATE_ROOT"]))
        cfg = ContainerConfig(name="app", image="busybox", netns_path=f"/run/netns/{ns}")
        store.insert(ContainerRecord(cid, "app", "busybox", "sha256:" + "0" * 64, cfg, "running", "runc"))
        ok(capsys, "network", "connect", "--alias", "db", "--ip", f"10.215.{16 + _worker()}.7", "extra", "app")
        att = next(a for a in m.attachments(cid) if a.network == "extra")
        assert att.ipv4 == f"10.215.{16 + _worker()}.7" and att.aliases == ("db",) and att.ifname == "eth1"
        assert "app" in att.names and not att.gateway  # the first network keeps the default route
        inner = subprocess.run(["ip", "netns", "exec", ns, "ip", "-br", "addr", "show", "eth1"],
                               capture_output=True, text=True).stdout
        assert f"10.215.{16 + _worker()}.7/24" in inner
        [info] = json.loads(ok(capsys, "network", "inspect", "extra"))
        assert info["Containers"][cid]["Name"] == "app"
        assert "already attached" in one_error(capsys, "network", "connect", "extra", "app")
        assert "no such container" in one_error(capsys, "network", "connect", "extra", "ghost")
        ok(capsys, "network", "disconnect", "extra", cid[:12])
        assert [a.network for a in m.attachments(cid)] == ["front"]
        assert "eth1" not in subprocess.run(["ip", "netns", "exec", ns, "ip", "-br", "link"],
                                            capture_output=True, text=True).stdout
        assert "not attached" in one_error(capsys, "network", "disconnect", "extra", "app")
        store.update(cid, status="exited")  # a stopped container is connected too (its netns stays)
        ok(capsys, "network", "connect", "extra", "app")
        assert [n.network for n in store.get(cid).config.networks] == ["extra"]  # recorded for restarts
        ok(capsys, "network", "disconnect", "extra", "app")
        assert store.get(cid).config.networks == ()
        store.delete(cid)
        ok(capsys, "network", "disconnect", "-f", "front", "app")  # the record is gone: by endpoint name
        assert m.attachments(cid) == []
    finally:
        m.kernel.close()  # type: ignore[attr-defined]
        subprocess.run(["ip", "netns", "del", ns])
