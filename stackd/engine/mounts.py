"""Mounts as data (type, source, target, options) and the small kernel seam that performs them."""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field
from typing import Protocol

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 0x2

# Options that are mount(2) flags rather than filesystem data.
_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
_IGNORED = {"rw", "bind", "rbind", "suid", "dev", "exec", "defaults"}


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount described as data, as in OCI config.json (`target` empty until chosen)."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()

    def is_bind(self) -> bool:
        return self.type == "bind" or "bind" in self.options or "rbind" in self.options


class MountCalls(Protocol):
    """The two kernel calls mounts need; raise OSError(errno) on failure."""

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None: ...

    def umount(self, target: str, flags: int) -> None: ...


class LinuxMountCalls:
    """mount(2)/umount2(2) through libc (ctypes)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        self._libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        rc = self._libc.mount(
            os.fsencode(source), os.fsencode(target), os.fsencode(fstype) if fstype else None,
            flags, os.fsencode(data) if data else None,
        )
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {fstype or 'bind'} on {target}: {os.strerror(err)}", target)

    def umount(self, target: str, flags: int) -> None:
        if self._libc.umount2(os.fsencode(target), flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"umount {target}: {os.strerror(err)}", target)


@dataclass
class RecordingMountCalls:
    """A fake that records calls and tracks mounted targets like the kernel would."""

    calls: list[tuple[str, ...]] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self.calls.append(("mount", source, target, fstype, hex(flags), data))
        if not os.path.isdir(target) and not os.path.exists(target):
            raise OSError(errno.ENOENT, f"mount on {target}: no such file or directory", target)
        if flags & MS_REMOUNT:
            if target not in self.mounted:
                raise OSError(errno.EINVAL, f"remount {target}: not mounted", target)
            return
        self.mounted.append(target)

    def umount(self, target: str, flags: int) -> None:
        self.calls.append(("umount", target, hex(flags)))
        if target not in self.mounted:
            raise OSError(errno.EINVAL, f"umount {target}: not mounted", target)
        self.mounted.remove(target)


_default: MountCalls | None = None


def linux() -> MountCalls:
    """The process-wide real implementation (created on first use)."""
    global _default
    if _default is None:
        _default = LinuxMountCalls()
    return _default


def split_options(options: tuple[str, ...]) -> tuple[int, str]:
    """Split mount options into mount(2) flags and the filesystem data string."""
    flags = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            flags |= _FLAGS[opt]
        elif opt not in _IGNORED:
            data.append(opt)
    return flags, ",".join(data)


def mount(m: Mount, target: str | os.PathLike[str], *, calls: MountCalls | None = None) -> None:
    """Perform `m` on `target` (bind mounts are remounted read-only when `ro` is asked)."""
    calls = calls or linux()
    tgt = os.fspath(target)
    flags, data = split_options(m.options)
    if m.is_bind():
        bflags = MS_BIND | (MS_REC if "rbind" in m.options else 0)
        calls.mount(m.source, tgt, "", bflags, "")
        extra = flags & ~MS_RDONLY
        if flags & MS_RDONLY or extra:
            try:
                calls.mount("", tgt, "", MS_REMOUNT | MS_BIND | flags, "")
            except OSError:
                calls.umount(tgt, MNT_DETACH)
                raise
        return
    calls.mount(m.source, tgt, m.type, flags, data)


def unmount(target: str | os.PathLike[str], *, detach: bool = False,
            calls: MountCalls | None = None) -> None:
    """Unmount `target` (lazily with `detach`)."""
    (calls or linux()).umount(os.fspath(target), MNT_DETACH if detach else 0)


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    """True if `path` is a mount point: on another device than its parent (an overlay, a tmpfs),
    else listed in /proc/self/mountinfo (a bind mount from the same file system)."""
    want = os.path.realpath(os.fspath(path))
    try:
        if os.stat(want).st_dev != os.stat(os.path.dirname(want) or "/").st_dev:
            return True
    except OSError:
        pass
    escaped = b"".join(b"\\%03o" % c if c in b" \t\n\\" else bytes((c,)) for c in os.fsencode(want))
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            if line.split(b" ", 5)[4] == escaped:
                return True
    return False
