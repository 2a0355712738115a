"""Real containers from generated bundles, under runc and stackd-runtime, checked from inside."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stackd.engine.bundle import BundleOptions, write_bundle
from stackd.engine.container_config import (
    ContainerConfig,
    ImageConfig,
    MountConfig,
    Resources,
    Ulimit,
)

pytestmark = pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
STACKD_RUNTIME = str(Path(__file__).resolve().parents[3] / ".venv/bin/stackd-runtime")
DOCKER_DEFAULT_CAPEFF = "00000000a80425fb"


def _stackd_runtime_problem() -> str:
    try:
        p = subprocess.run([STACKD_RUNTIME, "--version"], capture_output=True, text=True, timeout=20)
    except OSError as e:
        return f"stackd-runtime is not installed ({e})"
    if p.returncode != 0:
        return f"stackd-runtime --version fails (rc {p.returncode}): {p.stderr.strip()[:200]}"
    return ""


@pytest.fixture(params=["runc", "stackd-runtime"])
def runtime(request) -> str:
    if request.param == "runc":
        return "runc"
    problem = _stackd_runtime_problem()
    if problem:
        pytest.skip(f"stackd-runtime not functional yet: {problem}")
    return STACKD_RUNTIME


@pytest.fixture
def run(rootfs: Path, tmp_path: Path, run_bundle, runtime: str, cgroup_parent: str):
    """run(script, **ContainerConfig fields) -> Result of `sh -c script` in a fresh container."""

    def go(script: str, rc: int = 0, **kw):
        kw.setdefault("image_config", ImageConfig(cmd=("sh",), env=("FROM_IMAGE=1",)))
        cfg = ContainerConfig(name="bt", image="busybox", command=("sh", "-c", script), **kw)
        b = write_bundle(cfg, container_id="c" + tmp_path.name[-10:], bundle_dir=rootfs.parent,
                         state_dir=tmp_path / "state", options=BundleOptions(cgroup_parent=cgroup_parent))
        r = run_bundle(b.path, runtime)
        assert r.rc == rc, f"rc {r.rc}\nstdout: {r.out}\nstderr: {r.err}"
        return r

    return go


def test_default_container(run, rootfs):
    r = run("id; grep CapEff /proc/self/status; mount; hostname; env; pwd; wc -c < /proc/keys;"
            "echo kcore=$(head -c1 /proc/kcore 2>/dev/null | wc -c);"
            "ulimit -n; unshare -U true 2>&1; echo unshare=$?; touch /rootfs-write && echo rw-ok",
            working_dir="/srv/www", env=("FOO=bar",), hostname="webhost")
    out = r.out
    assert "uid=0(root) gid=0(root) groups=0(root),10(wheel),50(staff)" in out
    assert f"CapEff:\t{DOCKER_DEFAULT_CAPEFF}" in out
    assert re.search(r"^shm on /dev/shm type tmpfs \(.*size=65536k", out, re.M)
    assert re.search(r"^sysfs on /sys type sysfs \(ro,", out, re.M)
    assert re.search(r"^\S+ on /sys/fs/cgroup/\S+ type cgroup \(ro,", out, re.M)
    assert re.search(r"^devpts on /dev/pts type devpts \(.*gid=5", out, re.M)
    assert "\nwebhost\n" in out and "FOO=bar" in out and "FROM_IMAGE=1" in out and "HOSTNAME=webhost" in out
    assert "\n/srv/www\n" in out and (rootfs / "srv/www").is_dir()
    assert re.search(r"^0$", out, re.M), "the masked /proc/keys must read empty"
    assert "kcore=0" in out
    assert "\n20000\n" in out or "\n1048576\n" in out
    assert "unshare=1" in out and "Operation not permitted" in out, "default seccomp blocks user namespaces"
    assert "rw-ok" in out


def test_named_user_groups_and_new_workdir_owner(run, rootfs):
    r = run("id; pwd; stat -c '%u:%g' .; echo $HOME", user="app", working_dir="/work/app", group_add=("daemon",))
    lines = r.out.splitlines()
    assert lines[0] == "uid=1000(app) gid=1000(app) groups=1(daemon),29(audio),50(staff),1000(app)"
    assert lines[1:] == ["/work/app", "1000:1000", "/home/app"]


def test_numeric_user_and_group(run):
    assert run("id", user="1234").out.strip() == "uid=1234 gid=0(root) groups=0(root)"
    assert run("id", user="nobody:staff").out.strip() == "uid=65534(nobody) gid=50(staff) groups=50(staff)"


def test_init_is_pid1(run):
    r = run("cat /proc/1/cmdline | tr '\\0' ' '; echo; touch /sbin/stackd-init 2>&1; exit 3", rc=3, init=True)
    assert r.out.startswith("/sbin/stackd-init -- sh -c cat /proc/1/cmdline")
    assert "Read-only file system" in r.out


def test_seccomp_unconfined_allows_what_the_default_blocks(run):
    r = run("unshare -U true && echo allowed", security_opt=("seccomp=unconfined",))
    assert "allowed" in r.out


def test_caps_read_only_shm_ulimits_resources(run, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/in").write_text("from-host")
    r = run("grep CapEff /proc/self/status; touch /x 2>&1; mount | grep ' /dev/shm '; ulimit -n; ulimit -u;"
            "touch /run/ok && echo tmpfs-ok; cat /data/in; echo; touch /data/new 2>&1;"
            "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null;"
            "cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max 2>/dev/null; true",
            cap_drop=("ALL",), cap_add=("chown", "CAP_KILL"), read_only=True, shm_size=8 << 20,
            ulimits=(Ulimit("nofile", 512, 1024), Ulimit("nproc", 300, 300)),
            resources=Resources(memory=64 << 20, pids_limit=50), tmpfs={"/run": "size=1m"},
            mounts=(MountConfig("bind", "/data", str(tmp_path / "data"), read_only=True),))
    out = r.out
    assert "tmpfs-ok" in out and "from-host" in out and "/data/new: Read-only file system" in out
    assert "CapEff:\t0000000000000021" in out  # CHOWN (0) + KILL (5)
    assert "Read-only file system" in out
    assert "size=8192k" in out
    assert "\n512\n300\n" in out
    assert "\n50\n" in out and f"\n{64 << 20}\n" in out


def test_privileged_has_all_caps_and_rw_sys(run):
    r = run("grep CapEff /proc/self/status; mount | grep ' on /sys type'; ls /dev/null /dev/zero", privileged=True)
    bnd = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapBnd"))
    assert "CapEff:\t" + bnd.split()[1] in r.out
    assert "sysfs on /sys type sysfs (rw," in r.out


def test_overlay_snapshot_as_rootfs(tmp_path, run_bundle, cgroup_parent):
    """The manager's flow: prepare_rootfs, mount the snapshot's overlay, write_bundle, run, unmount."""
    from bundlekit import make_rootfs

    from stackd.engine import mounts
    from stackd.engine.bundle import prepare_rootfs
    from stackd.engine.mounts import Mount

    lower = make_rootfs(tmp_path / "lower")
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    snap = Mount("overlay", "overlay", "", (f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"))
    bdir = tmp_path / "bundle-ovl"
    m = prepare_rootfs(bdir, snap)
    mounts.mount(m, m.target)
    try:
        cfg = ContainerConfig(name="ovl", image="busybox", command=("sh", "-c", "id -un; echo hi > /tmp/f"),
                              user="app", working_dir="/made/here")
        b = write_bundle(cfg, container_id="ovl" + tmp_path.name[-8:], bundle_dir=bdir,
                         state_dir=tmp_path / "st", options=BundleOptions(cgroup_parent=cgroup_parent))
        r = run_bundle(b.path, "runc")
        assert r.rc == 0, r.err
        assert r.out == "app\n"
    finally:
        mounts.unmount(m.target, detach=True)
    assert (upper / "made/here").is_dir() and not (lower / "made").exists()
    assert (upper / "tmp/f").read_text() == "hi\n"
