"""Helpers for snapshot/unpack tests: build layer tarballs in memory with tarfile."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackd.engine import mounts

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
ZST = "application/vnd.oci.image.layer.v1.tar+zstd"
TAR = "application/vnd.oci.image.layer.v1.tar"


@dataclass
class E:
    """One tar entry to write."""

    name: str | bytes
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    mtime: float = 1_600_000_000
    pax: dict[str, str] | None = None
    devmajor: int = 0
    devminor: int = 0


def tar_bytes(entries: list[E], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for e in entries:
            name = os.fsdecode(e.name) if isinstance(e.name, bytes) else e.name
            ti = tarfile.TarInfo(name)
            ti.type = e.type
            ti.mode = e.mode
            ti.uid, ti.gid = e.uid, e.gid
            ti.mtime = e.mtime
            ti.linkname = e.linkname
            ti.devmajor, ti.devminor = e.devmajor, e.devminor
            if e.pax:
                ti.pax_headers = dict(e.pax)
            if e.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def diff_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def write_layer(path: Path, raw: bytes, compression: str = "gzip") -> tuple[Path, str, str]:
    """Write `raw` tar compressed; returns (blob path, media type, diff_id)."""
    if compression == "gzip":
        path.write_bytes(gzip.compress(raw, compresslevel=1))
        return path, GZ, diff_id(raw)
    if compression == "zstd":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(raw))
        return path, ZST, diff_id(raw)
    path.write_bytes(raw)
    return path, TAR, diff_id(raw)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[list[str]]:
    """Targets appended here are unmounted (lazily, if still mounted) when the test ends."""
    targets: list[str] = []
    try:
        yield targets
    finally:
        for t in reversed(targets):
            if mounts.is_mountpoint(t):
                mounts.unmount(t, detach=True)
