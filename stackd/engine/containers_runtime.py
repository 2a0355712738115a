"""The OCI runtime as the manager uses it directly (pause, resume, ps, delete, list) and cgroup stats.

The shim drives create/start/kill/exec; the manager needs the runtime only for verbs the shim
does not serve and for cleaning up after a crash. The runtime is chosen by name or path:
`stackd-runtime` (our own, beside the interpreter), `runc`, `crun`, or any runc-compatible CLI.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from stackd.errors import EngineError

CGROUP_ROOT = Path("/sys/fs/cgroup")
KNOWN = ("stackd-runtime", "runc", "crun")


def resolve_runtime(name: str) -> str:
    """An absolute path for runtime `name` (a path is kept as is)."""
    if os.sep in name:
        if not os.access(name, os.X_OK):
            raise EngineError(f"runtime {name}: not an executable file")
        return name
    if name == "stackd-runtime":
        beside = Path(sys.executable).parent / "stackd-runtime"
        if os.access(beside, os.X_OK):
            return str(beside)
    found = shutil.which(name)
    if found is None:
        raise EngineError(f"runtime {name!r} not found in PATH (known runtimes: {', '.join(KNOWN)})")
    return found


@dataclass(frozen=True)
class Runtime:
    """One runtime binary with its state directory (`--root`)."""

    name: str
    path: str
    root: str

    @classmethod
    def for_name(cls, name: str, run_root: Path) -> Runtime:
        path = resolve_runtime(name)
        return cls(os.path.basename(name) if os.sep in name else name, path,
                   str(Path(run_root) / "runtime" / os.path.basename(path)))

    def argv(self, *args: str) -> list[str]:
        return [self.path, "--root", self.root, *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        res = subprocess.run(self.argv(*args), capture_output=True, check=False)
        if check and res.returncode != 0:
            msg = res.stderr.decode(errors="replace").strip() or f"exit status {res.returncode}"
            raise EngineError(f"{self.name} {args[0]} failed: {msg}")
        return res

    @property
    def library(self) -> bool:
        """Our own runtime: its verbs may run in-process (`runtime.api`, no interpreter start)."""
        return os.path.basename(self.path) == "stackd-runtime"

    def state(self, cid: str) -> dict[str, object] | None:
        if self.library:
            from stackd.engine.runtime import api

            try:
                return api.state(self.root, cid)
            except Exception:  # unknown to the runtime (or unreadable), as the CLI's failure
                return None
        res = self.run("state", cid, check=False)
        if res.returncode != 0:
            return None
        try:
            obj = json.loads(res.stdout)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    def pause(self, cid: str) -> None:
        self.run("pause", cid)

    def resume(self, cid: str) -> None:
        self.run("resume", cid)

    def delete(self, cid: str) -> None:
        """`delete --force`, best effort (nothing to delete is not an error here)."""
        if self.library:
            from stackd.engine.runtime import api

            if os.path.isdir(os.path.join(self.root, cid)):
                with contextlib.suppress(Exception):
                    api.delete(self.root, cid, force=True, warn=_quiet)
            return
        self.run("delete", "--force", cid, check=False)

    def kill_all(self, cid: str, sig: int = 9) -> None:
        if self.library:
            from stackd.engine.runtime import api

            with contextlib.suppress(Exception):
                api.kill(self.root, cid, sig, all_processes=True)
            return
        self.run("kill", "--all", cid, str(sig), check=False)

    def ps(self, cid: str) -> list[int]:
        res = self.run("ps", "--format", "json", cid)
        try:
            pids = json.loads(res.stdout or b"[]")
        except ValueError:
            raise EngineError(f"{self.name} ps: unexpected output {res.stdout[:100]!r}")
        return [int(p) for p in pids or []]

    def list(self) -> list[str]:
        if not os.path.isdir(self.root):
            return []
        res = self.run("list", "--format", "json", check=False)
        try:
            items = json.loads(res.stdout or b"[]") or []
        except ValueError:
            return []
        return [str(i.get("id")) for i in items if isinstance(i, dict)]


def _quiet(_msg: str) -> None:
    """The runtime's warnings from an in-process call (the CLI's stderr is not shown either)."""


# --- cgroups ----------------------------------------------------------------------------------

@functools.cache
def _controller_dirs(root: Path) -> tuple[Path, ...]:
    """The hierarchies mounted under `root` (cached: they do not change while a process runs)."""
    try:
        return tuple(Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False))
    except OSError:
        return ()


def cgroup_dirs(cgroups_path: str) -> list[Path]:
    """Every directory a container's cgroupsPath may have (v1 controllers, unified, or pure v2)."""
    rel = cgroups_path.lstrip("/")
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT / rel]
    return [p / rel for p in _controller_dirs(CGROUP_ROOT)]


def remove_cgroup(cgroups_path: str) -> list[str]:
    """rmdir the container's cgroup directories (deepest first); returns those left behind."""
    left = []
    for d in cgroup_dirs(cgroups_path):
        try:
            os.rmdir(d)  # the usual case: an empty leaf, or already gone
            continue
        except FileNotFoundError:
            continue
        except OSError:
            pass
        if not d.is_dir():
            continue
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            d.rmdir()
        except OSError:
            left.append(str(d))
    return left


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _int(text: str) -> int:
    try:
        return int(text.split()[0]) if text and text.split()[0] != "max" else 0
    except ValueError:
        return 0


def cgroup_stats(cgroups_path: str) -> dict[str, int]:
    """Memory, CPU and pids counters from the cgroup files (v1 or v2)."""
    rel = cgroups_path.lstrip("/")
    out = {"memory_usage": 0, "memory_limit": 0, "cpu_usage_ns": 0, "pids": 0}
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        d = CGROUP_ROOT / rel
        out["memory_usage"] = _int(_read(d / "memory.current"))
        out["memory_limit"] = _int(_read(d / "memory.max"))
        for line in _read(d / "cpu.stat").splitlines():
            if line.startswith("usage_usec"):
                out["cpu_usage_ns"] = _int(line.split()[1]) * 1000
        out["pids"] = _int(_read(d / "pids.current"))
        return out
    mem = CGROUP_ROOT / "memory" / rel
    out["memory_usage"] = _int(_read(mem / "memory.usage_in_bytes"))
    stat = {k: v for k, v in (ln.split() for ln in _read(mem / "memory.stat").splitlines() if " " in ln)}
    out["memory_usage"] -= _int(stat.get("total_inactive_file", "0"))  # as docker reports it
    out["memory_usage"] = max(out["memory_usage"], 0)
    limit = _int(_read(mem / "memory.limit_in_bytes"))
    out["memory_limit"] = 0 if limit >= 1 << 62 else limit
    for ctl in ("cpuacct", "cpu,cpuacct", "cpu"):
        v = _read(CGROUP_ROOT / ctl / rel / "cpuacct.usage")
        if v:
            out["cpu_usage_ns"] = _int(v)
            break
    out["pids"] = _int(_read(CGROUP_ROOT / "pids" / rel / "pids.current"))
    return out
