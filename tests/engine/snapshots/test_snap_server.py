"""The warm unpack server: forked workers unpack files and pipes as exec'd ones do, confined alike."""

from __future__ import annotations

import gzip
import os
import select
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackd.engine.snapshots import Snapshotter
from stackd.engine.unpack import UnpackError, UnpackLimits, UnpackProcess, unpack_layer
from stackd.engine.unpack_server import ForkedUnpack, UnpackServer
from tests.conftest import requires_root
from tests.engine.snapshots.conftest import GZ, E, diff_id, tar_bytes
from tests.engine.snapshots.test_snap_malicious import NAMES, box, corpus, tree_state

pytestmark = requires_root
__all__ = ["box"]  # the fixture, shared with the malicious-layer tests

LAYER = [E("etc", tarfile.DIRTYPE, mode=0o755), E("etc/passwd", data=b"root:x:0:0\n", mode=0o644),
         E("bin/sh", data=b"\x7fELF" * 1000, mode=0o4755, uid=0, gid=50),
         E("bin/ash", tarfile.LNKTYPE, linkname="bin/sh"), E("lib", tarfile.SYMTYPE, linkname="usr/lib"),
         E("usr/lib/.wh.gone"), E("var/.wh..wh..opq"),
         E("home/u", tarfile.DIRTYPE, mode=0o2750, uid=1000, gid=1000)]


@pytest.fixture(scope="module")
def server() -> Iterator[UnpackServer]:
    srv = UnpackServer()
    try:
        yield srv
    finally:
        srv.close()


def stream(srv: UnpackServer, data: bytes, dest: Path, want: str | None, writers: int | None = None) -> ForkedUnpack:
    limits = UnpackLimits(writers=writers) if writers is not None else None
    proc = srv.start(None, GZ, dest, expected_diff_id=want, limits=limits)
    fd = proc.take_stdin()
    try:
        for i in range(0, len(data), 1000):  # small writes, as a download delivers them
            os.write(fd, data[i:i + 1000])
    except BrokenPipeError:
        pass  # the worker stopped early; wait() says why
    finally:
        os.close(fd)
    return proc


def relative(state: dict[bytes, tuple[object, ...]], root: Path) -> dict[bytes, tuple[object, ...]]:
    """Paths relative to root; directories and whiteouts without mtimes (implied ones get "now")."""
    return {os.path.relpath(k, os.fsencode(root)): v[:4] + v[5:] if stat.S_ISDIR(int(v[0])) or stat.S_ISCHR(int(v[0])) else v  # type: ignore[call-overload]
            for k, v in state.items()}


def test_forked_workers_match_the_exec_worker(tmp_path: Path, server: UnpackServer) -> None:
    raw = tar_bytes(LAYER)
    blob = tmp_path / "l.tar.gz"
    blob.write_bytes(gzip.compress(raw[: len(raw) // 2]) + gzip.compress(raw[len(raw) // 2:]))  # two members
    dests = [tmp_path / n for n in ("exec", "forked-file", "forked-pipe", "exec-threads")]
    for d in dests:
        d.mkdir()
    a = unpack_layer(blob, GZ, dests[0], expected_diff_id=diff_id(raw), limits=UnpackLimits(writers=0))
    b = server.start(blob, GZ, dests[1], expected_diff_id=diff_id(raw)).wait()
    c = stream(server, blob.read_bytes(), dests[2], diff_id(raw)).wait()
    d = unpack_layer(blob, GZ, dests[3], expected_diff_id=diff_id(raw), limits=UnpackLimits(writers=2))
    assert a.diff_id == b.diff_id == c.diff_id == d.diff_id == diff_id(raw)
    assert (a.files, a.hardlinks, a.whiteouts, a.opaques) == (c.files, c.hardlinks, c.whiteouts, c.opaques) == (2, 1, 1, 1)
    trees = [relative(tree_state(d, d / "none"), d) for d in dests]
    assert trees[0] == trees[1] == trees[2] == trees[3]
    assert (dests[2] / "bin" / "sh").stat().st_mode & 0o7777 == 0o4755


def test_streamed_diff_id_mismatch_is_an_error(tmp_path: Path, server: UnpackServer) -> None:
    with pytest.raises(UnpackError, match="does not match diff_id"):
        stream(server, gzip.compress(tar_bytes(LAYER)), tmp_path, "sha256:" + "0" * 64).wait()


def test_kill_stops_a_streaming_worker(tmp_path: Path, server: UnpackServer) -> None:
    proc = server.start(None, GZ, tmp_path, expected_diff_id=None)
    fd = proc.take_stdin()
    pidfd = os.dup(proc.pidfd)
    try:
        os.write(fd, gzip.compress(tar_bytes(LAYER))[:200])
        proc.kill()
        assert select.select([pidfd], [], [], 0)[0] == [pidfd]  # the worker has exited
        with pytest.raises(BrokenPipeError):
            os.write(fd, b"more")
    finally:
        os.close(fd)
        os.close(pidfd)


def test_a_dead_server_falls_back_to_exec(tmp_path: Path) -> None:
    srv = UnpackServer()
    srv.close()
    snap = Snapshotter(tmp_path / "snaps", server=srv)
    raw = tar_bytes(LAYER)
    blob = tmp_path / "l.tar.gz"
    blob.write_bytes(gzip.compress(raw))
    claim = snap.claim(diff_id(raw), diff_id(raw), None)
    assert claim is not None
    try:
        proc = snap.start_unpack(blob, GZ, claim, what="l")
        assert isinstance(proc, UnpackProcess) and snap.server is None
        claim.commit(proc.wait())
    finally:
        claim.release()
    assert (snap.layer_dir(diff_id(raw)) / "fs" / "etc" / "passwd").read_bytes() == b"root:x:0:0\n"


@pytest.mark.parametrize("name", NAMES)
def test_malicious_layer_streamed_touches_nothing_outside(
        tmp_path: Path, box: tuple[Path, Path], server: UnpackServer, name: str) -> None:
    """The corpus again, streamed to forked workers with writer threads (the other tests use none)."""
    outside, dest = box
    raw, check = corpus(outside)[name]
    before = tree_state(tmp_path, dest)
    try:
        stream(server, gzip.compress(raw, 1), dest, None, writers=2).wait()
    except UnpackError as e:
        assert check is None, f"{name} should unpack (contained) but failed: {e}"
    else:
        if check is not None:
            check(dest)
    assert tree_state(tmp_path, dest) == before
