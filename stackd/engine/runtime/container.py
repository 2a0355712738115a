"""The container lifecycle: creating → created → running ⇄ paused → stopped, and its verbs.

`create` forks the container's process (see namespaces/process), which blocks on the exec fifo in
the state directory until `start` opens it (runc's idea). Status is derived like runc: the pid gone
(or another process with that pid) → stopped; the fifo present → created; frozen → paused.
"""

from __future__ import annotations

import os
import time

from stackd.engine.runtime.state import StateDir, proc_start_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from stackd.engine.runtime import namespaces, process
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

    def destroy(self, warn: Callable[[str], None], cg: object | None = None) -> None:
        """Run poststop hooks, kill what is left in the cgroup, remove it and the state directory."""
        if (self.data.get("hooks") or {}).get("poststop"):  # type: ignore[attr-defined]
            from stackd.engine.runtime import hooks

            try:
                hooks.run_hooks(self.data, "poststop", _dumps(self.oci_state("stopped")))
            except hooks.HookError as e:
                warn(str(e))
        cg = cg if cg is not None else self.cgroup()
        if cg is not None:
            for p in cg.pids():  # type: ignore[attr-defined]
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
            if self.data.get("paused") or cg.frozen():  # type: ignore[attr-defined]
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
          join: dict[str, str], time_offsets: dict[str, dict[str, int]] | None) -> tuple[int, int]:
    """Start the container process; return (stage 1's pid or 0, the container process's pid or 0).

    With nothing to join and no user or time namespace, the runtime forks the container process
    itself (after unsharing the pid namespace for its children, undone right after the fork),
    and the process unshares the other namespaces. Otherwise a stage-1 child enters or creates the
    namespaces in order (user first) and forks the container process, reporting its pid."""
    from stackd.engine.runtime import namespaces, process

    if not join and not launch.new & {"user", "time"}:
        pid = _fork_direct(sys, chan, launch)
        chan.parent_side()
        return 0, pid
    join_fds = namespaces.open_joins(join)
    try:
        pid1 = os.fork()
        if pid1 == 0:
            import gc

            gc.disable()  # short-lived: collections would only copy-on-write the parent's pages
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
    return pid1, 0


def _fork_direct(sys: Syscalls, chan: namespaces.Channel, launch: process.Launch) -> int:
    from stackd.engine.runtime import namespaces, process
    from stackd.engine.runtime import syscalls as sc

    own_pidns = -1
    if "pid" in launch.new:
        own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            sys.unshare(sc.CLONE_NEWPID)  # only our children's pid namespace changes
        except BaseException:
            os.close(own_pidns)
            raise
    try:
        pid = os.fork()
        if pid == 0:
            import gc

            gc.disable()  # short-lived: collections would only copy-on-write the parent's pages
            try:
                os.close(own_pidns)
                for fd in launch.close_in_child:
                    os.close(fd)
                chan.child_side()
                namespaces.enter_own(sys, chan, launch.new)
                process.container_main(launch, chan)
            finally:
                os._exit(1)
    finally:
        if own_pidns >= 0:
            try:
                sys.setns(own_pidns, sc.CLONE_NEWPID)  # later children (hooks, …) in our own again
            finally:
                os.close(own_pidns)
    return pid


def drive(chan: namespaces.Channel, pid1: int, linux: dict[str, object], cg: object | None,
          warn: Callable[[str], None], on_hooks: Callable[[int], str] | None = None,
          create_cgroup: bool = False, pid: int = 0, while_waiting: Callable[[], None] | None = None) -> int:
    """The parent's half of the handshake; return the container process's pid when it is ready.

    The container's cgroup is joined (and first made, with `create_cgroup`) when its pid arrives;
    the process waits for "go" before it unshares its cgroup namespace or mounts cgroups, and
    `while_waiting` runs right after that "go", while the process works."""
    from stackd.engine.runtime import cgroups_warm, namespaces

    def join(p: int) -> None:
        if cg is not None:
            if create_cgroup:
                cg.create()  # type: ignore[attr-defined]
            cg.add(p)  # type: ignore[attr-defined]
            cgroups_warm.reap()  # it has written by now, or is about to: our write needed its grace period
        chan.send("go")
        if while_waiting is not None:
            while_waiting()

    try:
        if pid:  # forked by us directly: its pid is known already
            join(pid)
        while True:
            kind, payload = chan.recv()
            if kind == "maps":
                namespaces.write_id_maps(int(payload), linux)  # type: ignore[call-overload]
                chan.send("go")
            elif kind == "pid":
                pid = int(payload)  # type: ignore[call-overload]
                os.waitpid(pid1, 0)
                pid1 = 0
                join(pid)
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
