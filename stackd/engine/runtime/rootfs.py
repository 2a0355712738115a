"""Build the container's root filesystem inside its mount namespace, then pivot into it.

Every destination is resolved inside the rootfs with openat2(RESOLVE_IN_ROOT) and mounted through
/proc/self/fd/N, so a symlink in the image cannot redirect a mount onto the host.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from stackd.engine.runtime import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from stackd.engine.runtime.syscalls import Syscalls

_FLAGS = {  # option → (flag, clear)
    "ro": (sc.MS_RDONLY, False), "rw": (sc.MS_RDONLY, True),
    "nosuid": (sc.MS_NOSUID, False), "suid": (sc.MS_NOSUID, True),
    "nodev": (sc.MS_NODEV, False), "dev": (sc.MS_NODEV, True),
    "noexec": (sc.MS_NOEXEC, False), "exec": (sc.MS_NOEXEC, True),
    "sync": (sc.MS_SYNCHRONOUS, False), "async": (sc.MS_SYNCHRONOUS, True),
    "dirsync": (sc.MS_DIRSYNC, False), "remount": (sc.MS_REMOUNT, False),
    "mand": (sc.MS_MANDLOCK, False), "nomand": (sc.MS_MANDLOCK, True),
    "noatime": (sc.MS_NOATIME, False), "atime": (sc.MS_NOATIME, True),
    "nodiratime": (sc.MS_NODIRATIME, False), "diratime": (sc.MS_NODIRATIME, True),
    "bind": (sc.MS_BIND, False), "rbind": (sc.MS_BIND | sc.MS_REC, False),
    "relatime": (sc.MS_RELATIME, False), "norelatime": (sc.MS_RELATIME, True),
    "strictatime": (sc.MS_STRICTATIME, False), "nostrictatime": (sc.MS_STRICTATIME, True),
    "lazytime": (sc.MS_LAZYTIME, False), "nosymfollow": (sc.MS_NOSYMFOLLOW, False),
    "silent": (sc.MS_SILENT, False), "loud": (sc.MS_SILENT, True), "defaults": (0, False),
}
PROPAGATIONS = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
_RESOLVE = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
_O_PATH = os.O_PATH | os.O_CLOEXEC
DEFAULT_DEVICES = (("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
                   ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0))
DEV_LINKS = (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
             ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"))
_SETTABLE = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME | sc.MS_NODIRATIME


def parse_options(options: list[str]) -> tuple[int, list[int], str]:
    """Mount options → (flags, propagation flags, data string)."""
    flags, props, data = 0, [], []
    for o in options:
        if o in _FLAGS:
            f, clear = _FLAGS[o]
            flags = flags & ~f if clear else flags | f
        elif o in PROPAGATIONS:
            props.append(PROPAGATIONS[o])
        else:
            data.append(o)
    return flags, props, ",".join(data)


def fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def open_in_root(sys: Syscalls, rootfd: int, path: str, create: str | None = None) -> int:
    """An O_PATH fd of `path` resolved inside the root; create missing parts ("dir" or "file")."""
    path = posixpath.normpath("/" + path).lstrip("/") or "."
    try:
        return sys.openat2(rootfd, path, _O_PATH, _RESOLVE)
    except FileNotFoundError:
        if not create:
            raise
    # the common case: only the last component is missing; create it in its parent (no symlink followed)
    parent_path, name = posixpath.split(path)
    try:
        parent = sys.openat2(rootfd, parent_path or ".", _O_PATH | os.O_DIRECTORY, _RESOLVE)
    except FileNotFoundError:
        parent = -1
    if parent >= 0:
        try:
            if create == "file":
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644,
                                 dir_fd=parent))
            else:
                os.mkdir(name, 0o755, dir_fd=parent)
            return sys.openat2(rootfd, path, _O_PATH, _RESOLVE)
        except OSError:
            pass  # e.g. a dangling symlink in the way: the general path below handles it
        finally:
            os.close(parent)
    # dangling symlinks on the way: follow them the way RESOLVE_IN_ROOT will, then create what is missing
    root = os.readlink(fdpath(rootfd))
    path = os.path.relpath(resolve_in_root(root, path), root)
    parts = path.split("/")
    for i in range(len(parts)):
        sub = "/".join(parts[: i + 1])
        try:
            os.close(sys.openat2(rootfd, sub, _O_PATH, _RESOLVE))
            continue
        except FileNotFoundError:
            pass
        parent = sys.openat2(rootfd, "/".join(parts[:i]) or ".", _O_PATH | os.O_DIRECTORY, _RESOLVE)
        try:
            if i == len(parts) - 1 and create == "file":
                os.close(os.open(parts[i], os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644,
                                 dir_fd=parent))
            else:
                os.mkdir(parts[i], 0o755, dir_fd=parent)
        except FileExistsError:
            pass
        finally:
            os.close(parent)
    return sys.openat2(rootfd, path, _O_PATH, _RESOLVE)


def _remount(sys: Syscalls, rootfd: int, dest: str, flags: int) -> None:
    fd = open_in_root(sys, rootfd, dest)
    try:
        try:
            sys.mount(None, fdpath(fd), None, sc.MS_REMOUNT | sc.MS_BIND | (flags & ~sc.MS_REC), None)
        except PermissionError:  # locked flags (user namespace): keep what the mount already has
            keep = os.statvfs(fdpath(fd)).f_flag & _SETTABLE
            sys.mount(None, fdpath(fd), None, sc.MS_REMOUNT | sc.MS_BIND | flags | keep, None)
    finally:
        os.close(fd)


def mount_one(sys: Syscalls, rootfd: int, m: dict[str, object], bundle: str,
              cgroup_paths: dict[str, str] | None, new_cgroupns: bool) -> None:
    """Perform one entry of config.json's mounts inside the root."""
    dest = str(m["destination"])
    options = [str(o) for o in m.get("options") or []]  # type: ignore[attr-defined]
    flags, props, data = parse_options(options)
    typ = str(m.get("type") or "")
    source = m.get("source")
    src = str(source) if source is not None else None
    bind = typ == "bind" or bool(flags & sc.MS_BIND)
    if typ == "cgroup":
        return _mount_cgroup(sys, rootfd, dest, flags, cgroup_paths, new_cgroupns)
    if bind:
        if src is None:
            raise OSError(22, f"bind mount on {dest} needs a source", dest)
        src = os.path.join(bundle, src)
        kind = "dir" if os.path.isdir(src) else "file"
    else:
        kind = "dir"
    fd = open_in_root(sys, rootfd, dest, kind)
    try:
        if bind:
            sys.mount(src, fdpath(fd), None, sc.MS_BIND | (flags & sc.MS_REC), None)
        else:
            sys.mount(src or typ, fdpath(fd), typ, flags & ~sc.MS_REMOUNT, data or None)
    finally:
        os.close(fd)
    if bind and flags & ~(sc.MS_BIND | sc.MS_REC):
        _remount(sys, rootfd, dest, flags & ~sc.MS_BIND)
    for p in props:
        fd = open_in_root(sys, rootfd, dest)
        try:
            sys.mount(None, fdpath(fd), None, p, None)
        finally:
            os.close(fd)


_HOST_CGROUPS: list[tuple[str, str, str]] = []


def _host_cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, controller options) of the host's cgroup hierarchies (read once)."""
    if _HOST_CGROUPS:
        return _HOST_CGROUPS
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f.read().decode().splitlines():
            left, _, right = line.partition(" - ")
            fstype, _src, opts = ([*right.split(" "), "", ""])[:3]
            if fstype in ("cgroup", "cgroup2"):
                ctl = ",".join(o for o in opts.split(",") if o not in ("rw", "ro"))
                out.append((left.split(" ")[4], fstype, ctl))
    _HOST_CGROUPS[:] = out
    return out


def _mount_cgroup(sys: Syscalls, rootfd: int, dest: str, flags: int, paths: dict[str, str] | None,
                  new_ns: bool) -> None:
    """`type: cgroup`: cgroup2 on v2 hosts; on v1/hybrid a tmpfs with one mount per hierarchy."""
    host = _host_cgroup_mounts()
    base = flags & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RELATIME)
    fd = open_in_root(sys, rootfd, dest, "dir")
    try:
        if any(mp == "/sys/fs/cgroup" and t == "cgroup2" for mp, t, _ in host):
            sys.mount("cgroup", fdpath(fd), "cgroup2", flags, None)
            return
        sys.mount("tmpfs", fdpath(fd), "tmpfs", base, "mode=755")
    finally:
        os.close(fd)
    paths = paths or {}
    for mp, fstype, ctl in host:
        if not mp.startswith("/sys/fs/cgroup/"):
            continue
        name = mp[len("/sys/fs/cgroup/"):]
        sub = f"{dest}/{name}"
        own = next((p for p in paths.values() if p == mp or p.startswith(mp + "/")), None)
        sfd = open_in_root(sys, rootfd, sub, "dir")
        try:
            if new_ns:
                sys.mount("cgroup", fdpath(sfd), fstype, flags | base, ctl if fstype == "cgroup" else None)
            elif own and os.path.isdir(own):
                sys.mount(own, fdpath(sfd), None, sc.MS_BIND, None)
            else:
                continue
        finally:
            os.close(sfd)
        if not new_ns:
            _remount(sys, rootfd, sub, flags | base)
        for c in name.split(",") if "," in name else ():
            try:
                os.symlink(name, f"{fdpath(rootfd)}/{dest.lstrip('/')}/{c}")
            except OSError:
                pass
    if flags & sc.MS_RDONLY:
        _remount(sys, rootfd, dest, base | sc.MS_RDONLY)


def make_dev(sys: Syscalls, rootfd: int, devices: list[dict[str, object]], in_userns: bool) -> None:
    """Default devices plus linux.devices (mknod, or bind from the host in a user namespace), links."""
    seen = set()
    todo = [{"path": p, "type": "c", "major": ma, "minor": mi, "fileMode": 0o666, "uid": 0, "gid": 0}
            for p, ma, mi in DEFAULT_DEVICES]
    for d in todo + list(devices):
        path = str(d["path"])
        if path in seen:
            continue
        seen.add(path)
        parent = open_in_root(sys, rootfd, posixpath.dirname(path), "dir")
        name = posixpath.basename(path)
        try:
            try:
                os.unlink(name, dir_fd=parent)
            except FileNotFoundError:
                pass
            if in_userns:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644,
                                 dir_fd=parent))
                fd = sys.openat2(parent, name, _O_PATH, _RESOLVE)
                try:
                    sys.mount(path, fdpath(fd), None, sc.MS_BIND, None)
                finally:
                    os.close(fd)
                continue
            kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[str(d.get("type"))]
            mode = int(d.get("fileMode", 0o666))  # type: ignore[call-overload]
            dev = os.makedev(int(d.get("major", 0)), int(d.get("minor", 0)))  # type: ignore[call-overload]
            sys.mknod(f"{fdpath(parent)}/{name}", kind | (mode & 0o7777), dev)
            os.chmod(name, mode & 0o7777, dir_fd=parent)
            os.chown(name, int(d.get("uid", 0)), int(d.get("gid", 0)), dir_fd=parent,  # type: ignore[call-overload]
                     follow_symlinks=False)
        finally:
            os.close(parent)
    dev = open_in_root(sys, rootfd, "/dev", "dir")
    try:
        links: tuple[tuple[str, str], ...] = (*DEV_LINKS, ("pts/ptmx", "/dev/ptmx"))
        if os.path.exists("/proc/kcore"):
            links += (("/proc/kcore", "/dev/core"),)
        for target, link in links:
            name = posixpath.basename(link)
            try:
                if link == "/dev/ptmx":
                    os.unlink(name, dir_fd=dev)
            except FileNotFoundError:
                pass
            try:
                os.symlink(target, name, dir_fd=dev)
            except FileExistsError:
                pass
    finally:
        os.close(dev)


def pivot(sys: Syscalls, rootfs: str, no_pivot: bool) -> None:
    """Make `rootfs` the root: pivot_root(".", ".") then detach the old root; or MS_MOVE + chroot."""
    if no_pivot:
        os.chdir(rootfs)
        sys.mount(rootfs, "/", None, sc.MS_MOVE, None)
        sys.chroot(".")
        os.chdir("/")
        return
    if (kind := sys.statfs_type("/")) == sc.RAMFS_MAGIC or (
            kind == sc.TMPFS_MAGIC and any(t == "/" and ty == "rootfs" for t, ty in sys.mounts())):
        raise OSError(22, "pivot_root: the host root is a ramfs/initramfs; use --no-pivot", "/")
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        sys.pivot_root(".", ".")
        os.fchdir(old)
        sys.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None)
        sys.umount2(".", sc.MNT_DETACH)
    finally:
        os.close(old)
        os.close(new)
    os.chdir("/")


def mask_and_protect(sys: Syscalls, masked: list[str], readonly: list[str]) -> None:
    """maskedPaths (/dev/null over files, read-only tmpfs over dirs) and readonlyPaths."""
    rootfd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for p in readonly:
            try:
                fd = open_in_root(sys, rootfd, p)
            except FileNotFoundError:
                continue
            try:
                sys.mount(fdpath(fd), fdpath(fd), None, sc.MS_BIND | sc.MS_REC, None)
            finally:
                os.close(fd)
            _remount(sys, rootfd, p, sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        for p in masked:
            try:
                fd = open_in_root(sys, rootfd, p)
            except FileNotFoundError:
                continue
            try:
                if stat.S_ISDIR(os.stat(fdpath(fd)).st_mode):
                    sys.mount("tmpfs", fdpath(fd), "tmpfs", sc.MS_RDONLY, None)
                else:
                    sys.mount("/dev/null", fdpath(fd), None, sc.MS_BIND, None)
            finally:
                os.close(fd)
    finally:
        os.close(rootfd)


def write_sysctls(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)


def setup(sys: Syscalls, cfg: dict[str, object], bundle: str, rootfs: str, *,
          cgroup_paths: dict[str, str] | None, new_cgroupns: bool, in_userns: bool,
          step: Callable[[str], None], before_cgroup: Callable[[], None] | None = None) -> None:
    """Everything before pivot_root: propagation, the rootfs bind, mounts, /dev.

    `before_cgroup` runs before the first `type: cgroup` mount (which shows the cgroup namespace
    the process is in, so it must be in the container's cgroup by then)."""
    linux: dict[str, object] = cfg.get("linux") or {}  # type: ignore[assignment]
    prop = PROPAGATIONS.get(str(linux.get("rootfsPropagation") or "rslave"), sc.MS_SLAVE | sc.MS_REC)
    step("rootfs propagation")
    sys.mount(None, "/", None, prop if prop & (sc.MS_SLAVE | sc.MS_PRIVATE) else sc.MS_SLAVE | sc.MS_REC, None)
    step(f"bind rootfs {rootfs}")
    sys.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC, None)
    rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        mounts: list[dict[str, object]] = cfg.get("mounts") or []  # type: ignore[assignment]
        for m in mounts:
            if before_cgroup is not None and m.get("type") == "cgroup":
                _host_cgroup_mounts()  # read while still waiting (it does not depend on the cgroup)
                before_cgroup()
            step(f"mount {m.get('type') or 'bind'} on {m['destination']}")
            mount_one(sys, rootfd, m, bundle, cgroup_paths, new_cgroupns)
        if not any(posixpath.normpath(str(m["destination"])) == "/dev" and "bind" in (m.get("options") or [])  # type: ignore[operator]
                   for m in mounts):
            step("create devices")
            make_dev(sys, rootfd, linux.get("devices") or [], in_userns)  # type: ignore[arg-type]
        if prop & sc.MS_SHARED:
            sys.mount(None, rootfs, None, prop, None)
    finally:
        os.close(rootfd)


def finish(sys: Syscalls, cfg: dict[str, object], step: Callable[[str], None]) -> None:
    """After pivot_root: sysctls, masked and read-only paths, a read-only root."""
    linux: dict[str, object] = cfg.get("linux") or {}  # type: ignore[assignment]
    if linux.get("sysctl"):
        step("sysctl")
        write_sysctls(linux["sysctl"])  # type: ignore[arg-type]
    step("maskedPaths/readonlyPaths")
    mask_and_protect(sys, linux.get("maskedPaths") or [], linux.get("readonlyPaths") or [])  # type: ignore[arg-type]
    root: dict[str, object] = cfg["root"]  # type: ignore[assignment]
    if root.get("readonly"):
        step("read-only root")
        rootfd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _remount(sys, rootfd, "/", sc.MS_RDONLY)
        finally:
            os.close(rootfd)


def resolve_in_root(root: str, path: str, _depth: int = 0) -> str:
    """Resolve `path` as if `root` were "/": symlinks and ".." never leave it (RESOLVE_IN_ROOT)."""
    if _depth > 40:
        raise OSError(errno.ELOOP, "too many symlinks", path)
    parts: list[str] = []
    todo = [p for p in path.split("/") if p not in ("", ".")]
    while todo:
        part = todo.pop(0)
        if part == "..":
            if parts:
                parts.pop()
            continue
        real = os.path.join(root, *parts, part)
        if os.path.islink(real):
            target = os.readlink(real)
            if target.startswith("/"):
                parts = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            _depth += 1
            if _depth > 40:
                raise OSError(errno.ELOOP, "too many symlinks", path)
            continue
        parts.append(part)
    return os.path.join(root, *parts)
