"""The real `StackEngine`: the executor's async calls on stackd's engine, blocking work in threads.

Timeouts use the wall clock inside the worker threads (not trio's clock), so the adapter behaves
the same under trio's autojump test clock.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import trio

from stackd.apply_engine import UnhealthyError
from stackd.errors import ConflictError, ContainerStateError, EngineError, NotFoundError
from stackd.planner.desired import ContainerSpec, NetworkSpec, VolumeSpec
from stackd.planner.observed import (
    LABEL_NUMBER,
    LABEL_ONEOFF,
    LABEL_SERVICE,
    LABEL_STACK,
    ObservedState,
)
from stackd.stack.backend import Backend, health_output, health_status, observe

T = TypeVar("T")
POLL = 0.1


def net_spec(spec: NetworkSpec) -> Any:
    """The net manager's NetworkSpec for a stack network."""
    from stackd.net.manager import IpamConfig
    from stackd.net.manager import NetworkSpec as NetSpec

    c: Mapping[str, Any] = spec.config
    ipam = [IpamConfig(str(p.get("subnet") or ""), str(p.get("gateway") or ""), str(p.get("ip_range") or ""),
                       dict(p.get("aux_addresses") or {}))
            for p in ((c.get("ipam") or {}).get("config") or ())]
    return NetSpec(spec.name, driver=str(c.get("driver") or "bridge"), internal=bool(c.get("internal")),
                   ipam=tuple(ipam), enable_ipv6=bool(c.get("enable_ipv6")), labels=dict(spec.labels),
                   options={str(k): str(v) for k, v in (c.get("driver_opts") or {}).items()},
                   attachable=bool(c.get("attachable")))


class RealStackEngine:
    """StackEngine over a `Backend` (see stackd.apply_engine for the contract)."""

    def __init__(self, backend: Backend, *, pull_progress: Any = None) -> None:
        self.backend = backend
        self.pull_progress = pull_progress

    async def _run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kw), abandon_on_cancel=True)

    # --- images, networks, volumes -------------------------------------------------------------
    async def pull(self, image: str) -> str:
        rec = await self._run(self.backend.engine.ensure_image, image, pull="always",
                              progress=self.pull_progress)
        return str(rec.id)

    async def create_network(self, spec: NetworkSpec) -> str:
        m = self.backend.networks
        if m is None:
            raise EngineError(f"network {spec.name}: networking is not configured")
        rec = await self._run(m.create_network, net_spec(spec))
        return str(rec.id)

    async def create_volume(self, spec: VolumeSpec) -> str:
        return await self._run(self._create_volume, spec)

    def _create_volume(self, spec: VolumeSpec) -> str:
        store = self.backend.volumes
        try:
            store.inspect(spec.name)
        except NotFoundError:
            pass
        else:
            raise ConflictError(f"volume {spec.name} already exists")
        c = spec.config
        store.create(spec.name, driver=str(c.get("driver") or "local"), labels=dict(spec.labels),
                     driver_opts={str(k): str(v) for k, v in (c.get("driver_opts") or {}).items()})
        return spec.name

    # --- containers ------------------------------------------------------------------------------
    async def create_container(self, spec: ContainerSpec) -> str:
        return await self._run(self.create_sync, spec)

    def resolver(self, project: str) -> Callable[[str], str]:
        """service → id of its first running-or-any container (for service:X references); the
        records are read on the first reference only (most services have none)."""
        @functools.cache
        def records() -> list[Any]:
            return [r for r in self.backend.containers.store.list()
                    if r.config.labels.get(LABEL_STACK) == project and r.config.labels.get(LABEL_ONEOFF) != "True"]

        def resolve(service: str) -> str:
            mine = sorted((r for r in records() if r.config.labels.get(LABEL_SERVICE) == service),
                          key=lambda r: (r.status != "running", int(r.config.labels.get(LABEL_NUMBER, "0") or 0)))
            if not mine:
                raise NotFoundError(f"service {service} has no container (needed by another service)")
            return str(mine[0].id)

        return resolve

    def create_sync(self, spec: ContainerSpec, *, name: str | None = None) -> str:
        from stackd.stack.convert import container_config

        project = spec.labels.get(LABEL_STACK, "")
        self.backend.engine.images.resolve(spec.image)  # NotFoundError before anything else
        m = self.backend.networks
        for key, net in spec.networks.items():
            if m is None or all(n.name != net for n in m.networks()):
                raise NotFoundError(f"network {net} (networks.{key}) not found")
        for vol in spec.volumes.values():
            self.backend.volumes.inspect(vol)  # NotFoundError: the stack's volumes are made first
        cfg = container_config(spec, resolve=self.resolver(project), name=name)
        cfg = dataclasses.replace(cfg, mounts=tuple(self._prepare_mount(m, spec) for m in cfg.mounts))
        rec = self.backend.containers.create(cfg)
        return str(rec.id)

    def _prepare_mount(self, m: Any, spec: ContainerSpec) -> Any:
        if m.type == "bind" and m.source and not os.path.exists(m.source):
            os.makedirs(m.source, exist_ok=True)  # Compose creates a missing bind source directory
        if m.type == "volume" and not self.backend.engine_mounts_volumes:
            store = self.backend.volumes
            if not m.name:
                rec = store.create(labels={LABEL_STACK: spec.labels.get(LABEL_STACK, "")})
                return dataclasses.replace(m, name=rec.name, source=rec.mountpoint)
            if m.name not in spec.volumes.values():  # an engine volume not declared in the stack
                try:
                    store.inspect(m.name)
                except NotFoundError:
                    store.create(m.name)
            return dataclasses.replace(m, source=store.inspect(m.name).mountpoint)
        return m

    async def start(self, container_id: str) -> None:
        await self._run(self.start_sync, container_id)

    def start_sync(self, container_id: str) -> None:
        mgr = self.backend.containers
        rec = mgr.get(container_id)
        if rec.status in ("running", "restarting"):
            return
        if rec.status == "paused":
            mgr.unpause(rec.id)
        else:
            mgr.start(rec.id)
        self.backend.mark_stopped(rec.id, False)

    async def stop(self, container_id: str, timeout: float = 10.0) -> None:
        await self._run(self.stop_sync, container_id, timeout)

    def stop_sync(self, container_id: str, timeout: float | None = None) -> None:
        mgr = self.backend.containers
        rec = mgr.get(container_id)
        if rec.status in ("running", "paused", "restarting"):
            self.backend.mark_stopped(rec.id, True)
            mgr.stop(rec.id, timeout=timeout)

    async def remove(self, container_id: str) -> None:
        await self._run(self.remove_sync, container_id)

    def remove_sync(self, container_id: str, *, force: bool = False, volumes: bool = False) -> None:
        mgr = self.backend.containers
        rec = mgr.get(container_id)
        if rec.status in ("running", "paused", "restarting") and not force:
            raise ContainerStateError(rec.status, "remove", rec.name)
        if self.backend.engine_mounts_volumes:
            mgr.remove(rec.id, force=force, volumes=volumes)
        else:
            mgr.remove(rec.id, force=force)
        self.backend.mark_stopped(rec.id, False)
        if not self.backend.engine_mounts_volumes:
            store = self.backend.volumes
            for m in rec.config.mounts:
                if m.type == "volume" and m.name:
                    try:
                        anonymous = store.inspect(m.name).anonymous
                        if anonymous and volumes:
                            store.remove(m.name, force=True)
                    except NotFoundError:
                        pass

    async def rename(self, container_id: str, name: str) -> None:
        await self._run(self.backend.containers.rename, container_id, name)

    async def wait_healthy(self, container_id: str, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rec = await self._run(self.backend.containers.get, container_id)
            status = health_status(rec)
            if status is None:
                raise UnhealthyError(rec.name, reason="without a healthcheck")
            if rec.status == "exited":
                raise UnhealthyError(rec.name, health_output(rec),
                                     reason=f"exited (code {rec.exit_code}) before becoming healthy")
            if status == "healthy":
                return
            if status == "unhealthy":
                raise UnhealthyError(rec.name, health_output(rec))
            if deadline is not None and time.monotonic() >= deadline:
                raise UnhealthyError(rec.name, health_output(rec), reason=f"not healthy after {timeout:g}s")
            await trio.to_thread.run_sync(time.sleep, POLL, abandon_on_cancel=True)

    async def wait_exited(self, container_id: str) -> int:
        rec = await self._run(self.backend.containers.wait, container_id)
        if rec.exit_code is None:
            raise EngineError(f"container {rec.name} has no exit code")
        return int(rec.exit_code)

    async def observe(self, project: str) -> ObservedState:
        return await self._run(observe, self.backend, project)

