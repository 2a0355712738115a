"""A container's volumes: named and anonymous volumes resolved, acquired with copy-up, released on remove.

At create, `prepare` copies `volumes_from` mounts, adds an anonymous volume for each image
`Volumes` path no mount covers, and gives every volume mount its name and host directory
(`<state_root>/volumes/<name>/_data`), so the record says everything. When the rootfs is
mounted, `acquire` creates missing volumes, marks them used and copies the image's content
into an empty volume (unless `nocopy`). `release` lets go of them all; `rm -v` also removes the
container's anonymous volumes. Markers in MountConfig.options (`nocopy`, `anonymous`) are not
mount options and are stripped from what the bundle gets.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from typing import TYPE_CHECKING

from stackd.engine.container_config import ContainerConfig, MountConfig
from stackd.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from stackd.engine.containers import ContainerManager
    from stackd.engine.containers_store import ContainerRecord

NOCOPY = "nocopy"
ANONYMOUS = "anonymous"
MARKERS = (NOCOPY, ANONYMOUS)


def _norm(target: str) -> str:
    return os.path.normpath(target) if target.startswith("/") else target


def prepare(mgr: ContainerManager, cfg: ContainerConfig) -> ContainerConfig:
    mounts = list(cfg.mounts)
    targets = {_norm(m.target) for m in mounts} | {_norm(t) for t in cfg.tmpfs}
    for spec in cfg.volumes_from:
        ref, _, mode = spec.partition(":")
        if mode not in ("", "ro", "rw"):
            raise UsageError(f"invalid volumes_from {spec!r}: the mode must be ro or rw")
        other = mgr.store.resolve(ref)
        for m in other.config.mounts:
            if m.type == "tmpfs" or _norm(m.target) in targets:
                continue
            ro = m.read_only if not mode else mode == "ro"
            opts = tuple(o for o in m.options if o != ANONYMOUS)
            if m.type == "volume":
                opts = (*opts, NOCOPY) if NOCOPY not in opts else opts
            mounts.append(dataclasses.replace(m, read_only=ro, options=opts))
            targets.add(_norm(m.target))
    for path in cfg.image_config.volumes:
        if _norm(path) not in targets:
            mounts.append(MountConfig(type="volume", target=path))
            targets.add(_norm(path))
    root = mgr.state_root / "volumes"
    out = []
    for m in mounts:
        if m.type == "volume":
            name = m.name or (m.source if m.source and not os.path.isabs(m.source) else "")
            opts = m.options
            if not name:
                name, opts = secrets.token_hex(32), (*opts, ANONYMOUS)
            m = dataclasses.replace(m, name=name, source=str(root / name / "_data"), options=opts)
        out.append(m)
    return dataclasses.replace(cfg, mounts=tuple(out))


def _inside(rootfs: str, target: str) -> str:
    """The image's directory at `target`, if it resolves inside the rootfs ("" otherwise)."""
    real_root = os.path.realpath(rootfs)
    path = os.path.realpath(os.path.join(real_root, target.lstrip("/")))
    return path if path.startswith(real_root + os.sep) and os.path.isdir(path) else ""


def acquire(mgr: ContainerManager, rec: ContainerRecord, rootfs: str, cfg: ContainerConfig) -> ContainerConfig:
    """Create, mark used and copy up the volumes; returns `cfg` with the markers stripped."""
    store = mgr.volumes
    out = []
    for m in cfg.mounts:
        if m.type == "volume":
            anonymous = ANONYMOUS in m.options
            try:
                vol = store.inspect(m.name)
            except NotFoundError:
                vol = store.create(m.name, anonymous=anonymous)
            src = _inside(rootfs, m.target)
            store.acquire(m.name, rec.id, copy_from=src, nocopy=NOCOPY in m.options)
            m = dataclasses.replace(m, source=vol.mountpoint)
        if any(o in MARKERS for o in m.options):
            m = dataclasses.replace(m, options=tuple(o for o in m.options if o not in MARKERS))
        out.append(m)
    return dataclasses.replace(cfg, mounts=tuple(out))


def release(mgr: ContainerManager, cid: str, *, remove_anonymous: bool = False) -> list[str]:
    """The container no longer uses any volume; with `remove_anonymous` its unused anonymous ones go."""
    if not (mgr.state_root / "volumes").is_dir():
        return []
    store = mgr.volumes
    names = store.release_container(cid)
    gone = []
    if remove_anonymous:
        for name in names:
            try:
                if store.inspect(name).anonymous and not store.users(name):
                    store.remove(name)
                    gone.append(name)
            except NotFoundError:
                continue
    return gone
