"""unpack_layer: entry kinds, metadata, whiteouts, compression, digest and bounds."""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from stackd.engine.unpack import UnpackError, UnpackLimits, unpack_layer
from tests.conftest import requires_root
from tests.engine.snapshots.conftest import TAR, E, tar_bytes, write_layer

pytestmark = requires_root

CAP = "SCHILY.xattr.security.capability"
CAPV = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12  # v2, cap_net_raw


def rich_layer() -> list[E]:
    return [
        E("./", tarfile.DIRTYPE, mode=0o755, mtime=1_500_000_000),
        E("etc", tarfile.DIRTYPE, mode=0o755, mtime=1_500_000_001),
        E("etc/passwd", data=b"root:x:0:0\n", mode=0o644, mtime=1_500_000_002),
        E("bin", tarfile.DIRTYPE, mode=0o755, uid=0, gid=0),
        E("bin/su", data=b"\x7fELF", mode=0o4755, uid=0, gid=0),
        E("bin/sg", data=b"sg", mode=0o2711, uid=1000, gid=42),
        E("bin/ping", data=b"ping", mode=0o755, pax={CAP: CAPV}),
        E("bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox"),
        E("bin/busybox", data=b"busybox" * 100, mode=0o755),
        E("bin/ash", tarfile.LNKTYPE, linkname="bin/busybox"),
        E("home/u", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000, mtime=1_400_000_000),
        E("home/u/file", data=b"x", uid=1000, gid=1000, pax={"SCHILY.xattr.user.note": "hi"}),
        E("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        E("dev/fifo", tarfile.FIFOTYPE, mode=0o600),
        E("opt/.wh..wh..opq", data=b""),
        E("usr/.wh.gone", data=b""),
        E("usr/.wh..wh.plnk", tarfile.DIRTYPE),
        E(b"caf\xe9-\xff.txt", data=b"latin1 name"),
        E("t\u00e9l\u00e9", data=b"utf8 name"),
    ]


def test_unpack_preserves_kinds_owners_modes_xattrs_and_times(tmp_path: Path) -> None:
    blob, mt, did = write_layer(tmp_path / "l.tgz", tar_bytes(rich_layer()))
    dest = tmp_path / "fs"
    dest.mkdir()
    st = unpack_layer(blob, mt, dest, expected_diff_id=did)
    assert st.diff_id == did and st.compression == "gzip"
    assert (st.files, st.symlinks, st.hardlinks, st.devices) == (8, 1, 1, 2)
    assert (st.whiteouts, st.opaques) == (1, 1)
    assert (dest / "etc/passwd").read_bytes() == b"root:x:0:0\n"
    su = os.stat(dest / "bin/su")
    assert stat.S_IMODE(su.st_mode) == 0o4755
    sg = os.stat(dest / "bin/sg")
    assert stat.S_IMODE(sg.st_mode) == 0o2711 and (sg.st_uid, sg.st_gid) == (1000, 42)
    assert os.getxattr(dest / "bin/ping", "security.capability") == CAPV.encode()
    assert os.getxattr(dest / "home/u/file", "user.note") == b"hi"
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"
    assert os.stat(dest / "bin/ash").st_ino == os.stat(dest / "bin/busybox").st_ino
    null = os.stat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert stat.S_ISFIFO(os.stat(dest / "dev/fifo").st_mode)
    assert os.getxattr(dest / "opt", "trusted.overlay.opaque") == b"y"
    wh = os.stat(dest / "usr/gone")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0 and (wh.st_uid, wh.st_gid) == (0, 0)
    assert not (dest / "usr/.wh..wh.plnk").exists() and not (dest / "usr/.wh.gone").exists()
    assert (dest / os.fsdecode(b"caf\xe9-\xff.txt")).read_bytes() == b"latin1 name"
    assert os.path.exists(os.fsencode(dest) + b"/caf\xe9-\xff.txt")
    assert (dest / "t\u00e9l\u00e9").read_bytes() == b"utf8 name"
    home = os.stat(dest / "home/u")
    assert home.st_mtime == 1_400_000_000 and stat.S_IMODE(home.st_mode) == 0o700
    assert os.stat(dest / "etc").st_mtime == 1_500_000_001
    assert os.stat(dest).st_mtime == 1_500_000_000
    assert os.lstat(dest / "bin/sh").st_mtime == 1_600_000_000


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_unpack_compressions_verify_digest(tmp_path: Path, compression: str) -> None:
    raw = tar_bytes([E("a", data=b"A" * 100_000), E("d", tarfile.DIRTYPE)])
    blob, mt, did = write_layer(tmp_path / "l", raw, compression)
    (tmp_path / "ok").mkdir()
    st = unpack_layer(blob, mt, tmp_path / "ok", expected_diff_id=did)
    assert st.tar_bytes == len(raw) and (tmp_path / "ok/a").read_bytes() == b"A" * 100_000
    (tmp_path / "bad").mkdir()
    with pytest.raises(UnpackError, match="does not match diff_id") as ei:
        unpack_layer(blob, mt, tmp_path / "bad", expected_diff_id="sha256:" + "0" * 64)
    assert ei.value.kind == "digest"


def test_unpack_sparse_file_keeps_holes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(512 << 20)
        f.write(b"end")
        f.seek(4096)
        f.write(b"start")
    raw = tmp_path / "s.tar"
    subprocess.run(["tar", "-C", str(src), "--sparse", "--format=posix", "-cf", str(raw),
                    "sparse"], check=True)
    blob, mt, did = write_layer(tmp_path / "s.tgz", raw.read_bytes())
    (tmp_path / "fs").mkdir()
    unpack_layer(blob, mt, tmp_path / "fs", expected_diff_id=did)
    out = tmp_path / "fs/sparse"
    assert out.stat().st_size == (512 << 20) + 3
    assert out.stat().st_blocks * 512 < (1 << 20)
    with open(out, "rb") as f:
        f.seek(4096)
        assert f.read(5) == b"start"
        f.seek(512 << 20)
        assert f.read() == b"end"


def test_unpack_matches_gnu_tar(tmp_path: Path) -> None:
    """Our tree equals what GNU tar extracts (types, modes, owners, link targets, data, mtimes)."""
    raw = tar_bytes([e for e in rich_layer() if b".wh." not in os.fsencode(e.name)])
    blob, mt, did = write_layer(tmp_path / "l.tar", raw, "none")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    unpack_layer(blob, mt, ours, expected_diff_id=did)
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--same-owner", "-p", "-C",
                    str(theirs), "-xf", str(blob)], check=True)

    def snap(root: Path) -> dict[bytes, tuple[object, ...]]:
        out: dict[bytes, tuple[object, ...]] = {}
        broot = os.fsencode(root)
        for dp, dns, fns in os.walk(broot):
            for n in dns + fns:
                p = os.path.join(dp, n)
                s = os.lstat(p)
                data = Path(os.fsdecode(p)).read_bytes() if stat.S_ISREG(s.st_mode) else (
                    os.readlink(p) if stat.S_ISLNK(s.st_mode) else b"")
                out[p[len(broot):]] = (s.st_mode, s.st_uid, s.st_gid, s.st_rdev, data,
                                       int(s.st_mtime))
        return out

    assert snap(ours) == snap(theirs)


def test_unpack_bounds_bytes_and_entries(tmp_path: Path) -> None:
    raw = tar_bytes([E("zeros", data=b"\0" * (4 << 20))] + [E(f"f{i}") for i in range(50)])
    blob, mt, did = write_layer(tmp_path / "bomb.tgz", raw)
    assert blob.stat().st_size < 64 << 10
    (tmp_path / "a").mkdir()
    with pytest.raises(UnpackError, match="more than 1048576 uncompressed bytes") as ei:
        unpack_layer(blob, mt, tmp_path / "a", expected_diff_id=did,
                     limits=UnpackLimits(max_bytes=1 << 20))
    assert ei.value.kind == "limit"
    (tmp_path / "b").mkdir()
    with pytest.raises(UnpackError, match="more than 10 entries"):
        unpack_layer(blob, mt, tmp_path / "b", expected_diff_id=did,
                     limits=UnpackLimits(max_entries=10))


def test_unpack_rejects_garbage_and_truncation(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"\x1f\x8bnot really gzip" * 100)
    (tmp_path / "a").mkdir()
    with pytest.raises(UnpackError, match="gzip"):
        unpack_layer(tmp_path / "junk", TAR, tmp_path / "a", expected_diff_id=None)
    raw = tar_bytes([E("big", data=os.urandom(200_000))])
    (tmp_path / "cut.tar").write_bytes(raw[:100_000])
    (tmp_path / "b").mkdir()
    with pytest.raises(UnpackError, match=r"truncated|unexpected end"):
        unpack_layer(tmp_path / "cut.tar", TAR, tmp_path / "b", expected_diff_id=None)


def test_unpack_same_layer_whiteout_does_not_hide_own_entry(tmp_path: Path) -> None:
    raw = tar_bytes([E("keep", data=b"k"), E(".wh.keep"), E("later", data=b"1"),
                     E("later", data=b"2"), E("d", tarfile.DIRTYPE), E("d", tarfile.SYMTYPE,
                                                                       linkname="later")])
    blob, mt, did = write_layer(tmp_path / "l.tar", raw, "none")
    (tmp_path / "fs").mkdir()
    unpack_layer(blob, mt, tmp_path / "fs", expected_diff_id=did)
    assert (tmp_path / "fs/keep").read_bytes() == b"k"
    assert (tmp_path / "fs/later").read_bytes() == b"2"
    assert os.readlink(tmp_path / "fs/d") == "later"
