"""Desired state of a stack: its networks, volumes and one container spec per replica."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stackd.errors import SpecError
from stackd.planner.observed import (
    LABEL_CONFIG_HASH,
    LABEL_CONFIG_KEYS,
    LABEL_NUMBER,
    LABEL_ONEOFF,
    LABEL_SERVICE,
    LABEL_STACK,
)

if TYPE_CHECKING:
    from stackd.spec.load import Project
    from stackd.spec.models import Service

LABEL_NETWORK = "io.stackd.network"
LABEL_VOLUME = "io.stackd.volume"


@dataclass(frozen=True)
class NetworkSpec:
    """A network to create (`name` is the engine's name, `key` the stack file's)."""

    key: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    config: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    external: bool = False


@dataclass(frozen=True)
class VolumeSpec:
    """A named volume to create."""

    key: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    config: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    external: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """One replica to create: its name, image, labels and the service's canonical config.

    `config` is the plain canonical dict of the service (what the engine translates);
    `networks` and `volumes` map the stack file's keys to the engine's names.
    """

    name: str
    service: str
    number: int
    image: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    config: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    networks: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    volumes: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def renamed(self, name: str) -> ContainerSpec:
        """The same spec under another (temporary) name."""
        return ContainerSpec(name, self.service, self.number, self.image, self.labels,
                             self.config, self.networks, self.volumes)


@dataclass(frozen=True)
class Dependency:
    service: str
    condition: str = "service_started"
    restart: bool = False
    required: bool = True


@dataclass(frozen=True)
class DesiredService:
    """A service's desired facts the diff and the plan need."""

    name: str
    image: str
    replicas: int
    containers: tuple[ContainerSpec, ...]
    config_hash: str
    config_keys: Mapping[str, str] = field(hash=False)
    depends_on: tuple[Dependency, ...] = ()
    healthcheck: bool = False
    restart: str = "no"
    start_first: bool = False
    fixed_ports: bool = False
    networks: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    image_digest: str | None = None
    pull_policy: str | None = None

    @property
    def restarts(self) -> bool:
        """Whether the engine restarts its containers (so an exited one should be running)."""
        return self.restart in ("always", "unless-stopped") or self.restart.startswith("on-failure")


@dataclass(frozen=True)
class DesiredState:
    project: str
    services: Mapping[str, DesiredService]
    networks: Mapping[str, NetworkSpec]
    volumes: Mapping[str, VolumeSpec]
    disabled: tuple[str, ...] = ()


def short_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def config_keys(view: Mapping[str, Any]) -> dict[str, str]:
    """Sub-hashes of a hashed view, one level deep into mappings (`environment.MARK`)."""
    keys: dict[str, str] = {}
    for key, value in view.items():
        if isinstance(value, dict) and value:
            for sub, subvalue in value.items():
                keys[f"{key}.{sub}"] = short_hash(subvalue)
        else:
            keys[key] = short_hash(value)
    return keys


def changed_keys(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Keys added, removed or changed between two `config_keys` results, sorted."""
    return sorted(k.lstrip("#") for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def effective_restart(service: Service) -> str:
    if service.restart:
        return service.restart
    policy = service.deploy.restart_policy if service.deploy else None
    condition = policy.condition if policy else None
    return {"any": "always", "on-failure": "on-failure", "none": "no"}.get(condition or "none", "no")


def replicas_of(service: Service, override: int | None = None) -> int:
    if override is not None:
        return override
    if service.deploy is not None and service.deploy.replicas is not None:
        return service.deploy.replicas
    return service.scale if service.scale is not None else 1


def desired_state(
    project: Project,
    digests: Mapping[str, str] | None = None,
    scale: Mapping[str, int] | None = None,
) -> DesiredState:
    """The desired state of a loaded project.

    `digests` maps image references to the digests the image store resolved them to (they join
    the config hash); `scale` overrides replica counts (`--scale web=3`).
    """
    from stackd.spec.hash import config_hash, hashed_view

    stack, name = project.stack, project.name
    digests = digests or {}
    scale = scale or {}
    unknown = sorted(set(scale) - set(stack.services))
    if unknown:
        raise SpecError(f"--scale: no such service: {', '.join(unknown)}")
    base = {LABEL_STACK: name}
    networks = {
        key: NetworkSpec(key, net.name or f"{name}_{key}",
                         {**(net.labels or {}), **base, LABEL_NETWORK: key},
                         _plain(project.tree["networks"][key]), bool(net.external))
        for key, net in stack.networks.items()
    }
    volumes = {
        key: VolumeSpec(key, vol.name or f"{name}_{key}",
                        {**(vol.labels or {}), **base, LABEL_VOLUME: key},
                        _plain(project.tree["volumes"][key]), bool(vol.external))
        for key, vol in stack.volumes.items()
    }
    services: dict[str, DesiredService] = {}
    for svc_name, svc in stack.services.items():
        image = svc.image or f"{name}-{svc_name}"
        digest = digests.get(image)
        view = hashed_view(project.tree, svc_name, project.environment)
        keys = config_keys(view)
        chash = config_hash(project.tree, svc_name, {"image": digest} if digest else None,
                            project.environment)
        count = replicas_of(svc, scale.get(svc_name))
        if svc.container_name and count > 1:
            raise SpecError(f"services.{svc_name}: container_name {svc.container_name!r} "
                            f"allows one container, not {count}")
        nets = {k: networks[k].name for k in (svc.networks or {}) if k in networks}
        vols = {m.source: volumes[m.source].name for m in svc.volumes or ()
                if m.type == "volume" and m.source in volumes}
        config = _plain(project.tree["services"][svc_name])
        keys_label = json.dumps(keys, sort_keys=True, separators=(",", ":"))
        containers = []
        for number in range(1, count + 1):
            labels = {**(svc.labels or {}), **base, LABEL_SERVICE: svc_name,
                      LABEL_NUMBER: str(number), LABEL_ONEOFF: "False",
                      LABEL_CONFIG_HASH: chash, LABEL_CONFIG_KEYS: keys_label}
            cname = svc.container_name or f"{name}-{svc_name}-{number}"
            containers.append(ContainerSpec(cname, svc_name, number, image, labels, config, nets, vols))
        health = svc.healthcheck
        has_health = bool(health and not health.disable and health.test and health.test[0] != "NONE")
        update = svc.deploy.update_config if svc.deploy else None
        services[svc_name] = DesiredService(
            name=svc_name, image=image, replicas=count, containers=tuple(containers),
            config_hash=chash, config_keys=keys,
            depends_on=tuple(Dependency(dep, d.condition, bool(d.restart), d.required)
                             for dep, d in sorted((svc.depends_on or {}).items())),
            healthcheck=has_health, restart=effective_restart(svc),
            start_first=bool(update and update.order == "start-first"),
            fixed_ports=any(p.published not in (None, "", "0") for p in svc.ports or ()),
            networks=tuple(sorted(nets.values())), volumes=tuple(sorted(vols.values())),
            image_digest=digest, pull_policy=svc.pull_policy,
        )
    return DesiredState(name, services, networks, volumes, tuple(project.disabled))
