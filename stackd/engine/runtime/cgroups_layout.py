"""Where the cgroup hierarchies are (v1, hybrid, v2), the file seam, and cgroupsPath resolution."""

from __future__ import annotations

import errno as _errno
import os
import sys

from stackd.errors import RuntimeSpecError

ROOT = "/sys/fs/cgroup"
UNIFIED = ""  # the paths() key of the cgroup2 directory (runc uses the same key)
V1_CONTROLLERS = frozenset(
    ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "net_cls", "net_prio", "hugetlb", "perf_event", "rdma", "misc"]
)
WAIT_S = 2.0  # bound for freeze/thaw and rmdir retries

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    Warn = Callable[[str], None]

    class CgroupFS(Protocol):
        """The file operations cgroups need; paths are absolute."""

        def read(self, path: str) -> str: ...
        def write(self, path: str, data: str) -> None: ...
        def mkdir(self, path: str) -> None: ...
        def rmdir(self, path: str) -> None: ...
        def exists(self, path: str) -> bool: ...
        def subdirs(self, path: str) -> list[str]: ...


def stderr_warn(message: str) -> None:
    """Default warning sink: one line on stderr."""
    sys.stderr.write(f"stackd-runtime: warning: {message}\n")


class RealFS:
    """The kernel's cgroup filesystems."""

    def read(self, path: str) -> str:
        with open(path, "rb") as f:  # binary: a text-mode open would import the ascii codec
            return f.read().decode("ascii", "replace")

    def write(self, path: str, data: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def subdirs(self, path: str) -> list[str]:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]


def fs_error(op: str, path: str, exc: OSError) -> RuntimeSpecError:
    """The one error shape: the step, the cgroup file and the errno."""
    code = _errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return RuntimeSpecError(f"cgroup: {op} {path}: {exc.strerror or exc} ({code})")


class Layout:
    """Where the hierarchies are mounted: v1 controller → mountpoint, and the cgroup2 mount."""

    def __init__(self, v1: dict[str, str], unified: str | None, mode: str, v2_controllers: set[str]):
        self.v1 = v1
        self.unified = unified
        self.mode = mode  # "v1", "hybrid" or "v2"
        self.v2_controllers = v2_controllers
        self.roots: dict[str, str] = {}  # mountpoint → the cgroup it shows (mountinfo field 4)


def detect(fs: CgroupFS, root: str = ROOT) -> Layout:
    """Read /proc/self/mountinfo: which cgroup hierarchies are mounted under `root`, and how."""
    try:
        text = fs.read("/proc/self/mountinfo")
    except OSError as e:
        raise fs_error("read", "/proc/self/mountinfo", e)
    v1: dict[str, str] = {}
    unified: str | None = None
    roots: dict[str, str] = {}
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        mountpoint, fstype = fields[4].replace("\\040", " "), rest[0]
        roots[mountpoint] = fields[3]
        if not (mountpoint == root or mountpoint.startswith(root + "/")):
            continue
        if fstype == "cgroup2":
            if unified is None or mountpoint == root:
                unified = mountpoint
        elif fstype == "cgroup":
            for opt in rest[2].split(","):
                if opt in V1_CONTROLLERS:
                    v1.setdefault(opt, mountpoint)
    if unified == root:
        mode = "v2"
        v1 = {}
    elif v1:
        mode = "hybrid" if unified else "v1"
    elif unified:
        mode = "v2"
    else:
        raise RuntimeSpecError(f"cgroup: no cgroup filesystem is mounted under {root} (see /proc/self/mountinfo)")
    v2c: set[str] = set()
    if unified:
        try:
            v2c = set(fs.read(f"{unified}/cgroup.controllers").split())
        except OSError:
            v2c = set()
    layout = Layout(v1, unified, mode, v2c)
    layout.roots = roots
    return layout


def under_mount(layout: Layout, mountpoint: str, own: str) -> str:
    """This process's cgroup path as seen below `mountpoint` (strip a bind-mounted cgroup root)."""
    root = layout.roots.get(mountpoint, "/").rstrip("/")
    if root and (own == root or own.startswith(root + "/")):
        own = own[len(root) :] or "/"
    return own


def systemd_path(spec: str) -> str:
    """Map runc's systemd form `slice:prefix:name` to its cgroupfs path (no D-Bus involved)."""
    parts = spec.split(":")
    if len(parts) != 3 or not parts[2] or any("/" in p for p in parts):
        raise RuntimeSpecError(f"cgroup: cgroupsPath {spec!r}: expected the systemd form slice:prefix:name")
    slice_, prefix, name = parts
    slice_ = slice_ or "system.slice"
    if not slice_.endswith(".slice"):
        raise RuntimeSpecError(f"cgroup: cgroupsPath {spec!r}: {slice_!r} is not a .slice unit")
    path = ""
    if slice_ != "-.slice":
        words = slice_[: -len(".slice")].split("-")
        if any(not w for w in words):
            raise RuntimeSpecError(f"cgroup: cgroupsPath {spec!r}: invalid slice name {slice_!r}")
        for i in range(len(words)):
            path += "/" + "-".join(words[: i + 1]) + ".slice"
    unit = name if name.endswith((".scope", ".slice", ".service")) else f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return f"{path}/{unit}"


def _own_cgroups(fs: CgroupFS) -> dict[str, str]:
    """This process's cgroup per v1 controller (and "" for cgroup2), from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        text = fs.read("/proc/self/cgroup")
    except OSError as e:
        raise fs_error("read", "/proc/self/cgroup", e)
    for line in text.splitlines():
        _, ctrls, path = [*line.split(":", 2), "", ""][:3]
        for c in ctrls.split(",") if ctrls else [UNIFIED]:
            out[c] = path or "/"
    return out


def resolve(cgroups_path: str | None, container_id: str, fs: CgroupFS) -> dict[str, str]:
    """The cgroup path inside each hierarchy (key: controller, or "" for cgroup2)."""
    spec = cgroups_path or f"/stackd/{container_id}"
    if not spec.startswith("/") and spec.count(":") == 2:
        spec = systemd_path(spec)
    parts = [p for p in spec.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise RuntimeSpecError(f"cgroup: cgroupsPath {cgroups_path!r} must name a cgroup below the root, without '..'")
    rel = "/" + "/".join(parts)
    if spec.startswith("/"):
        return {"*": rel}
    own = _own_cgroups(fs)
    return {k: (v.rstrip("/") + rel) for k, v in own.items()} | {"*": rel}
