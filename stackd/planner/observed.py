"""What the engine reports: one frozen snapshot of a stack's containers, networks and volumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

ContainerStateName = Literal["created", "running", "paused", "restarting", "exited", "dead"]

LABEL_STACK = "io.stackd.stack"
LABEL_SERVICE = "io.stackd.service"
LABEL_NUMBER = "io.stackd.number"
LABEL_ONEOFF = "io.stackd.oneoff"
LABEL_CONFIG_HASH = "io.stackd.config-hash"
LABEL_CONFIG_KEYS = "io.stackd.config-keys"
"""Per-key sub-hashes of the service config (compact JSON), so a diff can name what changed."""


@dataclass(frozen=True)
class ObservedContainer:
    """A container as the engine sees it.

    `health` is None without a healthcheck, else "starting", "healthy" or "unhealthy";
    `stopped` is True when a user stopped or killed it (`stackd stop`), as opposed to it exiting
    on its own; `image_digest` the digest of the image it was created from, when known.
    """

    id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    state: ContainerStateName = "running"
    exit_code: int | None = None
    health: str | None = None
    image_digest: str | None = None
    stopped: bool = False

    @property
    def service(self) -> str | None:
        return self.labels.get(LABEL_SERVICE)

    @property
    def number(self) -> int | None:
        try:
            return int(self.labels[LABEL_NUMBER])
        except (KeyError, ValueError):
            return None

    @property
    def oneoff(self) -> bool:
        return self.labels.get(LABEL_ONEOFF, "False").lower() == "true"


@dataclass(frozen=True)
class ObservedNetwork:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    id: str = ""


@dataclass(frozen=True)
class ObservedVolume:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ObservedState:
    """Everything of one stack (and the networks/volumes it names) at one moment."""

    containers: tuple[ObservedContainer, ...] = ()
    networks: tuple[ObservedNetwork, ...] = ()
    volumes: tuple[ObservedVolume, ...] = ()

    def network(self, name: str) -> ObservedNetwork | None:
        return next((n for n in self.networks if n.name == name), None)

    def volume(self, name: str) -> ObservedVolume | None:
        return next((v for v in self.volumes if v.name == name), None)
