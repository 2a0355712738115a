"""Fixtures for container tests: a registry serving a full busybox image, engines on tmp roots, leak checks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engine.images.conftest import Registry, run, skopeo_copy, start_registry, stop

ROOT = Path(__file__).resolve().parents[3]
STACKD = str(Path(sys.executable).parent / "stackd")
BUSYBOX = "/bin/busybox"
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runc") is None, reason="needs root and runc")


def runtimes() -> list[str]:
    """runc always; stackd-runtime too when it passes a smoke check (STACKD_TEST_RUNTIMES overrides)."""
    forced = os.environ.get("STACKD_TEST_RUNTIMES")
    if forced:
        return forced.split(",")
    out = ["runc"]
    rt = Path(sys.executable).parent / "stackd-runtime"
    try:
        ok = subprocess.run([str(rt), "features"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return [*out, "stackd-runtime"] if ok else out


def build_busybox(work: Path) -> Path:
    layout = work / "bb-layout"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:latest")
    bundle = work / "bb-bundle"
    run("umoci", "unpack", "--image", f"{layout}:latest", bundle)
    root = bundle / "rootfs"
    for d in ("bin", "etc", "tmp", "root", "home/app"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            (root / "bin" / a).symlink_to("busybox")
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    os.chmod(root / "tmp", 0o1777)
    os.chown(root / "home" / "app", 1000, 1000)
    run("umoci", "repack", "--image", f"{layout}:latest", bundle)
    run("umoci", "config", "--image", f"{layout}:latest", "--config.cmd", "sh", "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "--os", "linux",
        "--architecture", "amd64")
    shutil.rmtree(bundle)
    return layout


@dataclass
class Hub:
    registry: Registry
    config: Path  # registries.toml with a docker.io mirror


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("ctr-hub")
    layout = build_busybox(work)
    storage = work / "storage"
    storage.mkdir()
    reg = start_registry(work, storage)
    try:
        skopeo_copy(f"oci:{layout}:latest", f"docker://{reg.host}/library/busybox:latest", "--format", "v2s2")
        cfg = work / "registries.toml"
        cfg.write_text(f'[registry."docker.io"]\nmirrors = ["http://{reg.host}"]\n')
        yield Hub(reg, cfg)
    finally:
        stop(reg.proc)
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class World:
    """One test's roots and the environment for CLI subprocesses."""

    state: Path
    run: Path
    cgroup_parent: str
    env: dict[str, str]
    runtime: str

    @property
    def tag(self) -> str:
        """This world's nftables table and link prefix (never a real stackd's)."""
        return self.env["STACKD_NET_TABLE"]

    def engine(self, restore: bool = True):  # type: ignore[no-untyped-def]
        from stackd.engine.engine import Engine
        from stackd.engine.registry_config import load

        return Engine(self.state, self.run, runtime=self.runtime, cgroup_parent=self.cgroup_parent,
                      registries=load(self.env["STACKD_REGISTRIES_CONFIG"]), restore=restore,
                      net_table=self.tag, net_link_prefix=self.tag, net_pools=self.env["STACKD_NET_POOLS"])

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 60, env: dict[str, str] | None = None,
            check: bool = False) -> subprocess.CompletedProcess[bytes]:
        res = subprocess.run([STACKD, *args], input=input, capture_output=True,
                             timeout=timeout, env={**self.env, **(env or {})}, cwd=ROOT)
        if check and res.returncode != 0:
            raise AssertionError(f"stackd {' '.join(args)}: exit {res.returncode}: {res.stderr.decode()}")
        return res


def leaks(w: World) -> list[str]:
    """Mounts, cgroups, shims and bundles of this world still on the host."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp.startswith(str(w.run)) or mp.startswith(str(w.state)):
                out.append(f"mount {mp}")
    parent = w.cgroup_parent.lstrip("/")
    for ctrl in Path("/sys/fs/cgroup").iterdir():
        d = ctrl / parent
        if d.is_dir() and any(p.is_dir() for p in d.iterdir()):
            out.append(f"cgroup {d}: {[p.name[:12] for p in d.iterdir() if p.is_dir()]}")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(w.run).encode() in cmd and b"stackd.engine.shim" in cmd:
            out.append(f"shim process {pid}")
    for sub in ("containers", "shims", "netns"):
        d = w.run / sub
        if d.is_dir() and os.listdir(d):
            out.append(f"{sub} dirs {os.listdir(d)}")
    out += net_leaks(w, networks=False)
    return out


def net_leaks(w: World, *, networks: bool = True) -> list[str]:
    """veth pairs (and with `networks` bridges, the nft table, the DNS server) of this world."""
    out = []
    for name in os.listdir("/sys/class/net"):
        if name.startswith(w.tag) and (networks or name.startswith(w.tag + "v")):
            out.append(f"link {name}")
    if networks:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        if f" {w.tag}\n" in tables + "\n":
            out.append(f"nft table {w.tag}")
        if (w.state / "net" / "dns.pid").exists():
            out.append("DNS server")
    return out


def net_clean(w: World) -> None:
    """Remove this world's networks, nft table, DNS server and netns files."""
    try:
        from stackd.engine.engine import net_manager
        from stackd.net import dns_server

        m = net_manager(w.state, environ=w.env)
        try:
            for a in m.attachments():
                m.detach(a.container_id)
            for n in m.networks():
                m.remove_network(n.name)
        finally:
            dns_server.stop(w.state)
            m.kernel.close()
    except Exception as exc:
        print(f"network cleanup failed: {exc}", file=sys.stderr)
    for name in os.listdir("/sys/class/net"):
        if name.startswith(w.tag):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    subprocess.run(["nft", "delete", "table", "inet", w.tag], capture_output=True, check=False)
    d = w.run / "netns"
    if d.is_dir():
        for f in os.listdir(d):
            subprocess.run(["umount", "-l", str(d / f)], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                os.unlink(d / f)


def force_clean(w: World) -> None:
    """Remove whatever a failed test left: every container, then orphans by force."""
    try:
        eng = w.engine()
        for rec in eng.containers.store.list(internal=True):
            try:
                eng.containers.store.transition(rec.id, "removing")
            except Exception:
                pass
            eng.containers._release(rec.id, rec.runtime)
            eng.containers.store.delete(rec.id)
        from stackd.engine.containers_restore import restore

        restore(eng.containers)
    except Exception as exc:  # still try the raw cleanup below
        print(f"cleanup through the engine failed: {exc}", file=sys.stderr)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(w.run).encode() in cmd:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
    with open("/proc/self/mountinfo") as f:
        mps = [line.split()[4] for line in f]
    for mp in reversed(mps):
        if mp.startswith(str(w.run)) or mp.startswith(str(w.state)):
            subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
    parent = w.cgroup_parent.lstrip("/")
    for ctrl in Path("/sys/fs/cgroup").iterdir():
        d = ctrl / parent
        if d.is_dir():
            for p in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
                if p.is_dir():
                    try:
                        p.rmdir()
                    except OSError:
                        pass
            try:
                d.rmdir()
            except OSError:
                pass


@pytest.fixture(params=runtimes())
def rt_world(request: pytest.FixtureRequest, hub: Hub, tmp_path: Path) -> Iterator[World]:
    """A world per runtime (runc, and stackd-runtime when it works)."""
    yield from _world(request.param, hub, tmp_path)


@pytest.fixture
def world(hub: Hub, tmp_path: Path) -> Iterator[World]:
    """A world on runc."""
    yield from _world("runc", hub, tmp_path)


def _world(runtime: str, hub: Hub, tmp_path: Path) -> Iterator[World]:
    tag = uuid.uuid4().hex[:8]
    cg = f"/stackd-test-{tag}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKD_")}
    env.update(STACKD_STATE_ROOT=str(tmp_path / "state"), STACKD_RUN_ROOT=str(tmp_path / "run"),
               STACKD_REGISTRIES_CONFIG=str(hub.config), STACKD_RUNTIME=runtime,
               STACKD_CGROUP_PARENT=cg, PYTHONPATH=str(ROOT), STACKD_NET_TABLE=f"sdk{tag[:4]}",
               STACKD_NET_LINK_PREFIX=f"sdk{tag[:4]}", STACKD_NET_POOLS=f"10.216.{_worker() * 16}.0/20:24")
    w = World(tmp_path / "state", tmp_path / "run", cg, env, runtime)
    try:
        w.engine(restore=False).ensure_image("busybox")
        yield w
        assert not leaks(w), f"left behind: {leaks(w)}"
    finally:
        force_clean(w)
        net_clean(w)
    assert not net_leaks(w), f"left behind: {net_leaks(w)}"


def _worker() -> int:
    wk = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(wk[2:]) % 16 if wk[2:].isdigit() else 0
