"""What the shim opens and reads on the host: its sockets, the console, the bundle's process and
cgroup, OOM events and pid files (plain functions, stdlib C modules only)."""

from __future__ import annotations

import _socket
import errno
import os
import select
import time

from stackd.engine.shim.proc import read_json, recv_fd, unix_address


def noop(signum: int, frame: object) -> None:
    pass


def drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def report(fd: int, text: str) -> None:
    if fd >= 0:
        try:
            os.write(fd, text.encode("utf-8", "replace") + b"\n")
        except OSError:
            pass
        os.close(fd)


def listen(path: str) -> _socket.socket:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    addr, dirfd = unix_address(path)
    old = os.umask(0o177)
    try:
        sock.bind(addr)
    finally:
        os.umask(old)
        if dirfd >= 0:
            os.close(dirfd)
    os.chmod(path, 0o600)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def console_listener() -> tuple[_socket.socket, str]:
    """A listening abstract unix socket for the runtime's --console-socket (no path limits)."""
    name = f"stackd-shim-console-{os.getpid()}-{time.monotonic_ns()}"
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    sock.bind("\0" + name)
    sock.listen(1)
    return sock, "@" + name


def accept_console(listener: _socket.socket, runtime_pid: int, timeout: float = 10.0) -> int:
    """Accept the runtime's connection and receive the pty master (fail if the runtime died)."""
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    deadline = time.monotonic() + timeout
    while not poller.poll(100):
        done, _ = os.waitpid(runtime_pid, os.WNOHANG)
        if done:
            raise OSError(errno.ECHILD, "the runtime exited before sending the console")
        if time.monotonic() > deadline:
            raise OSError(errno.ETIMEDOUT, "timed out waiting for the console")
    fd = listener._accept()[0]  # type: ignore[attr-defined]
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
    try:
        return recv_fd(conn)
    finally:
        conn.close()


def bundle_process(bundle: str) -> dict[str, object]:
    cfg = read_json(os.path.join(bundle, "config.json"))
    proc = cfg.get("process") if isinstance(cfg, dict) else None
    return proc if isinstance(proc, dict) else {}


def cgroup_path(bundle: str) -> str:
    try:
        cfg = read_json(os.path.join(bundle, "config.json"))
    except (OSError, ValueError):
        return ""
    linux = cfg.get("linux") if isinstance(cfg, dict) else None
    path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    return path if isinstance(path, str) and path.startswith("/") else ""


def oom_killed(cgroup: str) -> bool:
    """Whether the kernel OOM-killed a process of the container's cgroup (v1 or v2)."""
    if not cgroup:
        return False
    for path, key in (
        (f"/sys/fs/cgroup/memory{cgroup}/memory.oom_control", "oom_kill"),
        (f"/sys/fs/cgroup{cgroup}/memory.events", "oom_kill"),
        (f"/sys/fs/cgroup/unified{cgroup}/memory.events", "oom_kill"),
    ):
        try:
            with open(path) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == key and int(v or 0) > 0:
                        return True
        except (OSError, ValueError):
            continue
    return False


def read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
