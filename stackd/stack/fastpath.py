"""The no-op `up` shortcut: prove cheaply that nothing would change, without the planner's imports.

Conservative by design: it answers "nothing to do" only when every service has exactly its
replicas, each with the current config hash, running (its shim's state says so and the shim
lives) or completed (exit 0, restart "no", not stopped by the user); every network and volume
exists; no orphans, no pending pulls. Anything else returns None and the planner decides.
It asks the engine's cheap read-only queries (`containers_store.quick_view`: SQLite rows and
the shims' liveness; `net.netstate.network_names`), so a no-op costs a few milliseconds beyond
loading the stack file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackd.planner.observed import (
    LABEL_CONFIG_HASH,
    LABEL_NUMBER,
    LABEL_ONEOFF,
    LABEL_SERVICE,
    LABEL_STACK,
)

if TYPE_CHECKING:
    from stackd.engine.containers_store import QuickContainer


def _replicas(svc: Mapping[str, Any]) -> int:
    deploy = svc.get("deploy") or {}
    if deploy.get("replicas") is not None:
        return int(deploy["replicas"])
    return int(svc["scale"]) if svc.get("scale") is not None else 1


def _restart(svc: Mapping[str, Any]) -> str:
    if svc.get("restart"):
        return str(svc["restart"])
    cond = ((svc.get("deploy") or {}).get("restart_policy") or {}).get("condition")
    return {"any": "always", "on-failure": "on-failure"}.get(cond or "", "no")


def _ref(ref: str) -> str | None:
    """The normalised name the image store records (`docker.io/library/busybox:latest`)."""
    from stackd.engine.reference import ReferenceError, parse

    try:
        parsed = parse(ref)
    except ReferenceError:
        return None
    return None if parsed.digest else str(parsed)


def noop(project: Any, state_root: Path, run_root: Path) -> list[tuple[str, str]] | None:
    """[(container name, "Running" | "Exited (0)")] in dependency order if `up` has nothing to do, else None."""
    from stackd.engine.containers_store import quick_view
    from stackd.net.netstate import network_names
    from stackd.planner.graph import order
    from stackd.spec.hash import config_hash

    tree, name = project.tree, project.name
    services = tree["services"]
    refs: dict[str, str] = {}
    for s, svc in services.items():
        policy = svc.get("pull_policy") or "missing"
        ref = _ref(svc["image"]) if svc.get("image") else None
        if ref is None or policy not in ("missing", "if_not_present", "never"):
            return None
        refs[s] = ref
    view = quick_view(state_root, run_root, set(refs.values()), stack=name)
    if view is None:
        return None
    containers, image_ids = view
    if any(ref not in image_ids for ref in refs.values()):
        return None
    mine: dict[str, list[QuickContainer]] = {}
    for c in containers:
        labels = c.labels
        if labels.get(LABEL_STACK) != name or labels.get(LABEL_ONEOFF, "False").lower() == "true":
            continue
        svc_name = labels.get(LABEL_SERVICE) or ""
        if svc_name not in services:
            if svc_name in project.disabled:
                continue
            return None  # an orphan: the planner warns about it
        mine.setdefault(svc_name, []).append(c)
    stopped = set(os.listdir(state_root / "stack-stopped")) if (state_root / "stack-stopped").is_dir() else set()
    nets = network_names(state_root)
    if nets is None:
        return None  # a format this shortcut does not know: let the planner look
    out: dict[str, list[tuple[str, str]]] = {}
    for s, svc in services.items():
        for key in svc.get("networks") or {}:
            net = (tree.get("networks") or {}).get(key) or {}
            if not net.get("external") and net.get("name", f"{name}_{key}") not in nets:
                return None
        for v in svc.get("volumes") or ():
            src = v.get("source")
            vol = (tree.get("volumes") or {}).get(src) if v.get("type") == "volume" and src else None
            if vol is not None and not vol.get("external") and \
                    not (state_root / "volumes" / str(vol.get("name", f"{name}_{src}")) / "volume.json").exists():
                return None
        want = _replicas(svc)
        have = mine.get(s, [])
        if len(have) != want:
            return None
        chash = config_hash(tree, s, {"image": image_ids[refs[s]]}, project.environment)
        restart = _restart(svc)
        lines = []
        for n, c in enumerate(sorted(have, key=lambda c: int(c.labels.get(LABEL_NUMBER, 0) or 0)), 1):
            expected = svc.get("container_name") or f"{name}-{s}-{n}"
            if c.labels.get(LABEL_NUMBER) != str(n) or c.name != expected or c.labels.get(LABEL_CONFIG_HASH) != chash:
                return None
            if c.live:
                lines.append((c.name, "Running"))
            elif c.status == "exited" and c.exit_code == 0 and restart == "no" and c.id not in stopped:
                lines.append((c.name, "Exited (0)"))
            else:
                return None
        out[s] = lines
    deps = {s: list(svc.get("depends_on") or {}) for s, svc in services.items()}
    return [line for s in order(deps) for line in out[s]]
