"""Start the RCU grace period that the container's cgroup migration will need, in the background.

Moving a process between cgroups write-locks the kernel's global `cgroup_threadgroup_rwsem`,
and the first writer after a quiet spell waits a full RCU grace period (8-20 ms here) in
`rcu_sync_enter`; writers that come within about one grace period after the last one pay
nothing. So `start()` forks a tiny helper that writes "0" (itself) into its own cgroup's
`cgroup.procs` (a no-op migration: nothing changes; a pid that does not exist is refused before
the lock is taken, so it would not help), and the grace period elapses while the
runtime imports, prepares and forks the container. The CLI starts it first thing for
create/run/exec; `create` makes the container's cgroup directories only once the process exists
(the helper holds cgroup_mutex while it waits, so an earlier mkdir would wait with it).
The helper makes only `os` calls and exits; `reap()` collects it. Best effort: any error in the
helper is ignored, and a runtime without it (or in a multi-threaded caller, where fork is
unsafe) is just slower.
"""

from __future__ import annotations

import os

_pid = 0


def _helper() -> None:
    """In the forked helper: a no-op write of our own pid to our own cgroup, then exit."""
    try:
        os.closerange(3, 1 << 20)
        fd = os.open("/proc/self/cgroup", os.O_RDONLY)
        text = os.read(fd, 1 << 16).decode()
        os.close(fd)
        for line in text.splitlines():
            _, ctrls, path = [*line.split(":", 2), "", ""][:3]
            if not path.startswith("/"):
                continue
            if ctrls:
                dirs = [f"/sys/fs/cgroup/{ctrls.removeprefix('name=')}"]
            else:
                dirs = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            for d in dirs:
                try:
                    fd = os.open(f"{d}{path.rstrip('/')}/cgroup.procs", os.O_WRONLY)
                except OSError:
                    continue
                try:
                    os.write(fd, b"0")
                    return
                except OSError:
                    pass
                finally:
                    os.close(fd)
    except BaseException:  # best effort by design
        pass


def _threads() -> int:
    """This process's thread count (from /proc, like CPython's own fork warning), 0 if unknown."""
    try:
        fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        return int(data[data.rindex(b")") + 2 :].split()[17])
    except (OSError, ValueError, IndexError):
        return 0


def start() -> None:
    """Fork the helper, unless one is still running or other threads make fork() unsafe."""
    global _pid
    reap(block=False)
    if _pid or _threads() != 1 or not os.path.isdir("/sys/fs/cgroup"):
        return
    try:
        pid = os.fork()
    except OSError:
        return
    if pid == 0:
        try:
            _helper()
        finally:
            os._exit(0)
    _pid = pid


def reap(block: bool = False) -> None:
    """Collect the helper if it has exited (or wait: it exits right after its write)."""
    global _pid
    if not _pid:
        return
    try:
        done, _ = os.waitpid(_pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        done = _pid
    if done:
        _pid = 0
