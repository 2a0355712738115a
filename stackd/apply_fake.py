"""An in-memory `StackEngine` for tests: containers whose commands and healthchecks are simulated.

A container's command is read as a tiny shell: `sleep N`, `exit N`, `true`, `false` and `echo`
are understood (joined by `;` or `&&`); any other word runs forever, like a server. A
healthcheck's test is read the same way: exit 0 is healthy, its echo text is the output. Time
is trio's clock, so tests run instantly under the autojump clock. Every call is recorded in
`calls` as (time, op, name); `delays` slows an op (or an (op, name)), `fail` makes an (op, name) raise.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from stackd.apply_engine import UnhealthyError
from stackd.errors import ConflictError, ContainerStateError, NotFoundError, StackdError
from stackd.planner.desired import ContainerSpec, NetworkSpec, VolumeSpec
from stackd.planner.observed import (
    LABEL_STACK,
    ObservedContainer,
    ObservedNetwork,
    ObservedState,
    ObservedVolume,
)
from stackd.spec.types import parse_duration


def run_script(command: Any) -> tuple[float, int | None, str]:
    """(seconds it runs, exit code or None for forever, echoed output) of a simulated command."""
    if not command:
        return math.inf, None, ""
    words = [str(w) for w in command]
    if words[0] in ("CMD-SHELL", "sh", "/bin/sh") and len(words) >= 2:
        script = words[-1]
    else:
        script = " ".join(words[1:] if words[0] == "CMD" else words)
    elapsed, out = 0.0, list[str]()
    for part in script.replace("&&", ";").split(";"):
        argv = part.split()
        if not argv:
            continue
        if argv[0] == "sleep":
            if argv[1:] in (["inf"], ["infinity"]):
                return math.inf, None, " ".join(out)
            elapsed += float(argv[1]) if len(argv) > 1 else 0.0
        elif argv[0] == "exit":
            return elapsed, int(argv[1]) if len(argv) > 1 else 0, " ".join(out)
        elif argv[0] == "echo":
            out.append(" ".join(argv[1:]).strip("'\""))
        elif argv[0] == "false":
            return elapsed, 1, " ".join(out)
        elif argv[0] != "true":
            return math.inf, None, " ".join(out)
    return elapsed, 0, " ".join(out)


@dataclass
class FakeContainer:
    id: str
    name: str
    spec: ContainerSpec
    digest: str
    started_at: float | None = None
    stopped_code: int | None = None
    stopped_by_user: bool = False
    exited: trio.Event = field(default_factory=trio.Event)

    def exit_at(self) -> tuple[float, int | None]:
        if self.started_at is None:
            return math.inf, None
        seconds, code, _ = run_script(self.spec.config.get("command"))
        return self.started_at + seconds, code

    def state(self, now: float) -> tuple[str, int | None]:
        if self.started_at is None:
            return "created", None
        if self.stopped_code is not None:
            return "exited", self.stopped_code
        at, code = self.exit_at()
        if code is not None and now >= at:
            return "exited", code
        return "running", None

    def health_plan(self) -> tuple[float, bool, str] | None:
        """(time the verdict is known, healthy?, output), or None without a healthcheck."""
        check = self.spec.config.get("healthcheck") or {}
        test = check.get("test")
        if not test or test[0] == "NONE" or check.get("disable") or self.started_at is None:
            return None
        interval = parse_duration(check.get("interval") or 0.5)
        _, code, output = run_script(test)
        if code == 0:
            return self.started_at + interval, True, output
        return self.started_at + interval * int(check.get("retries") or 3), False, output

    def health(self, now: float) -> str | None:
        verdict = self.health_plan()
        if verdict is None:
            return None
        at, healthy, _ = verdict
        if now < at:
            return "starting"
        return "healthy" if healthy else "unhealthy"


class FakeEngine:
    """The StackEngine Protocol in memory (see the module docstring)."""

    def __init__(self, present: Mapping[str, str] | None = None, *, pullable: bool = True,
                 delays: Mapping[str | tuple[str, str], float] | None = None,
                 fail: Mapping[tuple[str, str], StackdError] | None = None) -> None:
        self.images: dict[str, str] = dict(present or {})
        self.pullable = pullable
        self.delays = dict(delays or {})
        self.fail = dict(fail or {})
        self.containers: dict[str, FakeContainer] = {}
        self.networks: dict[str, ObservedNetwork] = {}
        self.volumes: dict[str, ObservedVolume] = {}
        self.calls: list[tuple[float, str, str]] = []
        self.active = 0
        self.max_active = 0
        self._ids = itertools.count(1)

    async def _op(self, op: str, name: str) -> None:
        self.calls.append((trio.current_time(), op, name))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await trio.sleep(self.delays.get((op, name), self.delays.get(op, 0.0)))
            if (op, name) in self.fail:
                raise self.fail[(op, name)]
        finally:
            self.active -= 1

    def _get(self, container_id: str) -> FakeContainer:
        try:
            return self.containers[container_id]
        except KeyError:
            raise NotFoundError(f"no such container: {container_id}") from None

    def by_name(self, name: str) -> FakeContainer:
        return next(c for c in self.containers.values() if c.name == name)

    def ops(self, op: str | None = None) -> list[tuple[str, str]]:
        """The recorded (op, name) pairs, optionally of one op."""
        return [(o, n) for _, o, n in self.calls if op is None or o == op]

    async def pull(self, image: str) -> str:
        await self._op("pull", image)
        if image not in self.images:
            if not self.pullable:
                raise NotFoundError(f"pull {image}: manifest unknown")
            self.images[image] = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
        return self.images[image]

    async def create_network(self, spec: NetworkSpec) -> str:
        await self._op("create-network", spec.name)
        if spec.name in self.networks:
            raise ConflictError(f"network {spec.name} already exists")
        self.networks[spec.name] = ObservedNetwork(spec.name, dict(spec.labels), f"net{next(self._ids)}")
        return self.networks[spec.name].id

    async def create_volume(self, spec: VolumeSpec) -> str:
        await self._op("create-volume", spec.name)
        if spec.name in self.volumes:
            raise ConflictError(f"volume {spec.name} already exists")
        self.volumes[spec.name] = ObservedVolume(spec.name, dict(spec.labels))
        return spec.name

    async def create_container(self, spec: ContainerSpec) -> str:
        await self._op("create", spec.name)
        if spec.image not in self.images:
            raise NotFoundError(f"image {spec.image} not present")
        if any(c.name == spec.name for c in self.containers.values()):
            raise ConflictError(f"container name {spec.name} is already in use")
        for key, net in spec.networks.items():
            if net not in self.networks:
                raise NotFoundError(f"network {net} ({key}) not found")
        for key, vol in spec.volumes.items():
            if vol not in self.volumes:
                raise NotFoundError(f"volume {vol} ({key}) not found")
        cid = f"c{next(self._ids):04d}"
        self.containers[cid] = FakeContainer(cid, spec.name, spec, self.images[spec.image])
        return cid

    async def start(self, container_id: str) -> None:
        c = self._get(container_id)
        await self._op("start", c.name)
        if c.state(trio.current_time())[0] == "running":
            return
        c.started_at, c.stopped_code, c.stopped_by_user = trio.current_time(), None, False
        c.exited = trio.Event()

    async def stop(self, container_id: str, timeout: float = 10.0) -> None:
        c = self._get(container_id)
        await self._op("stop", c.name)
        if c.state(trio.current_time())[0] == "running":
            c.stopped_code, c.stopped_by_user = 143, True
            c.exited.set()

    async def remove(self, container_id: str) -> None:
        c = self._get(container_id)
        await self._op("remove", c.name)
        if c.state(trio.current_time())[0] == "running":
            raise ContainerStateError("running", "remove", c.name)
        del self.containers[container_id]

    async def rename(self, container_id: str, name: str) -> None:
        c = self._get(container_id)
        await self._op("rename", c.name)
        if any(o.name == name for o in self.containers.values() if o is not c):
            raise ConflictError(f"container name {name} is already in use")
        c.name = name

    async def wait_healthy(self, container_id: str, timeout: float | None = None) -> None:
        c = self._get(container_id)
        await self._op("wait-healthy", c.name)
        verdict = c.health_plan()
        if verdict is None:
            raise UnhealthyError(c.name, reason="without a healthcheck")
        at, healthy, output = verdict
        deadline = trio.current_time() + timeout if timeout is not None else math.inf
        exit_at, code = c.exit_at()
        if code is not None and exit_at < at:
            await trio.sleep_until(min(exit_at, deadline))
            if exit_at <= deadline:
                raise UnhealthyError(c.name, output, reason=f"exited (code {code}) before becoming healthy")
        await trio.sleep_until(min(at, deadline))
        if at > deadline:
            raise UnhealthyError(c.name, output, reason=f"not healthy after {timeout:g}s")
        if not healthy:
            raise UnhealthyError(c.name, output)

    async def wait_exited(self, container_id: str) -> int:
        c = self._get(container_id)
        await self._op("wait-exited", c.name)
        at, code = c.exit_at()
        with trio.move_on_at(at):
            await c.exited.wait()
        state, code = c.state(trio.current_time())
        assert state == "exited" and code is not None
        return code

    async def observe(self, project: str) -> ObservedState:
        now = trio.current_time()
        containers = []
        for c in sorted(self.containers.values(), key=lambda c: c.name):
            if c.spec.labels.get(LABEL_STACK) != project:
                continue
            state, code = c.state(now)
            containers.append(ObservedContainer(c.id, c.name, dict(c.spec.labels), state,  # type: ignore[arg-type]
                                                code, c.health(now), c.digest, c.stopped_by_user))
        return ObservedState(
            tuple(containers),
            tuple(n for _, n in sorted(self.networks.items()) if n.labels.get(LABEL_STACK) == project),
            tuple(v for _, v in sorted(self.volumes.items()) if v.labels.get(LABEL_STACK) == project),
        )
