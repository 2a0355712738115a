"""Container cgroups: find the hierarchies (v1, hybrid, v2), create, join, limit, freeze, remove.

The public entry points are `open_cgroup` and `open_cgroup_from_paths`; resource writing lives in
`cgroups_v1` / `cgroups_v2`. Every file access goes through a `CgroupFS` (the real one in cgroups_layout, or
`cgroups_fake.FakeCgroupFS`), so the logic runs against a fake tree in unit tests. Warnings go to
the `warn` callback (default: stderr); errors raise `RuntimeSpecError` naming the file and errno.
"""

from __future__ import annotations

import errno as _errno
import os
import time

from stackd.engine.runtime.cgroups_layout import (
    ROOT,
    UNIFIED,
    WAIT_S,
    Layout,
    RealFS,
    detect,
    fs_error,
    resolve,
    stderr_warn,
    under_mount,
)
from stackd.errors import RuntimeSpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from stackd.engine.runtime.cgroups_layout import CgroupFS, Warn
SIGKILL = 9

__all__ = ["ROOT", "UNIFIED", "Cgroup", "RealFS", "detect", "open_cgroup", "open_cgroup_from_paths"]


def open_cgroup(
    cgroups_path: str | None,
    container_id: str,
    *,
    root: str = ROOT,
    fs: CgroupFS | None = None,
    warn: Warn | None = None,
) -> Cgroup:
    """The container's cgroup (not created yet): OCI linux.cgroupsPath, absolute, relative or systemd."""
    fs = fs or RealFS()
    layout = detect(fs, root)
    rel = resolve(cgroups_path, container_id, fs)
    paths: dict[str, str] = {}
    for ctrl, mnt in layout.v1.items():
        paths[ctrl] = mnt + under_mount(layout, mnt, rel.get(ctrl, rel["*"]))
    if layout.unified:
        paths[UNIFIED] = layout.unified + under_mount(layout, layout.unified, rel.get(UNIFIED, rel["*"]))
    return Cgroup(paths, fs=fs, root=root, warn=warn, layout=layout)


def open_cgroup_from_paths(
    paths: dict[str, str], *, root: str = ROOT, fs: CgroupFS | None = None, warn: Warn | None = None
) -> Cgroup:
    """Reopen a cgroup recorded with `Cgroup.paths()` (e.g. from state.json)."""
    cg = Cgroup(dict(paths), fs=fs or RealFS(), root=root, warn=warn)
    cg._detect = True  # the layout is read only if an operation needs it (most need only the paths)
    return cg


class Cgroup:
    """One container's cgroup across all hierarchies; `paths` maps controller ("" = cgroup2) → dir."""

    def __init__(
        self,
        paths: dict[str, str],
        *,
        fs: CgroupFS,
        root: str = ROOT,
        warn: Warn | None = None,
        layout: Layout | None = None,
    ) -> None:
        self._paths = paths
        self.fs = fs
        self.root = root
        self.warnings: list[str] = []
        self._warn_sink = warn or stderr_warn
        self._created: list[str] = []
        self._layout = layout
        self._detect = False
        v1 = {k: v for k, v in paths.items() if k != UNIFIED}
        self.unified = paths.get(UNIFIED)
        self.v1 = v1
        self.mode = ("hybrid" if self.unified else "v1") if v1 else "v2"

    # -- small helpers -------------------------------------------------------------------------
    def layout(self) -> Layout | None:
        """The hierarchies' mounts (read from mountinfo on first use for a reopened cgroup)."""
        if self._detect:
            self._detect = False
            try:
                self._layout = detect(self.fs, self.root)
            except RuntimeSpecError:
                self._layout = None
        return self._layout

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self._warn_sink(message)

    def read(self, path: str) -> str:
        try:
            return self.fs.read(path)
        except OSError as e:
            raise fs_error("read", path, e)

    def write(self, path: str, value: object) -> None:
        try:
            self.fs.write(path, str(value))
        except OSError as e:
            raise fs_error(f"write {str(value)!r} to", path, e)

    def has(self, path: str) -> bool:
        return self.fs.exists(path)

    def dirs(self) -> list[str]:
        """Every distinct directory of this cgroup (co-mounted controllers share one)."""
        return list(dict.fromkeys(self._paths.values()))

    def paths(self) -> dict[str, str]:
        return dict(self._paths)

    def v2_controllers(self) -> set[str]:
        layout = self.layout()
        if layout is not None:
            return layout.v2_controllers
        if not self.unified:
            return set()
        mount = self._mount_of(self.unified)
        try:
            return set(self.fs.read(f"{mount}/cgroup.controllers").split())
        except OSError:
            return set()

    def _mount_of(self, path: str) -> str:
        layout = self.layout()
        if layout is not None and layout.unified and path.startswith(layout.unified):
            return layout.unified
        if self.mode == "v2":
            return self.root
        return self.root + "/unified" if path.startswith(self.root + "/unified") else self.root

    # -- lifecycle -----------------------------------------------------------------------------
    def create(self) -> None:
        """Make every directory (recording which ones are new), seed cpuset, enable v2 controllers."""
        for ctrl, path in self._paths.items():
            mount = self._mount_for(ctrl, path)
            chain = []
            p = path
            while p != mount and len(p) > len(mount):
                chain.append(p)
                p = os.path.dirname(p)
            for d in reversed(chain):
                if ctrl == UNIFIED:
                    self._enable_subtree(os.path.dirname(d))
                if self.fs.exists(d):
                    continue
                try:
                    self.fs.mkdir(d)
                except FileExistsError:
                    continue
                except OSError as e:
                    raise fs_error("mkdir", d, e)
                if d not in self._created:
                    self._created.append(d)
                if ctrl == "cpuset":
                    self._seed_cpuset(d)

    def _mount_for(self, ctrl: str, path: str) -> str:
        layout = self.layout()
        if layout is not None:
            m = layout.unified if ctrl == UNIFIED else layout.v1.get(ctrl)
            if m:
                return m
        return self._mount_of(path) if ctrl == UNIFIED else f"{self.root}/{ctrl}"

    def _seed_cpuset(self, d: str) -> None:
        parent = os.path.dirname(d)
        for f in ("cpuset.cpus", "cpuset.mems"):
            if self.has(f"{d}/{f}") and not self.read(f"{d}/{f}").strip():
                self.write(f"{d}/{f}", self.read(f"{parent}/{f}").strip())

    def _enable_subtree(self, d: str) -> None:
        """Delegate every available controller from `d` to its children (cgroup2)."""
        try:
            have = set(self.fs.read(f"{d}/cgroup.controllers").split())
            on = set(self.fs.read(f"{d}/cgroup.subtree_control").split())
        except OSError:
            return
        for c in sorted(have - on):
            try:
                self.fs.write(f"{d}/cgroup.subtree_control", f"+{c}")
            except OSError as e:
                self.warn(f"cgroup: cannot enable controller {c} in {d}/cgroup.subtree_control ({_errno.errorcode.get(e.errno or 0, e.errno)})")

    def add(self, pid: int) -> None:
        """Move `pid` into this cgroup in every hierarchy."""
        for d in self.dirs():
            self.write(f"{d}/cgroup.procs", pid)

    def _procs_dir(self) -> str:
        for c in ("pids", "freezer", "memory", "cpu"):
            if c in self.v1:
                return self.v1[c]
        return self.unified or next(iter(self._paths.values()))

    def pids(self) -> list[int]:
        """Every process in the cgroup and its sub-cgroups."""
        out: list[int] = []
        stack = [self._procs_dir()]
        while stack:
            d = stack.pop()
            try:
                text = self.fs.read(f"{d}/cgroup.procs")
                stack.extend(self.fs.subdirs(d))
            except FileNotFoundError:
                continue
            except OSError as e:
                raise fs_error("read", f"{d}/cgroup.procs", e)
            out.extend(int(x) for x in text.split())
        return sorted(set(out))

    def destroy(self) -> None:
        """Remove the cgroup (and sub-cgroups) bottom-up in every hierarchy; fine if already gone."""
        for d in self.dirs():
            self._rmtree(d)
        for d in sorted(self._created, key=len, reverse=True):
            try:
                self.fs.rmdir(d)
            except OSError as e:
                if e.errno not in (_errno.ENOENT, _errno.EBUSY, _errno.ENOTEMPTY):
                    raise fs_error("rmdir", d, e)
        self._created.clear()

    def _rmtree(self, d: str) -> None:
        try:  # the common case first: an empty leaf
            self.fs.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass
        try:
            children = self.fs.subdirs(d)
        except FileNotFoundError:
            return
        except OSError as e:
            raise fs_error("list", d, e)
        for c in children:
            self._rmtree(c)
        deadline = time.monotonic() + WAIT_S
        delay = 0.001
        while True:
            try:
                self.fs.rmdir(d)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno not in (_errno.EBUSY, _errno.ENOTEMPTY) or time.monotonic() > deadline:
                    raise fs_error("rmdir", d, e)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # -- resources, freezer, events: per version ---------------------------------------------------
    def apply(self, resources: dict[str, Any]) -> None:
        """Write OCI linux.resources into the cgroup files.

        Device rules start from deny-all and end with the OCI default devices allowed (as runc);
        the runtime adds `cgroups_v1.allow_rules(linux.devices)` to `devices` for extra nodes.
        """
        if self.mode == "v2":
            from stackd.engine.runtime import cgroups_v2

            cgroups_v2.apply(self, self.unified or "", resources or {})
        else:
            from stackd.engine.runtime import cgroups_v1

            cgroups_v1.apply(self, resources or {})

    def preload(self) -> None:
        """Import the module `apply` will use (the runtime does it while it waits anyway)."""
        if self.mode == "v2":
            from stackd.engine.runtime import cgroups_v2  # noqa: F401
        else:
            from stackd.engine.runtime import cgroups_v1  # noqa: F401

    def _freezer(self) -> tuple[str, str, str, str]:
        """(state file, freeze value, thaw value, kind) for whichever freezer exists."""
        if "freezer" in self.v1:
            return f"{self.v1['freezer']}/freezer.state", "FROZEN", "THAWED", "v1"
        if self.unified:
            return f"{self.unified}/cgroup.freeze", "1", "0", "v2"
        raise RuntimeSpecError("cgroup: no freezer: neither the v1 freezer nor cgroup2 is mounted")

    def _freezer_state(self) -> str:
        path, _, _, kind = self._freezer()
        if kind == "v1":
            return self.read(path).strip()
        events = self.read(os.path.dirname(path) + "/cgroup.events")
        for line in events.splitlines():
            k, _, v = line.partition(" ")
            if k == "frozen":
                return "FROZEN" if v.strip() == "1" else "THAWED"
        return "FROZEN" if self.read(path).strip() == "1" else "THAWED"

    def _set_frozen(self, frozen: bool) -> None:
        path, on, off, _ = self._freezer()
        want = "FROZEN" if frozen else "THAWED"
        deadline = time.monotonic() + WAIT_S
        delay = 0.0005
        while True:
            self.write(path, on if frozen else off)
            if self._freezer_state() == want:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        if frozen:  # do not leave it half frozen
            try:
                self.write(path, off)
            except RuntimeSpecError:
                pass
        raise RuntimeSpecError(f"cgroup: {path}: the cgroup did not become {want} within {WAIT_S:.0f}s")

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def frozen(self) -> bool:
        try:
            return self._freezer_state() == "FROZEN"
        except RuntimeSpecError:
            if not any(self.fs.exists(d) for d in self.dirs()):
                return False
            raise

    def oom_killed(self) -> bool:
        """Did the kernel OOM-kill a process of this cgroup?"""
        from stackd.engine.runtime import cgroups_v1, cgroups_v2

        if "memory" in self.v1:
            return cgroups_v1.oom_killed(self)
        if self.unified:
            return cgroups_v2.oom_killed(self, self.unified)
        return False

    def stats(self) -> dict[str, Any]:
        """memory usage/limit, cpu usage (ns), pids current/limit, like `docker stats` shows."""
        from stackd.engine.runtime import cgroups_v1, cgroups_v2

        if self.mode == "v2":
            return cgroups_v2.stats(self, self.unified or "")
        return cgroups_v1.stats(self)

    def kill_all(self, sig: int) -> None:
        """Signal every process: freeze (so none forks away), signal, then thaw (never hangs)."""
        if sig == SIGKILL and self.unified and self.has(f"{self.unified}/cgroup.kill"):
            self.write(f"{self.unified}/cgroup.kill", 1)
            # Thaw whatever the events say: a frozen task dies only once thawed, and a cgroup
            # left with cgroup.freeze=1 reads "frozen" again as soon as it is empty.
            try:
                self.thaw()
            except RuntimeSpecError:
                pass
            return
        try:
            self.freeze()
        except RuntimeSpecError:
            pass  # best effort: still signal and thaw
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            try:
                self.thaw()
            except RuntimeSpecError:
                pass
