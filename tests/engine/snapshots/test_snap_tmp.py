"""Temporary layer directories: spread over block groups, slow groups given up."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from stackd.engine import snapshots
from stackd.engine.snapshots import FS_IOC_GETFLAGS, FS_TOPDIR_FL, Snapshotter, spread_children


def flags(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        return int.from_bytes(buf[:4], "little")
    finally:
        os.close(fd)


def test_tmp_is_marked_top_of_hierarchy_where_supported(tmp_path: Path) -> None:
    snap = Snapshotter(tmp_path / "snaps")
    if not spread_children(tmp_path / "probe-support"):
        (tmp_path / "probe-support").mkdir()
        if not spread_children(tmp_path / "probe-support"):
            pytest.skip("filesystem without ext4 inode flags")
    assert flags(snap.root / "tmp") & FS_TOPDIR_FL
    assert not flags(snap.root / "layers") & FS_TOPDIR_FL  # only where layers are created


def test_slow_groups_are_given_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    costs = iter([900e-6, 500e-6, 15e-6])
    monkeypatch.setattr(snapshots, "_probe", lambda path: next(costs))
    snap = Snapshotter(tmp_path / "snaps")
    claim = snap.claim("sha256:" + "a" * 64, "sha256:" + "a" * 64, None)
    assert claim is not None
    try:
        assert [p.name for p in (snap.root / "tmp").iterdir()] == [claim.tmp.name]  # the 3rd try
        assert claim.fs.is_dir()
    finally:
        claim.release()
    assert list((snap.root / "tmp").iterdir()) == []


def test_the_fastest_try_wins_when_all_are_slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    costs = iter([900e-6, 300e-6, 500e-6, 700e-6])
    seen: list[Path] = []

    def probe(path: Path) -> float:
        seen.append(path)
        return next(costs)

    monkeypatch.setattr(snapshots, "_probe", probe)
    snap = Snapshotter(tmp_path / "snaps")
    claim = snap.claim("sha256:" + "b" * 64, "sha256:" + "b" * 64, None)
    assert claim is not None
    try:
        assert len(seen) == snapshots.PROBE_TRIES and claim.tmp == seen[1]
        assert [p.name for p in (snap.root / "tmp").iterdir()] == [seen[1].name]
    finally:
        claim.release()


def test_probe_measures_and_cleans_up(tmp_path: Path) -> None:
    cost = snapshots._probe(tmp_path)
    assert 0 < cost < 1.0
    assert list(tmp_path.iterdir()) == []
