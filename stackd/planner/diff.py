"""Diff desired against observed state into per-container changes, each with its reason.

Plain dicts and lists only (no networkx): a no-op `up` stops here, with `Diff.empty`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from stackd.errors import SpecError
from stackd.planner import graph
from stackd.planner.desired import (
    ContainerSpec,
    DesiredService,
    DesiredState,
    NetworkSpec,
    VolumeSpec,
    changed_keys,
)
from stackd.planner.observed import (
    LABEL_CONFIG_HASH,
    LABEL_CONFIG_KEYS,
    LABEL_STACK,
    ObservedContainer,
    ObservedState,
)

ChangeKind = Literal["create", "recreate", "start", "restart", "remove", "rename", "unchanged"]
ACTIVE = ("create", "recreate", "start", "restart", "remove", "rename")


@dataclass(frozen=True)
class DiffOptions:
    """What `up` was asked: `services` selects (plus their dependencies unless `no_deps`)."""

    services: tuple[str, ...] = ()
    no_deps: bool = False
    force_recreate: bool = False
    no_recreate: bool = False
    remove_orphans: bool = False
    pull: str | None = None
    no_start: bool = False


@dataclass(frozen=True)
class Change:
    """What happens to one container slot, and why. `old` is the container there now."""

    kind: ChangeKind
    service: str
    name: str
    reason: str
    spec: ContainerSpec | None = None
    old: ObservedContainer | None = None


@dataclass(frozen=True)
class Diff:
    desired: DesiredState
    changes: tuple[Change, ...]
    networks: tuple[NetworkSpec, ...] = ()
    volumes: tuple[VolumeSpec, ...] = ()
    pulls: tuple[str, ...] = ()
    selected: tuple[str, ...] = ()
    order: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    no_start: bool = False
    ready: Mapping[str, bool] = field(default_factory=dict)
    """service → whether its containers already satisfy their dependents (running/healthy/complete)."""

    @property
    def empty(self) -> bool:
        return not (self.networks or self.volumes or self.pulls
                    or any(c.kind in ACTIVE for c in self.changes))


def _deps(desired: DesiredState) -> dict[str, list[str]]:
    return {s: [d.service for d in svc.depends_on] for s, svc in desired.services.items()}


def select(desired: DesiredState, options: DiffOptions) -> set[str]:
    """The services this run acts on."""
    unknown = sorted(set(options.services) - set(desired.services))
    if unknown:
        raise SpecError(f"no such service: {', '.join(unknown)}")
    if not options.services:
        return set(desired.services)
    if options.no_deps:
        return set(options.services)
    return graph.closure(_deps(desired), options.services)


def _recreate_reasons(svc: DesiredService, old: ObservedContainer, missing: set[str],
                      options: DiffOptions) -> list[str]:
    reasons = []
    if options.force_recreate:
        reasons.append("forced (--force-recreate)")
    if old.state == "dead":
        reasons.append("container is dead")
    if old.labels.get(LABEL_CONFIG_HASH) != svc.config_hash:
        try:
            old_keys = json.loads(old.labels[LABEL_CONFIG_KEYS])
        except (KeyError, ValueError):
            old_keys = None
        if not isinstance(old_keys, dict):
            reasons.append("config changed")
        else:
            keys = changed_keys(old_keys, svc.config_keys)
            if keys:
                reasons.append(f"{', '.join(keys)} changed")
            elif svc.image_digest and old.image_digest and svc.image_digest != old.image_digest:
                reasons.append(f"image changed ({old.image_digest[:19]} → {svc.image_digest[:19]})")
    reasons += [f"network {n} missing" for n in svc.networks if n in missing]
    reasons += [f"volume {v} missing" for v in svc.volumes if v in missing]
    return reasons


def _state_change(svc: DesiredService, spec: ContainerSpec, old: ObservedContainer,
                  needed: set[str]) -> Change:
    code = old.exit_code
    if old.state == "created":
        return Change("start", svc.name, spec.name, "created, not started", spec, old)
    if old.state != "exited":
        return Change("unchanged", svc.name, spec.name, old.state, spec, old)
    if old.stopped:
        return Change("start", svc.name, spec.name, "stopped", spec, old)
    if svc.restarts:
        return Change("start", svc.name, spec.name, f"exited (code {code}); restart: {svc.restart}", spec, old)
    if code == 0:
        return Change("unchanged", svc.name, spec.name, "completed (exit 0)", spec, old)
    if svc.name in needed:
        return Change("start", svc.name, spec.name, f"exited (code {code}); a dependent needs it to complete", spec, old)
    return Change("unchanged", svc.name, spec.name, f"exited (code {code}); restart: {svc.restart}", spec, old)


def _ready(svc: DesiredService, containers: list[ObservedContainer]) -> bool:
    if len(containers) < svc.replicas:
        return False
    for c in containers:
        if c.state == "exited" and c.exit_code == 0 and not svc.restarts:
            continue
        if c.state not in ("running", "paused") or (svc.healthcheck and c.health not in (None, "healthy")):
            return False
    return True


def diff(desired: DesiredState, observed: ObservedState, options: DiffOptions | None = None) -> Diff:
    """Every container slot of the selected services with its change and reason."""
    options = options or DiffOptions()
    selected = select(desired, options)
    order = graph.order(_deps(desired))
    warnings: list[str] = []
    needed: set[str] = set()
    for name in order:
        if name not in selected:
            continue
        for dep in desired.services[name].depends_on:
            if dep.service not in desired.services:
                if dep.required:
                    raise SpecError(f"service {name} depends on {dep.service}, which is not enabled")
                warnings.append(f"{name}: optional dependency {dep.service} is not enabled, skipped")
            elif dep.condition == "service_completed_successfully":
                needed.add(dep.service)

    net_names = {n for s in selected for n in desired.services[s].networks}
    vol_names = {v for s in selected for v in desired.services[s].volumes}
    networks = tuple(n for n in desired.networks.values()
                     if n.name in net_names and not n.external and observed.network(n.name) is None)
    volumes = tuple(v for v in desired.volumes.values()
                    if v.name in vol_names and not v.external and observed.volume(v.name) is None)
    missing = {n.name for n in networks} | {v.name for v in volumes}

    by_service: dict[str, list[ObservedContainer]] = {}
    for c in observed.containers:
        if c.oneoff or c.labels.get(LABEL_STACK) != desired.project or c.service is None:
            continue
        by_service.setdefault(c.service, []).append(c)

    changes: list[Change] = []
    recreated: set[str] = set()
    for name in order:
        if name not in selected:
            continue
        svc = desired.services[name]
        have = sorted(by_service.get(name, []), key=lambda c: (c.number or 0, c.name))
        slots: dict[int, list[ObservedContainer]] = {}
        for c in have:
            slots.setdefault(c.number or 0, []).append(c)
        restart_for = [d.service for d in svc.depends_on if d.restart and d.service in recreated]
        touched = False
        for spec in svc.containers:
            found = slots.pop(spec.number, [])
            old = next((c for c in found if c.name == spec.name), None)
            if old is None and found:
                old = next((c for c in found if c.labels.get(LABEL_CONFIG_HASH) == svc.config_hash), found[0])
            for extra in found:
                if extra is not old:
                    changes.append(Change("remove", name, extra.name, "leftover of an interrupted recreate", None, extra))
            if old is None:
                why = f"scaled up to {svc.replicas}" if have else "missing"
                changes.append(Change("create", name, spec.name, why, spec))
                touched = True
                continue
            reasons = _recreate_reasons(svc, old, missing, options)
            if reasons and not options.no_recreate:
                changes.append(Change("recreate", name, spec.name, "; ".join(reasons), spec, old))
                touched = True
                continue
            if old.name != spec.name:
                changes.append(Change("rename", name, spec.name, f"finish an interrupted recreate ({old.name})", spec, old))
                touched = True
            change = _state_change(svc, spec, old, needed)
            if change.kind == "unchanged" and restart_for and old.state in ("running", "restarting", "paused"):
                why = f"dependency {', '.join(restart_for)} recreated (depends_on.restart)"
                change = Change("restart", name, spec.name, why, spec, old)
            elif reasons and change.kind == "unchanged":
                change = Change("unchanged", name, spec.name, f"{change.reason} (--no-recreate)", spec, old)
            touched = touched or change.kind != "unchanged"
            changes.append(change)
        for number in sorted(slots, reverse=True):
            for extra in reversed(slots[number]):
                changes.append(Change("remove", name, extra.name, f"scaled down to {svc.replicas}", None, extra))
        if touched and any(c.service == name and c.kind in ("create", "recreate") for c in changes):
            recreated.add(name)

    for service in sorted(by_service):
        if service in desired.services or service in desired.disabled:
            continue
        for c in sorted(by_service[service], key=lambda c: c.name):
            if options.remove_orphans:
                changes.append(Change("remove", service, c.name, f"orphaned (service {service} removed)", None, c))
            else:
                warnings.append(f"found orphan container {c.name} (service {service} removed); "
                                "--remove-orphans removes it")

    to_create = {c.service for c in changes if c.kind in ("create", "recreate")}
    pulls: set[str] = set()
    for name in selected:
        svc = desired.services[name]
        policy = options.pull or svc.pull_policy or "missing"
        if policy == "always" or (policy in ("missing", "if_not_present") and name in to_create
                                  and not svc.image_digest):
            pulls.add(svc.image)
    ready = {name: _ready(desired.services[name], by_service.get(name, [])) for name in order}
    return Diff(desired, tuple(changes), networks, volumes, tuple(sorted(pulls)),
                tuple(n for n in order if n in selected), tuple(order), tuple(warnings),
                options.no_start, ready)
