"""`image load`/`image save`: archives written by skopeo load; archives stackd writes load elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackd.engine import archive
from stackd.engine.content import ContentStore
from stackd.engine.images import ImageStore
from tests.engine.images.conftest import World, run


def oci_config_digest(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            manifest = json.loads((layout / "blobs" / "sha256" / m["digest"][7:]).read_text())
            return str(manifest["config"]["digest"])
    raise AssertionError(tag)


@pytest.fixture(scope="module")
def archives(world: World) -> dict[str, Path]:
    out = world.work / "archives"
    out.mkdir(exist_ok=True)
    d, o = out / "docker.tar", out / "oci.tar"
    if not d.exists():
        run("skopeo", "copy", "--quiet", f"oci:{world.layout}:base", f"docker-archive:{d}:test/busybox:v1")
        run("skopeo", "copy", "--quiet", f"oci:{world.layout}:base", f"oci-archive:{o}:test/ociarc:v2")
    return {"docker": d, "oci": o}


def test_load_docker_archive_from_skopeo(world: World, archives: dict[str, Path], tmp_path: Path) -> None:
    [(rec, names)] = archive.load(tmp_path, archives["docker"])
    assert names == ["docker.io/test/busybox:v1"]
    assert rec.id == oci_config_digest(world.layout, "base")
    assert len(rec.layers) == 3 and all(x.digest == x.diff_id for x in rec.layers)  # uncompressed tars
    assert ContentStore(tmp_path).verify_all() == []
    assert ImageStore(tmp_path).resolve("test/busybox:v1").id == rec.id


def test_load_oci_archive_and_layout(world: World, archives: dict[str, Path], tmp_path: Path) -> None:
    [(rec, names)] = archive.load(tmp_path, archives["oci"])
    assert names == ["docker.io/test/ociarc:v2"] and rec.id == oci_config_digest(world.layout, "base")
    loaded = archive.load(tmp_path / "layout-root", world.layout)
    by_id = {r.id: r for r, _ in loaded}
    assert oci_config_digest(world.layout, "arm") in by_id  # each tagged manifest loads
    multi = [r for r, _ in loaded if r.index_digest is not None]
    assert len(multi) == 1 and multi[0].platform == "linux/amd64"  # index → the default platform
    assert ContentStore(tmp_path / "layout-root").verify_all() == []


def test_save_is_readable_by_skopeo_and_loads_back(archives: dict[str, Path], tmp_path: Path) -> None:
    [(rec, _)] = archive.load(tmp_path / "a", archives["oci"])
    out = tmp_path / "saved.tar"
    archive.save(tmp_path / "a", ["test/ociarc:v2"], out)
    info = json.loads(run("skopeo", "inspect", f"docker-archive:{out}"))
    assert info["Layers"] and len(info["Layers"]) == 3
    run("skopeo", "copy", "--quiet", f"docker-archive:{out}", f"oci:{tmp_path / 'roundtrip'}:x")
    [(again, names)] = archive.load(tmp_path / "b", out)
    assert again.id == rec.id and names == ["docker.io/test/ociarc:v2"]


def test_corrupt_layout_blob_is_rejected(world: World, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    run("cp", "-a", world.layout, layout)
    manifest = json.loads((layout / "blobs" / "sha256" / oci_config_digest(layout, "base")[7:]).read_text())
    assert "rootfs" in manifest
    blobs = sorted((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    biggest = blobs[-1]
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.chmod(0o644)
    biggest.write_bytes(bytes(data))
    with pytest.raises(archive.ArchiveError, match="digest mismatch"):
        archive.load(tmp_path / "root", layout)
    assert not ContentStore(tmp_path / "root").has("sha256:" + biggest.name)
    assert ContentStore(tmp_path / "root").verify_all() == []


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(archive.ArchiveError, match="not a readable image archive"):
        archive.load(tmp_path / "root", junk)
