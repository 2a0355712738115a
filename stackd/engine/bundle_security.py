"""Docker's security rules for a bundle: capabilities, security_opt, seccomp profiles, sysctls, rlimits, devices."""

from __future__ import annotations

import json
import os
import resource
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stackd.engine.container_config import ContainerConfig, DeviceConfig, Ulimit
from stackd.errors import EngineError

CAPS = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"
]  # index = capability number
CAP_NUMBERS = {"CAP_" + c: i for i, c in enumerate(CAPS)}
DEFAULT_CAPS = tuple("CAP_" + c for c in [
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"
])

RLIMITS = [
    "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
    "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"
]
DEFAULT_NOFILE = 1048576

# Sysctls that belong to a namespace the container owns (Docker's validation).
IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
               "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


class SecurityError(EngineError):
    """A security setting of a container is invalid or cannot be honoured."""


def _read_caps_bounding() -> frozenset[str]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
                    return frozenset(n for n, i in CAP_NUMBERS.items() if mask >> i & 1)
    except OSError:
        pass
    return frozenset(CAP_NUMBERS)


def _rlimit_hard() -> dict[str, int]:
    out = {}
    for name in RLIMITS:
        const = getattr(resource, "RLIMIT_" + name.upper(), None)
        if const is not None:
            hard = resource.getrlimit(const)[1]
            out[name] = -1 if hard == resource.RLIM_INFINITY else hard
    return out


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What the host allows, probed once (tests pass their own)."""

    bounding_caps: frozenset[str] = frozenset(CAP_NUMBERS)
    rlimit_hard: Mapping[str, int] = field(default_factory=dict)  # -1 = unlimited
    cgroup2: bool = False  # unified hierarchy at /sys/fs/cgroup
    swap_accounting: bool = True
    machine: str = "x86_64"
    kernel: tuple[int, int] = (6, 0)
    blkio_weight: bool = True

    @classmethod
    def probe(cls) -> HostInfo:
        u = os.uname()
        parts = ([*u.release.split("."), "0", "0"])[:2]
        kernel = (int("".join(c for c in parts[0] if c.isdigit()) or 0),
                  int("".join(c for c in parts[1] if c.isdigit()) or 0))
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        swap = v2 or os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
        blkio = any(os.path.exists(p) for p in (
            "/sys/fs/cgroup/blkio/blkio.weight", "/sys/fs/cgroup/blkio/blkio.bfq.weight",
            "/sys/fs/cgroup/io.weight", "/sys/fs/cgroup/io.bfq.weight"))
        return cls(_read_caps_bounding(), _rlimit_hard(), v2, swap, u.machine, kernel, blkio)


def normalize_cap(name: str) -> str:
    n = name.strip().upper()
    if n == "ALL":
        return n
    n = n if n.startswith("CAP_") else "CAP_" + n
    if n not in CAP_NUMBERS:
        raise SecurityError(f"unknown capability {name!r}")
    return n


def capabilities(cfg: ContainerConfig, host: HostInfo) -> list[str]:
    """The container's capability set, ordered by number (Docker's TweakCapabilities)."""
    every = [c for c in CAP_NUMBERS if c in host.bounding_caps]
    if cfg.privileged:
        return every
    add = [normalize_cap(c) for c in cfg.cap_add]
    drop = [normalize_cap(c) for c in cfg.cap_drop]
    if "ALL" in add:
        caps = [c for c in every if c not in drop]
    elif "ALL" in drop:
        caps = list(add)
    else:
        caps = [c for c in DEFAULT_CAPS if c not in drop] + add
    missing = sorted({c for c in caps if c not in host.bounding_caps})
    if missing:
        raise SecurityError(f"cap_add {', '.join(missing)}: not available on this host "
                            "(missing from the engine's capability bounding set)")
    return sorted(set(caps), key=CAP_NUMBERS.__getitem__)


@dataclass(frozen=True, slots=True)
class SecurityOpts:
    no_new_privileges: bool = False
    seccomp: str = ""  # "" default, "unconfined", or a profile file path
    systempaths_unconfined: bool = False


def parse_security_opt(opts: tuple[str, ...], warn: list[str]) -> SecurityOpts:
    """`no-new-privileges[:true|false]`, `seccomp=unconfined|FILE`, `systempaths=unconfined`;
    `label=…` and `apparmor=…` are ignored with a warning (no SELinux/AppArmor support)."""
    nnp, seccomp, sysp = False, "", False
    for opt in opts:
        eq, colon = opt.find("="), opt.find(":")
        cut = eq if eq >= 0 and (colon < 0 or eq < colon) else colon
        key, value = (opt[:cut], opt[cut + 1:]) if cut >= 0 else (opt, "")
        if key == "no-new-privileges":
            if value not in ("", "true", "false"):
                raise SecurityError(f"security_opt {opt!r}: no-new-privileges takes true or false")
            nnp = value != "false"
        elif key == "seccomp":
            if not value:
                raise SecurityError(f"security_opt {opt!r}: seccomp needs 'unconfined' or a profile file")
            seccomp = value
        elif key == "systempaths" and value == "unconfined":
            sysp = True
        elif key in ("label", "apparmor"):
            warn.append(f"security_opt {opt!r} ignored: {'SELinux' if key == 'label' else 'AppArmor'} is not supported")
        else:
            raise SecurityError(f"invalid security_opt {opt!r}")
    return SecurityOpts(nnp, seccomp, sysp)


_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}
_SCMP_NATIVE = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "s390x": "SCMP_ARCH_S390X",
                "ppc64le": "SCMP_ARCH_PPC64LE", "riscv64": "SCMP_ARCH_RISCV64"}


def _kernel_tuple(v: Any) -> tuple[int, int]:
    if isinstance(v, list | tuple):
        return int(v[0]), int(v[1]) if len(v) > 1 else 0
    a, _, b = str(v).partition(".")
    return int(a), int(b.split(".")[0] or 0)


def _rule_applies(rule: Mapping[str, Any], caps: set[str], host: HostInfo) -> bool:
    arches = {host.machine, _GOARCH.get(host.machine, host.machine)}
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if inc.get("arches") and not arches & set(inc["arches"]):
        return False
    if inc.get("minKernel") and host.kernel < _kernel_tuple(inc["minKernel"]):
        return False
    if exc.get("caps") and set(exc["caps"]) & caps:
        return False
    return not (exc.get("arches") and arches & set(exc["arches"]))


def docker_profile_to_oci(profile: Mapping[str, Any], caps: list[str], host: HostInfo) -> dict[str, Any]:
    """A seccomp profile in Docker's JSON format (archMap, includes/excludes) as OCI linux.seccomp."""
    out: dict[str, Any] = {"defaultAction": profile.get("defaultAction") or "SCMP_ACT_ERRNO"}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    if profile.get("architectures"):
        out["architectures"] = list(profile["architectures"])
    elif profile.get("archMap"):
        native = _SCMP_NATIVE.get(host.machine, "")
        for arch in profile["archMap"]:
            if arch.get("architecture") == native:
                out["architectures"] = [native, *arch.get("subArchitectures", [])]
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    syscalls = []
    capset = set(caps)
    for rule in profile.get("syscalls") or []:
        if not _rule_applies(rule, capset, host):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        if not names:
            continue
        entry: dict[str, Any] = {"names": names, "action": rule.get("action", "SCMP_ACT_ALLOW")}
        if rule.get("args"):
            entry["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a}
                             for a in rule["args"]]
        if "errnoRet" in rule:
            entry["errnoRet"] = rule["errnoRet"]
        syscalls.append(entry)
    out["syscalls"] = syscalls
    return out


def seccomp_section(opts: SecurityOpts, caps: list[str], privileged: bool,
                    host: HostInfo) -> dict[str, Any] | None:
    if privileged or opts.seccomp == "unconfined":
        return None
    if not opts.seccomp or opts.seccomp == "builtin":
        from stackd.engine.runtime.seccomp import default_profile

        return default_profile(caps)
    try:
        with open(opts.seccomp, "rb") as f:
            profile = json.loads(f.read())
    except OSError as e:
        raise SecurityError(f"seccomp profile {opts.seccomp}: {e.strerror or e}")
    except ValueError as e:
        raise SecurityError(f"seccomp profile {opts.seccomp}: not valid JSON: {e}")
    if not isinstance(profile, dict):
        raise SecurityError(f"seccomp profile {opts.seccomp}: expected a JSON object")
    return docker_profile_to_oci(profile, caps, host)


def check_sysctls(cfg: ContainerConfig) -> dict[str, str]:
    """Namespaced sysctls only (IPC, net, kernel.domainname), and only for namespaces the container owns."""
    out = {}
    for key, value in cfg.sysctls.items():
        if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if cfg.ipc_mode == "host" or cfg.ipc_mode.startswith("container:"):
                raise SecurityError(f"sysctl {key}: not allowed with ipc mode {cfg.ipc_mode!r} (the IPC namespace is shared)")
        elif key.startswith("net."):
            if cfg.network_mode == "host" or cfg.network_mode.startswith("container:"):
                raise SecurityError(f"sysctl {key}: not allowed with network mode {cfg.network_mode!r} (the network namespace is shared)")
        elif key == "kernel.domainname":
            if cfg.uts_mode == "host":
                raise SecurityError(f"sysctl {key}: not allowed with uts mode 'host'")
        else:
            raise SecurityError(f"sysctl {key} is not namespaced: it would change the host, refusing")
        out[key] = str(value)
    return out


def rlimits(ulimits: tuple[Ulimit, ...], host: HostInfo, warn: list[str]) -> list[dict[str, Any]]:
    """OCI process.rlimits: Docker's nofile default then the container's ulimits, clamped to the
    host's hard limits (raising one needs CAP_SYS_RESOURCE, which the engine may lack)."""
    wanted: dict[str, tuple[int, int, bool]] = {"nofile": (DEFAULT_NOFILE, DEFAULT_NOFILE, False)}
    for u in ulimits:
        name = u.name.lower().removeprefix("rlimit_")
        if name not in RLIMITS:
            raise SecurityError(f"ulimit {u.name!r}: unknown resource")
        if u.hard != -1 and (u.soft == -1 or u.soft > u.hard):
            raise SecurityError(f"ulimit {name}: soft limit {u.soft} is above hard limit {u.hard}")
        wanted[name] = (u.soft, u.hard, True)
    out = []
    for name, (soft, hard, explicit) in wanted.items():
        limit = host.rlimit_hard.get(name, -1)
        if limit != -1 and (hard == -1 or hard > limit):
            what = f"ulimit {name}" if explicit else f"default ulimit {name}"
            warn.append(f"{what} {'unlimited' if hard == -1 else hard} is above the host's hard limit {limit}: using {limit}")
            hard = limit
            soft = limit if soft == -1 or soft > limit else soft
        inf = 2**64 - 1
        out.append({"type": "RLIMIT_" + name.upper(), "soft": inf if soft == -1 else soft,
                    "hard": inf if hard == -1 else hard})
    return out


_SKIP_DEV_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def device_entry(host_path: str, container_path: str, perms: str = "rwm") -> tuple[dict[str, Any], dict[str, Any]]:
    """The linux.devices entry and the matching cgroup allow rule for one host device node."""
    try:
        st = os.stat(host_path)
    except OSError as e:
        raise SecurityError(f"device {host_path}: {e.strerror or e}")
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise SecurityError(f"device {host_path}: not a character or block device")
    if not perms or set(perms) - set("rwm"):
        raise SecurityError(f"device {host_path}: invalid permissions {perms!r} (a combination of r, w, m)")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    dev = {"path": container_path or host_path, "type": kind, "major": major, "minor": minor,
           "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    rule = {"allow": True, "type": kind, "major": major, "minor": minor, "access": perms}
    return dev, rule


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every device node under /dev (for privileged containers), as Docker lists them."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DEV_DIRS]
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if path == "/dev/console":
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append(device_entry(path, path)[0])
    return out


def devices(cfg: list[DeviceConfig] | tuple[DeviceConfig, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    devs, rules = [], []
    for d in cfg:
        dev, rule = device_entry(d.host_path, d.container_path or d.host_path, d.permissions)
        devs.append(dev)
        rules.append(rule)
    return devs, rules
