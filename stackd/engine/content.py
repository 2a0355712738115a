"""Content-addressed blob store: locked ingest, verify while writing, fsync, atomic rename."""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from stackd.errors import EngineError

CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:([a-f0-9]{64})\Z")


class ContentError(EngineError):
    """A blob failed verification or the store could not be written."""


def hex_of(digest: str) -> str:
    m = _DIGEST.match(digest)
    if not m:
        raise ContentError(f"unsupported digest {digest!r} (sha256 only)")
    return m.group(1)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Ingest:
    """An in-progress, locked write of one blob; resumable from `offset`, verified on commit."""

    def __init__(self, store: ContentStore, digest: str, size: int | None, lock_fd: int) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        self._lock_fd = lock_fd
        self.partial = store.ingest_dir / f"{hex_of(digest)}.partial"
        self._hash = hashlib.sha256()
        self._file: BinaryIO = open(self.partial, "a+b")  # noqa: SIM115 (closed in close())
        self._file.seek(0)
        while chunk := self._file.read(CHUNK):
            self._hash.update(chunk)
        self.offset = self._file.tell()
        if size is not None and self.offset > size:
            self.reset()

    def reset(self) -> None:
        """Drop what was written (the server would not resume)."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        if self.size is not None and self.offset + len(data) > self.size:
            raise ContentError(
                f"{self.digest}: received more than the expected {self.size} bytes"
            )
        self._file.write(data)
        self._hash.update(data)
        self.offset += len(data)

    def commit(self) -> Path:
        """Verify size and digest, fsync, rename into place, fsync the directory."""
        if self.size is not None and self.offset != self.size:
            self.reset()
            raise ContentError(f"{self.digest}: size mismatch: expected {self.size} bytes, got {self.offset}")
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            self.reset()
            raise ContentError(f"digest mismatch: expected {self.digest}, got {actual}")
        self._file.flush()
        os.fsync(self._file.fileno())
        target = self.store.path(self.digest)
        os.chmod(self.partial, 0o444)
        os.replace(self.partial, target)
        _fsync_dir(target.parent)
        return target

    def close(self) -> None:
        self._file.close()
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)


class ContentStore:
    """Blobs under `<state_root>/content/blobs/sha256/<hex>`, ingested via `content/ingest/`."""

    def __init__(self, state_root: Path) -> None:
        self.root = Path(state_root) / "content"
        self.blob_dir = self.root / "blobs" / "sha256"
        self.ingest_dir = self.root / "ingest"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blob_dir / hex_of(digest)

    def has(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise ContentError(f"blob {digest} not found in the content store")

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self) -> list[str]:
        return sorted("sha256:" + p.name for p in self.blob_dir.iterdir() if len(p.name) == 64)

    def try_ingest(self, digest: str, size: int | None = None) -> Ingest | None:
        """Lock the digest's ingest without blocking; None when another writer holds it."""
        fd = os.open(self.ingest_dir / f"{hex_of(digest)}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            return Ingest(self, digest, size, fd)
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise

    @contextlib.contextmanager
    def ingest(self, digest: str, size: int | None = None) -> Iterator[Ingest]:
        """Lock (blocking) and open the digest's ingest; closes and unlocks on exit."""
        fd = os.open(self.ingest_dir / f"{hex_of(digest)}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        ing = Ingest(self, digest, size, fd)
        try:
            yield ing
        finally:
            ing.close()

    def write_blob(self, data: bytes, digest: str | None = None) -> str:
        """Store bytes (verified against `digest` when given); returns the digest."""
        digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
        if self.has(digest, len(data)):
            return digest
        with self.ingest(digest, len(data)) as ing:
            ing.reset()
            ing.write(data)
            ing.commit()
        return digest

    def import_file(self, src: IO[bytes]) -> tuple[str, int]:
        """Store a stream of unknown digest: hash into a temp ingest, then rename by digest."""
        h = hashlib.sha256()
        tmp = self.ingest_dir / f"import-{os.getpid()}-{id(src):x}.tmp"
        size = 0
        try:
            with open(tmp, "wb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + h.hexdigest()
            if not self.has(digest, size):
                os.chmod(tmp, 0o444)
                os.replace(tmp, self.path(digest))
                _fsync_dir(self.blob_dir)
            return digest, size
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def verify_all(self) -> builtins.list[str]:
        """Rehash every blob; return the digests whose content does not match their name."""
        bad = []
        for digest in self.list():
            h = hashlib.sha256()
            with open(self.path(digest), "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
            if "sha256:" + h.hexdigest() != digest:
                bad.append(digest)
        return bad

    def clean_ingest(self) -> None:
        """Remove abandoned ingests (partials nobody holds a lock on)."""
        for p in self.ingest_dir.glob("*.partial"):
            ing = self.try_ingest("sha256:" + p.name.removesuffix(".partial"))
            if ing is not None:
                ing.close()
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
