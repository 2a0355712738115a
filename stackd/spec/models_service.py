"""Pydantic models of a service, in canonical (long) syntax; field order is compose's output order.

No `from __future__ import annotations` in the model modules: pydantic then skips evaluating
string annotations, which makes importing them measurably faster.
"""

from typing import Any, Literal

from pydantic import Field

from stackd.spec.models_base import ByteSize, Duration, EnvMap, Model, StrMap


class Ulimit(Model):
    soft: int
    hard: int


class FileRef(Model):
    """A service's reference to a top-level config or secret."""

    source: str
    target: str | None = None
    uid: str | None = None
    gid: str | None = None
    mode: str | None = None


class Build(Model):
    context: str | None = None
    dockerfile: str | None = None
    dockerfile_inline: str | None = None
    entitlements: list[str] | None = None
    args: EnvMap | None = None
    ssh: list[str] | None = None
    labels: StrMap | None = None
    cache_from: list[str] | None = None
    cache_to: list[str] | None = None
    no_cache: bool | None = None
    no_cache_filter: list[str] | str | None = None
    additional_contexts: StrMap | None = None
    network: str | None = None
    provenance: str | bool | None = None
    sbom: str | bool | None = None
    pull: bool | None = None
    target: str | None = None
    shm_size: ByteSize | None = None
    extra_hosts: list[str] | None = None
    isolation: str | None = None
    privileged: bool | None = None
    secrets: list[FileRef] | None = None
    tags: list[str] | None = None
    ulimits: dict[str, int | Ulimit] | None = None
    platforms: list[str] | None = None


class DependsOn(Model):
    condition: Literal["service_started", "service_healthy", "service_completed_successfully"] = "service_started"
    restart: bool | None = None
    required: bool = True


class UpdateConfig(Model):
    parallelism: int | None = Field(default=None, ge=0)
    delay: Duration | None = None
    failure_action: str | None = None
    monitor: Duration | None = None
    max_failure_ratio: float | None = None
    order: Literal["start-first", "stop-first"] | None = None


class DeviceRequest(Model):
    capabilities: list[str] | None = None
    count: int | Literal["all"] | None = None
    device_ids: list[str] | None = None
    driver: str | None = None
    options: StrMap | None = None


class DiscreteResource(Model):
    kind: str
    value: int


class GenericResource(Model):
    discrete_resource_spec: DiscreteResource | None = None


class Resource(Model):
    cpus: float | None = Field(default=None, ge=0)
    memory: ByteSize | None = None
    pids: int | None = None
    devices: list[DeviceRequest] | None = None
    generic_resources: list[GenericResource] | None = None


class Resources(Model):
    limits: Resource | None = None
    reservations: Resource | None = None


class RestartPolicy(Model):
    condition: Literal["none", "on-failure", "any"] | None = None
    delay: Duration | None = None
    max_attempts: int | None = Field(default=None, ge=0)
    window: Duration | None = None


class Placement(Model):
    constraints: list[str] | None = None
    preferences: list[dict[str, str]] | None = None
    max_replicas_per_node: int | None = None


class Deploy(Model):
    mode: Literal["global", "replicated", "replicated-job", "global-job"] | None = None
    replicas: int | None = Field(default=None, ge=0)
    labels: StrMap | None = None
    update_config: UpdateConfig | None = None
    rollback_config: UpdateConfig | None = None
    resources: Resources | None = None
    restart_policy: RestartPolicy | None = None
    placement: Placement | None = None
    endpoint_mode: str | None = None


class Device(Model):
    source: str
    target: str | None = None
    permissions: str | None = None


class EnvFile(Model):
    path: str
    required: bool = True
    format: str | None = None


class Healthcheck(Model):
    test: list[str] | None = None
    timeout: Duration | None = None
    interval: Duration | None = None
    retries: int | None = Field(default=None, ge=0)
    start_period: Duration | None = None
    start_interval: Duration | None = None
    disable: bool | None = None


class Logging(Model):
    driver: str | None = None
    options: StrMap | None = None


class ServiceNetwork(Model):
    aliases: list[str] | None = None
    driver_opts: StrMap | None = None
    gw_priority: int | None = None
    interface_name: str | None = None
    ipv4_address: str | None = None
    ipv6_address: str | None = None
    link_local_ips: list[str] | None = None
    mac_address: str | None = None
    priority: int | None = None


class Port(Model):
    name: str | None = None
    mode: Literal["host", "ingress"] = "ingress"
    host_ip: str | None = None
    target: int = Field(ge=1, le=65535)
    published: str | None = None
    protocol: str = "tcp"
    app_protocol: str | None = None


class BindOptions(Model):
    selinux: Literal["z", "Z"] | None = None
    propagation: Literal["shared", "slave", "private", "rshared", "rslave", "rprivate"] | None = None
    create_host_path: bool = True
    recursive: Literal["enabled", "disabled", "writable", "readonly"] | None = None


class VolumeOptions(Model):
    labels: StrMap | None = None
    nocopy: bool | None = None
    subpath: str | None = None


class TmpfsOptions(Model):
    size: ByteSize | None = None
    mode: int | None = None


class ImageOptions(Model):
    subpath: str | None = None


class VolumeMount(Model):
    type: Literal["volume", "bind", "tmpfs", "npipe", "cluster", "image"]
    source: str | None = None
    target: str
    read_only: bool | None = None
    consistency: str | None = None
    bind: BindOptions | None = None
    volume: VolumeOptions | None = None
    tmpfs: TmpfsOptions | None = None
    image: ImageOptions | None = None


class Hook(Model):
    command: list[str]
    user: str | None = None
    privileged: bool | None = None
    working_dir: str | None = None
    environment: EnvMap | None = None


class Service(Model):
    """One service, every key of the Compose specification (canonical forms)."""

    profiles: list[str] | None = None
    annotations: StrMap | None = None
    attach: bool | None = None
    build: Build | None = None
    develop: dict[str, Any] | None = None
    blkio_config: dict[str, Any] | None = None
    cap_add: list[str] | None = None
    cap_drop: list[str] | None = None
    cgroup_parent: str | None = None
    cgroup: Literal["host", "private"] | None = None
    cpu_count: int | None = None
    cpu_percent: float | None = Field(default=None, ge=0, le=100)
    cpu_period: int | None = None
    cpu_quota: int | None = None
    cpu_rt_period: int | None = None
    cpu_rt_runtime: int | None = None
    cpus: float | None = Field(default=None, ge=0)
    cpuset: str | None = None
    cpu_shares: int | None = None
    command: list[str] | None = None
    configs: list[FileRef] | None = None
    container_name: str | None = None
    credential_spec: dict[str, Any] | None = None
    depends_on: dict[str, DependsOn] | None = None
    deploy: Deploy | None = None
    device_cgroup_rules: list[str] | None = None
    devices: list[Device] | None = None
    dns: list[str] | None = None
    dns_opt: list[str] | None = None
    dns_search: list[str] | None = None
    domainname: str | None = None
    entrypoint: list[str] | None = None
    provider: dict[str, Any] | None = None
    environment: EnvMap | None = None
    env_file: list[EnvFile] | None = None
    expose: list[str] | None = None
    external_links: list[str] | None = None
    extra_hosts: list[str] | None = None
    group_add: list[str] | None = None
    gpus: list[DeviceRequest] | Literal["all"] | None = None
    hostname: str | None = None
    healthcheck: Healthcheck | None = None
    image: str | None = None
    init: bool | None = None
    ipc: str | None = None
    isolation: str | None = None
    labels: StrMap | None = None
    label_file: list[str] | None = None
    links: list[str] | None = None
    logging: Logging | None = None
    mem_limit: ByteSize | None = None
    mem_reservation: ByteSize | None = None
    memswap_limit: ByteSize | None = None
    mem_swappiness: int | None = Field(default=None, ge=0, le=100)
    mac_address: str | None = None
    models: dict[str, Any] | list[str] | None = None
    network_mode: str | None = None
    networks: dict[str, ServiceNetwork | None] | None = None
    oom_kill_disable: bool | None = None
    oom_score_adj: int | None = Field(default=None, ge=-1000, le=1000)
    pid: str | None = None
    pids_limit: int | None = None
    platform: str | None = None
    ports: list[Port] | None = None
    privileged: bool | None = None
    pull_policy: str | None = None
    read_only: bool | None = None
    restart: str | None = None
    runtime: str | None = None
    scale: int | None = Field(default=None, ge=0)
    secrets: list[FileRef] | None = None
    security_opt: list[str] | None = None
    shm_size: ByteSize | None = None
    stdin_open: bool | None = None
    stop_grace_period: Duration | None = None
    stop_signal: str | None = None
    storage_opt: StrMap | None = None
    sysctls: StrMap | None = None
    tmpfs: list[str] | None = None
    tty: bool | None = None
    ulimits: dict[str, int | Ulimit] | None = None
    use_api_socket: bool | None = None
    user: str | None = None
    userns_mode: str | None = None
    uts: str | None = None
    volume_driver: str | None = None
    volumes: list[VolumeMount] | None = None
    volumes_from: list[str] | None = None
    working_dir: str | None = None
    post_start: list[Hook] | None = None
    pre_stop: list[Hook] | None = None

