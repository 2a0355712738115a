"""FastTarInfo parses every header exactly as tarfile does (or defers to tarfile)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from stackd.engine.unpack_header import FastTarInfo
from tests.engine.snapshots.conftest import E, tar_bytes
from tests.engine.snapshots.test_snap_malicious import NAMES, corpus


def members(raw: bytes, cls: type[tarfile.TarInfo]) -> list[dict[str, Any]] | str:
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", tarinfo=cls, errors="surrogateescape") as tf:
            out = []
            while (m := tf.next()) is not None:
                out.append({**m.get_info(), "pax": m.pax_headers, "offset": m.offset_data,
                            "sparse": m.sparse, "cls": type(m) is cls})
            return out
    except tarfile.TarError as e:
        return f"{type(e).__name__}: {e}"


def ustar_with_prefix() -> bytes:
    return tar_bytes([E("p" * 120 + "/" + "n" * 90, data=b"x")], fmt=tarfile.USTAR_FORMAT)


def big_ids() -> bytes:  # uid beyond 8 octal digits: GNU base-256
    return tar_bytes([E("big", data=b"x", uid=1 << 30, gid=7, mtime=2**40)], fmt=tarfile.GNU_FORMAT)


def rechecksum(raw: bytearray) -> bytes:
    """Fix the first header's checksum after editing it."""
    raw[148:156] = b"%06o\0 " % (256 + sum(raw[:148]) + sum(raw[156:512]))
    return bytes(raw)


def v7_dir() -> bytes:  # a directory written as a regular file with a trailing slash
    raw = bytearray(tar_bytes([E("olddir/", type=tarfile.AREGTYPE)], fmt=tarfile.USTAR_FORMAT))
    raw[156:157] = tarfile.AREGTYPE
    raw[257:265] = bytes(8)  # no ustar magic
    return rechecksum(raw)


def edited(offset: int, value: bytes) -> bytes:
    raw = bytearray(tar_bytes([E("x", data=b"y")], fmt=tarfile.USTAR_FORMAT))
    raw[offset:offset + len(value)] = value
    return rechecksum(raw)


SAMPLES: dict[str, bytes] = {
    "pax": tar_bytes([E("a" * 200, data=b"long"), E("d", tarfile.DIRTYPE, pax={"SCHILY.xattr.user.k": "v"}),
                      E("l", tarfile.SYMTYPE, linkname="t" * 150), E("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)]),
    "gnu-longnames": tar_bytes([E("g" * 300, data=b"x"), E("h" * 10, tarfile.LNKTYPE, linkname="g" * 300)],
                               fmt=tarfile.GNU_FORMAT),
    "ustar-prefix": ustar_with_prefix(),
    "base-256": big_ids(),
    "v7-dir": v7_dir(),
    "bad-checksum": b"\x01" * 512 + bytes(1024),
    "non-octal": edited(100, b"00006z4"),
    "spaces-in-numbers": edited(100, b" 644   "),
    "non-utf8-name": edited(0, b"\xe9"),
    "truncated": tar_bytes([E("x", data=b"y" * 2000)])[:700],
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_headers_parse_as_tarfile_does(name: str) -> None:
    want = members(SAMPLES[name], tarfile.TarInfo)
    assert members(SAMPLES[name], FastTarInfo) == want
    if name in ("pax", "gnu-longnames", "base-256"):
        assert isinstance(want, list) and want


@pytest.mark.parametrize("name", NAMES)
def test_malicious_corpus_parses_as_tarfile_does(name: str) -> None:
    raw, _check = corpus(Path("/outside"))[name]
    assert members(raw, FastTarInfo) == members(raw, tarfile.TarInfo)
