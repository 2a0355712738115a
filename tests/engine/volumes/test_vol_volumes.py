"""Named volumes (local driver), driver_opts mounts, copy-up, and bind/tmpfs mount data."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackd.engine import mounts
from stackd.engine.mounts import Mount
from stackd.engine.volumes import VolumeStore, bind_mount, parse_short, tmpfs_mount
from stackd.errors import ConflictError, NotFoundError, UsageError

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def mounted_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(str(path))]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VolumeStore]:
    s = VolumeStore(tmp_path / "state")
    try:
        yield s
    finally:
        for m in reversed(mounted_under(tmp_path)):
            mounts.unmount(m, detach=True)
        assert not mounted_under(tmp_path), "leaked mounts"


def test_create_inspect_list_remove_prune(store: VolumeStore) -> None:
    v = store.create("data", labels={"io.stackd.stack": "demo"})
    assert v.mountpoint.endswith("/volumes/data/_data") and os.path.isdir(v.mountpoint)
    assert store.create("data", labels={"io.stackd.stack": "demo"}) == v  # idempotent
    with pytest.raises(ConflictError):
        store.create("data", driver_opts={"type": "tmpfs", "device": "tmpfs"})
    anon = store.create()
    assert anon.anonymous and len(anon.name) == 64
    assert [x.name for x in store.list(label={"io.stackd.stack": ""})] == ["data"]
    assert store.inspect("data").labels == {"io.stackd.stack": "demo"}
    store.acquire("data", "c1")
    with pytest.raises(ConflictError, match="in use"):
        store.remove("data")
    assert store.prune() == [anon.name]  # anonymous, unused
    store.release("data", "c1")
    assert store.prune(all_=True) == ["data"]
    assert store.list() == []
    with pytest.raises(NotFoundError):
        store.inspect("data")
    with pytest.raises(UsageError):
        store.create("bad/name")
    with pytest.raises(UsageError):
        store.create("x", driver="nfs")


def test_named_volume_survives_container_removal_and_copy_up(store: VolumeStore, tmp_path: Path) -> None:
    image = tmp_path / "rootfs" / "var" / "lib" / "app"
    (image / "sub").mkdir(parents=True)
    (image / "seed.txt").write_text("from the image\n")
    os.chmod(image / "seed.txt", 0o640)
    os.symlink("seed.txt", image / "link")
    store.create("app")
    m = store.acquire("app", "c1", copy_from=str(image))
    data = Path(m.source)
    assert (data / "seed.txt").read_text() == "from the image\n"
    assert (data / "seed.txt").stat().st_mode & 0o777 == 0o640
    assert os.readlink(data / "link") == "seed.txt" and (data / "sub").is_dir()
    (data / "written.txt").write_text("by the container\n")
    store.release("app", "c1")  # the container is removed
    (image / "seed.txt").write_text("a newer image\n")
    store.acquire("app", "c2", copy_from=str(image))  # not empty: no second copy
    assert (data / "seed.txt").read_text() == "from the image\n"
    assert (data / "written.txt").read_text() == "by the container\n"
    store.release("app", "c2")
    store.create("empty")
    m2 = store.acquire("empty", "c3", copy_from=str(image), nocopy=True)
    assert os.listdir(m2.source) == []
    store.release("empty", "c3")


@root_only
def test_tmpfs_and_bind_driver_opts_mount_on_use(store: VolumeStore, tmp_path: Path) -> None:
    t = store.create("scratch", driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    store.acquire("scratch", "c1")
    store.acquire("scratch", "c2")
    assert mounts.is_mountpoint(t.mountpoint)
    big = os.urandom(2 * 1024 * 1024)
    with pytest.raises(OSError) as info, open(Path(t.mountpoint) / "big", "wb") as f:
        f.write(big)
        f.flush()
    assert info.value.errno == errno.ENOSPC
    store.release("scratch", "c1")
    assert mounts.is_mountpoint(t.mountpoint)
    store.release("scratch", "c2")
    assert not mounts.is_mountpoint(t.mountpoint)
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "f").write_text("host file")
    b = store.create("bound", driver_opts={"type": "none", "o": "bind", "device": str(host)})
    store.acquire("bound", "c1")
    assert (Path(b.mountpoint) / "f").read_text() == "host file"
    store.release("bound", "c1")
    assert not mounts.is_mountpoint(b.mountpoint)
    with pytest.raises(UsageError):
        store.create("bad", driver_opts={"type": "none", "o": "bind", "device": "relative"})


@root_only
def test_read_only_bind_refuses_writes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tgt = tmp_path / "tgt"
    tgt.mkdir()
    m = bind_mount(str(src), "/data", read_only=True)  # short syntax creates the host dir
    assert src.is_dir() and m.options == ("rbind", "ro", "rprivate")
    mounts.mount(m, tgt)
    try:
        with pytest.raises(OSError) as info:
            (tgt / "x").write_text("no")
        assert info.value.errno == errno.EROFS
    finally:
        mounts.unmount(tgt)
    assert not mounted_under(tmp_path)


def test_bind_and_tmpfs_mount_data(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        bind_mount(str(tmp_path / "missing"), "/x", create_host_path=False)
    with pytest.warns(UserWarning, match="SELinux"):
        m = bind_mount(str(tmp_path), "/x", selinux="Z", propagation="rshared")
    assert m == Mount("bind", str(tmp_path), "/x", ("rbind", "rw", "rshared"))
    with pytest.raises(UsageError):
        bind_mount(str(tmp_path), "/x", propagation="sideways")
    assert tmpfs_mount("/run", size="64m", mode=0o1777).options == ("nosuid", "nodev", "size=64m", "mode=1777")


def test_short_volume_syntax() -> None:
    assert parse_short("/data").type == "volume" and parse_short("/data").source == ""
    v = parse_short("db:/var/lib/db:ro,nocopy")
    assert (v.type, v.source, v.target, v.read_only, v.nocopy) == ("volume", "db", "/var/lib/db", True, True)
    b = parse_short("./conf:/etc/conf:z")
    assert (b.type, b.selinux) == ("bind", "z")
    for bad in ("a:b:c:d", "db:relative", "db:/x:bogus"):
        with pytest.raises(UsageError):
            parse_short(bad)
