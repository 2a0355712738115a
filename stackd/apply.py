"""The executor: walks a Plan's DAG in a trio nursery, one engine call per action, no decisions.

Actions start as soon as everything they follow is done (maximal parallelism, or at most
`parallel` engine calls at once; waits do not count). On the first failure nothing new is
scheduled: running calls finish, pending waits are cancelled, and `ApplyError` reports the
service, the action and the cause. What is left is a state the next plan converges from.
Cancellation (Ctrl-C) propagates after in-flight actions are reported as cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import trio

from stackd.errors import EngineError, StackdError
from stackd.planner.plan import Action, Plan

if TYPE_CHECKING:
    from stackd.apply_engine import StackEngine

EventKind = Literal["started", "done", "failed", "skipped", "cancelled", "warning"]
WAITS = ("wait-healthy", "wait-completed")


@dataclass(frozen=True)
class Event:
    """A progress event for the CLI to render."""

    kind: EventKind
    action: Action
    message: str = ""
    time: float = 0.0


@dataclass(frozen=True)
class Failure:
    action: Action
    error: StackdError

    def __str__(self) -> str:
        who = f"service {self.action.service}: " if self.action.service else ""
        return f"{who}{self.action.kind} {self.action.target} failed: {self.error}"


@dataclass
class ApplyResult:
    done: list[Action] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    not_run: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    """container name → id of the stack's containers (as this run left them)."""


class ApplyError(StackdError):
    """Some actions failed; the message names each one's service, action and cause."""

    def __init__(self, result: ApplyResult) -> None:
        self.result = result
        lines = [str(f) for f in result.failed]
        if result.not_run:
            lines.append(f"{len(result.not_run)} later action(s) not run; `up` again converges from here")
        super().__init__("\n".join(lines))


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a nursery wrapped (KeyboardInterrupt first), else the group itself."""
    interrupt = group.subgroup(KeyboardInterrupt)
    if interrupt is not None:
        return KeyboardInterrupt()
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for e in g.exceptions:
            if isinstance(e, BaseExceptionGroup):
                walk(e)
            else:
                leaves.append(e)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group


def _stop_timeout(plan: Plan, action: Action, default: float) -> float:
    svc = plan.diff.desired.services.get(action.service)
    value = svc.containers[0].config.get("stop_grace_period") if svc and svc.containers else None
    if value is None:
        return default
    from stackd.spec.types import parse_duration

    return float(parse_duration(value))


async def apply(
    plan: Plan,
    engine: StackEngine,
    *,
    parallel: int | None = None,
    on_event: Callable[[Event], None] | None = None,
    stop_timeout: float = 10.0,
    health_timeout: float | None = None,
) -> ApplyResult:
    """Run the plan's actions against `engine`; raises ApplyError if any failed."""
    result = ApplyResult()
    preds = plan.predecessors
    waiting = {a: len(preds[a]) for a in plan.actions}
    succ: dict[Action, list[Action]] = {a: [] for a in plan.actions}
    for a in plan.actions:
        for p in preds[a]:
            succ[p].append(a)
    limiter = trio.CapacityLimiter(parallel) if parallel else None
    waits: set[trio.CancelScope] = set()
    ids = result.ids
    ids.update({c.old.name: c.old.id for c in plan.diff.changes if c.old is not None})
    started: set[Action] = set()

    def emit(kind: EventKind, action: Action, message: str = "") -> None:
        if on_event is not None:
            on_event(Event(kind, action, message, trio.current_time()))

    def cid(action: Action) -> str:
        return action.ref or ids[action.target]

    async def call(action: Action) -> None:
        kind, target = action.kind, action.target
        if kind == "pull":
            result.digests[target] = await engine.pull(target)
        elif kind == "create-network":
            await engine.create_network(action.spec)  # type: ignore[arg-type]
        elif kind == "create-volume":
            await engine.create_volume(action.spec)  # type: ignore[arg-type]
        elif kind == "create":
            ids[target] = await engine.create_container(action.spec)  # type: ignore[arg-type]
        elif kind == "start":
            await engine.start(cid(action))
        elif kind == "stop":
            await engine.stop(cid(action), _stop_timeout(plan, action, stop_timeout))
        elif kind == "remove":
            await engine.remove(cid(action))
            if ids.get(target) == cid(action):
                del ids[target]
        elif kind == "rename":
            container = cid(action)
            await engine.rename(container, action.new_name)
            ids.pop(target, None)
            ids[action.new_name] = container
        elif kind == "wait-healthy":
            await engine.wait_healthy(cid(action), health_timeout)
        elif kind == "wait-completed":
            code = await engine.wait_exited(cid(action))
            if code != 0:
                raise EngineError(f"container {target} did not complete successfully: exit code {code}")
        else:  # pragma: no cover
            raise AssertionError(kind)

    async def run(action: Action, nursery: trio.Nursery) -> None:
        started.add(action)
        emit("started", action, action.reason)
        try:
            if action.kind in WAITS:
                scope = trio.CancelScope()
                waits.add(scope)
                with scope:
                    await call(action)
                waits.discard(scope)
                if scope.cancelled_caught:
                    emit("skipped", action, "cancelled after a failure")
                    return
            elif limiter is not None:
                async with limiter:
                    await call(action)
            else:
                await call(action)
        except trio.Cancelled:
            emit("cancelled", action)
            raise
        except StackdError as exc:
            if action.optional:
                result.warnings.append(f"optional dependency {action.service}: {exc}")
                emit("warning", action, str(exc))
            else:
                result.failed.append(Failure(action, exc))
                emit("failed", action, str(exc))
                for scope in waits:
                    scope.cancel()
                return
        result.done.append(action)
        emit("done", action)
        for nxt in succ[action]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0 and not result.failed:
                nursery.start_soon(run, nxt, nursery)

    try:
        async with trio.open_nursery() as nursery:
            for action in plan.actions:
                if waiting[action] == 0:
                    nursery.start_soon(run, action, nursery)
    except BaseExceptionGroup as group:
        raise _unwrap(group) from None
    result.not_run = [a for a in plan.actions if a not in started]
    if result.failed:
        raise ApplyError(result)
    return result


__all__ = ["ApplyError", "ApplyResult", "Event", "Failure", "apply"]
