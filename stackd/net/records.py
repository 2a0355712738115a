"""The network records: what a network is (spec and record), what an attachment is, and the
state file's whole content (`State`), with their JSON forms."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stackd.net import ports
from stackd.net.ipam import SubnetConfig


@dataclass(frozen=True, slots=True)
class IpamConfig:
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    aux_addresses: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """What to create (the compose `networks:` entry, engine-side)."""

    name: str
    driver: str = "bridge"
    internal: bool = False
    ipam: Sequence[IpamConfig] = ()
    enable_ipv6: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    attachable: bool = False
    dns: bool = True  # name resolution (off for the default `bridge` network, as in Docker)


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    name: str
    id: str
    bridge: str
    driver: str
    internal: bool
    enable_ipv6: bool
    subnets: tuple[SubnetConfig, ...]
    labels: Mapping[str, str]
    options: Mapping[str, str]
    mtu: int
    attachable: bool
    dns: bool
    created: float

    def gateway(self, version: int) -> str:
        return next((s.gateway for s in self.subnets if ipaddress.ip_network(s.subnet).version == version), "")


@dataclass(frozen=True, slots=True)
class Attachment:
    container_id: str
    network: str
    netns_path: str
    ifname: str
    host_veth: str
    ipv4: str
    ipv6: str
    mac: str
    aliases: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # container name, hostname, service name
    gateway: bool = False  # this attachment carries the default route
    priority: int = 0
    prefix4: int = 0
    prefix6: int = 0


def network_from(d: dict[str, Any]) -> NetworkRecord:
    d = dict(d)
    d["subnets"] = tuple(SubnetConfig(**s) for s in d["subnets"])
    return NetworkRecord(**d)


def attachment_from(d: dict[str, Any]) -> Attachment:
    d = dict(d)
    d["aliases"] = tuple(d["aliases"])
    d["names"] = tuple(d["names"])
    return Attachment(**d)


@dataclass
class State:
    networks: dict[str, NetworkRecord] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    ports: list[ports.PortBinding] = field(default_factory=list)
