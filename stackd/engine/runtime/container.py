"""The container lifecycle: creating → created → running ⇄ paused → stopped, and its verbs.

`create` forks the container's process (see namespaces/process), which blocks on the exec fifo in
the state directory until `start` opens it (runc's idea). Status is derived like runc: the pid gone
(or another process with that pid) → stopped; the fifo present → created; frozen → paused.
"""

from __future__ import annotations

import os
import time

from stackd.engine.runtime import hooks, namespaces, process
from stackd.engine.runtime.state import StateDir, proc_start_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from stackd.engine.runtime.syscalls import Syscalls

OCI_VERSION = "1.2.0"
VERBS = {  # verb → states it is valid in
    "start": {"created"},
    "kill": {"created", "running", "paused"},
    "delete": {"created", "stopped"},
    "pause": {"running"},
    "resume": {"paused"},
    "exec": {"created", "running"},
    "ps": {"created", "running", "paused"},
}


def require(current: str, verb: str, cid: str) -> None:
    """Raise ContainerStateError(current, verb) unless `verb` is valid in `current`."""
    if current not in VERBS[verb]:
        from stackd.errors import ContainerStateError

        raise ContainerStateError(current, verb, cid)


def debug_log(msg: str) -> None:
    if os.environ.get("STACKD_RUNTIME_DEBUG"):
        os.write(2, f"stackd-runtime: debug: {msg}\n".encode())


def cgroups_module() -> object | None:
    try:
        from stackd.engine.runtime import cgroups
    except ImportError as e:
        debug_log(f"cgroups unavailable: {e}")
        return None
    return cgroups


def seccomp_module() -> object | None:
    try:
        from stackd.engine.runtime import seccomp
    except ImportError as e:
        debug_log(f"seccomp unavailable: {e}")
        return None
    return seccomp


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def wait_gone(pid: int, start_time: int, timeout: float) -> bool:
    """Wait until `pid` (with that start time) has exited or is a zombie."""
    deadline = time.monotonic() + timeout
    while True:
        st = proc_start_time(pid)
        if st is None or st[0] in "ZX" or st[1] != start_time:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)


class Container:
    """A container as the state directory records it."""

    def __init__(self, root: str, cid: str) -> None:
        self.sd = StateDir(root, cid)
        self.id = cid
        self.data = self.sd.load()

    @property
    def pid(self) -> int:
        return int(self.data.get("pid") or 0)  # type: ignore[call-overload, no-any-return]

    def cgroup(self) -> object | None:
        paths = self.data.get("cgroup_paths")
        mod = cgroups_module() if paths else None
        return mod.open_cgroup_from_paths(paths) if mod else None  # type: ignore[attr-defined]

    def status(self) -> str:
        d = self.data
        if d.get("status") == "creating":
            return "creating" if proc_start_time(int(d.get("creator") or 0)) else "stopped"  # type: ignore[call-overload]
        st = proc_start_time(self.pid) if self.pid else None
        if st is None or st[0] in "ZX" or st[1] != d.get("start_time"):
            return "stopped"
        if d.get("paused"):
            cg = self.cgroup()
            if cg is not None and cg.frozen():  # type: ignore[attr-defined]
                return "paused"
        return "created" if os.path.exists(self.sd.fifo) else "running"

    def oci_state(self, status: str | None = None) -> dict[str, object]:
        status = status or self.status()
        out: dict[str, object] = {
            "ociVersion": OCI_VERSION, "id": self.id, "status": status,
            "pid": self.pid if status != "stopped" else 0,
            "bundle": self.data.get("bundle"), "rootfs": self.data.get("rootfs"),
            "created": self.data.get("created"), "owner": "",
        }
        if self.data.get("annotations"):
            out["annotations"] = self.data["annotations"]
        for k in ("exitStatus", "oomKilled"):
            if k in self.data:
                out[k] = self.data[k]
        return out

    def save(self) -> None:
        self.sd.save(self.data)

    def signal(self, sig: int, all_processes: bool = False) -> None:
        cg = self.cgroup()
        pids = cg.pids() if (all_processes and cg is not None) else [self.pid]  # type: ignore[attr-defined]
        for p in pids or [self.pid]:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        if sig == 9 and self.data.get("paused") and cg is not None:
            cg.thaw()  # type: ignore[attr-defined]

    def destroy(self, warn: Callable[[str], None]) -> None:
        """Run poststop hooks, remove the cgroup and the state directory."""
        try:
            hooks.run_hooks(self.data, "poststop", _dumps(self.oci_state("stopped")))
        except hooks.HookError as e:
            warn(str(e))
        cg = self.cgroup()
        if cg is not None:
            for p in cg.pids():  # type: ignore[attr-defined]
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
            cg.thaw()  # type: ignore[attr-defined]
            cg.destroy()  # type: ignore[attr-defined]
        self.sd.remove()


def _dumps(obj: object) -> str:
    from stackd.engine.runtime.config import dumps

    return dumps(obj)


def _write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def spawn(sys: Syscalls, chan: namespaces.Channel, launch: process.Launch,
          join: dict[str, str], time_offsets: dict[str, dict[str, int]] | None) -> int:
    """Fork stage 1 (namespaces) which forks the container process; return stage 1's pid."""
    join_fds = namespaces.open_joins(join)
    try:
        pid1 = os.fork()
        if pid1 == 0:
            try:
                for fd in launch.close_in_child:
                    os.close(fd)
                chan.child_side()
                namespaces.stage1(sys, chan, launch.new, join_fds, time_offsets,
                                  lambda: process.container_main(launch, chan))
            finally:
                os._exit(1)
    finally:
        for fd in join_fds.values():
            os.close(fd)
    chan.parent_side()
    return pid1


def drive(chan: namespaces.Channel, pid1: int, linux: dict[str, object], cg: object | None,
          warn: Callable[[str], None], on_hooks: Callable[[int], str] | None = None) -> int:
    """The parent's half of the handshake; return the container process's pid when it is ready."""
    pid = 0
    try:
        while True:
            kind, payload = chan.recv()
            if kind == "maps":
                namespaces.write_id_maps(int(payload), linux)  # type: ignore[call-overload]
                chan.send("go")
            elif kind == "pid":
                pid = int(payload)  # type: ignore[call-overload]
                os.waitpid(pid1, 0)
                pid1 = 0
                if cg is not None:
                    cg.add(pid)  # type: ignore[attr-defined]
                chan.send("go")
            elif kind == "hooks":
                chan.send("go", on_hooks(pid) if on_hooks else "{}")
            elif kind == "warn":
                warn(str(payload))
            elif kind == "ready":
                return pid
            elif kind == "error":
                raise namespaces.ChildError(**payload)  # type: ignore[arg-type]
            else:
                raise namespaces.ChildError("init", "the container process exited before it was ready")
    except BaseException:
        if pid:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if pid1:
            os.kill(pid1, 9)
            os.waitpid(pid1, 0)
        raise
