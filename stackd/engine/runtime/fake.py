"""A recording fake of `Syscalls`: remembers every call and models the visible effects."""

from __future__ import annotations

import errno
import os

from stackd.engine.runtime import syscalls as sc
from stackd.engine.runtime.rootfs import resolve_in_root


class FakeSyscalls:
    """`Syscalls` without touching the kernel (except opening real files for `openat2`)."""

    def __init__(self, hostname: str = "host", caps: int = (1 << 41) - 1) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.hostname = hostname
        self.domainname = ""
        self.caps = (caps, caps, 0)
        self.bounding = caps
        self.table: list[tuple[str, str]] = [("/", "ext4")]
        self.prctls: dict[int, int] = {sc.PR_GET_DUMPABLE: 1, sc.PR_GET_NO_NEW_PRIVS: 0, sc.PR_GET_KEEPCAPS: 0}
        self.nodes: dict[str, tuple[int, int]] = {}
        self.unshared = 0
        self.root = "/"

    def _rec(self, *call: object) -> None:
        self.calls.append(call)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
        self._rec("mount", source, target, fstype, flags, data)
        if flags & (sc.MS_REMOUNT | sc.PROPAGATION) and not flags & sc.MS_BIND:
            if not any(t == target for t, _ in self.table):
                raise OSError(errno.EINVAL, "mount: not a mount point", target)
            return
        if flags & sc.MS_REMOUNT:
            return
        if flags & sc.MS_MOVE:
            self.table = [(target if t == source else t, ty) for t, ty in self.table]
            return
        if not flags & sc.MS_BIND and not fstype:
            raise OSError(errno.ENODEV, "mount: no filesystem type", target)
        kind = next((ty for t, ty in self.table if t == source), "ext4") if flags & sc.MS_BIND else fstype
        self.table.append((target, kind or "none"))

    def umount2(self, target: str, flags: int) -> None:
        self._rec("umount2", target, flags)
        for i in range(len(self.table) - 1, -1, -1):
            if self.table[i][0] == target:
                del self.table[i]
                return
        raise OSError(errno.EINVAL, "umount: not mounted", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._rec("pivot_root", new_root, put_old)
        self.root = new_root

    def chroot(self, path: str) -> None:
        self._rec("chroot", path)
        self.root = path

    def unshare(self, flags: int) -> None:
        self._rec("unshare", flags)
        known = 0
        for flag, _ in sc.NAMESPACES.values():
            known |= flag
        if flags & ~known:
            raise OSError(errno.EINVAL, "unshare: invalid flags")
        self.unshared |= flags

    def setns(self, fd: int, nstype: int) -> None:
        self._rec("setns", fd, nstype)
        os.fstat(fd)  # EBADF like the kernel

    def sethostname(self, name: str) -> None:
        self._rec("sethostname", name)
        if len(name) > 64:
            raise OSError(errno.EINVAL, "sethostname: name too long")
        self.hostname = name

    def setdomainname(self, name: str) -> None:
        self._rec("setdomainname", name)
        if len(name) > 64:
            raise OSError(errno.EINVAL, "setdomainname: name too long")
        self.domainname = name

    def gethostname(self) -> str:
        return self.hostname

    def mknod(self, path: str, mode: int, device: int) -> None:
        self._rec("mknod", path, mode, device)
        if path in self.nodes:
            raise OSError(errno.EEXIST, "mknod: exists", path)
        self.nodes[path] = (mode, device)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        self._rec("prctl", option, arg2, arg3, arg4, arg5)
        if option in (sc.PR_SET_DUMPABLE, sc.PR_SET_KEEPCAPS, sc.PR_SET_NO_NEW_PRIVS):
            if arg2 not in (0, 1):
                raise OSError(errno.EINVAL, "prctl: invalid argument")
            if option == sc.PR_SET_NO_NEW_PRIVS and self.prctls[sc.PR_GET_NO_NEW_PRIVS] and not arg2:
                raise OSError(errno.EINVAL, "prctl: no_new_privs is sticky")
            getter = {sc.PR_SET_DUMPABLE: sc.PR_GET_DUMPABLE, sc.PR_SET_KEEPCAPS: sc.PR_GET_KEEPCAPS,
                      sc.PR_SET_NO_NEW_PRIVS: sc.PR_GET_NO_NEW_PRIVS}[option]
            self.prctls[getter] = arg2
            return 0
        if option in self.prctls:
            return self.prctls[option]
        if option == sc.PR_CAPBSET_READ:
            return (self.bounding >> arg2) & 1
        if option == sc.PR_CAPBSET_DROP:
            self.bounding &= ~(1 << arg2)
            return 0
        return 0

    def capget(self) -> tuple[int, int, int]:
        return self.caps

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self._rec("capset", effective, permitted, inheritable)
        _, prm, _ = self.caps
        if permitted & ~prm or effective & ~permitted:
            raise OSError(errno.EPERM, "capset: not permitted")
        self.caps = (effective, permitted, inheritable)

    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
        self._rec("openat2", dirfd, path, flags, resolve)
        root = os.readlink(f"/proc/self/fd/{dirfd}")
        real = resolve_in_root(root, path) if resolve & sc.RESOLVE_IN_ROOT else os.path.join(root, path)
        return os.open(real, flags, mode)

    def close_range(self, first: int, last: int, flags: int) -> None:
        self._rec("close_range", first, last, flags)
        if first > last:
            raise OSError(errno.EINVAL, "close_range: first > last")

    def statfs_type(self, path: str) -> int:
        for t, ty in reversed(self.table):
            if path == t or path.startswith(t.rstrip("/") + "/"):
                return sc.TMPFS_MAGIC if ty == "tmpfs" else (sc.RAMFS_MAGIC if ty == "ramfs" else 0xEF53)
        return 0xEF53

    def mounts(self) -> list[tuple[str, str]]:
        return list(self.table)
