"""The no-op `up` shortcut: prove cheaply that nothing would change, without the planner's imports.

Conservative by design: it answers "nothing to do" only when every service has exactly its
replicas, each with the current config hash, running (its shim's state says so and the shim
lives) or completed (exit 0, restart "no", not stopped by the user); every network and volume
exists; no orphans, no pending pulls. Anything else returns None and the planner decides.
It reads the engine's records directly (SQLite rows, the shim's state.json, the network and
volume state files), so a no-op costs a few milliseconds beyond loading the stack file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stackd.planner.observed import (
    LABEL_CONFIG_HASH,
    LABEL_NUMBER,
    LABEL_ONEOFF,
    LABEL_SERVICE,
    LABEL_STACK,
)


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


def _image_id(conn: sqlite3.Connection, ref: str) -> str | None:
    from stackd.engine.reference import ReferenceError, parse

    try:
        parsed = parse(ref)
    except ReferenceError:
        return None
    if parsed.digest:
        return None
    row = conn.execute("SELECT image_id FROM image_names WHERE name=?", (str(parsed),)).fetchone()
    return str(row[0]) if row else None


def _shim_running(run_root: Path, cid: str) -> bool:
    d = run_root / "shims" / cid
    try:
        with open(d / "state.json") as f:
            state = json.load(f)
        with open(d / "shim.pid") as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            alive = str(d).encode() in f.read()
    except (OSError, ValueError):
        return False
    return alive and isinstance(state, dict) and state.get("status") == "running"


def noop(project: Any, state_root: Path, run_root: Path) -> list[tuple[str, str]] | None:
    """[(container name, "Running" | "Exited (0)")] in dependency order if `up` has nothing to do, else None."""
    from stackd.planner.graph import order
    from stackd.spec.hash import config_hash

    db = state_root / "stackd.db"
    if not db.exists():
        return None
    tree, name = project.tree, project.name
    services = tree["services"]
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        rows = conn.execute("SELECT id, name, status, exit_code, labels FROM containers").fetchall()
        images = {}
        for s, svc in services.items():
            policy = svc.get("pull_policy") or "missing"
            if not svc.get("image") or policy not in ("missing", "if_not_present", "never"):
                return None
            images[s] = _image_id(conn, svc["image"])
            if images[s] is None:
                return None
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    mine: dict[str, list[tuple[str, str, str, int | None, dict[str, str]]]] = {}
    for cid, cname, status, code, labels_text in rows:
        labels = json.loads(labels_text or "{}")
        if labels.get(LABEL_STACK) != name or labels.get(LABEL_ONEOFF, "False").lower() == "true":
            continue
        svc_name = labels.get(LABEL_SERVICE)
        if svc_name not in services:
            if svc_name in project.disabled:
                continue
            return None  # an orphan: the planner warns about it
        mine.setdefault(svc_name, []).append((cid, cname, status, code, labels))
    stopped = set(os.listdir(state_root / "stack-stopped")) if (state_root / "stack-stopped").is_dir() else set()
    try:
        with open(state_root / "net" / "state.json") as f:
            nets = {str(n["name"]) for n in json.load(f).get("networks") or ()}
    except FileNotFoundError:
        nets = set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
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
        have = sorted(mine.get(s, []), key=lambda r: r[4].get(LABEL_NUMBER, ""))
        if len(have) != want:
            return None
        chash = config_hash(tree, s, {"image": str(images[s])}, project.environment)
        restart = _restart(svc)
        lines = []
        for n, (cid, cname, status, code, labels) in enumerate(sorted(have, key=lambda r: int(r[4].get(LABEL_NUMBER, 0))), 1):
            expected = svc.get("container_name") or f"{name}-{s}-{n}"
            if labels.get(LABEL_NUMBER) != str(n) or cname != expected or labels.get(LABEL_CONFIG_HASH) != chash:
                return None
            if status == "running" and _shim_running(run_root, cid):
                lines.append((cname, "Running"))
            elif status == "exited" and code == 0 and restart == "no" and cid not in stopped:
                lines.append((cname, "Exited (0)"))
            else:
                return None
        out[s] = lines
    deps = {s: list(svc.get("depends_on") or {}) for s, svc in services.items()}
    return [line for s in order(deps) for line in out[s]]
