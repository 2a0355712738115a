"""Translate a service's canonical Compose config into the engine's `ContainerConfig`, as Compose does.

Pure: no engine calls. References to other services (`network_mode: service:db`,
`volumes_from: db`, `ipc: service:db`) go through `resolve(service) -> container`, which
defaults to the service's first replica name (`<project>-<service>-1`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stackd.engine.container_config import (
    ContainerConfig,
    DeviceConfig,
    HealthcheckConfig,
    LogConfig,
    MountConfig,
    NetworkAttachmentConfig,
    Resources,
    RestartPolicy,
    Ulimit,
)
from stackd.errors import SpecError
from stackd.planner.desired import ContainerSpec
from stackd.spec.types import parse_byte_limit, parse_bytes, parse_duration

Resolver = Callable[[str], str]


def _strs(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _opt_strs(value: Any) -> tuple[str, ...] | None:
    return None if value is None else _strs(value)


def _seconds(value: Any, default: float) -> float:
    return default if value in (None, "") else float(parse_duration(value))


def _bytes(value: Any) -> int | None:
    return None if value in (None, "", 0, "0") else parse_byte_limit(value)


def environment(config: Mapping[str, Any]) -> tuple[str, ...]:
    """KEY=VALUE (env_file contents are already merged by the loader); a None value stays a bare KEY."""
    env = config.get("environment") or {}
    if isinstance(env, list):
        return tuple(str(e) for e in env)
    return tuple(k if v is None else f"{k}={v}" for k, v in env.items())


def healthcheck(config: Mapping[str, Any]) -> HealthcheckConfig | None:
    hc = config.get("healthcheck")
    if not hc:
        return None
    if hc.get("disable"):
        return HealthcheckConfig(("NONE",))
    test = hc.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    d = HealthcheckConfig()
    if not test:
        return None  # only timing given: the image's test with its timings is not expressible; keep image's
    return HealthcheckConfig(
        tuple(str(t) for t in test), _seconds(hc.get("interval"), d.interval),
        _seconds(hc.get("timeout"), d.timeout), int(hc.get("retries") if hc.get("retries") is not None else d.retries),
        _seconds(hc.get("start_period"), d.start_period), _seconds(hc.get("start_interval"), d.start_interval))


def restart_policy(config: Mapping[str, Any]) -> RestartPolicy:
    """`restart:` wins; else `deploy.restart_policy` (any → always, on-failure, none → no)."""
    text = config.get("restart")
    if text:
        name, _, count = str(text).partition(":")
        return RestartPolicy(name, int(count) if count.isdigit() else 0)
    policy = (config.get("deploy") or {}).get("restart_policy") or {}
    condition = policy.get("condition")
    if not condition:
        return RestartPolicy()
    name = {"any": "always", "on-failure": "on-failure", "none": "no"}.get(condition, "no")
    return RestartPolicy(name, int(policy.get("max_attempts") or 0) if name == "on-failure" else 0)


def resources(config: Mapping[str, Any]) -> Resources:
    """Service-level limits, overridden by `deploy.resources` (as Compose merges them)."""
    deploy = (config.get("deploy") or {}).get("resources") or {}
    limits, reserve = deploy.get("limits") or {}, deploy.get("reservations") or {}
    memory = _bytes(limits.get("memory")) or _bytes(config.get("mem_limit"))
    cpus = limits.get("cpus") if limits.get("cpus") not in (None, "") else config.get("cpus")
    pids = limits.get("pids") if limits.get("pids") is not None else config.get("pids_limit")
    blkio = (config.get("blkio_config") or {}).get("weight")
    return Resources(
        memory=memory,
        memory_reservation=_bytes(reserve.get("memory")) or _bytes(config.get("mem_reservation")),
        memswap=_bytes(config.get("memswap_limit")),
        cpus=float(cpus) if cpus not in (None, "", 0) else None,
        cpu_shares=int(config["cpu_shares"]) if config.get("cpu_shares") else None,
        cpuset=str(config.get("cpuset") or ""),
        pids_limit=int(pids) if pids is not None else None,
        oom_kill_disable=bool(config.get("oom_kill_disable")),
        oom_score_adj=int(config["oom_score_adj"]) if config.get("oom_score_adj") is not None else None,
        blkio_weight=int(blkio) if blkio else None,
    )


def ulimits(config: Mapping[str, Any]) -> tuple[Ulimit, ...]:
    out = []
    for name, value in sorted((config.get("ulimits") or {}).items()):
        if isinstance(value, Mapping):
            out.append(Ulimit(name, int(value["soft"]), int(value["hard"])))
        else:
            out.append(Ulimit(name, int(value), int(value)))
    return tuple(out)


def log_config(config: Mapping[str, Any]) -> LogConfig:
    logging = config.get("logging") or {}
    opts = logging.get("options") or {}
    size = opts.get("max-size")
    return LogConfig(driver=logging.get("driver") or "json-file",
                     max_size=parse_bytes(size) if size not in (None, "", "-1") else None,
                     max_file=int(opts.get("max-file") or 1))


def mounts(config: Mapping[str, Any], volumes: Mapping[str, str]) -> tuple[MountConfig, ...]:
    """`volumes:` entries: named volumes by their engine name, binds, tmpfs."""
    out = []
    for v in config.get("volumes") or ():
        typ, target = v.get("type", "volume"), v["target"]
        ro = bool(v.get("read_only"))
        if typ == "tmpfs":
            t = v.get("tmpfs") or {}
            out.append(MountConfig("tmpfs", target, read_only=ro,
                                   tmpfs_size=parse_bytes(t["size"]) if t.get("size") not in (None, "") else None,
                                   tmpfs_mode=int(str(t["mode"]), 8) if t.get("mode") is not None else None))
        elif typ == "bind":
            b = v.get("bind") or {}
            out.append(MountConfig("bind", target, v.get("source") or "", ro, b.get("propagation") or ""))
        elif typ == "volume":
            src = v.get("source") or ""
            name = volumes.get(src, src) if src else ""
            out.append(MountConfig("volume", target, "", ro, name=name))
        else:
            raise SpecError(f"volume type {typ!r} ({target}) is not supported by stackd's engine")
    return tuple(out)


def tmpfs(config: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for item in _strs(config.get("tmpfs")):
        target, _, opts = item.partition(":")
        out[target] = opts
    return out


def networks(spec: ContainerSpec, config: Mapping[str, Any]) -> tuple[NetworkAttachmentConfig, ...]:
    """One attachment per network, the service name as an alias (Compose does so), then the user's."""
    nets = config.get("networks") or {}
    mac = str(config.get("mac_address") or "")
    out: list[NetworkAttachmentConfig] = []
    for key in sorted(nets, key=lambda k: (-int((nets[k] or {}).get("priority") or 0), k)):
        opts = nets[key] or {}
        aliases = (spec.service, *_strs(opts.get("aliases")))
        out.append(NetworkAttachmentConfig(
            spec.networks.get(key, key), tuple(dict.fromkeys(aliases)),
            str(opts.get("ipv4_address") or ""), str(opts.get("ipv6_address") or ""),
            str(opts.get("mac_address") or "") or (mac if not out else ""),
            int(opts.get("priority") or 0)))
    return tuple(out)


def _mode(value: Any, resolve: Resolver, what: str) -> str:
    text = str(value or "")
    for prefix in ("service:", "container:"):
        if text.startswith(prefix):
            ref = text[len(prefix):]
            return f"container:{resolve(ref) if prefix == 'service:' else ref}"
    if text in ("", "bridge", "default") and what == "network_mode":
        return ""
    return text


def volumes_from(config: Mapping[str, Any], resolve: Resolver) -> tuple[str, ...]:
    out = []
    for item in _strs(config.get("volumes_from")):
        if item.startswith("container:"):
            out.append(item[len("container:"):])
            continue
        ref, _, mode = item.removeprefix("service:").partition(":")
        out.append(resolve(ref) + (f":{mode}" if mode else ""))
    return tuple(out)


def devices(config: Mapping[str, Any]) -> tuple[DeviceConfig, ...]:
    out = []
    for d in config.get("devices") or ():
        if isinstance(d, str):
            parts = d.split(":")
            d = {"source": parts[0], "target": parts[1] if len(parts) > 1 else parts[0],
                 "permissions": parts[2] if len(parts) > 2 else "rwm"}
        out.append(DeviceConfig(str(d["source"]), str(d.get("target") or d["source"]),
                                str(d.get("permissions") or "rwm")))
    return tuple(out)


def container_config(spec: ContainerSpec, *, resolve: Resolver | None = None,
                     name: str | None = None) -> ContainerConfig:
    """The ContainerConfig of one replica (its labels are the spec's, including io.stackd.*)."""
    c = spec.config
    project = spec.labels.get("io.stackd.stack", "")

    def default_resolve(service: str) -> str:
        return f"{project}-{service}-1"

    res = resolve or default_resolve
    network_mode = _mode(c.get("network_mode"), res, "network_mode")
    sysctls = c.get("sysctls") or {}
    return ContainerConfig(
        name=name or spec.name,
        image=spec.image,
        entrypoint=_opt_strs(c.get("entrypoint")),
        command=_opt_strs(c.get("command")),
        env=environment(c),
        user=str(c.get("user") or ""),
        working_dir=str(c.get("working_dir") or ""),
        hostname=str(c.get("hostname") or ""),
        domainname=str(c.get("domainname") or ""),
        labels=dict(spec.labels),
        annotations={str(k): str(v) for k, v in (c.get("annotations") or {}).items()},
        mounts=mounts(c, spec.volumes),
        tmpfs=tmpfs(c),
        read_only=bool(c.get("read_only")),
        privileged=bool(c.get("privileged")),
        cap_add=_strs(c.get("cap_add")),
        cap_drop=_strs(c.get("cap_drop")),
        devices=devices(c),
        ulimits=ulimits(c),
        sysctls={str(k): str(v) for k, v in (sysctls.items() if isinstance(sysctls, Mapping) else
                                              (s.split("=", 1) for s in sysctls))},
        security_opt=_strs(c.get("security_opt")),
        resources=resources(c),
        init=bool(c.get("init")),
        shm_size=parse_bytes(c["shm_size"]) if c.get("shm_size") not in (None, "") else 64 * 1024 * 1024,
        stop_signal=str(c.get("stop_signal") or ""),
        stop_grace_period=_seconds(c.get("stop_grace_period"), 10.0),
        tty=bool(c.get("tty")),
        stdin_open=bool(c.get("stdin_open")),
        network_mode=network_mode,
        pid_mode=_mode(c.get("pid"), res, "pid"),
        ipc_mode=_mode(c.get("ipc"), res, "ipc"),
        uts_mode=str(c.get("uts") or ""),
        group_add=_strs(c.get("group_add")),
        networks=networks(spec, c) if network_mode == "" else (),
        ports=tuple(dict(p) if isinstance(p, Mapping) else str(p) for p in c.get("ports") or ()),
        dns=_strs(c.get("dns")),
        dns_search=_strs(c.get("dns_search")),
        dns_opt=_strs(c.get("dns_opt")),
        extra_hosts=_strs(c.get("extra_hosts")),
        volumes_from=volumes_from(c, res),
        restart=restart_policy(c),
        healthcheck=healthcheck(c),
        log=log_config(c),
    )
