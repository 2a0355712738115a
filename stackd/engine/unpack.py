"""Unpack one layer blob into a directory, safely: a worker process chrooted into it does the work.

The worker (`python -m stackd.engine.unpack_worker`) opens the blob, chroots into the destination and
applies the tar stream there, so the kernel keeps every write inside the layer directory whatever
the entry names, symlinks or hardlinks say. It verifies the uncompressed digest while reading and
stops at the configured bounds (uncompressed bytes, entries). Whiteouts are written in overlay's
form: `.wh.NAME` becomes a 0/0 character device NAME, `.wh..wh..opq` the xattr
`trusted.overlay.opaque=y` on its directory. Device nodes the host forbids (EPERM, e.g. a device
cgroup denying block devices) are skipped with a warning in the stats.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from stackd.errors import EngineError

DEFAULT_MAX_BYTES = 64 << 30
DEFAULT_MAX_ENTRIES = 2_000_000


class UnpackError(EngineError):
    """A layer could not be unpacked (bad format, digest mismatch, a bound exceeded)."""

    def __init__(self, message: str, *, kind: str = "error") -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class UnpackLimits:
    """Bounds against decompression bombs; `writers` is the number of file-writing threads."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES
    writers: int = 2


@dataclass(frozen=True, slots=True)
class UnpackStats:
    """What an unpack did: counts by kind, bytes, digest, warnings and wall time."""

    diff_id: str
    compression: str
    tar_bytes: int
    file_bytes: int
    entries: int
    files: int
    dirs: int
    symlinks: int
    hardlinks: int
    devices: int
    whiteouts: int
    opaques: int
    skipped: int
    seconds: float
    warnings: tuple[str, ...] = field(default=())


def unpack_layer(blob_path: Path | str, media_type: str, dest_dir: Path | str, *,
                 expected_diff_id: str | None, limits: UnpackLimits | None = None) -> UnpackStats:
    """Unpack `blob_path` into the existing empty directory `dest_dir`; raise UnpackError.

    On error `dest_dir` holds a partial tree: callers unpack into a temporary directory.
    """
    limits = limits or UnpackLimits()
    if os.geteuid() != 0:
        raise UnpackError("unpacking layers needs root (chroot, owners, device nodes)")
    req = {
        "blob": os.fspath(blob_path), "media_type": media_type, "dest": os.fspath(dest_dir),
        "diff_id": expected_diff_id, "max_bytes": limits.max_bytes,
        "max_entries": limits.max_entries, "writers": limits.writers,
    }
    pkg_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "stackd.engine.unpack_worker", json.dumps(req)],
        capture_output=True, cwd="/", env=env, check=False,
    )
    took = time.monotonic() - t0
    try:
        out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        err = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise UnpackError(f"unpack of {blob_path} failed (worker exit {proc.returncode}): {err}")
    if "error" in out:
        raise UnpackError(f"unpack of {blob_path}: {out['message']}", kind=out["error"])
    return UnpackStats(seconds=took, warnings=tuple(out.pop("warnings")), **out)
