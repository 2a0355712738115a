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

import contextlib
import fcntl
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
F_SETPIPE_SZ = 1031
_PKG_ROOT = str(Path(__file__).resolve().parents[2])


class UnpackError(EngineError):
    """A layer could not be unpacked (bad format, digest mismatch, a bound exceeded)."""

    def __init__(self, message: str, *, kind: str = "error") -> None:
        self.kind = kind
        super().__init__(message)


def default_writers() -> int:
    """File-writing threads per worker: none on two CPUs or fewer, where they cost more (GIL
    hand-offs, ~25% slower on a loaded 2-core machine) than the creates they overlap."""
    return 0 if (os.cpu_count() or 1) <= 2 else 2


@dataclass(frozen=True, slots=True)
class UnpackLimits:
    """Bounds against decompression bombs; `writers` is the number of file-writing threads."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES
    writers: int = field(default_factory=default_writers)


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


class UnpackProcess:
    """A running unpack worker; `wait()` returns its stats or raises UnpackError."""

    def __init__(self, what: str, proc: subprocess.Popen[bytes], t0: float) -> None:
        self.what = what
        self.proc = proc
        self.t0 = t0

    def take_stdin(self) -> int:
        """The write end of a streaming worker's blob pipe, as an fd the caller owns and closes."""
        assert self.proc.stdin is not None, "not a streaming worker"
        fd = os.dup(self.proc.stdin.fileno())
        self.proc.stdin.close()
        self.proc.stdin = None
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)  # fewer wake-ups; the default is 64 KiB
        return fd

    def wait(self) -> UnpackStats:
        out_b, err_b = self.proc.communicate()
        return parse_result(self.what, out_b, err_b, f"worker exit {self.proc.returncode}",
                            time.monotonic() - self.t0)

    def kill(self) -> None:
        """Stop the worker (its partial tree stays: callers remove their temporary directory)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def parse_result(what: str, out_b: bytes, err_b: bytes, how: str, took: float) -> UnpackStats:
    """The worker's JSON line as stats, or UnpackError."""
    try:
        out = json.loads(out_b.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        err = err_b.decode(errors="replace").strip()[-2000:]
        raise UnpackError(f"unpack of {what} failed ({how}): {err}")
    if "error" in out:
        raise UnpackError(f"unpack of {what}: {out['message']}", kind=out["error"])
    return UnpackStats(seconds=took, warnings=tuple(out.pop("warnings")), **out)


def request(blob_path: Path | str | None, media_type: str, dest_dir: Path | str,
            expected_diff_id: str | None, limits: UnpackLimits) -> dict[str, object]:
    """The worker's request (JSON): the blob (None: standard input), destination and bounds."""
    if os.geteuid() != 0:
        raise UnpackError("unpacking layers needs root (chroot, owners, device nodes)")
    return {
        "blob": os.fspath(blob_path) if blob_path is not None else None, "media_type": media_type,
        "dest": os.fspath(dest_dir), "diff_id": expected_diff_id, "max_bytes": limits.max_bytes,
        "max_entries": limits.max_entries, "writers": limits.writers,
    }


def start_unpack(blob_path: Path | str | None, media_type: str, dest_dir: Path | str, *,
                 expected_diff_id: str | None, limits: UnpackLimits | None = None,
                 what: str | None = None) -> UnpackProcess:
    """Start a worker unpacking `blob_path` (None: the bytes written to its `stdin` pipe)."""
    req = request(blob_path, media_type, dest_dir, expected_diff_id, limits or UnpackLimits())
    env = dict(os.environ)
    env["PYTHONPATH"] = _PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackd.engine.unpack_worker", json.dumps(req)],
        stdin=subprocess.PIPE if blob_path is None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", env=env,
    )
    return UnpackProcess(what or os.fspath(blob_path or "layer stream"), proc, t0)


def unpack_layer(blob_path: Path | str, media_type: str, dest_dir: Path | str, *,
                 expected_diff_id: str | None, limits: UnpackLimits | None = None) -> UnpackStats:
    """Unpack `blob_path` into the existing empty directory `dest_dir`; raise UnpackError.

    On error `dest_dir` holds a partial tree: callers unpack into a temporary directory.
    """
    return start_unpack(blob_path, media_type, dest_dir, expected_diff_id=expected_diff_id,
                        limits=limits).wait()
