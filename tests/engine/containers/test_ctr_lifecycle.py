"""Every container verb on real containers through the engine (runc and, when it works, stackd-runtime)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from stackd.engine.container_config import ContainerConfig, Resources
from stackd.errors import ContainerStateError, EngineError, NotFoundError
from tests.engine.containers.conftest import World


def cfg(name: str, *cmd: str, **kw: object) -> ContainerConfig:
    return ContainerConfig(name=name, image="busybox", command=cmd or None, **kw)  # type: ignore[arg-type]


def test_ctr_create_start_exit_code_logs_inspect_rm(rt_world: World) -> None:
    m = rt_world.engine().containers
    rec = m.create(cfg("one", "sh", "-c", "echo out; echo err >&2; exit 3"))
    assert rec.status == "created" and len(rec.id) == 64
    assert m.get("one").id == rec.id and m.get(rec.id[:10]).id == rec.id
    with pytest.raises(ContainerStateError):
        m.unpause("one")
    m.start("one")
    done = m.wait("one")
    assert (done.status, done.exit_code) == ("exited", 3)
    assert [(r.stream, r.data) for r in m.logs("one")] == [("stdout", b"out\n"), ("stderr", b"err\n")]
    doc = m.inspect("one")
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 3 and doc["Name"] == "/one"
    assert doc["State"]["FinishedAt"] and doc["State"]["StartedAt"]
    with pytest.raises(ContainerStateError):
        m.exec("one", ["true"])
    m.start("one")  # a second run appends to the log
    assert m.wait("one").exit_code == 3
    assert [r.data for r in m.logs("one")].count(b"out\n") == 2
    m.remove("one")
    with pytest.raises(NotFoundError):
        m.get("one")


def test_ctr_env_user_workdir_hostname_and_image_defaults(rt_world: World) -> None:
    m = rt_world.engine().containers
    m.create(cfg("env", "sh", "-c", 'echo "$FOO $(id -u):$(id -g) $(pwd) $(hostname) $HOME"', env=("FOO=bar",),
                 user="app", working_dir="/work/dir", hostname="box"))
    m.start("env")
    assert m.wait("env").exit_code == 0
    assert b"".join(r.data for r in m.logs("env")) == b"bar 1000:1000 /work/dir box /home/app\n"
    m.remove("env")


def test_ctr_stop_signal_grace_and_kill_propagate(rt_world: World) -> None:
    m = rt_world.engine().containers
    # sh as PID 1 ignores SIGTERM without a trap: stop must fall back to SIGKILL after the grace period
    m.create(cfg("stubborn", "sleep", "60", stop_grace_period=0.3))
    m.start("stubborn")
    t0 = time.monotonic()
    rec = m.stop("stubborn")
    assert rec.status == "exited" and rec.exit_code == 137
    assert 0.25 < time.monotonic() - t0 < 5
    # a trap turns SIGTERM into a clean exit code
    m.create(cfg("polite", "sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.05; done"))
    m.start("polite")
    assert m.stop("polite", timeout=10).exit_code == 42
    # kill sends the signal given; the exit code is 128+n
    m.create(cfg("killed", "sh", "-c", "trap 'exit 9' USR1; while true; do sleep 0.05; done"))
    m.start("killed")
    time.sleep(0.1)
    m.kill("killed", "USR1")
    assert m.wait("killed").exit_code == 9
    m.start("killed")
    m.kill("killed", signal.SIGKILL)
    assert m.wait("killed").exit_code == 137
    with pytest.raises(ContainerStateError):
        m.kill("killed")
    for n in ("stubborn", "polite", "killed"):
        m.remove(n)


def test_ctr_restart_rm_force_and_state_errors(rt_world: World) -> None:
    m = rt_world.engine().containers
    m.create(cfg("r", "sleep", "60", stop_signal="SIGKILL"))
    first = m.start("r")
    with pytest.raises(ContainerStateError):
        m.start("r")
    with pytest.raises(EngineError, match="stop the container before removing"):
        m.remove("r")
    again = m.restart("r", timeout=1)
    assert again.status == "running" and again.pid != first.pid
    gone = m.remove("r", force=True)
    assert gone.id == first.id
    assert not os.path.exists(f"/proc/{again.pid}/stat") or Path(f"/proc/{again.pid}/stat").read_text().split()[2] == "Z"


def test_ctr_exec_top_stats_pause_unpause_rename(rt_world: World) -> None:
    m = rt_world.engine().containers
    m.create(cfg("busy", "sleep", "60", resources=Resources(memory=64 << 20, pids_limit=50), stop_signal="SIGKILL"))
    m.start("busy")
    code, out, err = m.exec_run("busy", ["sh", "-c", "echo $X; pwd; exit 5"], env=["X=exec"], cwd="/tmp")
    assert (code, out, err) == (5, b"exec\n/tmp\n", b"")
    code, out, _ = m.exec_run("busy", ["id", "-un"], user="app")
    assert (code, out) == (0, b"app\n")
    cols, rows = m.top("busy")
    assert cols[1] == "PID" and any(r[-1] == "sleep 60" for r in rows)
    s = m.stats("busy")
    assert s["MemLimit"] == 64 << 20 and s["PIDs"] >= 1 and s["MemUsage"] > 0
    m.pause("busy")
    assert m.get("busy").status == "paused"
    with pytest.raises(ContainerStateError):
        m.pause("busy")
    frozen = Path(f"/sys/fs/cgroup/freezer{rt_world.cgroup_parent}/{m.get('busy').id}/freezer.state")
    assert not frozen.exists() or frozen.read_text().strip() == "FROZEN"
    m.unpause("busy")
    assert m.get("busy").status == "running"
    m.rename("busy", "busier")
    assert m.get("busier").status == "running"
    with pytest.raises(NotFoundError):
        m.get("busy")
    m.create(cfg("other", "true"))
    with pytest.raises(EngineError, match="already in use"):
        m.rename("busier", "other")
    with pytest.raises(EngineError, match="already in use"):
        m.create(cfg("other", "true"))
    m.pause("busier")
    assert m.stop("busier", timeout=1).status == "exited"  # a paused container stops too
    m.remove("busier")
    m.remove("other")


def test_ctr_read_only_caps_and_mounts(rt_world: World, tmp_path: object) -> None:
    from stackd.engine.container_config import MountConfig

    host = Path(str(tmp_path)) / "share"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    m = rt_world.engine().containers
    m.create(cfg("ro", "sh", "-c", "cat /data/in.txt; echo x > /data/out.txt; touch /nope || echo rofs; "
                  "grep CapEff /proc/self/status", read_only=True, cap_drop=("ALL",),
                  mounts=(MountConfig(type="bind", source=str(host), target="/data"),)))
    m.start("ro")
    assert m.wait("ro").exit_code == 0
    out = b"".join(r.data for r in m.logs("ro")).decode()
    assert "from host" in out and "rofs" in out and "CapEff:\t0000000000000000" in out
    assert (host / "out.txt").read_text() == "x\n"
    m.remove("ro")
