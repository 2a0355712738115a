"""The real kernel calls of the runtime (ctypes and os); the only runtime module that makes them."""

from __future__ import annotations

import os

from stackd.engine.runtime import libc as ctypes  # ctypes' names, without ctypes' import cost

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_mount = _libc.mount
_mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_umount2 = _libc.umount2
_umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_sethostname = _libc.sethostname
_sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_setdomainname = _libc.setdomainname
_setdomainname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)

SYS_CAPGET, SYS_CAPSET, SYS_PIVOT_ROOT, SYS_STATFS = 125, 126, 155, 137
SYS_CLOSE_RANGE, SYS_OPENAT2 = 436, 437
_CAP_V3 = 0x20080522


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def _enc(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def _fail(what: str, path: str | None = None) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}", path)


class LinuxSyscalls:
    """`Syscalls` on the running kernel (x86_64 syscall numbers)."""

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
        if _mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)) != 0:
            raise _fail(f"mount {source or fstype or ''} on {target}", target)

    def umount2(self, target: str, flags: int) -> None:
        if _umount2(_enc(target), flags) != 0:
            raise _fail(f"umount {target}", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        if _syscall(SYS_PIVOT_ROOT, _enc(new_root), _enc(put_old)) != 0:
            raise _fail("pivot_root", new_root)

    def chroot(self, path: str) -> None:
        os.chroot(path)

    def unshare(self, flags: int) -> None:
        os.unshare(flags)

    def setns(self, fd: int, nstype: int) -> None:
        os.setns(fd, nstype)

    def sethostname(self, name: str) -> None:
        b = name.encode()
        if _sethostname(b, len(b)) != 0:
            raise _fail("sethostname")

    def setdomainname(self, name: str) -> None:
        b = name.encode()
        if _setdomainname(b, len(b)) != 0:
            raise _fail("setdomainname")

    def gethostname(self) -> str:
        return os.uname().nodename

    def mknod(self, path: str, mode: int, device: int) -> None:
        os.mknod(path, mode, device)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        r: int = _prctl(option, arg2, arg3, arg4, arg5)
        if r < 0:
            raise _fail(f"prctl({option})")
        return r

    def capget(self) -> tuple[int, int, int]:
        hdr = _CapHeader(_CAP_V3, 0)
        data = (_CapData * 2)()
        if _syscall(SYS_CAPGET, ctypes.byref(hdr), ctypes.byref(data)) != 0:
            raise _fail("capget")
        e, p, i = (getattr(data[0], f) | (getattr(data[1], f) << 32) for f in ("effective", "permitted", "inheritable"))
        return int(e), int(p), int(i)

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        hdr = _CapHeader(_CAP_V3, 0)
        data = (_CapData * 2)()
        for i in (0, 1):
            data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
            data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
        if _syscall(SYS_CAPSET, ctypes.byref(hdr), ctypes.byref(data)) != 0:
            raise _fail("capset")

    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
        how = _OpenHow(flags, mode, resolve)
        fd: int = _syscall(SYS_OPENAT2, ctypes.c_int(dirfd), _enc(path), ctypes.byref(how), ctypes.c_size_t(24))
        if fd < 0:
            raise _fail(f"openat2 {path}", path)
        return fd

    def close_range(self, first: int, last: int, flags: int) -> None:
        if _syscall(SYS_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)) != 0:
            raise _fail("close_range")

    def statfs_type(self, path: str) -> int:
        buf = ctypes.create_string_buffer(120)
        if _syscall(SYS_STATFS, _enc(path), buf) != 0:
            raise _fail("statfs", path)
        return int.from_bytes(buf.raw[:8], "little")

    def mounts(self) -> list[tuple[str, str]]:
        out = []
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                left, _, right = line.partition(" - ")
                target = left.split(" ")[4].replace("\\040", " ")
                out.append((target, right.split(" ")[0]))
        return out
