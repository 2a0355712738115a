"""The layer stream: decompress (gzip, zstd or none), hash and bound the uncompressed bytes."""

from __future__ import annotations

import hashlib
import zlib
from typing import Any, BinaryIO

gzlib: Any
try:  # ISA-L inflates gzip about twice as fast as zlib
    from isal import isal_zlib as gzlib
except ImportError:  # pragma: no cover
    gzlib = zlib
GZ_ERRORS: tuple[type[Exception], ...] = (zlib.error, gzlib.error)

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerFormatError(Exception):
    """The blob is not a (compressed) tar stream we can read."""


class LimitExceeded(Exception):
    """A configured bound (uncompressed bytes, entries) was exceeded."""


def sniff(head: bytes, media_type: str) -> str:
    """Compression of a blob from its first bytes; the media type only breaks ties."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if media_type.endswith(("gzip", "zstd")) and len(head) >= 4:
        kind = "gzip" if media_type.endswith("gzip") else "zstd"
        raise LayerFormatError(f"media type {media_type} but the blob is not {kind}")
    return "tar"


class LayerStream:
    """A file-like `read(n)` over the uncompressed tar stream, hashing and counting every byte."""

    def __init__(self, raw: BinaryIO, media_type: str, max_bytes: int) -> None:
        self.raw = raw
        self.max_bytes = max_bytes
        self.total = 0
        self.hasher = hashlib.sha256()
        head = raw.read(CHUNK)
        while head and len(head) < len(ZSTD_MAGIC):  # a pipe may return a few bytes at a time
            more = raw.read(CHUNK)
            if not more:
                break
            head += more
        self.kind = sniff(head, media_type)
        self._pending = head  # compressed input not yet fed
        self._zreader = None
        self._gz: Any = None
        if self.kind == "gzip":
            self._gz = gzlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.kind == "zstd":
            import io

            import zstandard

            src = io.BufferedReader(_Prefixed(head, raw), CHUNK)  # type: ignore[type-var]
            self._pending = b""
            self._zreader = zstandard.ZstdDecompressor().stream_reader(
                src, read_size=CHUNK, read_across_frames=True
            )

    def read(self, n: int = CHUNK) -> bytes:
        n = max(1, min(n, 4 * CHUNK))
        try:
            out = self._read(n)
        except GZ_ERRORS as e:
            raise LayerFormatError(f"invalid gzip data: {e}") from None
        except LimitExceeded:
            raise
        except Exception as e:
            if type(e).__name__ == "ZstdError":
                raise LayerFormatError(f"invalid zstd data: {e}") from None
            raise
        if out:
            self.total += len(out)
            if self.total > self.max_bytes:
                raise LimitExceeded(
                    f"layer expands to more than {self.max_bytes} uncompressed bytes "
                    "(decompression bomb?); raise the limit if it is genuine"
                )
            self.hasher.update(out)
        return out

    def _read(self, n: int) -> bytes:
        if self.kind == "tar":
            if self._pending:
                out, self._pending = self._pending[:n], self._pending[n:]
                return out
            return self.raw.read(n)
        if self._zreader is not None:
            return bytes(self._zreader.read(n))
        gz = self._gz
        assert gz is not None
        while True:
            if gz.eof:
                rest = gz.unused_data
                if not rest:
                    rest = self.raw.read(CHUNK)
                    if not rest:
                        return b""
                if not rest.startswith(GZIP_MAGIC[:1]):
                    raise LayerFormatError("trailing garbage after gzip stream")
                self._gz = gz = gzlib.decompressobj(16 + zlib.MAX_WBITS)
                self._pending = rest
            data = gz.unconsumed_tail or self._pending
            self._pending = b""
            if not data:
                data = self.raw.read(CHUNK)
                if not data:
                    raise LayerFormatError("truncated gzip stream")
            got: bytes = gz.decompress(data, n)
            if got:
                return got

    def drain(self) -> None:
        """Read (and hash) the rest of the stream, e.g. the padding after the tar end marker."""
        while self.read(4 * CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


class _Prefixed:
    """A raw reader that first returns bytes already consumed while sniffing."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self.head = head
        self.raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:
        if self.head:
            k = min(len(b), len(self.head))
            b[:k] = self.head[:k]
            self.head = self.head[k:]
            return k
        return self.raw.readinto(b)  # type: ignore[attr-defined, no-any-return]

    @property
    def closed(self) -> bool:
        return False


class ReadAhead:
    """Decompresses and hashes in a thread (zlib, zstd and sha256 release the GIL) ahead of use."""

    def __init__(self, stream: LayerStream, depth: int = 16) -> None:
        import queue
        import threading

        self.stream = stream
        self.q: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop:
                chunk = self.stream.read(CHUNK)
                self.q.put(chunk)
                if not chunk:
                    return
        except BaseException as e:
            self.q.put(e)

    def read(self) -> bytes:
        item = self.q.get()
        if isinstance(item, BaseException):
            self.q.put(item)
            raise item
        if not item:
            self.q.put(item)
        return item

    def finish(self) -> None:
        """Consume everything (so the digest covers the whole blob) and wait for the thread."""
        while self.read():
            pass
        self.thread.join()

    def abort(self) -> None:
        self.stop = True
        while self.thread.is_alive():
            try:
                self.q.get(timeout=0.05)
            except Exception:
                pass


class ForwardReader:
    """A forward-only seekable file over chunks, cheap for tarfile's many small reads."""

    def __init__(self, source: ReadAhead) -> None:
        self.source = source
        self.buf = b""
        self.off = 0
        self.pos = 0

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self.pos:
            raise OSError("layer stream can only seek forward")
        skip = pos - self.pos
        while skip:
            got = len(self.read(min(skip, 4 * CHUNK)))
            if not got:
                break
            skip -= got
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise OSError("unbounded read of a layer stream")
        avail = len(self.buf) - self.off
        if n <= avail:
            out = self.buf[self.off:self.off + n]
            self.off += n
        else:
            parts = [self.buf[self.off:]] if avail else []
            need = n - avail
            while need > 0:
                chunk = self.source.read()
                if not chunk:
                    break
                if len(chunk) > need:
                    parts.append(chunk[:need])
                    self.buf, self.off = chunk, need
                    need = 0
                    break
                parts.append(chunk)
                need -= len(chunk)
            else:
                self.buf, self.off = b"", 0
            if need > 0:
                self.buf, self.off = b"", 0
            out = b"".join(parts)
        self.pos += len(out)
        return out
