"""The mount seam: one contract suite for the real (libc) calls and the recording fake."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackd.engine import mounts
from stackd.engine.mounts import LinuxMountCalls, Mount, MountCalls, RecordingMountCalls


@pytest.fixture(params=["linux", "fake"])
def calls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MountCalls]:
    if request.param == "linux":
        if os.geteuid() != 0:
            pytest.skip("needs root")
        real = LinuxMountCalls()
        yield real
        for t in (tmp_path / "t",):
            if mounts.is_mountpoint(t):
                real.umount(str(t), mounts.MNT_DETACH)
    else:
        yield RecordingMountCalls()


def test_bind_ro_mount_and_unmount(calls: MountCalls, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/f").write_text("x")
    (tmp_path / "t").mkdir()
    mounts.mount(Mount("bind", str(tmp_path / "src"), "", ("rbind", "ro")), tmp_path / "t",
                 calls=calls)
    mounts.unmount(tmp_path / "t", calls=calls)
    with pytest.raises(OSError) as ei:
        mounts.unmount(tmp_path / "t", calls=calls)
    assert ei.value.errno == errno.EINVAL


def test_mount_on_missing_target_fails(calls: MountCalls, tmp_path: Path) -> None:
    with pytest.raises(OSError) as ei:
        mounts.mount(Mount("tmpfs", "tmpfs", "", ("size=1m", "nosuid")), tmp_path / "nope",
                     calls=calls)
    assert ei.value.errno == errno.ENOENT


def test_options_split_into_flags_and_data() -> None:
    flags, data = mounts.split_options(("ro", "nosuid", "lowerdir=/a:/b", "index=off", "rw"))
    assert flags == mounts.MS_RDONLY | mounts.MS_NOSUID and data == "lowerdir=/a:/b,index=off"
    fake = RecordingMountCalls()
    mounts.mount(Mount("overlay", "overlay", "", ("lowerdir=/x", "ro")), "/tmp", calls=fake)
    assert fake.calls == [("mount", "overlay", "/tmp", "overlay", hex(mounts.MS_RDONLY),
                           "lowerdir=/x")]
