"""Helpers for planner and apply tests: load a stack from text, fake an observed state."""

from __future__ import annotations

import itertools
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

from stackd.planner.desired import DesiredState, desired_state
from stackd.planner.diff import Diff, DiffOptions, diff
from stackd.planner.observed import (
    ObservedContainer,
    ObservedNetwork,
    ObservedState,
    ObservedVolume,
)
from stackd.planner.plan import Plan, build_plan
from stackd.spec.load import Project, load
from stackd.spec.options import LoadOptions

_dirs = itertools.count()


def project(tmp: Path, text: str, name: str = "demo", **env: str) -> Project:
    """Load `text` as the stack file of project `name` (in a fresh directory under `tmp`)."""
    root = tmp / f"stack{next(_dirs)}"
    root.mkdir()
    (root / "stack.yaml").write_text(textwrap.dedent(text))
    return load(LoadOptions(files=(str(root / "stack.yaml"),), project_name=name, environ=env,
                            working_dir=str(root)))


def running(desired: DesiredState, digest: str | None = None, **per_service: dict[str, Any]) -> ObservedState:
    """What the engine would report after a successful `up` of `desired` (all running)."""
    containers = []
    n = 0
    for svc in desired.services.values():
        for spec in svc.containers:
            n += 1
            fields: dict[str, Any] = {"state": "running", "health": "healthy" if svc.healthcheck else None,
                                      "image_digest": digest or svc.image_digest}
            fields.update(per_service.get(svc.name, {}))
            containers.append(ObservedContainer(f"id{n}", spec.name, dict(spec.labels), **fields))
    return ObservedState(
        tuple(containers),
        tuple(ObservedNetwork(net.name, dict(net.labels), f"n-{net.name}")
              for net in desired.networks.values() if not net.external),
        tuple(ObservedVolume(vol.name, dict(vol.labels)) for vol in desired.volumes.values() if not vol.external),
    )


def with_container(observed: ObservedState, name: str, **changes: Any) -> ObservedState:
    """`observed` with container `name` changed (fields) or dropped (changes={'drop': True})."""
    out = []
    for c in observed.containers:
        if c.name != name:
            out.append(c)
        elif not changes.get("drop"):
            out.append(replace(c, **changes))
    return replace(observed, containers=tuple(out))


def plan_of(desired: DesiredState, observed: ObservedState | None = None, **options: Any) -> Plan:
    return build_plan(diff(desired, observed or ObservedState(), DiffOptions(**options)))


def changes(d: Diff) -> dict[str, tuple[str, str]]:
    """container name → (change kind, reason)."""
    return {c.name: (c.kind, c.reason) for c in d.changes}


def steps(plan: Plan) -> list[str]:
    return [f"{a.kind} {a.target}" for a in plan.actions]


__all__ = ["changes", "desired_state", "diff", "plan_of", "project", "running", "steps", "with_container"]
