"""Overlay snapshots: each layer unpacked once under its chain ID; containers get mount data.

Layout under `root`: `layers/<chain-hex>/{fs,meta.json}` (complete layers only, renamed into
place from `tmp/`, whose children ext4 spreads over block groups), `locks/<chain-hex>` (fcntl
locks serialising unpacks of one layer across processes), `l/<short>` (short symlinks to layer
`fs` dirs, used when long lowerdir lists would overflow the one-page mount data limit) and
`active/<key>/{upper,work,meta.json}`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from stackd.engine.mounts import Mount
from stackd.engine.unpack import UnpackLimits, UnpackProcess, UnpackStats, start_unpack
from stackd.engine.unpack_server import ForkedUnpack, UnpackServer
from stackd.errors import ConflictError, EngineError, NotFoundError

PAGE_LIMIT = 4095  # mount(2) copies at most one page of options
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000
PROBE_SLOW = 60e-6  # seconds per created file; an ordinary create takes ~10-30 µs here
PROBE_TRIES = 4
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class LayerRef:
    """A layer to unpack: its uncompressed digest and the verified blob holding it."""

    diff_id: str
    blob_path: Path
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """An unpacked layer as stored."""

    chain_id: str
    diff_id: str
    parent: str | None
    size: int
    path: Path


@dataclass(frozen=True, slots=True)
class SnapshotUsage:
    """Disk use of the snapshotter (bytes as allocated, hardlinks counted once)."""

    layers: int
    active: int
    layer_bytes: int
    active_bytes: int


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: the first is the diff ID, then sha256(parent + " " + diff_id)."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def _hex(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise EngineError(f"invalid digest {digest!r}: want sha256:<64 hex>")
    return digest[7:]


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def spread_children(path: Path) -> bool:
    """Mark `path` a top of directory hierarchies (ext4's `chattr +T`); False where unsupported.

    ext4 then places each new child directory in a block group of its own choosing (Orlov: few
    directories, many free inodes) instead of next to its parent. On ext4 without a journal,
    creating an inode in a group holding inodes deleted within the last minutes scans past each of
    them (`recently_deleted`): where the previous layer was just removed, up to ~1 ms a file
    instead of ~20 µs. Spreading avoids that most of the time, not always (see `_new_tmp`).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        flags = int.from_bytes(buf[:4], "little")
        if not flags & FS_TOPDIR_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, (flags | FS_TOPDIR_FL).to_bytes(4, "little") + bytes(4))
        return True
    except OSError:  # not ext2/3/4, or flags not supported
        return False
    finally:
        os.close(fd)


def _probe(path: Path, n: int = 16) -> float:
    """Seconds per file to create (and remove) `n` empty files in `path`."""
    t0 = time.perf_counter()
    for i in range(n):
        os.close(os.open(path / f".probe{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    took = (time.perf_counter() - t0) / n
    for i in range(n):
        os.unlink(path / f".probe{i}")
    return took


def _du(path: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_nlink > 1 and not os.path.isdir(os.path.join(dirpath, name)):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


class LayerClaim:
    """A layer being unpacked under its chain's lock; `commit` renames it into place atomically."""

    def __init__(self, snap: Snapshotter, chain: str, diff_id: str, parent: str | None,
                 lock: IO[bytes], tmp: Path) -> None:
        self.snap, self.chain, self.diff_id, self.parent = snap, chain, diff_id, parent
        self.lock, self.tmp = lock, tmp
        self.committed = False

    @property
    def fs(self) -> Path:
        return self.tmp / "fs"

    def commit(self, stats: UnpackStats) -> None:
        """Record the verified unpack and rename it into `layers/` (call once, before release)."""
        if stats.diff_id != self.diff_id:
            raise EngineError(f"layer {self.chain}: unpacked {stats.diff_id}, expected {self.diff_id}")
        meta = {"chain_id": self.chain, "diff_id": self.diff_id, "parent": self.parent,
                "size": stats.file_bytes, "entries": stats.entries,
                "warnings": list(stats.warnings)}
        (self.tmp / "meta.json").write_text(json.dumps(meta))
        dest = self.snap.layer_dir(self.chain)
        if dest.exists():  # a half-removed layer (prune crashed): finish removing it
            shutil.rmtree(dest)
        os.rename(self.tmp, dest)
        self.committed = True

    def release(self) -> None:
        """Drop the lock; an uncommitted temporary tree is removed first."""
        if self.lock.closed:
            return
        try:
            if not self.committed:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            self.lock.close()


class Snapshotter:
    """Unpacks layers once (concurrently, atomically) and prepares overlay snapshots."""

    def __init__(self, root: Path, *, limits: UnpackLimits | None = None,
                 max_parallel: int | None = None, server: UnpackServer | None = None) -> None:
        self.root = Path(root)
        self.server = server  # a warm worker parent to fork from, else one exec per layer
        self.limits = limits or UnpackLimits()
        self.max_parallel = max_parallel or max(1, min(4, os.cpu_count() or 1))
        for sub in ("layers", "tmp", "locks", "active", "l"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        spread_children(self.root / "tmp")

    # layers

    def layer_dir(self, chain_id: str) -> Path:
        return self.root / "layers" / _hex(chain_id)

    def has(self, chain_id: str) -> bool:
        return (self.layer_dir(chain_id) / "fs").is_dir()

    def ensure_layers(self, layers: list[LayerRef]) -> str:
        """Unpack each missing layer (in parallel, each exactly once); return the top chain ID."""
        if not layers:
            raise EngineError("an image needs at least one layer")
        chains = chain_ids([la.diff_id for la in layers])
        todo = [(c, la, chains[i - 1] if i else None)
                for i, (c, la) in enumerate(zip(chains, layers, strict=True)) if not self.has(c)]
        if len(todo) == 1:
            self._ensure_one(*todo[0])
        elif todo:
            with ThreadPoolExecutor(min(self.max_parallel, len(todo))) as pool:
                for fut in [pool.submit(self._ensure_one, *t) for t in todo]:
                    fut.result()
        return chains[-1]

    def _ensure_one(self, chain: str, layer: LayerRef, parent: str | None) -> None:
        claim = self.claim(chain, layer.diff_id, parent)
        if claim is None:
            return  # another process unpacked it while we waited
        try:
            proc = self.start_unpack(layer.blob_path, layer.media_type, claim, what=str(layer.blob_path))
            claim.commit(proc.wait())
        finally:
            claim.release()

    def start_unpack(self, blob_path: Path | None, media_type: str, claim: LayerClaim, *,
                     what: str) -> UnpackProcess | ForkedUnpack:
        """Start the worker unpacking into `claim.fs` (forked from the server when there is one)."""
        if self.server is not None:
            try:
                return self.server.start(blob_path, media_type, claim.fs,
                                         expected_diff_id=claim.diff_id, limits=self.limits, what=what)
            except OSError:
                self.server = None  # it died: fall back to a fresh interpreter per layer
        return start_unpack(blob_path, media_type, claim.fs, expected_diff_id=claim.diff_id,
                            limits=self.limits, what=what)

    def _new_tmp(self, hx: str) -> Path:
        """A fresh `tmp/<hex>-<random>/fs` where creating files is cheap (see `spread_children`).

        Each try lands in another block group; a group where creating a few probe files is slow
        (it holds many just-deleted inodes) is given up for the next, up to PROBE_TRIES.
        """
        tries: list[tuple[float, Path]] = []
        for _ in range(PROBE_TRIES):
            tmp = self.root / "tmp" / f"{hx}-{uuid.uuid4().hex[:8]}"
            (tmp / "fs").mkdir(parents=True)
            tries.append((_probe(tmp), tmp))
            if tries[-1][0] < PROBE_SLOW:
                break
        best = min(tries)[1]
        for _, tmp in tries:
            if tmp != best:
                shutil.rmtree(tmp, ignore_errors=True)
        return best

    def claim(self, chain: str, diff_id: str, parent: str | None, *,
              wait: bool = True) -> LayerClaim | None:
        """Lock `chain` for unpacking into a fresh temporary directory.

        None when the layer is already unpacked (or, with `wait=False`, being unpacked by
        someone else). The caller unpacks into `claim.fs`, then `commit`s and always `release`s.
        """
        hx = _hex(chain)
        lock = open(self.root / "locks" / hx, "a+b")  # noqa: SIM115 (closed by release)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                lock.close()
                return None
            if self.has(chain):
                lock.close()
                return None
            for stale in (self.root / "tmp").glob(hx + "-*"):  # leftovers of a crash
                shutil.rmtree(stale, ignore_errors=True)
            tmp = self._new_tmp(hx)
        except BaseException:
            lock.close()
            raise
        return LayerClaim(self, chain, diff_id, parent, lock, tmp)

    def _meta(self, chain_id: str) -> dict[str, object]:
        try:
            data = json.loads((self.layer_dir(chain_id) / "meta.json").read_text())
        except FileNotFoundError:
            raise NotFoundError(f"layer {chain_id} is not unpacked") from None
        return data  # type: ignore[no-any-return]

    def layers(self) -> list[LayerInfo]:
        out = []
        for d in sorted((self.root / "layers").iterdir()):
            if not (d / "fs").is_dir():
                continue
            m = json.loads((d / "meta.json").read_text())
            out.append(LayerInfo(m["chain_id"], m["diff_id"], m["parent"], m["size"], d / "fs"))
        return out

    def lineage(self, chain_id: str) -> list[str]:
        """The chain and its parents, topmost first."""
        out = []
        cur: str | None = chain_id
        while cur is not None:
            out.append(cur)
            parent = self._meta(cur)["parent"]
            cur = parent if isinstance(parent, str) else None
        return out

    # active snapshots

    def _short(self, chain_id: str) -> str:
        hx = _hex(chain_id)
        link = self.root / "l" / hx[:12]
        if not link.is_symlink():
            tmp = self.root / "l" / f".{hx[:12]}.{uuid.uuid4().hex[:6]}"
            os.symlink(f"../layers/{hx}/fs", tmp)
            os.rename(tmp, link)
        return str(link)

    def prepare(self, key: str, chain_id: str | None, *, readonly: bool = False) -> Mount:
        """Create active snapshot `key` over `chain_id` (None: empty) and return its mount."""
        if not _KEY.match(key):
            raise EngineError(f"invalid snapshot key {key!r}")
        lowers = self.lineage(chain_id) if chain_id else []
        adir = self.root / "active" / key
        try:
            adir.mkdir()
        except FileExistsError:
            raise ConflictError(f"snapshot {key} already exists") from None
        try:
            (adir / "meta.json").write_text(json.dumps(
                {"key": key, "chain_id": chain_id, "readonly": readonly}))
            return self._mount_for(adir, lowers, readonly)
        except BaseException:
            shutil.rmtree(adir, ignore_errors=True)
            raise

    def _mount_for(self, adir: Path, lowers: list[str], readonly: bool) -> Mount:
        if readonly and len(lowers) <= 1:
            src = self.layer_dir(lowers[0]) / "fs" if lowers else adir / "empty"
            src.mkdir(exist_ok=True)
            return Mount("bind", str(src), "", ("rbind", "ro"))
        if not readonly:
            (adir / "upper").mkdir()
            (adir / "work").mkdir()
        if not lowers:
            return Mount("bind", str(adir / "upper"), "", ("rbind", "rw"))
        dirs = [str(self.layer_dir(c) / "fs") for c in lowers]
        opts = self._options(dirs, adir, readonly)
        if len(",".join(opts)) > PAGE_LIMIT:
            opts = self._options([self._short(c) for c in lowers], adir, readonly)
        if len(",".join(opts)) > PAGE_LIMIT:
            raise EngineError(f"image has too many layers ({len(lowers)}) for one overlay mount")
        return Mount("overlay", "overlay", "", opts)

    @staticmethod
    def _options(dirs: list[str], adir: Path, readonly: bool) -> tuple[str, ...]:
        opts = ["lowerdir=" + ":".join(_escape(d) for d in dirs)]
        if readonly:
            return (*opts, "index=off", "ro")
        return (*opts, f"upperdir={_escape(str(adir / 'upper'))}",
                f"workdir={_escape(str(adir / 'work'))}", "index=off")

    def active(self) -> dict[str, str | None]:
        """Active snapshot keys and their chain IDs."""
        out: dict[str, str | None] = {}
        for d in (self.root / "active").iterdir():
            try:
                out[d.name] = json.loads((d / "meta.json").read_text())["chain_id"]
            except (OSError, ValueError):
                out[d.name] = None
        return out

    def remove(self, key: str) -> None:
        """Remove active snapshot `key` (it must be unmounted)."""
        if not _KEY.match(key):
            raise EngineError(f"invalid snapshot key {key!r}")
        adir = self.root / "active" / key
        if not adir.exists():
            raise NotFoundError(f"snapshot {key} not found")
        gone = self.root / "tmp" / f"rm-{key}-{uuid.uuid4().hex[:8]}"
        os.rename(adir, gone)
        shutil.rmtree(gone)

    # housekeeping

    def prune(self, keep_chain_ids: set[str]) -> list[str]:
        """Remove layers that no kept chain and no active snapshot needs; return their IDs."""
        needed: set[str] = set()
        for c in list(keep_chain_ids) + [c for c in self.active().values() if c]:
            try:
                needed.update(self.lineage(c))
            except NotFoundError:
                continue
        removed = []
        for info in self.layers():
            if info.chain_id in needed:
                continue
            hx = _hex(info.chain_id)
            with open(self.root / "locks" / hx, "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                gone = self.root / "tmp" / f"rm-{hx}-{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(self.layer_dir(info.chain_id), gone)
                except FileNotFoundError:
                    continue
                link = self.root / "l" / hx[:12]
                if link.is_symlink():
                    link.unlink()
                shutil.rmtree(gone)
            removed.append(info.chain_id)
        return removed

    def usage(self) -> SnapshotUsage:
        layers = [d for d in (self.root / "layers").iterdir() if (d / "fs").is_dir()]
        actives = list((self.root / "active").iterdir())
        return SnapshotUsage(len(layers), len(actives), sum(_du(d) for d in layers),
                             sum(_du(d) for d in actives))
