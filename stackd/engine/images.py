"""Image records (name → manifest, config, layers, chain id): add, resolve, list, remove, prune."""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackd.engine import reference
from stackd.engine.content import ContentStore
from stackd.engine.store import Store
from stackd.errors import ConflictError, NotFoundError


@dataclass(frozen=True, slots=True)
class Layer:
    digest: str
    media_type: str
    size: int
    diff_id: str


@dataclass(frozen=True)
class ImageRecord:
    """One image, identified by its config digest, with the names that point at it."""

    id: str
    manifest_digest: str
    manifest_media_type: str
    config_digest: str
    layers: tuple[Layer, ...]
    platform: str
    size: int
    created: str | None = None
    chain_id: str | None = None
    index_digest: str | None = None
    names: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    added_at: float = field(default_factory=time.time)

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    @property
    def diff_ids(self) -> builtins.list[str]:
        return [layer.diff_id for layer in self.layers]

    def blobs(self) -> set[str]:
        out = {self.manifest_digest, self.config_digest, *(layer.digest for layer in self.layers)}
        if self.index_digest:
            out.add(self.index_digest)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "RepoTags": [reference.familiar(n) for n in self.names],
            "RepoDigests": [reference.familiar(d) for d in self.repo_digests],
            "Created": self.created,
            "Size": self.size,
            "Platform": self.platform,
            "ManifestDigest": self.manifest_digest,
            "ManifestMediaType": self.manifest_media_type,
            "IndexDigest": self.index_digest,
            "ChainId": self.chain_id,
            "RootFS": {"Type": "layers", "Layers": self.diff_ids},
            "Layers": [
                {"Digest": x.digest, "MediaType": x.media_type, "Size": x.size, "DiffId": x.diff_id}
                for x in self.layers
            ],
        }


def chain_ids(diff_ids: Iterable[str]) -> builtins.list[str]:
    """OCI chain IDs: ChainID(L0)=DiffID(L0); ChainID(Ln)=sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def unpack_layers(state_root: Path, content: ContentStore, layers: Iterable[Layer],
                  on_missing: Callable[[list[Layer]], None] | None = None,
                  server: Any = None) -> str | None:
    """Unpack layers into overlay snapshots when the snapshotter exists; returns the top chain id.

    `on_missing` is told which layers are not unpacked yet, before the unpacking starts;
    `server` (an `unpack_server.UnpackServer`) forks the workers when given.
    """
    try:
        from stackd.engine.snapshots import LayerRef, Snapshotter  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    layers = list(layers)
    if not layers:
        return None
    snap = Snapshotter(Path(state_root) / "snapshots", server=server)
    chains = chain_ids([x.diff_id for x in layers])
    missing = [x for x, c in zip(layers, chains, strict=True) if not snap.has(c)]
    if not missing:
        return chains[-1]
    if on_missing is not None:
        on_missing(missing)
    refs = [LayerRef(x.diff_id, content.path(x.digest), x.media_type, x.size) for x in layers]
    own = None
    if server is None and len(missing) > 1 and os.geteuid() == 0:
        from stackd.engine.unpack_server import UnpackServer

        with contextlib.suppress(OSError):
            own = snap.server = UnpackServer()  # one interpreter start for all the layers
    try:
        return str(snap.ensure_layers(refs))
    finally:
        if own is not None:
            own.close()


@contextlib.contextmanager
def gc_lock(state_root: Path, *, exclusive: bool) -> Iterator[None]:
    """Pulls hold this shared while their blobs are not yet recorded; prune holds it exclusive."""
    path = Path(state_root) / "content" / "gc.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


class ImageStore:
    """Image records in the state database, over the content store's blobs."""

    def __init__(self, state_root: Path, store: Store | None = None, content: ContentStore | None = None) -> None:
        self.state_root = Path(state_root)
        self.db = store or Store(self.state_root)
        self.content = content or ContentStore(self.state_root)

    def add(self, rec: ImageRecord, names: Iterable[str] = (), repo_digest: str | None = None) -> ImageRecord:
        """Record an image and point `names` at it (moving tags from older images)."""
        layers = json.dumps([[x.digest, x.media_type, x.size, x.diff_id] for x in rec.layers])
        with self.db.tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO images VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (rec.id, rec.manifest_digest, rec.manifest_media_type, rec.index_digest, rec.config_digest,
                 layers, rec.chain_id, rec.size, rec.created, rec.platform, rec.added_at),
            )
            for name in names:
                c.execute("INSERT OR REPLACE INTO image_names VALUES (?,?,?)", (name, rec.id, repo_digest))
        return self.get(rec.id)

    def _row(self, row: Any) -> ImageRecord:
        names = self.db.conn().execute(
            "SELECT name, repo_digest FROM image_names WHERE image_id=? ORDER BY name", (row["id"],)
        ).fetchall()
        return ImageRecord(
            id=row["id"], manifest_digest=row["manifest_digest"], manifest_media_type=row["manifest_media_type"],
            config_digest=row["config_digest"], layers=tuple(Layer(*x) for x in json.loads(row["layers"])),
            platform=row["platform"], size=row["size"], created=row["created"], chain_id=row["chain_id"],
            index_digest=row["index_digest"], names=tuple(n["name"] for n in names),
            repo_digests=tuple(sorted({n["repo_digest"] for n in names if n["repo_digest"]})),
            added_at=row["added_at"],
        )

    def get(self, image_id: str) -> ImageRecord:
        row = self.db.conn().execute("SELECT * FROM images WHERE id=?", (image_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no such image: {image_id}")
        return self._row(row)

    def list(self) -> list[ImageRecord]:
        rows = self.db.conn().execute("SELECT * FROM images ORDER BY added_at DESC").fetchall()
        return [self._row(r) for r in rows]

    def resolve(self, text: str) -> ImageRecord:
        """Find an image by name[:tag], name@digest, full or short ID."""
        conn = self.db.conn()
        hexpart = text.removeprefix("sha256:")
        if len(hexpart) >= 4 and all(ch in "0123456789abcdef" for ch in hexpart) and ("/" not in text):
            rows = conn.execute("SELECT id FROM images WHERE id LIKE ?", (f"sha256:{hexpart}%",)).fetchall()
            if len(rows) == 1:
                return self.get(rows[0][0])
            if len(rows) > 1:
                raise ConflictError(f"image ID {text!r} is ambiguous ({len(rows)} images match)")
        try:
            ref = reference.parse(text)
        except reference.ReferenceError:
            raise NotFoundError(f"no such image: {text}")
        if ref.digest:
            row = conn.execute(
                "SELECT id FROM images WHERE manifest_digest=? OR index_digest=?", (ref.digest, ref.digest)
            ).fetchone()
            if row is not None and (ref.tag is None or self._named(row[0], str(ref.with_tag(ref.tag)))):
                return self.get(row[0])
        else:
            row = conn.execute("SELECT image_id FROM image_names WHERE name=?", (str(ref),)).fetchone()
            if row is not None:
                return self.get(row[0])
        raise NotFoundError(f"no such image: {text}")

    def _named(self, image_id: str, name: str) -> bool:
        return self.db.conn().execute(
            "SELECT 1 FROM image_names WHERE image_id=? AND name=?", (image_id, name)
        ).fetchone() is not None

    def remove(self, text: str, *, force: bool = False, in_use: Iterable[str] = ()) -> builtins.list[str]:
        """Untag or delete an image; refuse one used by a container. Returns Docker-style lines."""
        rec = self.resolve(text)
        out: list[str] = []
        bare = text.removeprefix("sha256:")
        by_name = not (":" not in bare and "/" not in bare and rec.id.removeprefix("sha256:").startswith(bare))
        if by_name and len(rec.names) > 1:
            name = str(reference.parse(text))
            with self.db.tx() as c:
                c.execute("DELETE FROM image_names WHERE name=?", (name,))
            return [f"Untagged: {reference.familiar(name)}"]
        if len(rec.names) > 1 and not force:
            raise ConflictError(
                f"unable to delete {rec.short_id} (must be forced): image is referenced in multiple repositories"
            )
        if rec.id in set(in_use):
            raise ConflictError(f"unable to remove image {text}: image {rec.short_id} is in use by a container")
        with self.db.tx() as c:
            c.execute("DELETE FROM image_names WHERE image_id=?", (rec.id,))
            c.execute("DELETE FROM images WHERE id=?", (rec.id,))
        out += [f"Untagged: {reference.familiar(n)}" for n in rec.names]
        for digest in sorted(rec.blobs() - self.referenced_blobs()):
            if self.content.delete(digest):
                out.append(f"Deleted: {digest}")
        return out

    def referenced_blobs(self) -> set[str]:
        out: set[str] = set()
        for rec in self.list():
            out |= rec.blobs()
        return out

    def referenced_chain_ids(self) -> set[str]:
        out: set[str] = set()
        for rec in self.list():
            out.update(chain_ids(rec.diff_ids))
        return out

    def prune(self, *, all: bool = False, in_use: Iterable[str] = (), snapshotter: Any = None) -> tuple[builtins.list[str], int]:
        """Remove dangling images (all unused with `all`), then unreferenced blobs and snapshots."""
        used = set(in_use)
        removed: list[str] = []
        freed = 0
        with gc_lock(self.state_root, exclusive=True):
            for rec in self.list():
                if rec.id in used or (rec.names and not all):
                    continue
                with self.db.tx() as c:
                    c.execute("DELETE FROM image_names WHERE image_id=?", (rec.id,))
                    c.execute("DELETE FROM images WHERE id=?", (rec.id,))
                removed += [f"untagged: {reference.familiar(n)}" for n in rec.names]
                removed.append(f"deleted: {rec.id}")
            keep = self.referenced_blobs()
            for digest in self.content.list():
                if digest not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        freed += self.content.path(digest).stat().st_size
                    self.content.delete(digest)
            self.content.clean_ingest()
            if snapshotter is not None and hasattr(snapshotter, "prune"):
                snapshotter.prune(self.referenced_chain_ids())
        return removed, freed
