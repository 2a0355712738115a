"""A faster tar header parser: tarfile's TarInfo with `frombuf` done in fewer Python steps.

tarfile parses each 512-byte header field by field through small helper functions, about half of
the per-entry cost of unpacking (a pax-format layer has two headers per entry). This subclass
parses the common headers (ustar, GNU, pax-announced) with one struct unpack and falls back to
tarfile's own parser for anything else (base-256 numbers, old GNU sparse, signed checksums, bad
headers), so the result, including errors, is tarfile's.
"""

from __future__ import annotations

import struct
import tarfile
from typing import Any

_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12x")
_GNU_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.GNUTYPE_SPARSE)


def _num(field: bytes | bytearray) -> int:
    end = field.find(b"\0")
    if end != -1:
        field = field[:end]
    return int(field.strip() or b"0", 8)


def _str(field: bytes, encoding: str, errors: str) -> str:
    end = field.find(b"\0")
    return (field if end == -1 else field[:end]).decode(encoding, errors)


class FastTarInfo(tarfile.TarInfo):
    """tarfile.TarInfo with a faster `frombuf` (the same result)."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Any:
        if len(buf) != tarfile.BLOCKSIZE or buf[156:157] == tarfile.GNUTYPE_SPARSE:
            return super().frombuf(buf, encoding, errors)
        (name, mode, uid, gid, size, mtime, chksum, typ, linkname, _magic, _version, uname, gname,
         devmajor, devminor, prefix) = _HEADER.unpack(buf)
        numbers = (mode, uid, gid, size, mtime, chksum, devmajor, devminor)
        if any(f[:1] in (b"\x80", b"\xff") for f in numbers):  # base-256: tarfile's nti
            return super().frombuf(buf, encoding, errors)
        try:
            check = _num(chksum)
            if check != sum(buf) - sum(buf[148:156]) + 256:  # unsigned; tarfile also tries signed
                return super().frombuf(buf, encoding, errors)
            obj = cls()
            obj.name = _str(name, encoding, errors)
            obj.mode = _num(mode)
            obj.uid = _num(uid)
            obj.gid = _num(gid)
            obj.size = _num(size)
            obj.mtime = _num(mtime)
            obj.devmajor = _num(devmajor)
            obj.devminor = _num(devminor)
        except ValueError:
            return super().frombuf(buf, encoding, errors)  # raises tarfile's error
        obj.chksum = check
        obj.type = typ
        obj.linkname = _str(linkname, encoding, errors)
        obj.uname = _str(uname, encoding, errors)
        obj.gname = _str(gname, encoding, errors)
        if typ == tarfile.AREGTYPE and obj.name.endswith("/"):
            obj.type = tarfile.DIRTYPE
        if obj.type == tarfile.DIRTYPE:
            obj.name = obj.name.rstrip("/")
        pre = _str(prefix, encoding, errors)
        if pre and obj.type not in _GNU_TYPES:
            obj.name = pre + "/" + obj.name
        return obj
