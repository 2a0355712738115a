"""Contract: the fake cgroup filesystem and the real one (as root) pass the same cgroup suite."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from stackd.engine.runtime.cgroups import Cgroup, RealFS, open_cgroup, open_cgroup_from_paths
from stackd.engine.runtime.cgroups_fake import FakeCgroupFS
from stackd.errors import RuntimeSpecError

FAKE_PID = 99_999_999  # above any pid_max: signalling it is ESRCH, never a real process


@dataclass
class World:
    """One cgroup implementation under test: how to open a cgroup and how to start a process."""

    open: Callable[[str], Cgroup]
    spawn: Callable[[], int]
    exists: Callable[[str], bool]
    reap: Callable[[], None] = lambda: None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


@pytest.fixture(params=["fake-v1", "fake-hybrid", "fake-v2", "real"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    if request.param == "real":
        if os.geteuid() != 0 or not os.path.isdir("/sys/fs/cgroup"):
            pytest.skip("needs root and cgroups")
        w = World(open=lambda p: open_cgroup(p, "c", warn=lambda m: None), spawn=lambda: 0, exists=os.path.isdir)

        def spawn() -> int:
            p = subprocess.Popen(["sleep", "60"])
            w.procs.append(p)
            return p.pid

        w.spawn = spawn
        try:
            yield w
        finally:
            for p in w.procs:
                p.kill()
                p.wait()
        return
    fs = FakeCgroupFS(request.param.removeprefix("fake-"))
    yield World(
        open=lambda p: open_cgroup(p, "c", fs=fs, warn=lambda m: None),
        spawn=lambda: FAKE_PID,
        exists=fs.exists,
        reap=lambda: fs.exit(FAKE_PID),
    )


@pytest.fixture
def cg(world: World) -> Iterator[Cgroup]:
    top = f"stackd-contract-{uuid.uuid4().hex[:8]}"
    c = world.open(f"/{top}/c")
    try:
        yield c
    finally:
        for p in world.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        world.reap()
        c.destroy()
        assert not [d for d in c.dirs() if world.exists(d) or world.exists(os.path.dirname(d))]


def test_create_makes_every_directory(world: World, cg: Cgroup) -> None:
    assert not any(world.exists(d) for d in cg.dirs())
    cg.create()
    cg.create()  # twice is fine
    assert all(world.exists(d) for d in cg.dirs())


def test_limits_read_back_through_stats(cg: Cgroup) -> None:
    cg.create()
    cg.apply({"memory": {"limit": 32 << 20}, "pids": {"limit": 12}, "cpu": {"shares": 256}})
    stats = cg.stats()
    assert stats["memory"]["limit"] == 32 << 20 and stats["pids"]["limit"] == 12
    cg.apply({"pids": {"limit": -1}})
    assert cg.stats()["pids"]["limit"] is None


def test_add_pids_freeze_thaw(world: World, cg: Cgroup) -> None:
    cg.create()
    assert cg.pids() == []
    pid = world.spawn()
    cg.add(pid)
    assert cg.pids() == [pid]
    assert not cg.frozen()
    cg.freeze()
    assert cg.frozen()
    cg.thaw()
    assert not cg.frozen()


def test_paths_round_trip(world: World, cg: Cgroup) -> None:
    cg.create()
    pid = world.spawn()
    cg.add(pid)
    again = open_cgroup_from_paths(cg.paths(), fs=cg.fs if not isinstance(cg.fs, RealFS) else None)
    assert again.paths() == cg.paths() and again.pids() == [pid]


def test_kill_all_empties_the_cgroup(world: World, cg: Cgroup) -> None:
    cg.create()
    pid = world.spawn()
    cg.add(pid)
    cg.freeze()
    cg.kill_all(signal.SIGKILL)
    for p in world.procs:
        assert p.wait(timeout=10) == -signal.SIGKILL
    assert not cg.frozen()


def test_errors_after_destroy(cg: Cgroup) -> None:
    cg.create()
    cg.destroy()
    cg.destroy()
    with pytest.raises(RuntimeSpecError, match=r"cgroup\.procs.*ENOENT"):
        cg.add(1)
    assert cg.pids() == [] and not cg.frozen()
