"""Apply tar entries to the current root: files, links, devices, whiteouts in overlay form.

Runs inside the unpack worker after it chrooted into the layer directory, so every path is
relative to "/" and the kernel confines symlinks, `..` and hardlinks to the layer. Regular files
are written by a few threads (file creation is kernel-bound; directories are independent).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile

from stackd.engine.unpack_files import (
    At,
    Counts,
    FileJob,
    Writers,
    retry_parent,
    set_xattrs,
    write_file,
)
from stackd.engine.unpack_header import FastTarInfo
from stackd.engine.unpack_stream import ForwardReader, LayerFormatError, LimitExceeded

WH = b".wh."
OPAQUE = b".wh..wh..opq"
INLINE_MAX = 8 << 20  # files up to this size are handed to writer threads
OVERLAY_OPAQUE = "trusted.overlay.opaque"


def clean(name: str) -> bytes:
    """The entry name as a path relative to the root; `..` is clamped at the root."""
    p = posixpath.normpath(b"/" + os.fsencode(name)).lstrip(b"/")
    return b"" if p == b"." else p


def ns(t: float) -> int:
    return int(t * 1_000_000_000)


class Applier:
    """Reads a tar stream and applies each entry under the current root."""

    def __init__(self, stream: ForwardReader, *, max_entries: int, writers: int) -> None:
        self.stream = stream
        self.max_entries = max_entries
        self.counts = Counts()
        self.dir_times: list[tuple[bytes, int, int]] = []
        self.writers = Writers(writers, self.counts) if writers > 0 else None

    def run(self) -> Counts:
        try:
            tf = tarfile.open(fileobj=self.stream, mode="r:",  # type: ignore[call-overload]  # noqa: SIM115
                              errors="surrogateescape", tarinfo=FastTarInfo)
        except tarfile.ReadError as e:
            raise LayerFormatError(f"not a tar stream: {e}") from None
        c = self.counts.c
        try:
            while True:
                try:
                    m = tf.next()
                except tarfile.ReadError as e:
                    raise LayerFormatError(f"invalid tar stream: {e}") from None
                if m is None:
                    break
                c["entries"] += 1
                if c["entries"] > self.max_entries:
                    raise LimitExceeded(f"layer has more than {self.max_entries} entries")
                if c["entries"] % 1024 == 0:
                    tf.members.clear()
                self.entry(tf, m)
            if self.writers:
                self.writers.close()
        except BaseException:
            if self.writers:
                with self.writers.cond:
                    self.writers.closing = True
                    self.writers.cond.notify_all()
            raise
        for path, at, mt in reversed(self.dir_times):
            try:
                with At(path or b".") as a:
                    os.utime(a.name or b".", ns=(at, mt), dir_fd=a.fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
        return self.counts

    def _wait_for(self, path: bytes) -> None:
        if self.writers and self.writers.touches(path):
            self.writers.barrier()

    def _clear(self, path: bytes, *, keep_dir: bool) -> None:
        """Remove what is at `path` (unless it is a directory and one is wanted)."""
        with At(path) as at:
            try:
                st = os.stat(at.name, dir_fd=at.fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return
            if stat.S_ISDIR(st.st_mode):
                if keep_dir:
                    return
                if self.writers:
                    self.writers.barrier()
                shutil.rmtree(at.name, dir_fd=at.fd)
            else:
                os.unlink(at.name, dir_fd=at.fd)

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        path = clean(m.name)
        base = posixpath.basename(path)
        if base.startswith(WH):
            self.whiteout(path, base)
            return
        pax = m.pax_headers
        xattrs = {k[13:]: v.encode("utf-8", "surrogateescape")
                  for k, v in pax.items() if k.startswith("SCHILY.xattr.")} if pax else {}
        atime = ns(float(pax["atime"])) if pax and "atime" in pax else ns(m.mtime)
        mtime = ns(m.mtime)
        c = self.counts.c
        if m.isreg():
            self.regular(tf, m, path, xattrs, atime, mtime)
            return
        if not path and not m.isdir():
            self.counts.warn(f"entry {m.name!r} resolves to the root; skipped")
            return
        self._wait_for(path)
        if m.isdir():
            c["dirs"] += 1
            self._clear(path, keep_dir=True)
            with At(path or b".") as at:
                name = at.name or b"."
                try:
                    retry_parent(lambda: os.mkdir(name, 0o700, dir_fd=at.fd), path)
                except FileExistsError:
                    pass
                os.chown(name, m.uid, m.gid, dir_fd=at.fd, follow_symlinks=False)
                os.chmod(name, m.mode & 0o7777, dir_fd=at.fd)
                if xattrs:
                    set_xattrs(name, xattrs, self.counts, dir_fd=at.fd)
            self.dir_times.append((path, atime, mtime))
            return
        if m.islnk():
            target = clean(m.linkname)
            self._wait_for(target)
            if not target:
                raise LayerFormatError(f"hardlink {m.name!r} points at the layer root")
            c["hardlinks"] += 1
            self._clear(path, keep_dir=False)
            with At(target) as src, At(path) as dst:
                try:
                    retry_parent(lambda: os.link(src.name, dst.name, src_dir_fd=src.fd,
                                                  dst_dir_fd=dst.fd, follow_symlinks=False), path)
                except FileNotFoundError:
                    raise LayerFormatError(
                        f"hardlink {m.name!r} -> {m.linkname!r}: target not in this layer"
                    ) from None
            return
        self._clear(path, keep_dir=False)
        with At(path) as at:
            if m.issym():
                c["symlinks"] += 1
                link = os.fsencode(m.linkname)
                retry_parent(lambda: os.symlink(link, at.name, dir_fd=at.fd), path)
            elif m.ischr() or m.isblk() or m.isfifo():
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
                dev = os.makedev(m.devmajor, m.devminor) if not m.isfifo() else 0
                try:
                    retry_parent(lambda: os.mknod(at.name, kind | 0o600, dev, dir_fd=at.fd), path)
                except PermissionError:
                    self.counts.warn(f"device node {m.name!r} not created (EPERM)")
                    return
                c["devices"] += 1
            else:
                self.counts.warn(f"entry {m.name!r} of tar type {m.type!r} skipped")
                return
            os.chown(at.name, m.uid, m.gid, dir_fd=at.fd, follow_symlinks=False)
            if not m.issym():
                os.chmod(at.name, m.mode & 0o7777, dir_fd=at.fd)
            if xattrs:
                if at.fd is None:
                    set_xattrs(at.name, xattrs, self.counts, symlink=m.issym())
                elif not m.issym():
                    set_xattrs(at.name, xattrs, self.counts, dir_fd=at.fd)
            os.utime(at.name, ns=(atime, mtime), dir_fd=at.fd, follow_symlinks=False)

    def whiteout(self, path: bytes, base: bytes) -> None:
        parent = posixpath.dirname(path)
        self._wait_for(path)
        if base == OPAQUE:
            self.counts.c["opaques"] += 1
            with At(parent or b".") as at:
                name = at.name or b"."
                try:
                    retry_parent(lambda: os.mkdir(name, 0o755, dir_fd=at.fd), parent)
                except FileExistsError:
                    pass
                if at.fd is None:
                    os.setxattr(name, OVERLAY_OPAQUE, b"y", follow_symlinks=False)
                else:
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=at.fd)
                    try:
                        os.setxattr(fd, OVERLAY_OPAQUE, b"y")
                    finally:
                        os.close(fd)
            return
        if base.startswith(WH + WH):
            return  # aufs metadata (.wh..wh.plnk, ...) has no overlay meaning
        name = base[len(WH):]
        if name in (b"", b".", b"..") or b"/" in name:
            self.counts.warn(f"whiteout {path!r} names no entry; skipped")
            return
        target = posixpath.join(parent, name)
        with At(target) as at:
            try:
                os.stat(at.name, dir_fd=at.fd, follow_symlinks=False)
                return  # a whiteout only hides lower layers, never this layer's own entry
            except FileNotFoundError:
                pass
            retry_parent(lambda: os.mknod(at.name, stat.S_IFCHR | 0o600, 0, dir_fd=at.fd), target)
            os.chown(at.name, 0, 0, dir_fd=at.fd, follow_symlinks=False)
        self.counts.c["whiteouts"] += 1

    def regular(self, tf: tarfile.TarFile, m: tarfile.TarInfo, path: bytes,
                xattrs: dict[str, bytes], atime: int, mtime: int) -> None:
        if not path:
            raise LayerFormatError(f"regular file {m.name!r} resolves to the layer root")
        c = self.counts.c
        c["files"] += 1
        stream = tf.fileobj
        assert stream is not None
        if stream.tell() < m.offset_data:
            stream.seek(m.offset_data)
        job = FileJob(path, m.uid, m.gid, m.mode & 0o7777, atime, mtime, m.size, xattrs)
        stored = m.size
        sparse: list[tuple[int, int]] | None = m.sparse  # type: ignore[assignment]
        if sparse is not None:
            stored = sum(n for _, n in sparse)
            room = getattr(tf, "offset", 0) - m.offset_data
            if stored > room or any(off < 0 or off + n > m.size for off, n in sparse):
                raise LayerFormatError(f"sparse file {m.name!r} has an invalid map")
            job.sparse = list(sparse)
        c["file_bytes"] += stored
        if self.writers and stored <= INLINE_MAX and not self.writers.touches(
                posixpath.dirname(path)):
            job.data = stream.read(stored)
            if len(job.data) != stored:
                raise LayerFormatError(f"truncated data for {m.name!r}")
            if path not in self.writers.pending:  # else: same thread, order kept
                self._clear(path, keep_dir=False)
            self.writers.submit(job)
            return
        self._wait_for(path)
        self._clear(path, keep_dir=False)
        if stored <= INLINE_MAX or job.sparse is not None:
            job.data = stream.read(stored)
            if len(job.data) != stored:
                raise LayerFormatError(f"truncated data for {m.name!r}")
            write_file(job, self.counts)
            return
        job.data = b""
        write_file(job, self.counts)  # create with metadata, then stream the data in
        with At(path) as at:
            fd = os.open(at.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=at.fd)
        try:
            left = stored
            while left:
                chunk = stream.read(min(left, 4 << 20))
                if not chunk:
                    raise LayerFormatError(f"truncated data for {m.name!r}")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                left -= len(chunk)
            os.fchmod(fd, m.mode & 0o7777)
            os.utime(fd, ns=(atime, mtime))
        finally:
            os.close(fd)
