"""Open, read and create paths inside a container rootfs without escaping it (openat2 RESOLVE_IN_ROOT).

Symlinks in the image (absolute or `..`) resolve as if the rootfs were `/`, so a hostile image
cannot make the engine read or create files on the host.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

SYS_OPENAT2 = 437  # the same number on every architecture (new-style syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
O_PATH = getattr(os, "O_PATH", 0o10000000)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2); raises OSError with the errno and the path."""
    how = _OpenHow(flags, mode, resolve)
    fd = _syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), os.fsencode(path),
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def open_in_root(root: str | os.PathLike[str], path: str, flags: int = os.O_RDONLY) -> int:
    """An fd for `path` resolved inside `root` (which is treated as `/`)."""
    rfd = os.open(root, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return openat2(rfd, path.lstrip("/") or ".", flags | os.O_CLOEXEC,
                       RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(rfd)


def read_in_root(root: str | os.PathLike[str], path: str, limit: int = 4 << 20) -> bytes | None:
    """The bytes of regular file `path` inside `root`, or None if it does not exist."""
    try:
        fd = open_in_root(root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
            size += len(b)
        if size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
        return b"".join(chunks)
    finally:
        os.close(fd)


def mkdirs_in_root(root: str | os.PathLike[str], path: str, *, uid: int = 0, gid: int = 0,
                   mode: int = 0o755) -> list[str]:
    """Create the missing directories of absolute `path` inside `root`, owned by uid:gid.

    Returns the paths created. Existing components (and symlinks, resolved inside the root)
    are left alone; a component that exists but is not a directory raises NotADirectoryError.
    """
    created: list[str] = []
    parts = [p for p in path.split("/") if p and p != "."]
    done = ""
    for name in parts:
        if name == "..":
            done = done.rsplit("/", 1)[0]
            continue
        parent = open_in_root(root, done or "/", O_PATH | os.O_DIRECTORY)
        try:
            try:
                os.mkdir(name, mode, dir_fd=parent)
            except FileExistsError:
                pass
            else:
                os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
                os.chmod(name, mode, dir_fd=parent, follow_symlinks=True)
                created.append(f"{done}/{name}")
        finally:
            os.close(parent)
        done = f"{done}/{name}"
        fd = open_in_root(root, done, O_PATH)  # follows symlinks inside the root
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", done)
        finally:
            os.close(fd)
    return created
