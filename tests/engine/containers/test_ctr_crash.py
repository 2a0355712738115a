"""Live-restore: the engine killed at named steps of create/start/stop/rm, and a shim killed with -9."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.engine.containers.conftest import World, leaks


def ls(w: World) -> dict[str, dict[str, object]]:
    res = w.cli("container", "ls", "-a", "--format", "json", check=True)
    rows = [json.loads(line) for line in res.stdout.decode().splitlines()]
    return {str(r["Names"]): r for r in rows}


def crash(w: World, step: str, *args: str) -> None:
    res = w.cli(*args, env={"STACKD_TEST_CRASH_AT": step})
    assert res.returncode == 137, (step, res.returncode, res.stderr.decode())


@pytest.mark.parametrize("step", ["create:recorded", "create:network", "create:snapshot", "create:mounted",
                                  "create:bundle"])
def test_ctr_engine_killed_during_create_leaves_nothing(world: World, step: str) -> None:
    crash(world, step, "container", "create", "--name", "c", "busybox", "sleep", "60")
    assert "c" not in ls(world)  # the next engine finished the unfinished create by undoing it
    assert leaks(world) == []
    world.cli("container", "run", "-d", "--name", "c", "--stop-signal", "KILL", "busybox", "sleep", "60", check=True)
    assert ls(world)["c"]["State"] == "running"
    world.cli("container", "rm", "-f", "c", check=True)


@pytest.mark.parametrize("step,state", [("start:before-shim", "created"), ("start:shim-started", "running")])
def test_ctr_engine_killed_during_start_reports_truth(world: World, step: str, state: str) -> None:
    world.cli("container", "create", "--name", "c", "--stop-signal", "KILL", "busybox", "sleep", "60", check=True)
    crash(world, step, "container", "start", "c")
    assert ls(world)["c"]["State"] == state
    if state == "created":
        world.cli("container", "start", "c", check=True)
    assert ls(world)["c"]["State"] == "running"
    world.cli("container", "stop", "c", check=True)
    assert ls(world)["c"]["State"] == "exited"
    world.cli("container", "rm", "c", check=True)


@pytest.mark.parametrize("step,state", [("stop:before", "running"), ("stop:after-shim", "exited")])
def test_ctr_engine_killed_during_stop_reports_truth(world: World, step: str, state: str) -> None:
    world.cli("container", "run", "-d", "--name", "c", "--stop-signal", "KILL", "busybox", "sleep", "60", check=True)
    crash(world, step, "container", "stop", "c")
    row = ls(world)["c"]
    assert row["State"] == state
    if state == "exited":
        assert row["ExitCode"] == 137
    world.cli("container", "rm", "-f", "c", check=True)


@pytest.mark.parametrize("step", ["rm:marked", "rm:released"])
def test_ctr_engine_killed_during_rm_finishes_removal(world: World, step: str) -> None:
    world.cli("container", "run", "-d", "--name", "c", "--stop-signal", "KILL", "busybox", "sleep", "60", check=True)
    crash(world, step, "container", "rm", "-f", "c")
    assert "c" not in ls(world)
    assert leaks(world) == []


def test_ctr_shim_killed_is_reported_exited_and_container_gone(world: World) -> None:
    world.cli("container", "run", "-d", "--name", "c", "busybox", "sleep", "60", check=True)
    eng = world.engine()
    rec = eng.containers.get("c")
    shim_pid = int((eng.containers.shim_dir(rec.id) / "shim.pid").read_text())
    os.kill(shim_pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while os.path.exists(f"/proc/{shim_pid}") and time.monotonic() < end:
        time.sleep(0.01)
    row = ls(world)["c"]
    assert row["State"] == "exited" and row["ExitCode"] == 137, row
    doc = json.loads(world.cli("container", "inspect", "c", check=True).stdout)[0]
    assert "shim died" in doc["State"]["Error"]
    assert not os.path.exists(f"/proc/{rec.pid}/cmdline") or Path(f"/proc/{rec.pid}/cmdline").read_bytes() == b""
    world.cli("container", "start", "c", check=True)  # it can run again under a new shim
    assert ls(world)["c"]["State"] == "running"
    world.cli("container", "rm", "-f", "c", check=True)


def test_ctr_orphans_without_records_are_cleaned(world: World) -> None:
    world.cli("container", "run", "-d", "--name", "c", "busybox", "sleep", "60", check=True)
    eng = world.engine()
    cid = eng.containers.get("c").id
    eng.containers.store.delete(cid)  # as if the database were restored from an older copy
    eng.containers.store.db.close()
    from stackd.engine.containers_restore import restore

    cleaned = restore(world.engine(restore=False).containers)
    assert any(cid[:12] in c for c in cleaned), cleaned
    assert leaks(world) == []
