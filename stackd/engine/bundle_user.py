"""Resolve a container's `user` (name, uid, user:group) and group_add through the image's /etc/passwd and /etc/group."""

from __future__ import annotations

import os
from dataclasses import dataclass

from stackd.engine.safe_open import read_in_root
from stackd.errors import EngineError


class UserError(EngineError):
    """A user or group of a container cannot be resolved in its image."""


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True, slots=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ResolvedUser:
    """What goes into OCI process.user (plus HOME for the environment)."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str = "/"
    name: str = ""


def _id(text: str) -> int | None:
    if text.isdigit():
        n = int(text)
        return n if n < 2**32 - 1 else None
    return None


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Entries of a passwd file; malformed lines are skipped as libc does."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split(":")
        if len(f) < 4:
            continue
        uid, gid = _id(f[2]), _id(f[3])
        if uid is None or gid is None:
            continue
        out.append(PasswdEntry(f[0], uid, gid, f[5] if len(f) > 5 else "", f[6] if len(f) > 6 else ""))
    return out


def parse_group(text: str) -> list[GroupEntry]:
    """Entries of a group file; malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split(":")
        if len(f) < 3:
            continue
        gid = _id(f[2])
        if gid is None:
            continue
        members = tuple(m for m in (f[3].split(",") if len(f) > 3 else []) if m)
        out.append(GroupEntry(f[0], gid, members))
    return out


@dataclass(frozen=True, slots=True)
class UserDb:
    """The passwd and group databases of one image (None when the file is absent)."""

    passwd: tuple[PasswdEntry, ...] | None
    group: tuple[GroupEntry, ...] | None

    @classmethod
    def from_rootfs(cls, rootfs: str | os.PathLike[str], image: str = "") -> UserDb:
        def load(path: str) -> str | None:
            try:
                data = read_in_root(rootfs, path)
            except OSError as e:
                raise UserError(f"image {image or rootfs}: cannot read {path}: {e.strerror or e}")
            return None if data is None else data.decode("utf-8", "replace")

        pw, gr = load("/etc/passwd"), load("/etc/group")
        return cls(None if pw is None else tuple(parse_passwd(pw)),
                   None if gr is None else tuple(parse_group(gr)))


def _find_user(db: UserDb, spec: str) -> PasswdEntry | None:
    for e in db.passwd or ():
        if e.name == spec:
            return e
    uid = _id(spec)
    if uid is not None:
        for e in db.passwd or ():
            if e.uid == uid:
                return e
    return None


def _find_group(db: UserDb, spec: str) -> GroupEntry | None:
    for g in db.group or ():
        if g.name == spec:
            return g
    gid = _id(spec)
    if gid is not None:
        for g in db.group or ():
            if g.gid == gid:
                return g
    return None


def _group_id(db: UserDb, spec: str, image: str, what: str) -> int:
    g = _find_group(db, spec)
    if g is not None:
        return g.gid
    gid = _id(spec)
    if gid is not None:
        return gid
    where = "no /etc/group file" if db.group is None else "no matching entries in /etc/group"
    raise UserError(f"unable to find {what} {spec!r} in image {image}: {where}")


def resolve_user(db: UserDb, user: str, group_add: tuple[str, ...] | list[str] = (),
                 *, image: str = "") -> ResolvedUser:
    """Docker's rules: `name|uid[:group|gid]`; numeric ids pass through when unknown (gid 0 then);
    supplementary groups come from /etc/group membership only when no group is given;
    the primary gid always leads additionalGids; group_add names resolve via /etc/group."""
    user = user.strip()
    uspec, _, gspec = user.partition(":")
    if not uspec:
        uspec = "0"
    entry = _find_user(db, uspec)
    if entry is None:
        uid = _id(uspec)
        if uid is None:
            where = "no /etc/passwd file" if db.passwd is None else "no matching entries in /etc/passwd"
            raise UserError(f"unable to find user {uspec!r} in image {image}: {where}")
        entry = PasswdEntry("", uid, 0, "/", "")
    gid = entry.gid
    sgids: list[int] = []
    if gspec:
        gid = _group_id(db, gspec, image, "group")
    elif entry.name:
        sgids = [g.gid for g in db.group or () if entry.name in g.members]
    sgids += [_group_id(db, g, image, "group_add group") for g in group_add]
    out = [gid]
    for g in sgids:
        if g not in out:
            out.append(g)
    return ResolvedUser(entry.uid, gid, tuple(out), entry.home or "/", entry.name)
