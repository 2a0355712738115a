"""cgroups: real cgroups on this host (limits read back, freezer, OOM, removal) and fake v1/hybrid/v2 trees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from stackd.engine.runtime import cgroups, cgroups_v1, cgroups_v2
from stackd.engine.runtime.cgroups import RealFS, detect, open_cgroup, open_cgroup_from_paths
from stackd.engine.runtime.cgroups_fake import FakeCgroupFS
from stackd.engine.runtime.cgroups_layout import resolve, systemd_path
from stackd.errors import RuntimeSpecError

root_only = pytest.mark.skipif(os.geteuid() != 0 or not os.path.isdir("/sys/fs/cgroup"), reason="needs root and cgroups")


def cat(path: str) -> str:
    with open(path) as f:
        return f.read()


# -- real cgroups ---------------------------------------------------------------------------------


@pytest.fixture
def real() -> Iterator[cgroups.Cgroup]:
    """A cgroup under a unique top-level path; every process and directory is gone afterwards."""
    top = f"stackd-test-{uuid.uuid4().hex[:8]}"
    warnings: list[str] = []
    cg = open_cgroup(f"/{top}/c1", "c1", warn=warnings.append)
    cg.create()
    procs: list[subprocess.Popen[bytes]] = []
    cg.procs = procs  # type: ignore[attr-defined]
    try:
        yield cg
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    cg.thaw()
                except RuntimeSpecError:
                    pass
                p.kill()
                p.wait()
        cg.destroy()
        leftovers = [d for d in cg.dirs() if os.path.exists(d)]
        leftovers += [os.path.dirname(d) for d in cg.dirs() if os.path.exists(os.path.dirname(d))]
        assert not leftovers, leftovers


def spawn(cg: cgroups.Cgroup, *args: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(list(args) or ["sleep", "60"], stdin=stdin)
    cg.procs.append(p)  # type: ignore[attr-defined]
    cg.add(p.pid)
    return p


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("State:"))


@root_only
def test_host_mode_is_detected() -> None:
    layout = detect(RealFS())
    if os.path.isdir("/sys/fs/cgroup/unified") and os.path.isdir("/sys/fs/cgroup/memory"):
        assert layout.mode == "hybrid" and layout.unified == "/sys/fs/cgroup/unified"
        assert layout.v1["memory"] == "/sys/fs/cgroup/memory"
    assert layout.mode in ("v1", "hybrid", "v2")


@root_only
def test_limits_are_written_and_read_back(real: cgroups.Cgroup) -> None:
    real.apply({
        "memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 32 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 42},
    })  # fmt: skip
    stats = real.stats()
    assert stats["memory"]["limit"] == 64 << 20
    assert stats["pids"]["limit"] == 42
    if real.mode == "v2":
        d = real.unified
        assert cat(f"{d}/cpu.max").split() == ["50000", "100000"]
        assert cat(f"{d}/cpu.weight").strip() == str(cgroups_v2.shares_to_weight(512))
    else:
        v1 = real.v1
        assert cat(f"{v1['memory']}/memory.soft_limit_in_bytes").strip() == str(32 << 20)
        assert cat(f"{v1['memory']}/memory.memsw.limit_in_bytes").strip() == str(96 << 20)
        assert cat(f"{v1['cpu']}/cpu.shares").strip() == "512"
        assert cat(f"{v1['cpu']}/cpu.cfs_quota_us").strip() == "50000"
        assert cat(f"{v1['cpuset']}/cpuset.cpus").strip() == "0"
        assert cat(f"{v1['pids']}/pids.max").strip() == "42"


@root_only
def test_v1_devices_allow_and_deny_lists(real: cgroups.Cgroup) -> None:
    if "devices" not in real.v1:
        pytest.skip("no v1 devices controller")
    real.apply({"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
    ]})  # fmt: skip
    listing = cat(f"{real.v1['devices']}/devices.list").split("\n")
    assert "c 1:3 rwm" in listing and "c 10:229 rw" in listing
    assert "c 136:* rwm" in listing and "c *:* m" in listing  # the OCI default devices
    assert "a *:* rwm" not in listing and not [line for line in listing if line.startswith("c 10:200")]


@root_only
def test_hugetlb_limit_lands_where_the_controller_is(real: cgroups.Cgroup) -> None:
    size = "2MB"
    real.apply({"hugepageLimits": [{"pageSize": size, "limit": 4 << 20}]})
    if "hugetlb" in real.v1:
        path = f"{real.v1['hugetlb']}/hugetlb.{size}.limit_in_bytes"
    elif real.unified and "hugetlb" in real.v2_controllers():
        path = f"{real.unified}/hugetlb.{size}.max"
    else:
        assert any("hugetlb" in w for w in real.warnings)
        return
    assert cat(path).strip() == str(4 << 20)


@root_only
def test_process_joins_freezes_thaws_and_is_killed(real: cgroups.Cgroup) -> None:
    p = spawn(real)
    assert real.pids() == [p.pid]
    own = cat(f"/proc/{p.pid}/cgroup")
    assert real.paths()[next(iter(real.v1 or {"": ""}))].split("/", 5)[-1] in own
    real.freeze()
    assert real.frozen()
    if "freezer" in real.v1:
        assert cat(f"{real.v1['freezer']}/freezer.state").strip() == "FROZEN"
    real.thaw()
    assert not real.frozen()
    assert _proc_state(p.pid) in ("S", "R")
    real.freeze()
    real.kill_all(signal.SIGKILL)  # on a frozen cgroup: must not hang
    assert p.wait(timeout=10) == -signal.SIGKILL
    assert not real.frozen()


@root_only
def test_kill_all_with_sigterm(real: cgroups.Cgroup) -> None:
    procs = [spawn(real), spawn(real)]
    assert sorted(real.pids()) == sorted(p.pid for p in procs)
    real.kill_all(signal.SIGTERM)
    assert [p.wait(timeout=10) for p in procs] == [-signal.SIGTERM] * 2


@root_only
def test_oom_kill_is_reported(real: cgroups.Cgroup) -> None:
    real.apply({"memory": {"limit": 24 << 20, "swap": 24 << 20}})
    assert not real.oom_killed()
    p = spawn(real, sys.executable, "-S", "-c", "import sys; sys.stdin.read(1); x = b'1' * (200 << 20)", stdin=subprocess.PIPE)
    assert p.stdin is not None
    p.stdin.write(b"x")
    p.stdin.close()
    assert p.wait(timeout=30) == -signal.SIGKILL
    assert real.oom_killed()


@root_only
def test_stats_and_paths_round_trip(real: cgroups.Cgroup) -> None:
    p = spawn(real)
    again = open_cgroup_from_paths(real.paths())
    assert again.paths() == real.paths() and again.pids() == [p.pid]
    stats = again.stats()
    assert stats["pids"]["current"] == 1
    assert stats["memory"]["usage"] is not None and stats["cpu"]["usage_ns"] is not None


@root_only
def test_destroy_removes_every_directory_and_is_idempotent() -> None:
    top = f"stackd-test-{uuid.uuid4().hex[:8]}"
    cg = open_cgroup(f"/{top}/a/b", "b", warn=lambda m: None)
    try:
        cg.create()
        assert all(os.path.isdir(d) for d in cg.dirs())
        sub = f"{cg.dirs()[0]}/nested"  # a sub-cgroup the container made
        os.mkdir(sub)
    finally:
        cg.destroy()
    assert not [d for d in cg.dirs() if os.path.exists(d)]
    assert not [m for m in cg.dirs() if os.path.exists(m.split(top)[0] + top)]
    cg.destroy()  # already gone: fine
    assert not open_cgroup_from_paths(cg.paths()).frozen()


@root_only
def test_relative_path_is_under_our_own_cgroup() -> None:
    cg = open_cgroup(f"stackd-rel-{uuid.uuid4().hex[:8]}", "x", warn=lambda m: None)
    own = dict(line.split(":", 2)[1:] for line in cat("/proc/self/cgroup").splitlines())
    mem = next((k for k in own if "memory" in k.split(",")), None)
    if mem is not None:
        assert cg.paths()["memory"].startswith(f"/sys/fs/cgroup/memory{own[mem].rstrip('/')}/stackd-rel-")
    try:
        cg.create()
        assert all(os.path.isdir(d) for d in cg.dirs())
    finally:
        cg.destroy()
    assert not [d for d in cg.dirs() if os.path.exists(d)]


@root_only
def test_errors_name_the_file_and_errno(real: cgroups.Cgroup) -> None:
    with pytest.raises(RuntimeSpecError, match=r"pids\.max.*EINVAL|EINVAL.*pids\.max") if "pids" in real.v1 else pytest.raises(RuntimeSpecError):
        real.write(f"{real.v1.get('pids') or real.unified}/pids.max", "lots")
    with pytest.raises(RuntimeSpecError, match=r"cgroup\.procs.*(ESRCH|EINVAL)"):
        real.add(2**22 + 7)


# -- fake trees -----------------------------------------------------------------------------------


def fake(layout: str, path: str | None = "/stackd/c1", own: str = "/") -> tuple[cgroups.Cgroup, FakeCgroupFS]:
    fs = FakeCgroupFS(layout, own=own)
    cg = open_cgroup(path, "c1", fs=fs, warn=lambda m: None)
    return cg, fs


@pytest.mark.parametrize("layout", ["v1", "hybrid", "v2"])
def test_fake_layouts_are_detected(layout: str) -> None:
    cg, _ = fake(layout)
    assert cg.mode == layout
    if layout == "v1":
        assert cg.paths()["cpu"] == cg.paths()["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/stackd/c1"
    if layout == "hybrid":
        assert cg.paths()[""] == "/sys/fs/cgroup/unified/stackd/c1"
    if layout == "v2":
        assert cg.paths() == {"": "/sys/fs/cgroup/stackd/c1"}


def test_paths_default_relative_and_systemd() -> None:
    fs = FakeCgroupFS("v2", own="/user.slice/me")
    assert resolve(None, "abc", fs) == {"*": "/stackd/abc"}
    assert resolve("ctr", "abc", fs)[""] == "/user.slice/me/ctr"
    assert systemd_path("machine-app.slice:docker:abc") == "/machine.slice/machine-app.slice/docker-abc.scope"
    assert systemd_path(":crio:x") == "/system.slice/crio-x.scope"
    assert resolve("system.slice:stackd:abc", "abc", fs) == {"*": "/system.slice/stackd-abc.scope"}
    for bad in ("/a/../../etc", "..", "not-a-slice:p:n", "a.slice:p:"):
        with pytest.raises(RuntimeSpecError, match="cgroupsPath"):
            resolve(bad, "abc", fs)


def test_relative_path_under_a_bind_mounted_cgroup_root() -> None:
    fs = FakeCgroupFS("v2", own="/docker/abc")
    fs.files["/proc/self/mountinfo"] = fs.files["/proc/self/mountinfo"].replace(" / /sys/fs/cgroup ", " /docker/abc /sys/fs/cgroup ")
    cg = open_cgroup("inner", "x", fs=fs)
    assert cg.paths() == {"": "/sys/fs/cgroup/inner"}


def test_fake_v2_create_enables_controllers_and_applies() -> None:
    cg, fs = fake("v2")
    cg.create()
    assert "memory" in fs.value("/sys/fs/cgroup/cgroup.subtree_control").split()
    assert "pids" in fs.value("/sys/fs/cgroup/stackd/cgroup.subtree_control").split()
    cg.apply({
        "memory": {"limit": 100, "swap": 300, "reservation": 50, "swappiness": 10},
        "cpu": {"shares": 1024, "quota": 20000, "period": 50000, "cpus": "1"},
        "pids": {"limit": 0},
        "blockIO": {"weight": 500},
        "devices": [{"allow": False, "access": "rwm"}],
        "hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}],
        "unified": {"memory.high": "90"},
    })  # fmt: skip
    d = "/sys/fs/cgroup/stackd/c1"
    assert fs.value(f"{d}/memory.max") == "100" and fs.value(f"{d}/memory.swap.max") == "200"
    assert fs.value(f"{d}/memory.low") == "50" and fs.value(f"{d}/cpu.max") == "20000 50000"
    assert fs.value(f"{d}/cpu.weight") == "39" and fs.value(f"{d}/cpuset.cpus") == "1"
    assert fs.value(f"{d}/pids.max") == "max" and fs.value(f"{d}/io.weight") == "default 4950"
    assert fs.value(f"{d}/hugetlb.2MB.max") == str(2 << 20) and fs.value(f"{d}/memory.high") == "90"
    assert any("eBPF" in w and "NOT enforced" in w for w in cg.warnings)
    assert any("swappiness" in w for w in cg.warnings)
    with pytest.raises(RuntimeSpecError, match=r"needs memory\.limit"):
        cg.apply({"memory": {"swap": 10}})
    with pytest.raises(RuntimeSpecError, match="not a settable"):
        cg.apply({"unified": {"cgroup.procs": "1"}})


def test_fake_v1_memsw_ordering_and_cpuset_seed() -> None:
    cg, fs = fake("v1")
    cg.create()
    m = "/sys/fs/cgroup/memory/stackd/c1"
    cg.apply({"memory": {"limit": 100, "swap": 100}})
    cg.apply({"memory": {"limit": 500, "swap": 800, "disableOOMKiller": True}})  # memsw must go first
    assert fs.value(f"{m}/memory.limit_in_bytes") == "500" and fs.value(f"{m}/memory.memsw.limit_in_bytes") == "800"
    assert fs.value(f"{m}/memory.oom_control") == "1"
    cg.apply({"memory": {"limit": 1000}})  # above the old memsw: swap goes unlimited first
    assert fs.value(f"{m}/memory.limit_in_bytes") == "1000"
    assert fs.value("/sys/fs/cgroup/cpuset/stackd/cpuset.cpus") == "0-1"
    assert fs.value("/sys/fs/cgroup/cpuset/stackd/c1/cpuset.mems") == "0"
    with pytest.raises(RuntimeSpecError, match="swap"):
        cg.apply({"memory": {"limit": 100, "swap": 50}})
    with pytest.raises(RuntimeSpecError, match="unified keys need cgroup v2"):
        cg.apply({"unified": {"memory.high": "1"}})
    cg.apply({"network": {"classID": 3}, "blockIO": {"weight": 200}})
    assert any("net_cls" in w for w in cg.warnings)
    assert fs.value("/sys/fs/cgroup/blkio/stackd/c1/blkio.bfq.weight") == "200"


def test_fake_v1_devices_deny_all_then_rules_then_default_devices() -> None:
    cg, fs = fake("v1")
    cg.create()
    extra = cgroups_v1.allow_rules([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}, {"path": "/dev/p", "type": "p"}])
    cg.apply({"devices": [{"allow": False, "access": "rwm"}, {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}, *extra]})
    d = "/sys/fs/cgroup/devices/stackd/c1"
    writes = [(p.rsplit("/", 1)[1], v) for p, v in fs.writes if p.startswith(d + "/devices.")]
    assert writes[:4] == [("devices.deny", "a"), ("devices.deny", "a"), ("devices.deny", "c 1:3 w"), ("devices.allow", "c 10:229 rwm")]
    assert ("devices.allow", "c *:* m") in writes and ("devices.allow", "c 136:* rwm") in writes
    with pytest.raises(RuntimeSpecError, match="access must be"):
        cg.apply({"devices": [{"allow": True, "access": "rwx"}]})


def test_fake_hybrid_hugetlb_and_unified_go_to_the_cgroup2_mount() -> None:
    cg, fs = fake("hybrid")
    cg.create()
    cg.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 7}], "unified": {"hugetlb.2MB.max": "9"}})
    assert fs.value("/sys/fs/cgroup/unified/stackd/c1/hugetlb.2MB.max") == "9"
    assert ("/sys/fs/cgroup/unified/stackd/c1/hugetlb.2MB.max", "7") in fs.writes
    with pytest.raises(RuntimeSpecError, match="only has \\['hugetlb'\\]"):
        cg.apply({"unified": {"memory.max": "1"}})


def test_fake_v2_kill_uses_cgroup_kill_and_oom_reads_events() -> None:
    cg, fs = fake("v2")
    cg.create()
    cg.add(99999999)
    cg.kill_all(signal.SIGKILL)
    assert fs.killed == {99999999} and cg.pids() == []
    fs.files["/sys/fs/cgroup/stackd/c1/memory.events"] = "oom 1\noom_kill 1\n"
    assert cg.oom_killed()
    assert cg.stats()["memory"]["limit"] is None


def test_fake_missing_file_error_names_file_and_errno(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "WAIT_S", 0.05)
    cg, _ = fake("v1")
    with pytest.raises(RuntimeSpecError, match=r"write .1. to /sys/fs/cgroup/[a-z,]+/stackd/c1/cgroup.procs: .*ENOENT"):
        cg.add(1)  # not created yet
    cg.create()
    cg.add(99999999)
    with pytest.raises(RuntimeSpecError, match=r"rmdir .*EBUSY"):
        cg.destroy()


@root_only
def test_real_cgroup2_paths_on_the_hybrid_unified_mount() -> None:
    """Drive the v2 code (cgroup.freeze, cgroup.events, cgroup.kill, subtree_control) on the real cgroup2 mount."""
    unified = detect(RealFS()).unified
    if not unified or unified == "/sys/fs/cgroup":
        pytest.skip("no separate cgroup2 mount (pure v2 hosts run the main tests on v2)")
    top = f"stackd-test-{uuid.uuid4().hex[:8]}"
    cg = open_cgroup(f"/{top}/c", "c", root=unified, warn=lambda m: None)
    assert cg.mode == "v2" and cg.paths() == {"": f"{unified}/{top}/c"}
    p = None
    try:
        cg.create()
        if "hugetlb" in cg.v2_controllers():
            cg.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}]})
            assert cat(f"{unified}/{top}/c/hugetlb.2MB.max").strip() == str(2 << 20)
        p = subprocess.Popen(["sleep", "60"])
        cg.add(p.pid)
        assert cg.pids() == [p.pid]
        cg.freeze()
        assert cg.frozen() and "frozen 1" in cat(f"{unified}/{top}/c/cgroup.events")
        cg.thaw()
        assert not cg.frozen()
        cg.freeze()
        cg.kill_all(signal.SIGKILL)  # cgroup.kill, then thawed
        assert p.wait(timeout=10) == -signal.SIGKILL and not cg.frozen()
        assert not cg.oom_killed() and cg.stats()["pids"] == {"current": None, "limit": None}
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        cg.destroy()
    assert not os.path.exists(f"{unified}/{top}")
