"""The engine parts a stack uses (containers, networks, volumes), and one cheap observed snapshot.

`observe` reads container records from SQLite (synced with their shims only when `sync`), the
network state file and the volume records: no trio, no networkx. `Backend` finds networks and
volumes on the Engine facade when it has them (`engine.networks`, `engine.volumes`), else uses
the NetManager/VolumeStore it was given.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackd.planner.observed import (
    LABEL_STACK,
    ObservedContainer,
    ObservedNetwork,
    ObservedState,
    ObservedVolume,
)

STATES = {"created": "created", "running": "running", "paused": "paused", "restarting": "restarting",
          "exited": "exited", "dead": "dead"}


@dataclass
class Backend:
    """An Engine plus the network manager and volume store (until the Engine carries them)."""

    engine: Any
    net: Any = None
    vols: Any = None

    @property
    def containers(self) -> Any:
        return self.engine.containers

    @property
    def networks(self) -> Any:
        """The NetManager, or None when networking is not configured."""
        if "networks" in type(self.engine).__dict__:
            return self.engine.networks
        return self.net

    @property
    def volumes(self) -> Any:
        if "volumes" in type(self.engine).__dict__:
            return self.engine.volumes
        if self.vols is None:
            from stackd.engine.volumes import VolumeStore

            self.vols = VolumeStore(self.engine.state_root)
        return self.vols

    @property
    def engine_mounts_volumes(self) -> bool:
        """Whether the container manager resolves named volumes itself."""
        return "volumes" in type(self.engine).__dict__

    # --- the "stopped by the user" marks (Docker's HasBeenManuallyStopped) ----------------------
    def _marks(self) -> Path:
        return Path(self.engine.state_root) / "stack-stopped"

    def mark_stopped(self, cid: str, stopped: bool) -> None:
        path = self._marks() / cid
        if stopped:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def stopped_marks(self) -> set[str]:
        try:
            return set(os.listdir(self._marks()))
        except FileNotFoundError:
            return set()


def health_status(rec: Any) -> str | None:
    if rec.config.effective_healthcheck() is None:
        return None
    h = rec.health or {}
    status = h.get("Status") or "starting"
    return str(status) if rec.status in ("running", "paused", "restarting") else "unhealthy"


def health_output(rec: Any) -> str:
    log = (rec.health or {}).get("Log") or []
    return str(log[-1].get("Output") or "").strip() if log else ""


def records(backend: Backend, project: str | None, *, sync: bool = True) -> list[Any]:
    """The project's container records (all stacks' with project None), oldest first."""
    mgr = backend.containers
    recs = mgr.store.list()
    out = []
    for r in recs:
        stack = r.config.labels.get(LABEL_STACK)
        if stack is None or (project is not None and stack != project):
            continue
        out.append(mgr.sync(r) if sync else r)
    return sorted(out, key=lambda r: r.created_at)


def observed_container(rec: Any, marks: set[str]) -> ObservedContainer:
    return ObservedContainer(
        rec.id, rec.name, dict(rec.config.labels), STATES.get(rec.status, "dead"),  # type: ignore[arg-type]
        rec.exit_code, health_status(rec), rec.image_id, rec.id in marks)


def observe(backend: Backend, project: str, *, sync: bool = True) -> ObservedState:
    """One snapshot of the project's containers, networks and volumes."""
    marks = backend.stopped_marks()
    containers = tuple(observed_container(r, marks) for r in sorted(records(backend, project, sync=sync),
                                                                     key=lambda r: r.name))
    nets: tuple[ObservedNetwork, ...] = ()
    m = backend.networks
    if m is not None:
        nets = tuple(ObservedNetwork(n.name, dict(n.labels), n.id) for n in m.networks()
                     if n.labels.get(LABEL_STACK) == project)
    vols = tuple(ObservedVolume(v.name, dict(v.labels))
                 for v in backend.volumes.list(label={LABEL_STACK: project}))
    return ObservedState(containers, nets, vols)
