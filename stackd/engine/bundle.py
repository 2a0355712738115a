"""Build a container's OCI bundle (config.json, rootfs mount point, /etc files) from a ContainerConfig, as Docker would.

The container manager calls `prepare_rootfs(bundle_dir, snapshot_mount)`, mounts the Mount it
returns (the image snapshot at `<bundle>/rootfs`), then `write_bundle(...)`, which reads the
image's /etc/passwd and /etc/group through that rootfs, creates the working directory there and
writes `config.json` and the per-container /etc files under `state_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackd.engine import bundle_mounts as bm
from stackd.engine import bundle_security as sec
from stackd.engine.bundle_user import UserDb, resolve_user
from stackd.engine.container_config import ContainerConfig
from stackd.engine.mounts import Mount
from stackd.engine.safe_open import mkdirs_in_root
from stackd.errors import EngineError

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STOP_SIGNAL_ANNOTATION = "org.opencontainers.image.stopSignal"
# Docker's device cgroup defaults: deny all, then allow mknod of any and these nodes.
DEFAULT_DEVICE_RULES: list[dict[str, Any]] = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"}
      for ma, mi in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 2), (10, 200))),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
]


class BundleError(EngineError):
    """A container's configuration cannot become an OCI bundle."""


@dataclass(frozen=True, slots=True)
class BundleOptions:
    """Engine-wide settings for bundles (the manager's configuration)."""

    cgroup_parent: str = "/stackd"
    init_path: str = "/usr/bin/tini-static"
    container_pids: Mapping[str, int] = field(default_factory=dict)  # id -> pid, for container:<id> modes
    host: sec.HostInfo | None = None  # probed when None


@dataclass(frozen=True, slots=True)
class Bundle:
    """A written bundle: where things are and what the manager needs beyond config.json."""

    path: Path
    rootfs: Path
    config_path: Path
    spec: dict[str, Any]
    warnings: tuple[str, ...]
    stop_signal: str
    stop_timeout: float


_host: sec.HostInfo | None = None


def host_info() -> sec.HostInfo:
    global _host
    if _host is None:
        _host = sec.HostInfo.probe()
    return _host


def prepare_rootfs(bundle_dir: str | os.PathLike[str], snapshot: Mount) -> Mount:
    """Create `<bundle>/rootfs` and return the snapshot mount aimed at it (the manager mounts it)."""
    rootfs = Path(bundle_dir) / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)
    os.chmod(bundle_dir, 0o711)
    return dataclasses.replace(snapshot, target=str(rootfs))


def resolve_args(cfg: ContainerConfig) -> list[str]:
    """Docker's ENTRYPOINT/CMD rules: a given entrypoint (even empty) drops the image's Cmd."""
    img = cfg.image_config
    if cfg.entrypoint is None:
        entry = list(img.entrypoint or ())
        cmd = list(img.cmd or ()) if cfg.command is None else list(cfg.command)
    else:
        entry = list(cfg.entrypoint)
        cmd = list(cfg.command or ())
    args = entry + cmd
    if not args or not args[0]:
        raise BundleError(f"container {cfg.name}: no command specified (image {cfg.image} has no "
                          "Entrypoint or Cmd, and none was given)")
    return args


def _env_key(item: str) -> str:
    return item.split("=", 1)[0]


def merge_env(base: list[str], overrides: list[str] | tuple[str, ...]) -> list[str]:
    """Docker's ReplaceOrAppendEnvValues: same key replaces in place, new keys append, bare KEY removes."""
    out = list(base)
    for item in overrides:
        key = _env_key(item)
        idx = next((i for i, e in enumerate(out) if _env_key(e) == key), None)
        if "=" not in item:
            if idx is not None:
                del out[idx]
        elif idx is None:
            out.append(item)
        else:
            out[idx] = item
    return out


def resolve_env(cfg: ContainerConfig, hostname: str, home: str = "") -> list[str]:
    """PATH default, HOSTNAME, TERM=xterm with a tty, then the image's env, then the container's."""
    env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if cfg.tty:
        env.append("TERM=xterm")
    env = merge_env(merge_env(env, cfg.image_config.env), cfg.env)
    if home and not any(_env_key(e) == "HOME" for e in env):
        env.append(f"HOME={home}")
    return env


def _working_dir(cfg: ContainerConfig) -> str:
    if cfg.working_dir:
        if not cfg.working_dir.startswith("/"):
            raise BundleError(f"container {cfg.name}: working_dir {cfg.working_dir!r} must be an absolute path")
        return os.path.normpath(cfg.working_dir)
    wd = cfg.image_config.working_dir or "/"
    return os.path.normpath("/" + wd.lstrip("/"))


def _ns_pid(cfg: ContainerConfig, options: BundleOptions) -> dict[str, int]:
    """Pids of the containers whose namespaces this one joins (`container:<id>` modes)."""
    out = {}
    for what, mode in (("network", cfg.network_mode), ("pid", cfg.pid_mode), ("ipc", cfg.ipc_mode)):
        if mode.startswith("container:"):
            other = mode.split(":", 1)[1]
            pid = options.container_pids.get(other)
            if not pid:
                raise BundleError(f"container {cfg.name}: {what} mode {mode}: container {other} is not running")
            out[mode] = pid
    return out


def namespaces(cfg: ContainerConfig, ns_pid: dict[str, int]) -> list[dict[str, str]]:
    """pid, ipc, uts, mount, network, cgroup: new, joined by path, or omitted for host modes."""
    out: list[dict[str, str]] = [{"type": "mount"}, {"type": "cgroup"}]
    for kind, mode, nsname in (("pid", cfg.pid_mode, "pid"), ("ipc", cfg.ipc_mode, "ipc"),
                               ("uts", cfg.uts_mode, "uts"), ("network", cfg.network_mode, "net")):
        if mode == "host":
            continue
        if mode.startswith("container:"):
            out.append({"type": kind, "path": f"/proc/{ns_pid[mode]}/ns/{nsname}"})
        elif kind == "network" and cfg.netns_path and mode != "none":
            out.append({"type": kind, "path": cfg.netns_path})
        elif mode in ("", "private", "shareable", "none", "bridge") or kind == "network":
            out.append({"type": kind})
        else:
            raise BundleError(f"container {cfg.name}: invalid {kind} mode {mode!r}")
    return out


def resources(cfg: ContainerConfig, host: sec.HostInfo, warn: list[str]) -> dict[str, Any]:
    r = cfg.resources
    out: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    if r.memory:
        mem["limit"] = r.memory
        swap = r.memswap if r.memswap else r.memory * 2
        if r.memswap and r.memswap != -1 and r.memswap < r.memory:
            raise BundleError(f"container {cfg.name}: memswap ({r.memswap}) must be at least memory ({r.memory})")
        if host.swap_accounting:
            mem["swap"] = swap
        elif r.memswap:
            warn.append("memswap ignored: this kernel does not account swap in cgroups")
    if r.memory_reservation:
        mem["reservation"] = r.memory_reservation
    if r.oom_kill_disable:
        mem["disableOOMKiller"] = True
    if mem:
        out["memory"] = mem
    cpu: dict[str, Any] = {}
    if r.cpus:
        if r.cpus < 0.01:
            raise BundleError(f"container {cfg.name}: cpus must be at least 0.01, got {r.cpus}")
        cpu["period"] = 100000
        cpu["quota"] = round(r.cpus * 100000)
    if r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.cpuset:
        cpu["cpus"] = r.cpuset
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if r.pids_limit and r.pids_limit > 0:
        out["pids"] = {"limit": r.pids_limit}
    if r.blkio_weight:
        if not 10 <= r.blkio_weight <= 1000:
            raise BundleError(f"container {cfg.name}: blkio weight must be 10-1000, got {r.blkio_weight}")
        if host.blkio_weight:
            out["blockIO"] = {"weight": r.blkio_weight}
        else:
            warn.append("blkio weight ignored: this kernel does not support block I/O weight")
    return out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def etc_files(cfg: ContainerConfig, hostname: str, state_dir: Path) -> dict[str, str]:
    """Write /etc/hostname (and /etc/hosts, /etc/resolv.conf unless the net layer made them)."""
    from stackd.net import resolvconf

    state_dir.mkdir(parents=True, exist_ok=True)
    files = {"/etc/hostname": state_dir / "hostname", "/etc/hosts": state_dir / "hosts",
             "/etc/resolv.conf": state_dir / "resolv.conf"}
    _write(files["/etc/hostname"], hostname + "\n")
    if cfg.network_mode == "host":
        hosts = Path("/etc/hosts").read_text() if os.path.exists("/etc/hosts") else ""
        resolv = resolvconf.resolv_conf(resolvconf.read_host_resolv(), resolvconf.ResolvOptions())
    else:
        hosts = resolvconf.hosts_file(resolvconf.HostsOptions(
            hostname=hostname, domainname=cfg.domainname, own=cfg.addresses))
        resolv = resolvconf.resolv_conf(resolvconf.read_host_resolv(), resolvconf.ResolvOptions())
    out = {"/etc/hostname": str(files["/etc/hostname"])}
    if cfg.hosts_file:
        out["/etc/hosts"] = cfg.hosts_file
    else:
        _write(files["/etc/hosts"], hosts)
        out["/etc/hosts"] = str(files["/etc/hosts"])
    if cfg.resolv_conf_file:
        out["/etc/resolv.conf"] = cfg.resolv_conf_file
    else:
        _write(files["/etc/resolv.conf"], resolv)
        out["/etc/resolv.conf"] = str(files["/etc/resolv.conf"])
    return out


def build_spec(cfg: ContainerConfig, *, container_id: str, rootfs: str | os.PathLike[str],
               state_dir: str | os.PathLike[str], options: BundleOptions | None = None,
               warnings: list[str] | None = None) -> dict[str, Any]:
    """The OCI runtime config for `cfg`; reads users from and creates the workdir in `rootfs`."""
    options = options or BundleOptions()
    host = options.host or host_info()
    warn = warnings if warnings is not None else []
    ns_pid = _ns_pid(cfg, options)
    args = resolve_args(cfg)
    if cfg.init:
        solo = cfg.pid_mode == "host" or cfg.pid_mode.startswith("container:")
        args = [bm.INIT_TARGET, *(["-s"] if solo else []), "--", *args]

    user = resolve_user(UserDb.from_rootfs(rootfs, cfg.image), cfg.user or cfg.image_config.user,
                        cfg.group_add, image=cfg.image)
    cwd = _working_dir(cfg)
    try:
        mkdirs_in_root(rootfs, cwd, uid=user.uid, gid=user.gid)
    except OSError as e:
        raise BundleError(f"container {cfg.name}: cannot create working directory {cwd} in image "
                          f"{cfg.image}: {e.strerror or e}")
    if cfg.uts_mode == "host":
        hostname = os.uname().nodename
    else:
        hostname = cfg.hostname or (os.uname().nodename if cfg.network_mode == "host" else container_id[:12])
    caps = sec.capabilities(cfg, host)
    sopts = sec.parse_security_opt(cfg.security_opt, warn)

    process: dict[str, Any] = {
        "terminal": cfg.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
        "args": args,
        "env": resolve_env(cfg, hostname, user.home),
        "cwd": cwd,
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
        "rlimits": sec.rlimits(cfg.ulimits, host, warn),
        "noNewPrivileges": sopts.no_new_privileges,
    }
    if cfg.resources.oom_score_adj is not None:
        if not -1000 <= cfg.resources.oom_score_adj <= 1000:
            raise BundleError(f"container {cfg.name}: oom_score_adj must be -1000..1000")
        process["oomScoreAdj"] = cfg.resources.oom_score_adj

    res = resources(cfg, host, warn)
    devs, dev_rules = sec.devices(cfg.devices)
    if cfg.privileged:
        devs = sec.host_devices() + devs
        res["devices"] = [{"allow": True, "access": "rwm"}]
    else:
        res["devices"] = DEFAULT_DEVICE_RULES + dev_rules

    etc = bm.etc_mounts(etc_files(cfg, hostname, Path(state_dir)), cfg.read_only)
    extra = [bm.init_mount(options.init_path)] if cfg.init else []
    mounts = bm.assemble(bm.default_mounts(cfg, cgroup2=host.cgroup2, ns_pid=ns_pid),
                         bm.user_mounts(cfg), etc, extra)
    masked, readonly = bm.masked_paths(cfg, sopts.systempaths_unconfined)

    linux: dict[str, Any] = {
        "namespaces": namespaces(cfg, ns_pid),
        "cgroupsPath": f"{options.cgroup_parent.rstrip('/')}/{container_id}",
        "resources": res,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    }
    if devs:
        linux["devices"] = devs
    sysctl = sec.check_sysctls(cfg)
    if sysctl:
        linux["sysctl"] = sysctl
    seccomp = sec.seccomp_section(sopts, caps, cfg.privileged, host)
    if seccomp is not None:
        linux["seccomp"] = seccomp

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": "rootfs", "readonly": cfg.read_only},
        "mounts": mounts,
        "annotations": {**cfg.annotations, STOP_SIGNAL_ANNOTATION: cfg.effective_stop_signal()},
        "linux": linux,
    }
    if cfg.uts_mode != "host":
        spec["hostname"] = hostname
        if cfg.domainname:
            spec["domainname"] = cfg.domainname
    return spec


def write_bundle(cfg: ContainerConfig, *, container_id: str, bundle_dir: str | os.PathLike[str],
                 state_dir: str | os.PathLike[str], options: BundleOptions | None = None) -> Bundle:
    """Build the spec against the mounted `<bundle>/rootfs` and write `config.json` atomically."""
    path = Path(bundle_dir)
    rootfs = path / "rootfs"
    if not rootfs.is_dir():
        raise BundleError(f"container {cfg.name}: {rootfs} is missing (prepare_rootfs and mount it first)")
    warnings: list[str] = []
    spec = build_spec(cfg, container_id=container_id, rootfs=rootfs, state_dir=state_dir,
                      options=options, warnings=warnings)
    config = path / "config.json"
    tmp = path / "config.json.tmp"
    with open(tmp, "w") as f:
        json.dump(spec, f, indent=1)
    os.replace(tmp, config)
    return Bundle(path, rootfs, config, spec, tuple(warnings), cfg.effective_stop_signal(),
                  cfg.stop_grace_period)
