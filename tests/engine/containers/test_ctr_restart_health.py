"""Self-healing through the manager: restart policies with growing backoff, healthchecks."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from stackd.engine.container_config import ContainerConfig, HealthcheckConfig, RestartPolicy
from tests.engine.containers.conftest import World


def until(pred: Callable[[], object], timeout: float = 15.0) -> object:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def test_ctr_crashing_container_restarts_with_growing_backoff(world: World) -> None:
    m = world.engine().containers
    m.create(ContainerConfig(name="crashy", image="busybox", command=("sh", "-c", "echo start; exit 1"),
                             restart=RestartPolicy("on-failure", 4)))
    m.start("crashy")
    rec = m.wait("crashy", timeout=30)  # returns once the policy gives up
    assert rec.status == "exited" and rec.exit_code == 1 and rec.restart_count == 4
    starts = [r.timestamp_ns() / 1e9 for r in m.logs("crashy")]
    assert len(starts) == 5
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[-1] > gaps[0] * 2.5, gaps  # 100, 200, 400, 800 ms (plus start time)
    assert gaps[-1] >= 0.75
    m.remove("crashy")


def test_ctr_always_restarts_until_stopped(world: World) -> None:
    m = world.engine().containers
    m.create(ContainerConfig(name="again", image="busybox", command=("true",), restart=RestartPolicy("always")))
    m.start("again")
    until(lambda: m.get("again").restart_count >= 2)
    assert m.get("again").status in ("running", "restarting")
    rec = m.stop("again", timeout=1)
    assert rec.status == "exited"
    time.sleep(0.3)
    assert m.get("again").status == "exited"  # a stopped container is not restarted
    m.remove("again")


def test_ctr_healthcheck_turns_unhealthy_and_back(world: World) -> None:
    m = world.engine().containers
    hc = HealthcheckConfig(test=("CMD-SHELL", "test -e /tmp/ok"), interval=0.1, timeout=2, retries=2)
    m.create(ContainerConfig(name="doc", image="busybox", command=("sh", "-c", "touch /tmp/ok; sleep 60"),
                             healthcheck=hc, stop_signal="SIGKILL"))
    m.start("doc")
    until(lambda: (m.get("doc").health or {}).get("Status") == "healthy")
    m.exec_run("doc", ["rm", "/tmp/ok"])
    until(lambda: (m.get("doc").health or {}).get("Status") == "unhealthy")
    doc = m.inspect("doc")
    assert doc["State"]["Health"]["Status"] == "unhealthy" and doc["State"]["Health"]["FailingStreak"] >= 2
    m.exec_run("doc", ["touch", "/tmp/ok"])
    until(lambda: (m.get("doc").health or {}).get("Status") == "healthy")
    m.remove("doc", force=True)
