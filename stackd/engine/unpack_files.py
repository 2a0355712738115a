"""Write one layer entry's bytes safely: dirfd-relative long paths, xattrs, writer threads.

Used by unpack_tar inside the chrooted worker; regular files go to a few writer threads
(file creation is kernel-bound and directories are independent), one directory per thread.
"""

from __future__ import annotations

import errno
import os
import posixpath
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

LONG = 3800  # paths at least this long are resolved component by component
INFLIGHT_MAX = 64 << 20


class Counts:
    """What an unpack did, reported back to the engine."""

    def __init__(self) -> None:
        self.c: dict[str, int] = dict.fromkeys(
            ("entries", "files", "dirs", "symlinks", "hardlinks", "devices", "whiteouts",
             "opaques", "file_bytes", "skipped"), 0)
        self.warnings: list[str] = []

    def warn(self, msg: str) -> None:
        self.c["skipped"] += 1
        if len(self.warnings) < 50:
            self.warnings.append(msg)


def _parent_fd(path: bytes) -> tuple[int, bytes]:
    """An fd of the parent of a (long) path, creating missing directories; and the last name."""
    *dirs, base = path.split(b"/")
    fd = os.open(b"/", os.O_DIRECTORY | os.O_RDONLY)
    try:
        for d in dirs:
            try:
                nfd = os.open(d, os.O_DIRECTORY | os.O_RDONLY, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(d, 0o755, dir_fd=fd)
                nfd = os.open(d, os.O_DIRECTORY | os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd, base


class At:
    """A path as (dir_fd, name): plain for short paths, dirfd-relative for long ones."""

    __slots__ = ("fd", "name")

    def __init__(self, path: bytes) -> None:
        if len(path) < LONG:
            self.fd: int | None = None
            self.name = path
        else:
            self.fd, self.name = _parent_fd(path)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def __enter__(self) -> At:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mkparents(path: bytes) -> None:
    parent = posixpath.dirname(path)
    if parent and len(parent) < LONG:
        os.makedirs(parent, 0o755, exist_ok=True)


def retry_parent(op: Callable[[], Any], path: bytes) -> Any:
    try:
        return op()
    except FileNotFoundError:
        mkparents(path)
        return op()


def set_xattrs(target: int | bytes, xattrs: dict[str, bytes], counts: Counts, *,
               symlink: bool = False, dir_fd: int | None = None) -> None:
    for key, value in xattrs.items():
        if key.startswith("trusted.overlay."):
            counts.warn(f"ignored overlay xattr {key} in layer")
            continue
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            elif dir_fd is not None:
                fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
                try:
                    os.setxattr(fd, key, value)
                finally:
                    os.close(fd)
            else:
                os.setxattr(target, key, value, follow_symlinks=not symlink)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EPERM, errno.EINVAL, errno.ELOOP):
                counts.warn(f"xattr {key} not set: {os.strerror(e.errno or 0)}")
            else:
                raise


class FileJob:
    """A regular file to create (data already read from the stream)."""

    __slots__ = ("atime", "data", "gid", "mode", "mtime", "path", "size", "sparse", "uid",
                 "xattrs")

    def __init__(self, path: bytes, uid: int, gid: int, mode: int, atime: int, mtime: int,
                 size: int, xattrs: dict[str, bytes]) -> None:
        self.path, self.uid, self.gid, self.mode = path, uid, gid, mode
        self.atime, self.mtime, self.size, self.xattrs = atime, mtime, size, xattrs
        self.sparse: list[tuple[int, int]] | None = None
        self.data = b""


def write_file(job: FileJob, counts: Counts) -> None:
    """Create one regular file (O_EXCL, no symlink following) with its data and metadata."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with At(job.path) as at:
        try:
            fd = os.open(at.name, flags, 0o600, dir_fd=at.fd)
        except FileNotFoundError:
            mkparents(job.path)
            fd = os.open(at.name, flags, 0o600, dir_fd=at.fd)
        except FileExistsError:  # an earlier entry of the same name, written by this thread
            os.unlink(at.name, dir_fd=at.fd)
            fd = os.open(at.name, flags, 0o600, dir_fd=at.fd)
    try:
        data = job.data
        if job.sparse is not None:
            os.ftruncate(fd, job.size)
            pos = 0
            for off, n in job.sparse:
                if n:
                    os.pwrite(fd, data[pos:pos + n], off)
                pos += n
        elif data:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        os.fchown(fd, job.uid, job.gid)
        os.fchmod(fd, job.mode)
        if job.xattrs:
            set_xattrs(fd, job.xattrs, counts)
        os.utime(fd, ns=(job.atime, job.mtime))
    finally:
        os.close(fd)


class Writers:
    """A few threads writing regular files; files of one directory go to one thread, in order."""

    def __init__(self, n: int, counts: Counts) -> None:
        self.counts = counts
        self.cond = threading.Condition()
        self.queues: list[deque[FileJob]] = [deque() for _ in range(n)]
        self.busy = [False] * n
        self.inflight = 0
        self.error: BaseException | None = None
        self.closing = False
        self.pending: set[bytes] = set()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()

    def submit(self, job: FileJob) -> None:
        size = len(job.data)
        with self.cond:
            while self.inflight > INFLIGHT_MAX and self.error is None:
                self.cond.wait()
            self._check()
            self.inflight += size
            self.queues[hash(posixpath.dirname(job.path)) % len(self.queues)].append(job)
            self.pending.add(job.path)
            self.cond.notify_all()

    def touches(self, path: bytes) -> bool:
        """True if `path` or one of its parents is a file still being written."""
        if not self.pending:
            return False
        while path:
            if path in self.pending:
                return True
            path = posixpath.dirname(path)
        return False

    def barrier(self) -> None:
        with self.cond:
            while (any(self.queues) or any(self.busy)) and self.error is None:
                self.cond.wait()
            self._check()
            self.pending.clear()

    def close(self) -> None:
        try:
            self.barrier()
        finally:
            with self.cond:
                self.closing = True
                self.cond.notify_all()
            for t in self.threads:
                t.join()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self, i: int) -> None:
        q = self.queues[i]
        while True:
            with self.cond:
                while not q and not self.closing:
                    self.cond.wait()
                if not q:
                    return
                job = q.popleft()
                self.busy[i] = True
            try:
                if self.error is None:
                    write_file(job, self.counts)
            except BaseException as e:
                with self.cond:
                    self.error = self.error or e
            finally:
                with self.cond:
                    self.busy[i] = False
                    self.inflight -= len(job.data)
                    self.cond.notify_all()
