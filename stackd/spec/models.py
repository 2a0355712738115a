"""The root stack model (`Stack`) and the top-level resources: networks, volumes, secrets, configs."""

from typing import Any

from pydantic import Field

from stackd.spec.models_base import Model, StrMap
from stackd.spec.models_service import Service

__all__ = ["Config", "IpamPool", "Network", "Secret", "Service", "Stack", "Volume"]


class IpamPool(Model):
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: StrMap | None = None


class Ipam(Model):
    driver: str | None = None
    config: list[IpamPool] | None = None
    options: StrMap | None = None


class Network(Model):
    name: str | None = None
    driver: str | None = None
    driver_opts: StrMap | None = None
    ipam: Ipam | None = None
    external: bool | None = None
    internal: bool | None = None
    attachable: bool | None = None
    labels: StrMap | None = None
    enable_ipv4: bool | None = None
    enable_ipv6: bool | None = None


class Volume(Model):
    name: str | None = None
    driver: str | None = None
    driver_opts: StrMap | None = None
    external: bool | None = None
    labels: StrMap | None = None


class Secret(Model):
    name: str | None = None
    file: str | None = None
    environment: str | None = None
    content: str | None = None
    external: bool | None = None
    labels: StrMap | None = None
    driver: str | None = None
    driver_opts: StrMap | None = None
    template_driver: str | None = None


class Config(Secret):
    """Configs take the same keys as secrets."""


class Stack(Model):
    """A whole project: the root model `stackd.spec.load` returns inside a `Project`."""

    name: str | None = None
    services: dict[str, Service] = Field(default_factory=dict)
    networks: dict[str, Network] = Field(default_factory=dict)
    volumes: dict[str, Volume] = Field(default_factory=dict)
    secrets: dict[str, Secret] = Field(default_factory=dict)
    configs: dict[str, Config] = Field(default_factory=dict)
    models: dict[str, Any] | None = None
    include: list[Any] | None = None
    version: str | None = None
