"""The mounts of a bundle: Docker's defaults, the container's binds/volumes/tmpfs, /etc files, the init."""

from __future__ import annotations

import os
from typing import Any

from stackd.engine.container_config import ContainerConfig, MountConfig
from stackd.errors import EngineError

INIT_TARGET = "/sbin/stackd-init"
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_PAIRS = {"ro": "rw", "exec": "noexec", "suid": "nosuid", "dev": "nodev", "atime": "noatime",
          "diratime": "nodiratime"}


class MountError(EngineError):
    """A mount of a container is invalid."""


def _m(dest: str, typ: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": dest, "type": typ, "source": source, "options": options}


def default_mounts(cfg: ContainerConfig, *, cgroup2: bool, ns_pid: dict[str, int]) -> list[dict[str, Any]]:
    """Docker's default mounts (/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys, cgroups)."""
    ro_sys = "rw" if cfg.privileged else "ro"
    mounts = [
        _m("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _m("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _m("/dev/pts", "devpts", "devpts",
           ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        _m("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", ro_sys]),
        _m("/sys/fs/cgroup", "cgroup2" if cgroup2 else "cgroup", "cgroup",
           ["nosuid", "noexec", "nodev", ro_sys]),
    ]
    if cfg.ipc_mode == "host":
        mounts.append(_m("/dev/mqueue", "bind", "/dev/mqueue", ["rbind", "nosuid", "noexec", "nodev"]))
        mounts.append(_m("/dev/shm", "bind", "/dev/shm", ["rbind", "nosuid", "noexec", "nodev"]))
    elif cfg.ipc_mode.startswith("container:"):
        pid = ns_pid[cfg.ipc_mode]
        mounts.append(_m("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]))
        mounts.append(_m("/dev/shm", "bind", f"/proc/{pid}/root/dev/shm", ["rbind", "nosuid", "noexec", "nodev"]))
    else:
        if cfg.shm_size <= 0:
            raise MountError(f"shm_size must be positive, got {cfg.shm_size}")
        mounts.append(_m("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]))
        mounts.append(_m("/dev/shm", "tmpfs", "shm",
                         ["nosuid", "noexec", "nodev", "mode=1777", f"size={cfg.shm_size}"]))
    return mounts


def merge_tmpfs_options(options: list[str]) -> list[str]:
    """Later options win: `exec` cancels `noexec`, `size=2m` replaces `size=1m` (Docker's MergeTmpfsOptions)."""
    out: list[str] = []
    for opt in options:
        opt = opt.strip()
        if not opt:
            continue
        key = opt.split("=", 1)[0]
        pair = _PAIRS.get(key) or next((k for k, v in _PAIRS.items() if v == key), None)
        out = [o for o in out if o != opt and o.split("=", 1)[0] != key and o != pair]
        out.append(opt)
    return out


def _tmpfs(target: str, data: list[str]) -> dict[str, Any]:
    return _m(target, "tmpfs", "tmpfs", merge_tmpfs_options(["noexec", "nosuid", "nodev", "rprivate", *data]))


def _check_target(target: str, what: str) -> str:
    if not target.startswith("/"):
        raise MountError(f"{what}: the container path {target!r} must be absolute")
    norm = os.path.normpath(target)
    if norm == "/":
        raise MountError(f"{what}: cannot mount over the container's root /")
    return norm


def user_mounts(cfg: ContainerConfig) -> list[dict[str, Any]]:
    """The container's binds, volumes and tmpfs mounts as OCI mounts."""
    out: list[dict[str, Any]] = []
    for m in cfg.mounts:
        out.append(user_mount(m))
    for target, opts in cfg.tmpfs.items():
        out.append(_tmpfs(_check_target(target, f"tmpfs {target}"), opts.split(",") if opts else []))
    seen: set[str] = set()
    for om in out:
        if om["destination"] in seen:
            raise MountError(f"duplicate mount point {om['destination']}")
        seen.add(om["destination"])
    return out


def user_mount(m: MountConfig) -> dict[str, Any]:
    what = f"{m.type} mount {m.source or m.name or ''}:{m.target}".replace(" :", " ")
    target = _check_target(m.target, what)
    if m.type == "tmpfs":
        data = list(m.options)
        if m.tmpfs_size is not None:
            data.append(f"size={m.tmpfs_size}")
        if m.tmpfs_mode is not None:
            data.append(f"mode={m.tmpfs_mode:o}")
        if m.read_only:
            data.append("ro")
        return _tmpfs(target, data)
    if m.type not in ("bind", "volume"):
        raise MountError(f"{what}: unknown mount type {m.type!r} (bind, volume or tmpfs)")
    if not m.source:
        if m.type == "volume":
            raise MountError(f"{what}: the volume's host directory was not resolved")
        raise MountError(f"{what}: a bind mount needs a source path")
    if not os.path.isabs(m.source):
        raise MountError(f"{what}: the host path {m.source!r} must be absolute")
    if not os.path.exists(m.source):
        raise MountError(f"{what}: the host path {m.source} does not exist")
    prop = m.propagation or "rprivate"
    if prop not in PROPAGATIONS:
        raise MountError(f"{what}: invalid propagation {prop!r}")
    opts = ["rbind", prop, "ro" if m.read_only else "rw", *m.options]
    return _m(target, "bind", m.source, opts)


def etc_mounts(files: dict[str, str], read_only: bool) -> list[dict[str, Any]]:
    """Bind mounts of the per-container /etc/hostname, /etc/hosts and /etc/resolv.conf."""
    mode = "ro" if read_only else "rw"
    return [_m(dest, "bind", src, ["rbind", "rprivate", mode]) for dest, src in files.items()]


def init_mount(init_path: str) -> dict[str, Any]:
    if not os.path.isfile(init_path):
        raise MountError(f"init: {init_path} not found (install Debian's tini package, which provides "
                         "/usr/bin/tini-static, or configure the init path)")
    return _m(INIT_TARGET, "bind", init_path, ["bind", "ro", "nosuid", "nodev"])


def assemble(defaults: list[dict[str, Any]], user: list[dict[str, Any]], etc: list[dict[str, Any]],
             extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Defaults first (minus those the container mounts itself), then /etc files, init, user mounts."""
    taken = {m["destination"] for m in user}
    out = [m for m in defaults if m["destination"] not in taken]
    out += [m for m in etc if m["destination"] not in taken]
    out += extra
    # Parents before children, so a volume at /data and a bind at /data/x both show.
    out += sorted(user, key=lambda m: m["destination"].count("/"))
    return out


def masked_paths(cfg: ContainerConfig, unconfined: bool) -> tuple[list[str], list[str]]:
    if cfg.privileged or unconfined:
        return [], []
    return list(MASKED_PATHS), list(READONLY_PATHS)
