"""Terminals: connect to a --console-socket, make a pty in the container, send its master (SCM_RIGHTS)."""

from __future__ import annotations

import fcntl
import os

TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414


def connect(path: str) -> object:
    """A connected unix stream socket; long paths go through /proc/self/fd of an O_PATH dir fd, and
    `@name` is the abstract socket `name` (as runc, through Go's net package, reads it)."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if path.startswith("@"):
        sock.connect("\0" + path[1:])
        return sock
    path = os.path.abspath(path)
    if len(os.fsencode(path)) < 100:
        sock.connect(path)
        return sock
    dfd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
    finally:
        os.close(dfd)
    return sock


def open_pty(size: dict[str, int] | None = None) -> tuple[int, str]:
    """Open /dev/ptmx (the container's devpts); return (master fd, slave path)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, b"\0\0\0\0")
    n = int.from_bytes(fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"), "little")
    if size:
        rows, cols = int(size.get("height", 0)), int(size.get("width", 0))
        fcntl.ioctl(master, TIOCSWINSZ, rows.to_bytes(2, "little") + cols.to_bytes(2, "little") + b"\0" * 4)
    return master, f"/dev/pts/{n}"


def attach_slave(slave_path: str) -> None:
    """Make the pty slave the controlling terminal and stdio of this (session-leader) process."""
    fd = os.open(slave_path, os.O_RDWR)
    fcntl.ioctl(fd, TIOCSCTTY, 0)
    for i in (0, 1, 2):
        os.dup2(fd, i)
    if fd > 2:
        os.close(fd)


def send_fd(sock: object, fd: int, name: str) -> None:
    """Send `fd` with the pty name as payload, as runc does."""
    import socket

    assert isinstance(sock, socket.socket)
    socket.send_fds(sock, [name.encode()], [fd])


def recv_fd(sock: object) -> tuple[int, str]:
    """The receiving end of `send_fd` (used by tests and by stackd's shim)."""
    import socket

    assert isinstance(sock, socket.socket)
    msg, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    return fds[0], msg.decode()
