"""`stackd container run/create` flags → ContainerConfig (Docker's parsing of sizes, durations, mounts, env)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from stackd.errors import UsageError

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?$", re.I)
_DUR = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(text: str, what: str = "size") -> int:
    m = _SIZE.match(text.strip())
    if not m:
        raise UsageError(f"invalid {what} {text!r}: expected a number with an optional unit b, k, m, g")
    mult = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def parse_duration(text: str, what: str = "duration") -> float:
    """Go durations (1m30s, 500ms); a bare number is seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DUR.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise UsageError(f"invalid {what} {text!r}: expected e.g. 30s, 1m30s, 500ms")
    return sum(float(a) * _DUR_UNITS[b] for a, b in parts)


def parse_env(items: Iterable[str], env_files: Iterable[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    for path in env_files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise UsageError(f"--env-file {path}: {exc.strerror}") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(_env_item(line, environ))
    out += [_env_item(i, environ) for i in items]
    return tuple(x for x in out if x)


def _env_item(item: str, environ: Mapping[str, str]) -> str:
    if "=" in item:
        return item
    return f"{item}={environ[item]}" if item in environ else ""


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def parse_volume(spec: str) -> Any:
    from stackd.engine.container_config import MountConfig

    parts = spec.split(":")
    if len(parts) == 1:
        return MountConfig(type="volume", target=parts[0])
    if len(parts) > 3:
        raise UsageError(f"invalid volume specification {spec!r}")
    src, target = parts[0], parts[1]
    opts = parts[2].split(",") if len(parts) == 3 else []
    ro = "ro" in opts
    prop = next((o for o in opts if o in ("private", "rprivate", "shared", "rshared", "slave", "rslave")), "")
    unknown = [o for o in opts if o not in ("ro", "rw", "z", "Z", "nocopy", prop)]
    if unknown:
        raise UsageError(f"invalid volume specification {spec!r}: unknown mode {unknown[0]!r}")
    if not target.startswith("/"):
        raise UsageError(f"invalid volume specification {spec!r}: the container path must be absolute")
    if src.startswith("/") or src.startswith("."):
        if not os.path.exists(src):
            os.makedirs(src, exist_ok=True)  # Docker's -v creates a missing host directory
        return MountConfig(type="bind", source=os.path.abspath(src), target=target, read_only=ro, propagation=prop)
    return MountConfig(type="volume", source="", name=src, target=target, read_only=ro,
                       options=("nocopy",) if "nocopy" in opts else ())


def parse_mount(spec: str) -> Any:
    from stackd.engine.container_config import MountConfig

    kv: dict[str, str] = {}
    for part in spec.split(","):
        k, eq, v = part.partition("=")
        kv[k.strip()] = v if eq else "true"
    typ = kv.get("type", "volume")
    target = kv.get("target") or kv.get("destination") or kv.get("dst") or ""
    if not target:
        raise UsageError(f"--mount {spec!r}: target is required")
    ro = kv.get("readonly", kv.get("ro", "false")) in ("true", "1")
    src = kv.get("source") or kv.get("src") or ""
    if typ == "bind":
        return MountConfig(type="bind", source=os.path.abspath(src), target=target, read_only=ro,
                           propagation=kv.get("bind-propagation", ""))
    if typ == "tmpfs":
        return MountConfig(type="tmpfs", target=target, read_only=ro,
                           tmpfs_size=parse_size(kv["tmpfs-size"]) if "tmpfs-size" in kv else None,
                           tmpfs_mode=int(kv["tmpfs-mode"], 8) if "tmpfs-mode" in kv else None)
    if typ == "volume":
        nocopy = kv.get("volume-nocopy", "false") in ("true", "1")
        return MountConfig(type="volume", name=src, target=target, read_only=ro,
                           options=("nocopy",) if nocopy else ())
    raise UsageError(f"--mount {spec!r}: type must be bind, volume or tmpfs")


def parse_restart(text: str) -> Any:
    from stackd.engine.container_config import RestartPolicy

    name, _, n = text.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped"):
        raise UsageError(f"invalid restart policy {text!r}: expected no, always, unless-stopped or on-failure[:N]")
    if n and (name != "on-failure" or not n.isdigit()):
        raise UsageError(f"invalid restart policy {text!r}: only on-failure takes a maximum retry count")
    return RestartPolicy(name, int(n or 0))


def build_config(o: Mapping[str, Any], image: str, command: tuple[str, ...], environ: Mapping[str, str]) -> Any:
    """A ContainerConfig from the parsed click options `o` of `run`/`create`."""
    from stackd.engine.container_config import (
        ContainerConfig,
        HealthcheckConfig,
        LogConfig,
        Resources,
    )

    hc = None
    if o.get("no_healthcheck"):
        hc = HealthcheckConfig(test=("NONE",))
    elif o.get("health_cmd"):
        d = HealthcheckConfig()
        hc = HealthcheckConfig(
            test=("CMD-SHELL", o["health_cmd"]),
            interval=parse_duration(o["health_interval"]) if o.get("health_interval") else d.interval,
            timeout=parse_duration(o["health_timeout"]) if o.get("health_timeout") else d.timeout,
            retries=o["health_retries"] if o.get("health_retries") is not None else d.retries,
            start_period=parse_duration(o["health_start_period"]) if o.get("health_start_period") else 0.0,
        )
    log_opts = dict(x.partition("=")[::2] for x in o.get("log_opt") or ())
    entrypoint = None if o.get("entrypoint") is None else (tuple(o["entrypoint"].split()) if o["entrypoint"] else ())
    mounts = tuple(parse_volume(v) for v in o.get("volume") or ()) + tuple(parse_mount(m) for m in o.get("mount") or ())
    network, networks = parse_network(o)
    tmpfs = {}
    for t in o.get("tmpfs") or ():
        target, _, topts = t.partition(":")
        tmpfs[target] = topts
    return ContainerConfig(
        name=o.get("name") or "", image=image, entrypoint=entrypoint, command=command or None,
        env=parse_env(o.get("env") or (), o.get("env_file") or (), environ),
        user=o.get("user") or "", working_dir=o.get("workdir") or "", hostname=o.get("hostname") or "",
        labels=parse_labels(o.get("label") or ()), mounts=mounts,
        read_only=bool(o.get("read_only")), privileged=bool(o.get("privileged")),
        cap_add=tuple(o.get("cap_add") or ()), cap_drop=tuple(o.get("cap_drop") or ()),
        security_opt=tuple(o.get("security_opt") or ()),
        resources=Resources(memory=parse_size(o["memory"], "memory") if o.get("memory") else None,
                            cpus=o.get("cpus"), pids_limit=o.get("pids_limit")),
        init=bool(o.get("init")), stop_signal=o.get("stop_signal") or "",
        stop_grace_period=float(o["stop_timeout"]) if o.get("stop_timeout") is not None else 10.0,
        tty=bool(o.get("tty")), stdin_open=bool(o.get("interactive")), network_mode=network,
        networks=networks, ports=tuple(o.get("publish") or ()), dns=tuple(o.get("dns") or ()),
        dns_search=tuple(o.get("dns_search") or ()), dns_opt=tuple(o.get("dns_option") or ()),
        extra_hosts=tuple(o.get("add_host") or ()), volumes_from=tuple(o.get("volumes_from") or ()),
        tmpfs=tmpfs, domainname=o.get("domainname") or "",
        restart=parse_restart(o.get("restart") or "no"), healthcheck=hc,
        log=LogConfig(max_size=parse_size(log_opts["max-size"]) if "max-size" in log_opts else None,
                      max_file=int(log_opts.get("max-file", "1"))),
    )


def parse_network(o: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """`--network` (a name, bridge, none, host, container:NAME), `--network-alias`, `--ip`, `--ip6`,
    `--mac-address` → (network_mode, networks)."""
    from stackd.engine.container_config import NetworkAttachmentConfig

    network = o.get("network") or ""
    aliases = tuple(o.get("network_alias") or ())
    ip, ip6, mac = o.get("ip") or "", o.get("ip6") or "", o.get("mac_address") or ""
    if network in ("none", "host") or network.startswith("container:"):
        if aliases or ip or ip6:
            raise UsageError(f"--network-alias, --ip and --ip6 cannot be used with --network {network}")
        if network.startswith("container:") and o.get("publish"):
            raise UsageError(f"--publish cannot be used with --network {network}")
        return network, ()
    name = network if network not in ("", "default") else "bridge"
    if name == "bridge" and (aliases or ip or ip6):
        raise UsageError("--network-alias, --ip and --ip6 need a user-defined network (--network NAME)")
    return "", (NetworkAttachmentConfig(name, aliases, ip, ip6, mac),)
