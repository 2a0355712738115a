"""The state database (WAL, migrations), the content store, and image records (rm, prune, in use)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from stackd.engine.content import ContentError, ContentStore
from stackd.engine.images import ImageRecord, ImageStore, Layer, chain_ids
from stackd.engine.store import MIGRATIONS, Migration, Store
from stackd.errors import ConflictError, NotFoundError


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_store_wal_and_versioned_migrations(tmp_path: Path) -> None:
    s = Store(tmp_path)
    assert s.conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.schema_version() == max(m.id for m in MIGRATIONS)
    later = [*MIGRATIONS, Migration(999, "later", "CREATE TABLE later_things (id TEXT PRIMARY KEY)")]
    s2 = Store(tmp_path, later)
    assert s2.schema_version() == 999
    Store(tmp_path, later)  # idempotent
    assert [r[0] for r in s2.conn().execute("SELECT id FROM schema_migrations ORDER BY id")] == [m.id for m in later]
    ids: list[int] = []

    def other_thread() -> None:  # a connection per thread
        ids.append(id(s2.conn()))

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert ids[0] != id(s2.conn())
    with pytest.raises(RuntimeError), s2.tx() as c:
        c.execute("INSERT INTO later_things VALUES ('a')")
        raise RuntimeError("rolled back")
    assert s2.conn().execute("SELECT COUNT(*) FROM later_things").fetchone()[0] == 0


def test_content_ingest_verifies_before_commit(tmp_path: Path) -> None:
    cs = ContentStore(tmp_path)
    data = b"hello" * 1000
    d = sha(data)
    with cs.ingest(d, len(data)) as ing:
        ing.write(data[:100])
    assert not cs.has(d)  # partial is not visible
    with cs.ingest(d, len(data)) as ing:
        assert ing.offset == 100  # resumable
        ing.write(data[100:])
        ing.commit()
    assert cs.has(d, len(data)) and cs.read(d) == data and cs.list() == [d]
    other = sha(b"other")
    with cs.ingest(other, 5) as ing, pytest.raises(ContentError, match="digest mismatch"):
        ing.write(b"OTHER")
        ing.commit()
    with cs.ingest(other, 5) as ing, pytest.raises(ContentError, match="more than the expected 5 bytes"):
        ing.write(b"toolong")
    assert not cs.has(other)
    held = cs.try_ingest(d)
    assert held is not None and cs.try_ingest(d) is None  # one writer per digest
    held.close()
    cs.path(d).chmod(0o644)
    cs.path(d).write_bytes(b"tampered")
    assert cs.verify_all() == [d]
    with pytest.raises(ContentError, match="unsupported digest"):
        cs.path("md5:abc")


def add_image(images: ImageStore, tag: str, payload: bytes) -> ImageRecord:
    cfg = b'{"rootfs":{"diff_ids":[]},"n":"' + payload + b'"}'
    layer = payload * 10
    for b in (cfg, layer):
        images.content.write_blob(b)
    man = images.content.write_blob(b"manifest-" + payload)
    rec = ImageRecord(id=sha(cfg), manifest_digest=man, manifest_media_type="m", config_digest=sha(cfg),
                      layers=(Layer(sha(layer), "t", len(layer), sha(layer)),), platform="linux/amd64", size=1)
    return images.add(rec, [tag] if tag else [])


def test_images_rm_prune_and_in_use(tmp_path: Path) -> None:
    images = ImageStore(tmp_path)
    a = add_image(images, "docker.io/library/a:latest", b"a")
    images.add(a, ["docker.io/library/a2:latest"])
    b = add_image(images, "docker.io/library/b:latest", b"b")
    assert images.resolve("a").id == a.id == images.resolve(a.short_id).id == images.resolve(a.id).id
    assert images.resolve(f"a@{a.manifest_digest}").id == a.id
    with pytest.raises(ConflictError, match="must be forced"):
        images.remove(a.short_id)
    assert images.remove("a2") == ["Untagged: a2:latest"]
    with pytest.raises(ConflictError, match="in use by a container"):
        images.remove("a", in_use={a.id})
    lines = images.remove("a")
    assert lines[0] == "Untagged: a:latest" and f"Deleted: {a.config_digest}" in lines
    assert not images.content.has(a.layers[0].digest) and images.content.has(b.layers[0].digest)
    with pytest.raises(NotFoundError):
        images.resolve("a")
    add_image(images, "docker.io/library/b:latest", b"c")  # moves the tag: b is now dangling
    assert images.get(b.id).names == ()
    removed, freed = images.prune()
    assert removed == [f"deleted: {b.id}"] and freed > 0
    c = images.resolve("b")
    assert images.prune(all=True, in_use={c.id})[0] == []
    assert images.prune(all=True)[0] == ["untagged: b:latest", f"deleted: {c.id}"]
    assert images.content.list() == []


def test_chain_ids() -> None:
    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    assert chain_ids([a, b]) == [a, sha(f"{a} {b}".encode())]
