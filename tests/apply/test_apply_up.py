"""The executor against the fake engine: ordering, parallelism, convergence (autojump clock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from stackkit import desired_state, diff, plan_of, project

from stackd.apply import ApplyError, apply
from stackd.apply_fake import FakeEngine

QUICK = """
services:
  web:
    image: busybox
    command: [httpd, -f]
    depends_on: {api: {condition: service_healthy}}
  api:
    image: busybox
    command: [httpd, -f]
    environment: {MARK: "1"}
    healthcheck: {test: [CMD, "true"], interval: 2s}
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
  migrate:
    image: busybox
    command: [sh, -c, "sleep 3; exit 0"]
    volumes: [data:/data]
    depends_on: {db: {condition: service_healthy}}
  db:
    image: busybox
    command: [sh, -c, "sleep inf"]
    volumes: [data:/data]
    healthcheck: {test: [CMD-SHELL, "echo ok; exit 0"], interval: 1s}
volumes: {data: {}}
"""


async def up(engine: FakeEngine, proj, **options):
    observed = await engine.observe(proj.name)
    plan = plan_of(desired_state(proj, engine.images), observed, **options)
    result = await apply(plan, engine, parallel=options.pop("parallel", None))
    return plan, result


async def converged(engine: FakeEngine, proj) -> bool:
    return diff(desired_state(proj, engine.images), await engine.observe(proj.name)).empty


async def test_up_runs_in_dependency_order_and_converges(tmp_path, autojump_clock) -> None:
    proj = project(tmp_path, QUICK)
    engine = FakeEngine(delays={"pull": 1, "create": 0.5, "start": 0.5})
    events = []
    observed = await engine.observe("demo")
    plan = plan_of(desired_state(proj, engine.images), observed)
    result = await apply(plan, engine, on_event=events.append)
    assert not result.failed and not result.not_run
    assert len(result.done) == len(plan.actions)
    starts = [name for op, name in engine.ops() if op in ("start", "wait-healthy", "wait-exited")]
    assert starts == ["demo-db-1", "demo-db-1", "demo-migrate-1", "demo-migrate-1", "demo-api-1", "demo-api-1",
                      "demo-web-1"]
    # pull 1s, create .5, db start .5 + healthy 1, migrate start .5 + 3, api start .5 + 2, web start .5
    assert trio.current_time() == pytest.approx(1 + 0.5 + 1.5 + 3.5 + 2.5 + 0.5)
    assert [e.kind for e in events].count("done") == len(plan.actions)
    assert {e.kind for e in events} == {"started", "done"}
    assert await converged(engine, proj)
    # a second up is a no-op, and makes no engine call
    calls = len(engine.calls)
    plan, _ = await up(engine, proj)
    assert plan.empty and len(engine.calls) == calls


async def test_maximal_parallelism_and_limit(tmp_path, autojump_clock) -> None:
    text = "services:\n" + "".join(f"  s{i}: {{image: busybox}}\n" for i in range(6))
    proj = project(tmp_path, text)
    engine = FakeEngine({"busybox": "sha256:1"}, delays={"create": 1, "start": 1})
    await up(engine, proj)
    assert trio.current_time() == 2  # all six in parallel
    assert engine.max_active == 6
    limited = FakeEngine({"busybox": "sha256:1"}, delays={"create": 1, "start": 1})
    start = trio.current_time()
    observed = await limited.observe("demo")
    await apply(plan_of(desired_state(proj, limited.images), observed), limited, parallel=2)
    assert limited.max_active == 2
    assert trio.current_time() - start == 6


async def test_pull_runs_alongside_other_work(tmp_path, autojump_clock) -> None:
    proj = project(tmp_path, "services:\n  a: {image: busybox, volumes: [v:/v]}\n  b: {image: other}\nvolumes: {v: {}}\n")
    engine = FakeEngine({"other": "sha256:2"}, delays={"pull": 5, "create-volume": 1, "create": 1})
    await up(engine, proj)
    times = {(op, name): t for t, op, name in engine.calls}
    assert times[("pull", "busybox")] == 0
    assert times[("create-volume", "demo_v")] == 0
    assert times[("create", "demo-b-1")] == 0  # its image is present: no wait for the other pull
    assert times[("create", "demo-a-1")] == 5


async def test_failed_healthcheck_reports_service_action_and_output(tmp_path, autojump_clock) -> None:
    bad = QUICK.replace('"echo ok; exit 0"', '"echo not ready yet; exit 1"')
    proj = project(tmp_path, bad)
    engine = FakeEngine(delays={"start": 0.1})
    with pytest.raises(ApplyError) as info:
        await up(engine, proj)
    message = str(info.value)
    assert message.splitlines()[0] == ("service db: wait-healthy demo-db-1 failed: container demo-db-1 is "
                                       "unhealthy; last healthcheck output: not ready yet")
    assert "later action(s) not run" in message
    assert ("start", "demo-migrate-1") not in engine.ops()
    assert ("start", "demo-web-1") not in engine.ops()
    # the next up, with the healthcheck fixed, converges from what was left
    fixed = project(tmp_path, QUICK)
    plan, _ = await up(engine, fixed)
    assert ("create", "demo-migrate-1") not in [(a.kind, a.target) for a in plan.actions]  # created last time
    assert await converged(engine, fixed)


async def test_failed_oneshot_blocks_dependents(tmp_path, autojump_clock) -> None:
    proj = project(tmp_path, QUICK.replace('"sleep 3; exit 0"', '"sleep 1; exit 3"'))
    engine = FakeEngine()
    with pytest.raises(ApplyError, match="service migrate: wait-completed demo-migrate-1 failed: container "
                                         "demo-migrate-1 did not complete successfully: exit code 3"):
        await up(engine, proj)
    assert ("start", "demo-api-1") not in engine.ops()
    # a failed one-shot its dependents need is re-run by the next up
    observed = await engine.observe("demo")
    changes = {c.name: c.kind for c in diff(desired_state(proj, engine.images), observed).changes}
    assert changes["demo-migrate-1"] == "start"


async def test_failure_lets_running_actions_finish_and_schedules_nothing(tmp_path, autojump_clock) -> None:
    from stackd.errors import EngineError

    proj = project(tmp_path, "services:\n  a: {image: busybox}\n  b: {image: busybox}\n")
    engine = FakeEngine({"busybox": "sha256:1"}, delays={("create", "demo-b-1"): 2, "create": 1},
                        fail={("create", "demo-a-1"): EngineError("disk full")})
    with pytest.raises(ApplyError) as info:
        await up(engine, proj)
    result = info.value.result
    assert str(result.failed[0]) == "service a: create demo-a-1 failed: disk full"
    # b's create finished although a failed beside it; nothing was scheduled after the failure
    assert [str(a) for a in result.done] == ["create-network demo_default", "create demo-b-1"]
    assert sorted(str(a) for a in result.not_run) == ["start demo-a-1", "start demo-b-1"]
    engine.fail.clear()
    await up(engine, proj)
    assert await converged(engine, proj)


async def test_recreate_changed_service_only(tmp_path, autojump_clock) -> None:
    proj = project(tmp_path, QUICK)
    engine = FakeEngine()
    await up(engine, proj)
    before = {c.name: c.id for c in (await engine.observe("demo")).containers}
    changed = project(tmp_path, QUICK.replace('MARK: "1"', 'MARK: "2"'))
    plan, _ = await up(engine, changed)
    assert plan.render().splitlines()[-1] == "Plan: 1 to recreate (environment.MARK changed), 3 unchanged."
    after = {c.name: c.id for c in (await engine.observe("demo")).containers}
    assert set(after) == set(before)
    assert [n for n in after if after[n] != before[n]] == ["demo-api-1"]
    assert await converged(engine, changed)


async def test_start_first_keeps_old_running_until_new_is_healthy(tmp_path, autojump_clock) -> None:
    text = """
    services:
      app:
        image: busybox
        command: [httpd]
        environment: {V: "1"}
        deploy: {update_config: {order: start-first}}
        healthcheck: {test: [CMD, "true"], interval: 4s}
    """
    engine = FakeEngine()
    await up(engine, project(tmp_path, text))
    t0 = trio.current_time()
    changed = project(tmp_path, text.replace('V: "1"', 'V: "2"'))
    await up(engine, changed)
    times = {(op, name): t - t0 for t, op, name in engine.calls if t >= t0}
    stop = times[("stop", "demo-app-1")]
    assert stop == 4  # after the new one was healthy
    assert [c.name for c in (await engine.observe("demo")).containers] == ["demo-app-1"]
    assert await converged(engine, changed)


async def test_optional_dependency_failure_only_warns(tmp_path, autojump_clock) -> None:
    text = """
    services:
      app:
        image: busybox
        depends_on: {cache: {condition: service_healthy, required: false}}
      cache:
        image: busybox
        healthcheck: {test: [CMD, "false"], interval: 1s, retries: 1}
    """
    engine = FakeEngine()
    _, result = await up(engine, project(tmp_path, text))
    assert result.warnings == ["optional dependency cache: container demo-cache-1 is unhealthy"]
    assert ("start", "demo-app-1") in engine.ops()


async def test_cancellation_is_clean_and_the_next_up_converges(tmp_path, autojump_clock) -> None:
    proj = project(tmp_path, QUICK)
    engine = FakeEngine(delays={"create": 1, "start": 1})
    events = []
    observed = await engine.observe("demo")
    plan = plan_of(desired_state(proj, engine.images), observed)
    with trio.move_on_after(3.5) as scope:  # as Ctrl-C would, mid-way
        await apply(plan, engine, on_event=events.append)
    assert scope.cancelled_caught
    assert "cancelled" in {e.kind for e in events}
    assert not await converged(engine, proj)
    await up(engine, proj)
    assert await converged(engine, proj)


async def test_keyboard_interrupt_propagates(tmp_path, autojump_clock) -> None:
    proj = project(tmp_path, "services:\n  a: {image: busybox}\n")

    class Interrupting(FakeEngine):
        async def start(self, container_id: str) -> None:
            raise KeyboardInterrupt

    engine = Interrupting({"busybox": "sha256:1"})
    with pytest.raises(KeyboardInterrupt):
        await up(engine, proj)
