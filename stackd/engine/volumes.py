"""Named volumes (local driver) under `<state_root>/volumes/`, copy-up, and bind/tmpfs mount data.

A volume is `<root>/volumes/<name>/_data` plus `volume.json` (its record) and `refs.json` (the
containers using it). `driver_opts` follow Docker's local driver: `type=tmpfs,device=tmpfs,
o=size=64m` or `type=none,o=bind,device=/path` are mounted on `_data` when the first container
uses the volume (`acquire`) and unmounted when the last one lets go (`release`).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stackd.engine import mounts
from stackd.engine.mounts import Mount, MountCalls
from stackd.errors import ConflictError, EngineError, NotFoundError, UsageError

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")


class VolumeError(EngineError):
    """A volume operation failed (bad options, a mount that failed)."""


@dataclass(frozen=True, slots=True)
class VolumeRecord:
    name: str
    driver: str
    mountpoint: str
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0
    anonymous: bool = False
    scope: str = "local"


class VolumeStore:
    """Volumes of one state root; `calls` performs mounts (real by default)."""

    def __init__(self, state_root: str | Path, *, calls: MountCalls | None = None) -> None:
        self.dir = Path(state_root) / "volumes"
        self.calls = calls

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _vdir(self, name: str) -> Path:
        return self.dir / name

    def _read(self, name: str) -> VolumeRecord:
        try:
            raw = json.loads((self._vdir(name) / "volume.json").read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"no such volume: {name}")
        return VolumeRecord(**raw)

    def _refs(self, name: str) -> builtins.list[str]:
        try:
            return list(json.loads((self._vdir(name) / "refs.json").read_text()))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _write_refs(self, name: str, refs: builtins.list[str]) -> None:
        _atomic(self._vdir(name) / "refs.json", json.dumps(sorted(set(refs))))

    # -- create / inspect / list / remove / prune --------------------------------------------
    def create(
        self,
        name: str = "",
        *,
        driver: str = "local",
        labels: Mapping[str, str] | None = None,
        driver_opts: Mapping[str, str] | None = None,
        anonymous: bool | None = None,
    ) -> VolumeRecord:
        """Create a volume (an existing one with the same driver and options is returned);
        a volume without a name is anonymous (also one named by the engine with `anonymous`)."""
        if driver != "local":
            raise UsageError(f"volume {name}: driver {driver!r} is not supported (only local)")
        opts = dict(driver_opts or {})
        _check_opts(name, opts)
        anonymous = not name if anonymous is None else anonymous
        name = name or secrets.token_hex(32)
        if not _NAME.match(name):
            raise UsageError(f"invalid volume name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        with self._locked():
            with contextlib.suppress(NotFoundError):
                old = self._read(name)
                if old.driver != driver or dict(old.options) != opts:
                    raise ConflictError(f"volume {name} already exists with different options")
                return old
            vdir = self._vdir(name)
            (vdir / "_data").mkdir(parents=True, exist_ok=True)
            os.chmod(vdir / "_data", 0o755)
            rec = VolumeRecord(name, driver, str(vdir / "_data"), dict(labels or {}), opts,
                               time.time(), anonymous)
            _atomic(vdir / "volume.json", json.dumps(asdict(rec)))
            return rec

    def inspect(self, name: str) -> VolumeRecord:
        return self._read(name)

    def list(self, *, label: Mapping[str, str] | None = None, dangling: bool | None = None) -> list[VolumeRecord]:
        """Volumes, filtered by labels (`key` or `key=value`, empty value: any) and use."""
        out: builtins.list[VolumeRecord] = []
        if not self.dir.is_dir():
            return out
        for entry in sorted(os.listdir(self.dir)):
            if entry.startswith("."):
                continue
            try:
                rec = self._read(entry)
            except NotFoundError:
                continue
            if label and any(k not in rec.labels or (v and rec.labels[k] != v) for k, v in label.items()):
                continue
            if dangling is not None and (not self._refs(entry)) != dangling:
                continue
            out.append(rec)
        return out

    def users(self, name: str) -> builtins.list[str]:
        self._read(name)
        return self._refs(name)

    def remove(self, name: str, *, force: bool = False) -> None:
        with self._locked():
            self._read(name)
            refs = self._refs(name)
            if refs and not force:
                raise ConflictError(f"volume {name} is in use by {', '.join(r[:12] for r in refs)}")
            data = self._vdir(name) / "_data"
            if mounts.is_mountpoint(data):
                mounts.unmount(data, detach=True, calls=self.calls)
            shutil.rmtree(self._vdir(name))

    def prune(self, *, all_: bool = False, label: Mapping[str, str] | None = None) -> builtins.list[str]:
        """Remove unused volumes: anonymous ones (Docker ≥ 23), or every unused one with `all_`."""
        gone = []
        for rec in self.list(label=label, dangling=True):
            if all_ or rec.anonymous:
                self.remove(rec.name)
                gone.append(rec.name)
        return gone

    # -- use by containers -------------------------------------------------------------------
    def acquire(self, name: str, container_id: str, *, copy_from: str = "", nocopy: bool = False) -> Mount:
        """Mark `name` used by the container, mount driver_opts devices, copy-up image content
        from `copy_from` (the rootfs dir at the mount target) into an empty volume, and return
        the bind mount data for the container's spec (target left to the caller)."""
        with self._locked():
            rec = self._read(name)
            refs = self._refs(name)
            data = Path(rec.mountpoint)
            if not refs and rec.options.get("type") and not mounts.is_mountpoint(data):
                mounts.mount(_device_mount(rec), data, calls=self.calls)
            self._write_refs(name, [*refs, container_id])
            if copy_from and not nocopy:
                copy_up(copy_from, data, self._vdir(name) / ".copied")
        return Mount("bind", rec.mountpoint, "", ("rbind",))

    def release(self, name: str, container_id: str) -> None:
        """The container no longer uses the volume; a device volume is unmounted when unused."""
        with self._locked():
            rec = self._read(name)
            refs = [r for r in self._refs(name) if r != container_id]
            self._write_refs(name, refs)
            data = Path(rec.mountpoint)
            if not refs and rec.options.get("type") and mounts.is_mountpoint(data):
                mounts.unmount(data, calls=self.calls)


    def release_container(self, container_id: str) -> builtins.list[str]:
        """`release` every volume the container uses (it may have no record any more); their names."""
        out: builtins.list[str] = []
        if not self.dir.is_dir():
            return out
        for entry in sorted(os.listdir(self.dir)):
            if not entry.startswith(".") and container_id in self._refs(entry):
                with contextlib.suppress(NotFoundError):
                    self.release(entry, container_id)
                    out.append(entry)
        return out


def _check_opts(name: str, opts: Mapping[str, str]) -> None:
    unknown = set(opts) - {"type", "device", "o"}
    if unknown:
        raise UsageError(f"volume {name}: unknown driver_opts {', '.join(sorted(unknown))}")
    if opts and ("type" not in opts or "device" not in opts):
        raise UsageError(f"volume {name}: driver_opts need both type and device")
    if opts.get("o") and "bind" in opts["o"].split(",") and not os.path.isabs(opts.get("device", "")):
        raise UsageError(f"volume {name}: a bind device must be an absolute path")


def _device_mount(rec: VolumeRecord) -> Mount:
    o = tuple(x for x in rec.options.get("o", "").split(",") if x)
    kind = rec.options["type"]
    if "bind" in o or kind == "none":
        if not os.path.isdir(rec.options["device"]):
            raise VolumeError(f"volume {rec.name}: bind device {rec.options['device']} does not exist")
        return Mount("bind", rec.options["device"], "", ("bind", *(x for x in o if x != "bind")))
    return Mount(kind, rec.options["device"], "", o)


def copy_up(source: str | Path, volume_data: str | Path, marker: str | Path) -> bool:
    """Copy the image's content at the mount point into an empty volume, once (Docker's
    behaviour); ownership, modes, times and symlinks are kept. True if anything was copied."""
    src, dst = Path(source), Path(volume_data)
    if Path(marker).exists() or not src.is_dir() or any(dst.iterdir()):
        return False
    st = src.stat()
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for d in dirnames:
            s, t = Path(dirpath) / d, dst / rel / d
            if s.is_symlink():
                os.symlink(os.readlink(s), t)
                os.lchown(t, s.lstat().st_uid, s.lstat().st_gid)
                continue
            t.mkdir()
            shutil.copystat(s, t)
            ds = s.stat()
            os.chown(t, ds.st_uid, ds.st_gid)
        for f in filenames:
            s, t = Path(dirpath) / f, dst / rel / f
            if s.is_symlink():
                os.symlink(os.readlink(s), t)
            else:
                shutil.copy2(s, t, follow_symlinks=False)
            fs = s.lstat()
            os.lchown(t, fs.st_uid, fs.st_gid)
    Path(marker).touch()
    return True


# -- bind and tmpfs mounts as data ------------------------------------------------------------
def bind_mount(
    source: str,
    target: str,
    *,
    read_only: bool = False,
    propagation: str = "",
    create_host_path: bool = True,
    selinux: str = "",
) -> Mount:
    """A bind mount; a missing host directory is created when allowed (short syntax always)."""
    if not os.path.isabs(source):
        raise UsageError(f"bind mount source {source!r} must be an absolute path")
    if selinux:
        warnings.warn(f"bind mount {source}: SELinux relabel flag {selinux!r} ignored (no SELinux)",
                      stacklevel=2)
    if not os.path.exists(source):
        if not create_host_path:
            raise NotFoundError(f"bind mount source path does not exist: {source}")
        os.makedirs(source, exist_ok=True)
    if propagation and propagation not in PROPAGATIONS:
        raise UsageError(f"invalid bind propagation {propagation!r}")
    opts = ["rbind", "ro" if read_only else "rw", propagation or "rprivate"]
    return Mount("bind", source, target, tuple(opts))


def tmpfs_mount(target: str, *, size: int | str = 0, mode: int | None = None, read_only: bool = False) -> Mount:
    """A tmpfs with size (bytes or `64m`) and mode as mount data (nosuid, nodev as Docker)."""
    opts = ["nosuid", "nodev"]
    if read_only:
        opts.append("ro")
    if size:
        opts.append(f"size={size}")
    if mode is not None:
        opts.append(f"mode={mode:o}")
    return Mount("tmpfs", "tmpfs", target, tuple(opts))


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """One `volumes:` short-syntax entry parsed: type volume|bind, source ("" anonymous)."""

    type: str
    source: str
    target: str
    read_only: bool = False
    selinux: str = ""
    nocopy: bool = False
    propagation: str = ""


def parse_short(spec: str) -> VolumeSpec:
    """`[SOURCE:]TARGET[:MODE]`: an absolute or ./ source is a bind, else a named volume."""
    parts = spec.split(":")
    if len(parts) == 1:
        return VolumeSpec("volume", "", parts[0])
    if len(parts) > 3:
        raise UsageError(f"invalid volume spec {spec!r}")
    source, target = parts[0], parts[1]
    modes = parts[2].split(",") if len(parts) == 3 else []
    ro = False
    selinux = nocopy_ = ""
    propagation = ""
    for m in modes:
        if m in ("ro", "rw"):
            ro = m == "ro"
        elif m in ("z", "Z"):
            selinux = m
        elif m == "nocopy":
            nocopy_ = "1"
        elif m in PROPAGATIONS:
            propagation = m
        elif m:
            raise UsageError(f"invalid volume spec {spec!r}: unknown mode {m!r}")
    if not target.startswith("/"):
        raise UsageError(f"invalid volume spec {spec!r}: the target must be an absolute path")
    kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
    return VolumeSpec(kind, source, target, ro, selinux, bool(nocopy_), propagation)


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
