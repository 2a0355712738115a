"""Unit: a Compose service's canonical config → the engine's ContainerConfig, key by key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stackd.engine.container_config import (
    DeviceConfig,
    HealthcheckConfig,
    LogConfig,
    MountConfig,
    NetworkAttachmentConfig,
    RestartPolicy,
    Ulimit,
)
from stackd.errors import SpecError
from stackd.planner.desired import desired_state
from stackd.spec.load import load
from stackd.spec.options import LoadOptions
from stackd.stack.convert import container_config

STACK = """
name: demo
services:
  db:
    image: busybox:1.36
    entrypoint: /bin/sh -c
    command: echo hi
    environment: {MARK: "1", EMPTY: ""}
    env_file: [a.env]
    user: "1000:1000"
    working_dir: /srv
    hostname: dbhost
    domainname: example.org
    labels: {team: data}
    volumes:
      - data:/var/lib/data
      - ./conf:/etc/conf:ro
      - {type: tmpfs, target: /scratch, tmpfs: {size: 1m, mode: 1777}}
      - /anon
    tmpfs: ["/run:size=64k", /tmp]
    ports: ["8080:80", "127.0.0.1:5353:53/udp"]
    networks:
      back: {aliases: [database], ipv4_address: 10.5.0.5, priority: 10}
      default: {}
    mac_address: 02:42:ac:11:00:02
    dns: [1.1.1.1]
    dns_search: [example.org]
    dns_opt: [ndots:2]
    extra_hosts: ["gw:10.0.0.1"]
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    privileged: false
    read_only: true
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 64}
    sysctls: {net.core.somaxconn: 1024}
    security_opt: [no-new-privileges:true]
    mem_limit: 1g
    cpus: 1.5
    pids_limit: 50
    deploy:
      resources: {limits: {memory: 64m}, reservations: {memory: 32m}}
    init: true
    shm_size: 128m
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    tty: true
    stdin_open: true
    healthcheck: {test: "pg_isready", interval: 1s, timeout: 2s, retries: 5, start_period: 500ms}
    restart: on-failure:3
    logging: {driver: json-file, options: {max-size: 10m, max-file: "3"}}
    pid: host
    ipc: shareable
    group_add: [audio]
    devices: ["/dev/null:/dev/xnull:r"]
  api:
    image: busybox
    network_mode: service:db
    volumes_from: [db:ro]
    ipc: service:db
    deploy: {restart_policy: {condition: any}}
    healthcheck: {disable: true}
  web:
    image: busybox
    deploy: {restart_policy: {condition: on-failure, max_attempts: 2}}
networks:
  back: {}
volumes:
  data: {}
"""


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d: Path = tmp_path_factory.mktemp("convert")
    (d / "stack.yaml").write_text(textwrap.dedent(STACK))
    (d / "a.env").write_text("FROM_FILE=yes\n")
    project = load(LoadOptions(files=(str(d / "stack.yaml"),), environ={}, working_dir=str(d)))
    desired = desired_state(project)
    return {"dir": d, **{name: svc.containers[0] for name, svc in desired.services.items()}}


def test_process_keys(specs: dict) -> None:
    c = container_config(specs["db"])
    assert (c.name, c.image) == ("demo-db-1", "busybox:1.36")
    assert c.entrypoint == ("/bin/sh", "-c") and c.command == ("echo", "hi")
    assert set(c.env) == {"MARK=1", "EMPTY=", "FROM_FILE=yes"}
    assert (c.user, c.working_dir, c.hostname, c.domainname) == ("1000:1000", "/srv", "dbhost", "example.org")
    assert (c.tty, c.stdin_open, c.init, c.read_only, c.privileged) == (True, True, True, True, False)
    assert (c.stop_signal, c.stop_grace_period) == ("SIGINT", 90.0)
    assert (c.pid_mode, c.ipc_mode, c.group_add) == ("host", "shareable", ("audio",))


def test_labels_include_the_planners(specs: dict) -> None:
    c = container_config(specs["db"])
    assert c.labels["team"] == "data"
    assert c.labels["io.stackd.stack"] == "demo" and c.labels["io.stackd.service"] == "db"
    assert c.labels["io.stackd.number"] == "1" and "io.stackd.config-hash" in c.labels


def test_mounts(specs: dict) -> None:
    c = container_config(specs["db"])
    d = specs["dir"]
    assert c.mounts == (
        MountConfig("volume", "/var/lib/data", name="demo_data"),
        MountConfig("bind", "/etc/conf", str(d / "conf"), read_only=True),
        MountConfig("tmpfs", "/scratch", tmpfs_size=1024 * 1024, tmpfs_mode=0o1777),
        MountConfig("volume", "/anon"),
    )
    assert c.tmpfs == {"/run": "size=64k", "/tmp": ""}


def test_network_keys(specs: dict) -> None:
    c = container_config(specs["db"])
    assert c.network_mode == ""
    assert c.networks == (
        NetworkAttachmentConfig("demo_back", ("db", "database"), "10.5.0.5", "", "02:42:ac:11:00:02", 10),
        NetworkAttachmentConfig("demo_default", ("db",)),
    )
    assert [(p["published"], p["target"], p["protocol"]) for p in c.ports] == [("8080", 80, "tcp"), ("5353", 53, "udp")]
    assert c.ports[1]["host_ip"] == "127.0.0.1"
    assert (c.dns, c.dns_search, c.dns_opt) == (("1.1.1.1",), ("example.org",), ("ndots:2",))
    assert c.extra_hosts in (("gw:10.0.0.1",), ("gw=10.0.0.1",))


def test_security_and_resources(specs: dict) -> None:
    c = container_config(specs["db"])
    assert (c.cap_add, c.cap_drop, c.security_opt) == (("NET_ADMIN",), ("MKNOD",), ("no-new-privileges:true",))
    assert c.ulimits == (Ulimit("nofile", 1024, 2048), Ulimit("nproc", 64, 64))
    assert c.sysctls == {"net.core.somaxconn": "1024"}
    r = c.resources
    assert r.memory == 64 * 1024 * 1024  # deploy.resources wins over mem_limit
    assert r.memory_reservation == 32 * 1024 * 1024
    assert (r.cpus, r.pids_limit) == (1.5, 50)
    assert c.shm_size == 128 * 1024 * 1024
    assert c.devices == (DeviceConfig("/dev/null", "/dev/xnull", "r"),)


def test_health_restart_logging(specs: dict) -> None:
    c = container_config(specs["db"])
    assert c.healthcheck == HealthcheckConfig(("CMD-SHELL", "pg_isready"), 1.0, 2.0, 5, 0.5, 5.0)
    assert c.restart == RestartPolicy("on-failure", 3)
    assert c.log == LogConfig("json-file", 10 * 1024 * 1024, 3)
    api = container_config(specs["api"])
    assert api.healthcheck is not None and api.healthcheck.disabled
    assert api.restart == RestartPolicy("always")
    assert container_config(specs["web"]).restart == RestartPolicy("on-failure", 2)
    assert container_config(specs["web"]).healthcheck is None  # the image's


def test_service_references_resolve_to_containers(specs: dict) -> None:
    api = container_config(specs["api"], resolve=lambda s: f"id-of-{s}")
    assert api.network_mode == "container:id-of-db" and api.networks == ()
    assert api.ipc_mode == "container:id-of-db"
    assert api.volumes_from == ("id-of-db:ro",)
    default = container_config(specs["api"])
    assert default.network_mode == "container:demo-db-1"


def test_unsupported_volume_type_is_a_spec_error(specs: dict) -> None:
    import dataclasses

    spec = specs["web"]
    bad = dataclasses.replace(spec, config={**spec.config, "volumes": [{"type": "npipe", "target": "/x"}]})
    with pytest.raises(SpecError, match="npipe"):
        container_config(bad)
