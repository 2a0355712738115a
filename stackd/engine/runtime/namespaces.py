"""Enter the container's namespaces in the right order (user first) and fork its first process.

The parent forks a stage-1 child that joins (setns by path) or creates (unshare) the namespaces,
then forks the container's process (pid 1 of a new pid namespace) and reports its pid over a
`Channel`. ID maps of a new user namespace are written by the parent while stage 1 waits.
"""

from __future__ import annotations

import os

from stackd.engine.runtime import syscalls as sc
from stackd.engine.runtime.config import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from stackd.engine.runtime.syscalls import Syscalls

JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "time", "cgroup", "mount")


class ChildError(Exception):
    """An error reported by a runtime child: the step, the message and the errno."""

    def __init__(self, step: str, message: str, errno: int = 0) -> None:
        self.step, self.message, self.errno = step, message, errno
        super().__init__(f"{step}: {message}" + (f" (errno {errno})" if errno else ""))


class Channel:
    """Line messages between the runtime and its children over two CLOEXEC pipes."""

    def __init__(self) -> None:
        self.r_parent, self.w_child = os.pipe()  # child → parent
        self.r_child, self.w_parent = os.pipe()  # parent → child
        self._buf = b""
        self.is_child = False

    def child_side(self) -> None:
        os.close(self.r_parent)
        os.close(self.w_parent)
        self.is_child = True

    def parent_side(self) -> None:
        os.close(self.r_child)
        os.close(self.w_child)

    def send(self, kind: str, payload: object = None) -> None:
        fd = self.w_child if self.is_child else self.w_parent
        try:
            os.write(fd, (kind + " " + dumps(payload) + "\n").encode())
        except BrokenPipeError:
            if self.is_child:
                raise  # the parent is gone
            # the child died: its error message (or EOF) is what the next recv() reports

    def recv(self) -> tuple[str, object]:
        """The next message; ("eof", None) when the other side closed."""
        fd = self.r_child if self.is_child else self.r_parent
        while b"\n" not in self._buf:
            chunk = os.read(fd, 65536)
            if not chunk:
                return "eof", None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        kind, _, payload = line.decode().partition(" ")
        return kind, loads(payload)

    def expect(self, kind: str) -> object:
        got, payload = self.recv()
        if got == "error":
            raise ChildError(**payload)  # type: ignore[arg-type]
        if got != kind:
            raise ChildError("sync", f"expected {kind!r} from the other side, got {got!r}")
        return payload

    def close(self) -> None:
        for fd in (self.r_parent, self.w_parent, self.r_child, self.w_child):
            try:
                os.close(fd)
            except OSError:
                pass


def plan(namespaces: list[dict[str, str]]) -> tuple[set[str], dict[str, str]]:
    """(types to create, {type: path to join})."""
    new, join = set(), {}
    for ns in namespaces:
        if ns.get("path"):
            join[ns["type"]] = ns["path"]
        else:
            new.add(ns["type"])
    return new, join


def open_joins(join: dict[str, str]) -> dict[str, int]:
    """Open each namespace path to join (before anything moves us)."""
    fds = {}
    for t, path in join.items():
        try:
            fds[t] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            for fd in fds.values():
                os.close(fd)
            raise ChildError(f"open {t} namespace", f"{path}: {e.strerror}", e.errno or 0) from None
    return fds


def write_id_maps(pid: int, linux: dict[str, object]) -> None:
    """Write uid_map/gid_map of a child's new user namespace (from the parent)."""
    for key, name in (("uidMappings", "uid_map"), ("gidMappings", "gid_map")):
        maps: list[dict[str, int]] = linux.get(key) or []  # type: ignore[assignment]
        text = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        except OSError as e:
            raise ChildError(f"write {name}", f"{text.strip()!r}: {e.strerror}", e.errno or 0) from None
        finally:
            os.close(fd)


def stage1(sys: Syscalls, chan: Channel, new: set[str], join_fds: dict[str, int],
           time_offsets: dict[str, dict[str, int]] | None, then: Callable[[], None]) -> None:
    """In the stage-1 child: join/create namespaces, fork the container process, report its pid."""
    step = "namespaces"
    try:
        step = "set non-dumpable"
        sys.prctl(sc.PR_SET_DUMPABLE, 0)
        if "user" in join_fds:
            step = "join user namespace"
            sys.setns(join_fds["user"], sc.CLONE_NEWUSER)
        elif "user" in new:
            step = "unshare user namespace"
            sys.unshare(sc.CLONE_NEWUSER)
            chan.send("maps", os.getpid())
            chan.expect("go")
            step = "become root in the user namespace"
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            sys.prctl(sc.PR_SET_DUMPABLE, 0)
        for t in JOIN_ORDER[1:]:
            if t in join_fds:
                step = f"join {t} namespace"
                sys.setns(join_fds[t], sc.NAMESPACES[t][0])
        flags = 0
        for t in new - {"user", "cgroup"}:
            flags |= sc.NAMESPACES[t][0]
        if flags:
            step = f"unshare {', '.join(sorted(new - {'user', 'cgroup'}))} namespaces"
            sys.unshare(flags)
        if "time" in new and time_offsets:
            step = "time namespace offsets"
            text = "".join(f"{k} {v.get('secs', 0)} {v.get('nanosecs', 0)}\n" for k, v in time_offsets.items())
            fd = os.open("/proc/self/timens_offsets", os.O_WRONLY)
            os.write(fd, text.encode())
            os.close(fd)
        for fd in join_fds.values():
            os.close(fd)
        step = "fork container process"
        pid = os.fork()
    except OSError as e:
        chan.send("error", {"step": step, "message": e.strerror or str(e), "errno": e.errno or 0})
        os._exit(1)
    except ChildError as e:
        chan.send("error", {"step": e.step, "message": e.message, "errno": e.errno})
        os._exit(1)
    if pid:
        chan.send("pid", pid)
        os._exit(0)
    then()
    os._exit(1)


def enter_own(sys: Syscalls, chan: Channel, new: set[str]) -> None:
    """In a container process the runtime forked itself (see container.spawn): become non-dumpable
    and unshare the new namespaces but pid (the runtime's) and cgroup (after joining the cgroup)."""
    step = "set non-dumpable"
    try:
        sys.prctl(sc.PR_SET_DUMPABLE, 0)
        flags = 0
        for t in new - {"user", "cgroup", "pid", "time"}:
            flags |= sc.NAMESPACES[t][0]
        if flags:
            step = f"unshare {', '.join(sorted(new - {'user', 'cgroup', 'pid', 'time'}))} namespaces"
            sys.unshare(flags)
    except OSError as e:
        chan.send("error", {"step": step, "message": e.strerror or str(e), "errno": e.errno or 0})
        os._exit(1)
