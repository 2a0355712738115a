"""A corpus of crafted, malicious layers: whatever they say, nothing outside the snapshot changes."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from stackd.engine.unpack import UnpackError, UnpackLimits, unpack_layer
from tests.conftest import requires_root
from tests.engine.snapshots.conftest import GZ, TAR, E, tar_bytes

pytestmark = requires_root

DEEP = "/".join(f"d{i:06d}" for i in range(700))  # ~5 KB, beyond PATH_MAX


def tree_state(root: Path, skip: Path) -> dict[bytes, tuple[object, ...]]:
    """Everything about every file under root except `skip`: type, mode, owner, size, data, xattrs."""
    out: dict[bytes, tuple[object, ...]] = {}
    broot, bskip = os.fsencode(root), os.fsencode(skip)
    for dp, dns, fns in os.walk(broot):
        dns[:] = [d for d in dns if os.path.join(dp, d) != bskip]
        for n in [*dns, *fns, b""]:
            p = os.path.join(dp, n) if n else dp
            s = os.lstat(p)
            h = hashlib.sha256(Path(os.fsdecode(p)).read_bytes()).hexdigest() if stat.S_ISREG(s.st_mode) else (
                os.readlink(p) if stat.S_ISLNK(s.st_mode) else "")
            xa = sorted((k, os.getxattr(p, k, follow_symlinks=False))
                        for k in os.listxattr(p, follow_symlinks=False))
            out[p] = (s.st_mode, s.st_uid, s.st_gid, s.st_size, s.st_mtime_ns, s.st_nlink, h, xa)
    return out


def sparse_huge(size: int, stored: int) -> bytes:
    """A PAX 0.1 sparse file claiming `size` bytes with `stored` bytes of data at its end."""
    pax = {"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.name": "huge",
           "GNU.sparse.size": str(size), "GNU.sparse.map": f"{size - 5},5"}
    return tar_bytes([E("GNUSparseFile.0/huge", data=b"hello"[:stored].ljust(stored, b"!"),
                        pax=pax)])


def corpus(outside: Path) -> dict[str, tuple[bytes, Callable[[Path], None] | None]]:
    """name -> (tar bytes, optional check of the contained result)."""
    o = str(outside)

    def inside(rel: str, data: bytes | None = None) -> Callable[[Path], None]:
        def check(dest: Path) -> None:
            assert os.path.lexists(dest / rel)
            if data is not None:
                assert (dest / rel).read_bytes() == data
        return check

    return {
        "dotdot-traversal": (tar_bytes([E("../../../sentinel", data=b"pwned"),
                                        E("a/../../escape", data=b"pwned")]),
                             inside("sentinel", b"pwned")),
        "absolute-path": (tar_bytes([E(f"{o}/sentinel", data=b"pwned"),
                                     E("/etc/stackd-escape", data=b"pwned")]),
                          inside(f"{o[1:]}/sentinel", b"pwned")),
        "symlink-abs-then-write": (tar_bytes([E("evil", tarfile.SYMTYPE, linkname=o),
                                              E("evil/sentinel", data=b"pwned"),
                                              E("evil/new-file", data=b"pwned")]), None),
        "symlink-dotdot-then-write": (tar_bytes([E("up", tarfile.SYMTYPE, linkname="../../.."),
                                                 E("up/sentinel", data=b"pwned")]),
                                      inside("sentinel", b"pwned")),
        "symlink-chain-then-dir": (tar_bytes([E("a", tarfile.SYMTYPE, linkname="b"),
                                              E("b", tarfile.SYMTYPE, linkname=o + "/subdir"),
                                              E("a/inner", tarfile.DIRTYPE, mode=0o777),
                                              E("a/inner/f", data=b"pwned")]), None),
        "hardlink-outside": (tar_bytes([E("h1", tarfile.LNKTYPE, linkname=o + "/sentinel"),
                                        E("h2", tarfile.LNKTYPE, linkname="../../sentinel")]),
                             None),
        "hardlink-through-symlink": (tar_bytes([E("s", tarfile.SYMTYPE, linkname=o),
                                                E("h", tarfile.LNKTYPE, linkname="s/sentinel"),
                                                E("h", data=b"overwrite")]), None),
        "whiteout-dotdot": (tar_bytes([E("a/.wh...", data=b""), E(".wh..", data=b""),
                                       E("../.wh.sentinel", data=b""),
                                       E("x/../../.wh.sentinel", data=b"")]), None),
        "whiteout-through-symlink": (tar_bytes([E("l", tarfile.SYMTYPE, linkname=o),
                                                E("l/.wh.sentinel"),
                                                E("l/.wh..wh..opq")]), None),
        "chmod-chown-through-symlink": (tar_bytes([E("l", tarfile.SYMTYPE, linkname=o),
                                                   E("l", tarfile.DIRTYPE, mode=0o777, uid=99),
                                                   E("m", tarfile.SYMTYPE, linkname=o + "/sentinel"),
                                                   E("m", tarfile.DIRTYPE, mode=0o777)]), None),
        "device-nodes": (tar_bytes([E("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
                                    E("dev/mem", tarfile.CHRTYPE, devmajor=1, devminor=1),
                                    E("../../dev/kmsg2", tarfile.CHRTYPE, devmajor=1, devminor=11),
                                    E(f"{o}/fifo", tarfile.FIFOTYPE)]),
                         inside("dev/mem")),
        "huge-sparse": (sparse_huge(1 << 40, 5), None),
        "sparse-map-lies": (sparse_huge(1 << 30, 0) + b"", None),
        "deep-nesting": (tar_bytes([E(DEEP, tarfile.DIRTYPE), E(DEEP + "/f", data=b"deep"),
                                    E(DEEP + "/l", tarfile.SYMTYPE, linkname="f"),
                                    E(DEEP + "/h", tarfile.LNKTYPE, linkname=DEEP + "/f"),
                                    E(DEEP + "/../../../../.." + "/x", data=b"x")]), None),
        "non-utf8-names": (tar_bytes([E(b"\xff\xfe/..\xc0\xaf..\xc0\xaf/x", data=b"n"),
                                      E(b"..\xff/../../../sentinel", data=b"pwned"),
                                      E(b"ok\x80", tarfile.SYMTYPE, linkname="../../..")]), None),
        "root-entry-as-symlink": (tar_bytes([E(".", tarfile.SYMTYPE, linkname=o),
                                             E("./", tarfile.DIRTYPE, mode=0o777),
                                             E("file-at-root", data=b"x")]), None),
        "overlay-xattr-injection": (tar_bytes([E("d", tarfile.DIRTYPE, pax={
            "SCHILY.xattr.trusted.overlay.redirect": o, "SCHILY.xattr.trusted.overlay.opaque": "y"
        })]), None),
        "symlink-loop": (tar_bytes([E("a", tarfile.SYMTYPE, linkname="b"),
                                    E("b", tarfile.SYMTYPE, linkname="a"),
                                    E("a/x", data=b"x")]), None),
    }


NAMES = sorted(corpus(Path("/x")))


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """`outside` with sentinel files around `dest` (the snapshot dir)."""
    outside = tmp_path / "outside"
    (outside / "subdir").mkdir(parents=True)
    (outside / "sentinel").write_bytes(b"original")
    os.chmod(outside / "sentinel", 0o600)
    (tmp_path / "sentinel").write_bytes(b"original")
    dest = tmp_path / "snap" / "a" / "b" / "fs"
    dest.mkdir(parents=True)
    return outside, dest


@pytest.mark.parametrize("name", NAMES)
def test_malicious_layer_touches_nothing_outside(tmp_path: Path, box: tuple[Path, Path],
                                                 name: str) -> None:
    outside, dest = box
    raw, check = corpus(outside)[name]
    blob = tmp_path / "layer.tar.gz"
    blob.write_bytes(gzip.compress(raw, 1))
    before = tree_state(tmp_path, dest)
    host_before = {p: os.path.lexists(p) for p in ("/sentinel", "/escape", "/etc/stackd-escape",
                                                   "/tmp/sentinel", "/x", "/huge")}
    try:
        unpack_layer(blob, GZ, dest, expected_diff_id=None)
    except UnpackError as e:
        assert check is None, f"{name} should unpack (contained) but failed: {e}"
        assert "Traceback" not in str(e)
    else:
        if check is not None:
            check(dest)
    after = tree_state(tmp_path, dest)
    after.pop(os.fsencode(blob), None)
    before.pop(os.fsencode(blob), None)
    assert after == before
    assert {p: os.path.lexists(p) for p in host_before} == host_before


def test_huge_sparse_is_contained_and_small(box: tuple[Path, Path], tmp_path: Path) -> None:
    _, dest = box
    (tmp_path / "s.tar").write_bytes(sparse_huge(1 << 40, 5))
    unpack_layer(tmp_path / "s.tar", TAR, dest, expected_diff_id=None)
    st = os.stat(dest / "huge")
    assert st.st_size == 1 << 40 and st.st_blocks * 512 <= 1 << 20
    with open(dest / "huge", "rb") as f:
        f.seek((1 << 40) - 5)
        assert f.read() == b"hello"


def test_deep_nesting_is_unpacked_dirfd_relative(box: tuple[Path, Path], tmp_path: Path) -> None:
    _, dest = box
    raw, _ = corpus(Path("/x"))["deep-nesting"]
    (tmp_path / "d.tar").write_bytes(raw)
    unpack_layer(tmp_path / "d.tar", TAR, dest, expected_diff_id=None)
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for comp in DEEP.split("/"):
            nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        assert os.readlink("l", dir_fd=fd) == "f"
        f = os.open("h", os.O_RDONLY, dir_fd=fd)
        assert os.read(f, 10) == b"deep"
        assert os.fstat(f).st_nlink == 2
        os.close(f)
    finally:
        os.close(fd)


def test_bombs_are_bounded(box: tuple[Path, Path], tmp_path: Path) -> None:
    _, dest = box
    zeros = gzip.compress(tar_bytes([E(f"z{i}", data=b"\0" * (16 << 20)) for i in range(4)]), 9)
    (tmp_path / "bomb.tgz").write_bytes(zeros)
    assert len(zeros) < 1 << 20
    with pytest.raises(UnpackError, match="decompression bomb"):
        unpack_layer(tmp_path / "bomb.tgz", GZ, dest, expected_diff_id=None,
                     limits=UnpackLimits(max_bytes=8 << 20))
    used = sum(os.lstat(os.path.join(dp, f)).st_blocks * 512
               for dp, _, fs in os.walk(dest) for f in fs)
    assert used <= 9 << 20
    many = tar_bytes([E(f"e{i}") for i in range(3000)])
    (tmp_path / "many.tar").write_bytes(many)
    with pytest.raises(UnpackError, match="more than 1000 entries"):
        unpack_layer(tmp_path / "many.tar", TAR, dest, expected_diff_id=None,
                     limits=UnpackLimits(max_entries=1000))
