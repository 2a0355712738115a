"""Read and check an OCI bundle's config.json (plain dicts; fast JSON through the C scanner).

`load(bundle)` returns the parsed document after checking what the runtime relies on; it raises
`ConfigError` (a message naming config.json and the key path) and reports unknown keys through
the `warn` callback. `loads`/`dumps` are small JSON helpers that avoid importing `re`.
"""

from __future__ import annotations

import _json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SUPPORTED = ("1.0.", "1.1.", "1.2.", "1.3.")


class ConfigError(Exception):
    """config.json is wrong; the runtime CLI reports it as a RuntimeSpecError."""


def _constant(name: str) -> float:
    raise ValueError(f"JSON constant {name} is not allowed")


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)
    memo: dict[str, str] = {}


_scan = _json.make_scanner(_Ctx())  # type: ignore[arg-type]
_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, False)  # type: ignore[arg-type]


def loads(text: str) -> object:
    """Parse one JSON document (raises ValueError with the offset on bad input)."""
    start = len(text) - len(text.lstrip())
    try:
        obj, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError(f"invalid JSON at offset {e.value}") from None
    if text[end:].strip():
        raise ValueError(f"extra data after JSON at offset {end}")
    return obj


def dumps(obj: object) -> str:
    """Compact JSON (ASCII)."""
    return "".join(_encode(obj, 0))


def dumps_indent(obj: object, indent: int = 2, _level: int = 1) -> str:
    """JSON indented like json.dumps(obj, indent=2) (the C encoder only writes compact JSON)."""
    pad, end = "\n" + " " * (indent * _level), "\n" + " " * (indent * (_level - 1))
    if isinstance(obj, dict) and obj:
        items = (f"{dumps(str(k))}: {dumps_indent(v, indent, _level + 1)}" for k, v in obj.items())
        return "{" + pad + ("," + pad).join(items) + end + "}"
    if isinstance(obj, (list, tuple)) and obj:
        return "[" + pad + ("," + pad).join(dumps_indent(v, indent, _level + 1) for v in obj) + end + "]"
    return dumps(obj)


_TOP = {"ociVersion", "process", "root", "hostname", "domainname", "mounts", "hooks", "annotations",
        "linux", "solaris", "windows", "vm", "zos"}
_PROCESS = {"terminal", "consoleSize", "cwd", "env", "args", "commandLine", "rlimits", "apparmorProfile",
            "capabilities", "noNewPrivileges", "oomScoreAdj", "selinuxLabel", "user", "ioPriority",
            "scheduler", "execCPUAffinity"}
_LINUX = {"namespaces", "uidMappings", "gidMappings", "timeOffsets", "devices", "cgroupsPath", "resources",
          "rootfsPropagation", "seccomp", "sysctl", "maskedPaths", "readonlyPaths", "mountLabel",
          "intelRdt", "personality", "unified", "memoryPolicy", "netDevices"}
_HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {msg}")


def _unknown(d: dict[str, object], known: set[str], where: str, warn: Callable[[str], None]) -> None:
    for k in d:
        if k not in known:
            warn(f"{where}.{k}: unknown field ignored")


def check(cfg: object, where: str = "config.json", warn: Callable[[str], None] | None = None) -> dict[str, object]:
    """Check the parts of a config the runtime depends on; return it as a dict."""
    warn = warn or (lambda m: None)
    _need(isinstance(cfg, dict), where, "must be a JSON object")
    assert isinstance(cfg, dict)
    v = cfg.get("ociVersion")
    _need(isinstance(v, str), f"{where}: ociVersion", "is required")
    assert isinstance(v, str)
    _need(v.startswith(SUPPORTED), f"{where}: ociVersion", f"{v!r} is not supported (1.0.0 to 1.3.x)")
    _unknown(cfg, _TOP, where, warn)
    root = cfg.get("root")
    _need(isinstance(root, dict) and isinstance(root.get("path"), str), f"{where}: root.path", "is required")
    proc = cfg.get("process")
    if proc is not None:
        p = f"{where}: process"
        _need(isinstance(proc, dict), p, "must be an object")
        _unknown(proc, _PROCESS, "process", warn)
        args = proc.get("args")
        _need(isinstance(args, list) and len(args) > 0 and all(isinstance(a, str) for a in args),
              f"{p}.args", "must be a non-empty list of strings")
        _need(isinstance(proc.get("cwd", "/"), str) and proc.get("cwd", "/").startswith("/"),
              f"{p}.cwd", "must be an absolute path")
        env = proc.get("env", [])
        _need(isinstance(env, list) and all(isinstance(e, str) for e in env), f"{p}.env", "must be a list of strings")
        user = proc.get("user", {})
        _need(isinstance(user, dict) and isinstance(user.get("uid", 0), int) and isinstance(user.get("gid", 0), int),
              f"{p}.user", "uid and gid must be integers")
        for i, rl in enumerate(proc.get("rlimits") or []):
            _need(isinstance(rl, dict) and isinstance(rl.get("type"), str) and isinstance(rl.get("hard"), int)
                  and isinstance(rl.get("soft"), int), f"{p}.rlimits[{i}]", "needs type, soft and hard")
    for i, m in enumerate(cfg.get("mounts") or []):
        _need(isinstance(m, dict) and isinstance(m.get("destination"), str), f"{where}: mounts[{i}]",
              "destination is required")
        _need(m["destination"].startswith("/"), f"{where}: mounts[{i}].destination",
              f"{m['destination']!r} must be absolute")
        _need(isinstance(m.get("options", []), list), f"{where}: mounts[{i}].options", "must be a list")
    hooks = cfg.get("hooks") or {}
    _need(isinstance(hooks, dict), f"{where}: hooks", "must be an object")
    for name, lst in hooks.items():
        if name not in _HOOKS:
            warn(f"hooks.{name}: unknown hook ignored")
            continue
        for i, h in enumerate(lst or []):
            _need(isinstance(h, dict) and isinstance(h.get("path"), str) and h["path"].startswith("/"),
                  f"{where}: hooks.{name}[{i}].path", "must be an absolute path")
    linux = cfg.get("linux") or {}
    _need(isinstance(linux, dict), f"{where}: linux", "must be an object")
    _unknown(linux, _LINUX, "linux", warn)
    seen = set()
    from stackd.engine.runtime.syscalls import NAMESPACES

    for i, ns in enumerate(linux.get("namespaces") or []):
        t = ns.get("type") if isinstance(ns, dict) else None
        _need(t in NAMESPACES, f"{where}: linux.namespaces[{i}].type", f"unknown namespace {t!r}")
        _need(t not in seen, f"{where}: linux.namespaces[{i}]", f"namespace {t!r} given twice")
        seen.add(t)
    if linux.get("uidMappings") or linux.get("gidMappings"):
        _need("user" in seen, f"{where}: linux.uidMappings", "needs a user namespace")
    if "user" in seen and not any(n.get("path") for n in linux["namespaces"] if n.get("type") == "user"):
        _need(bool(linux.get("uidMappings")) and bool(linux.get("gidMappings")), f"{where}: linux.uidMappings",
              "a new user namespace needs uidMappings and gidMappings")
    if linux.get("sysctl"):
        _need("network" in seen or not any(k.startswith("net.") for k in linux["sysctl"]),
              f"{where}: linux.sysctl", "net.* sysctls need a network namespace")
    if cfg.get("hostname"):
        _need("uts" in seen, f"{where}: hostname", "needs a uts namespace")
    prop = linux.get("rootfsPropagation")
    if prop is not None:
        _need(prop in ("private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
                       "runbindable"), f"{where}: linux.rootfsPropagation", f"unknown value {prop!r}")
    return cfg


def load(bundle: str, warn: Callable[[str], None] | None = None) -> dict[str, object]:
    """Read `bundle/config.json` and check it."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        cfg = loads(text)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return check(cfg, path, warn)


def rootfs_path(bundle: str, cfg: dict[str, object]) -> str:
    """The absolute root filesystem path (root.path is relative to the bundle)."""
    root = cfg["root"]
    assert isinstance(root, dict)
    return os.path.normpath(os.path.join(bundle, root["path"]))


DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi", "/sys/devices/virtual/powercap"]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_spec() -> dict[str, object]:
    """The config.json `stackd-runtime spec` writes (runc's, plus Docker's default seccomp profile)."""
    caps = {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted", "ambient")}
    cfg: dict[str, object] = {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/", "capabilities": caps,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "stackd",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(MASKED),
            "readonlyPaths": list(READONLY),
        },
    }
    try:
        from stackd.engine.runtime import seccomp
    except ImportError:
        return cfg
    cfg["linux"]["seccomp"] = seccomp.default_profile(DEFAULT_CAPS)  # type: ignore[index]
    return cfg


def features() -> dict[str, object]:
    """What this runtime supports, in the shape `runc features` prints."""
    from stackd.engine.runtime.process import CAPS
    from stackd.engine.runtime.rootfs import _FLAGS, PROPAGATIONS
    from stackd.engine.runtime.syscalls import NAMESPACES

    return {
        "ociVersionMin": "1.0.0", "ociVersionMax": "1.3.0",
        "hooks": list(_HOOKS),
        "mountOptions": sorted([*_FLAGS, *PROPAGATIONS]),
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": ["CAP_" + c for c in CAPS],
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                                                     "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                                                     "SCMP_ACT_TRAP", "SCMP_ACT_TRACE"]},
            "apparmor": {"enabled": False}, "selinux": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.opencontainers.runc.checkpoint.enabled": "false", "io.stackd.runtime.version": "0.1.0"},
    }
