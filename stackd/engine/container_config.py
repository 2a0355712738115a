"""What a container is, as Docker resolves it from `docker run` flags or a Compose service (frozen data).

The engine never sees spec models: the CLI and the planner build a `ContainerConfig`, the
container manager records it and hands it to `bundle.write_bundle`. Values are already parsed
(bytes, seconds, lists); env files are already merged into `env`. `None` means "not given"
and differs from an explicit empty value where Docker distinguishes them (entrypoint, command).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _strs(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


@dataclass(frozen=True, slots=True)
class HealthcheckConfig:
    """Docker's healthcheck: test is ["CMD", ...], ["CMD-SHELL", cmd] or ["NONE"]; durations in seconds."""

    test: tuple[str, ...] = ()
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0
    start_interval: float = 5.0

    @property
    def disabled(self) -> bool:
        return not self.test or self.test[0] == "NONE"

    @classmethod
    def from_image(cls, hc: Mapping[str, Any] | None) -> HealthcheckConfig | None:
        """From the image config's Healthcheck (durations there are nanoseconds; 0 = default)."""
        if not hc or not hc.get("Test"):
            return None
        d = cls()

        def sec(key: str, default: float) -> float:
            v = hc.get(key) or 0
            return v / 1e9 if v else default

        return cls(tuple(hc["Test"]), sec("Interval", d.interval), sec("Timeout", d.timeout),
                   int(hc.get("Retries") or d.retries), sec("StartPeriod", d.start_period),
                   sec("StartInterval", d.start_interval))


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The `config` object of an OCI image config JSON, the parts containers inherit."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    healthcheck: HealthcheckConfig | None = None

    @classmethod
    def from_oci(cls, doc: Mapping[str, Any] | None) -> ImageConfig:
        """From the whole image config document ({"config": {...}, ...}) or its `config` object."""
        doc = doc or {}
        inner = doc.get("config")
        c: Mapping[str, Any] = inner if isinstance(inner, Mapping) else ({} if "rootfs" in doc else doc)
        return cls(
            entrypoint=_strs(c.get("Entrypoint")), cmd=_strs(c.get("Cmd")),
            env=tuple(c.get("Env") or ()), user=c.get("User") or "",
            working_dir=c.get("WorkingDir") or "",
            exposed_ports=tuple(sorted(c.get("ExposedPorts") or {})),
            volumes=tuple(sorted(c.get("Volumes") or {})),
            labels=dict(c.get("Labels") or {}), stop_signal=c.get("StopSignal") or "",
            healthcheck=HealthcheckConfig.from_image(c.get("Healthcheck")),
        )


@dataclass(frozen=True, slots=True)
class MountConfig:
    """A bind, volume or tmpfs mount (`--mount`/`-v`/`--tmpfs`, Compose `volumes:`/`tmpfs:`).

    For a volume, the manager fills `source` with the volume's host directory before the bundle
    is built; `name` keeps the volume name for records.
    """

    type: str  # "bind" | "volume" | "tmpfs"
    target: str
    source: str = ""
    read_only: bool = False
    propagation: str = ""  # rprivate (default), private, rshared, shared, rslave, slave
    name: str = ""
    tmpfs_size: int | None = None  # bytes
    tmpfs_mode: int | None = None
    options: tuple[str, ...] = ()  # extra raw mount options


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """`--device host[:container[:perms]]`."""

    host_path: str
    container_path: str = ""
    permissions: str = "rwm"


@dataclass(frozen=True, slots=True)
class Ulimit:
    name: str  # nofile, nproc, core, memlock, … (without RLIMIT_)
    soft: int
    hard: int


@dataclass(frozen=True, slots=True)
class Resources:
    """Resource limits; None or 0 means unset, as in Docker."""

    memory: int | None = None  # bytes
    memory_reservation: int | None = None
    memswap: int | None = None  # memory+swap total; -1 = unlimited swap
    cpus: float | None = None
    cpu_shares: int | None = None
    cpuset: str = ""
    cpuset_mems: str = ""
    pids_limit: int | None = None  # <= 0 = unlimited
    oom_kill_disable: bool = False
    oom_score_adj: int | None = None
    blkio_weight: int | None = None


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    name: str = "no"  # no | always | on-failure | unless-stopped
    max_retries: int = 0


@dataclass(frozen=True, slots=True)
class LogConfig:
    driver: str = "json-file"
    max_size: int | None = None  # bytes; None = unlimited
    max_file: int = 1


@dataclass(frozen=True, slots=True)
class NetworkAttachmentConfig:
    """One network a container joins (engine-level name, e.g. `demo_backend`)."""

    network: str
    aliases: tuple[str, ...] = ()
    ipv4_address: str = ""
    ipv6_address: str = ""
    mac_address: str = ""
    priority: int = 0  # the highest-priority network carries the default route


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """Everything a container is; see the module docstring for the conventions."""

    name: str
    image: str  # the reference as the user wrote it
    image_config: ImageConfig = field(default_factory=ImageConfig)
    image_id: str = ""
    entrypoint: tuple[str, ...] | None = None  # None: the image's; (): reset (drops image Cmd too)
    command: tuple[str, ...] | None = None  # None: the image's Cmd (unless entrypoint given)
    env: tuple[str, ...] = ()  # KEY=VALUE; a bare KEY removes it
    user: str = ""  # "" = the image's User
    working_dir: str = ""  # "" = the image's WorkingDir, else /
    hostname: str = ""  # "" = the first 12 characters of the container id
    domainname: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[MountConfig, ...] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # target -> options ("size=64m,mode=1777")
    read_only: bool = False
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()
    ulimits: tuple[Ulimit, ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    security_opt: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    init: bool = False
    shm_size: int = 64 * 1024 * 1024
    stop_signal: str = ""  # "" = the image's StopSignal, else SIGTERM
    stop_grace_period: float = 10.0
    tty: bool = False
    stdin_open: bool = False
    network_mode: str = ""  # "" (bridge/own netns), none, host, container:<id>
    netns_path: str = ""  # a netns made by the net layer (joined by path)
    pid_mode: str = ""  # "", host, container:<id>
    ipc_mode: str = ""  # "", private, shareable, host, container:<id>
    uts_mode: str = ""  # "", host
    group_add: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()  # the container's IPs, for the default /etc/hosts
    hosts_file: str = ""  # /etc/hosts made by the net layer (else a default one is written)
    resolv_conf_file: str = ""  # /etc/resolv.conf made by the net layer
    networks: tuple[NetworkAttachmentConfig, ...] = ()  # () with network_mode "": the default bridge
    ports: tuple[str | Mapping[str, Any], ...] = ()  # "8080:80/tcp" or Compose's long form
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_opt: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()  # "host:ip" or "host=ip"
    volumes_from: tuple[str, ...] = ()  # "container[:ro|:rw]"
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    healthcheck: HealthcheckConfig | None = None  # None = the image's
    log: LogConfig = field(default_factory=LogConfig)

    def effective_stop_signal(self) -> str:
        return self.stop_signal or self.image_config.stop_signal or "SIGTERM"

    def effective_healthcheck(self) -> HealthcheckConfig | None:
        hc = self.healthcheck if self.healthcheck is not None else self.image_config.healthcheck
        return None if hc is None or hc.disabled else hc
