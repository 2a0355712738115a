"""Snapshotter: layers unpacked once by chain ID, real overlay mounts, locking, prune."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import tarfile
from pathlib import Path

import pytest

from stackd.engine import mounts
from stackd.engine.snapshots import PAGE_LIMIT, LayerRef, Snapshotter, chain_ids
from stackd.engine.unpack import UnpackError
from stackd.errors import ConflictError
from tests.conftest import requires_root
from tests.engine.snapshots.conftest import E, tar_bytes, write_layer

pytestmark = requires_root


def make_layers(tmp_path: Path, specs: list[list[E]], comp: str = "gzip") -> list[LayerRef]:
    out = []
    for i, entries in enumerate(specs):
        blob, mt, did = write_layer(tmp_path / f"layer{i}", tar_bytes(entries), comp)
        out.append(LayerRef(did, blob, mt, blob.stat().st_size))
    return out


THREE = [
    [E("etc", tarfile.DIRTYPE), E("etc/keep", data=b"base"), E("etc/gone", data=b"x"),
     E("opt", tarfile.DIRTYPE), E("opt/lower-only", data=b"lower"), E("bin", tarfile.DIRTYPE),
     E("bin/tool", data=b"v1", mode=0o755)],
    [E("etc/.wh.gone"), E("opt/.wh..wh..opq"), E("opt/mid", data=b"mid"),
     E("bin/tool", data=b"v2", mode=0o755)],
    [E("etc/new", data=b"top"), E("bin/.wh.tool")],
]


def test_chain_ids_follow_oci() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    want = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_ids([a, b]) == [a, want]


def test_three_layer_overlay_merged_view(tmp_path: Path, mounted: list[str]) -> None:
    snaps = Snapshotter(tmp_path / "snapshots")
    layers = make_layers(tmp_path, THREE)
    top = snaps.ensure_layers(layers)
    assert top == chain_ids([la.diff_id for la in layers])[-1] and snaps.has(top)
    assert len(snaps.layers()) == 3
    m = snaps.prepare("c1", top)
    assert m.type == "overlay"
    lower = next(o for o in m.options if o.startswith("lowerdir="))
    chains = chain_ids([la.diff_id for la in layers])
    assert lower.split("=", 1)[1].split(":") == [
        str(snaps.layer_dir(c) / "fs") for c in reversed(chains)]
    target = tmp_path / "merged"
    target.mkdir()
    mounts.mount(m, target)
    mounted.append(str(target))
    assert (target / "etc/keep").read_bytes() == b"base"
    assert not (target / "etc/gone").exists()
    assert (target / "etc/new").read_bytes() == b"top"
    assert sorted(os.listdir(target / "opt")) == ["mid"]
    assert not (target / "bin/tool").exists()
    (target / "etc/written").write_text("hello")
    os.unlink(target / "etc/keep")
    upper = tmp_path / "snapshots/active/c1/upper"
    assert (upper / "etc/written").read_text() == "hello"
    assert stat.S_ISCHR(os.lstat(upper / "etc/keep").st_mode)
    assert (snaps.layer_dir(chains[0]) / "fs/etc/keep").read_bytes() == b"base"
    mounts.unmount(target)
    assert not mounts.is_mountpoint(target)
    snaps.remove("c1")
    assert not (tmp_path / "snapshots/active/c1").exists()


def test_readonly_and_single_layer_mounts(tmp_path: Path, mounted: list[str]) -> None:
    snaps = Snapshotter(tmp_path / "s")
    one = snaps.ensure_layers(make_layers(tmp_path, THREE[:1]))
    m = snaps.prepare("ro1", one, readonly=True)
    assert m.type == "bind" and "ro" in m.options
    target = tmp_path / "t"
    target.mkdir()
    mounts.mount(m, target)
    mounted.append(str(target))
    assert (target / "etc/keep").read_bytes() == b"base"
    with pytest.raises(OSError):
        (target / "x").write_text("no")
    mounts.unmount(target)
    top = snaps.ensure_layers(make_layers(tmp_path, THREE[:2]))
    m2 = snaps.prepare("ro2", top, readonly=True)
    assert m2.type == "overlay" and not any(o.startswith("upperdir") for o in m2.options)
    mounts.mount(m2, target)
    assert (target / "opt/mid").read_bytes() == b"mid"
    mounts.unmount(target)
    with pytest.raises(ConflictError):
        snaps.prepare("ro2", top)
    empty = snaps.prepare("scratch", None)
    assert empty.type == "bind" and empty.source.endswith("scratch/upper")


def test_many_layers_use_short_links_within_a_page(tmp_path: Path, mounted: list[str]) -> None:
    snaps = Snapshotter(tmp_path / "snapshots")
    specs = [[E(f"f{i}", data=str(i).encode()), E("same", data=str(i).encode())]
             for i in range(30)]
    top = snaps.ensure_layers(make_layers(tmp_path, specs, "none"))
    m = snaps.prepare("many", top)
    assert len(",".join(m.options)) <= PAGE_LIMIT
    assert str(tmp_path / "snapshots/l/") in m.options[0]
    target = tmp_path / "m"
    target.mkdir()
    mounts.mount(m, target)
    mounted.append(str(target))
    assert (target / "same").read_text() == "29" and (target / "f0").read_text() == "0"
    mounts.unmount(target)


def _ensure_in_child(root: str, layers: list[LayerRef], q: multiprocessing.Queue) -> None:
    q.put(Snapshotter(Path(root)).ensure_layers(layers))


def test_concurrent_ensure_unpacks_once(tmp_path: Path) -> None:
    layers = make_layers(tmp_path, THREE)
    ctx = multiprocessing.get_context("spawn")
    q: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(str(tmp_path / "s"), layers, q))
             for _ in range(2)]
    for p in procs:
        p.start()
    try:
        tops = {q.get(timeout=60) for _ in procs}
    finally:
        for p in procs:
            p.join(timeout=60)
    assert len(tops) == 1 and all(p.exitcode == 0 for p in procs)
    snaps = Snapshotter(tmp_path / "s")
    assert len(snaps.layers()) == 3
    assert list((tmp_path / "s/tmp").iterdir()) == []
    inode = os.stat(snaps.layer_dir(tops.pop()) / "fs/etc/new").st_ino
    snaps.ensure_layers(layers)
    assert os.stat(snaps.layer_dir(snaps.layers()[0].chain_id)).st_ino  # still there
    assert inode == os.stat(snaps.layer_dir(chain_ids([la.diff_id for la in layers])[-1])
                            / "fs/etc/new").st_ino


def test_bad_layer_leaves_nothing_visible(tmp_path: Path) -> None:
    layers = make_layers(tmp_path, THREE[:1])
    bad = LayerRef("sha256:" + "1" * 64, layers[0].blob_path, layers[0].media_type, 0)
    snaps = Snapshotter(tmp_path / "s")
    with pytest.raises(UnpackError, match="does not match"):
        snaps.ensure_layers([bad])
    assert not snaps.has(bad.diff_id) and snaps.layers() == []
    assert list((tmp_path / "s/tmp").iterdir()) == []


def test_prune_keeps_parents_and_active(tmp_path: Path) -> None:
    snaps = Snapshotter(tmp_path / "s")
    (tmp_path / "a").mkdir()
    a = make_layers(tmp_path / "a", THREE)
    top = snaps.ensure_layers(a)
    other = snaps.ensure_layers(make_layers(tmp_path, [[E("solo", data=b"1")]]))
    third = snaps.ensure_layers(make_layers(tmp_path, [[E("in-use", data=b"1")]]))
    snaps.prepare("ctr", third)
    assert snaps.usage().layers == 5 and snaps.usage().layer_bytes > 0
    removed = snaps.prune({top})
    assert removed == [other]
    assert snaps.has(top) and snaps.has(third) and not snaps.has(other)
    assert all(snaps.has(c) for c in chain_ids([la.diff_id for la in a]))
    snaps.remove("ctr")
    assert snaps.prune(set()) and snaps.layers() == []
