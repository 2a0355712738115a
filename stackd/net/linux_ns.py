"""Network namespaces without forking: create/delete a bind-mounted netns and set links up in it over raw rtnetlink.

A netns is made in the calling thread (the netns is a per-thread attribute): unshare(CLONE_NEWNET),
loopback up, bind mount of the thread's ns file onto the path, setns back. Links inside a netns
are configured through a raw NETLINK_ROUTE socket opened there (setns in, socket(), setns out):
one batch of messages, one round trip, no process and no pyroute2 event loop in the hot path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

from stackd.net.kernel import NetKernelError

NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 18, 20, 24
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
IFA_F_NODAD = 0x02
RTA_GATEWAY = 5
IFF_UP = 0x1
LOOPBACK_IFINDEX = 1  # fixed by the kernel in every netns
RTMGRP_LINK = 0x1
MS_BIND, MNT_DETACH = 0x1000, 0x2

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc = lib
    return _libc


def _fail(path: str, step: str, exc: OSError) -> NetKernelError:
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    return NetKernelError(f"network namespace {path}: {step}: {os.strerror(code)} ({name})")


def _thread_ns() -> str:
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"


# --- raw rtnetlink ------------------------------------------------------------------------------

def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


class Rtnl:
    """A NETLINK_ROUTE socket in the netns it was opened in; `batch` sends messages in one write."""

    def __init__(self, groups: int = 0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self.sock.bind((0, groups))
        self.seq = int(time.monotonic_ns() & 0xFFFFFF)

    def close(self) -> None:
        self.sock.close()

    def batch(self, msgs: list[tuple[int, int, bytes]]) -> list[tuple[int, list[bytes]]]:
        """Send (type, flags, body) messages, each acked; return (errno, replies) per message."""
        out: dict[int, tuple[int, list[bytes]]] = {}
        data = []
        seqs = []
        for kind, flags, body in msgs:
            self.seq += 1
            seqs.append(self.seq)
            data.append(struct.pack("=IHHII", 16 + len(body), kind,
                                    flags | NLM_F_REQUEST | NLM_F_ACK, self.seq, 0) + body)
        self.sock.send(b"".join(data))
        replies: dict[int, list[bytes]] = {s: [] for s in seqs}
        while len(out) < len(seqs):
            buf = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(buf):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", buf, off)
                body = buf[off + 16: off + length]
                off += (length + 3) & ~3
                if seq not in replies or length < 16:
                    continue
                if kind == NLMSG_ERROR:
                    out[seq] = (-struct.unpack_from("=i", body)[0], replies[seq])
                elif kind != NLMSG_DONE:
                    replies[seq].append(body)
        return [out[s] for s in seqs]


def _ifinfo(index: int, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, index, flags, change)


def _by_name(name: str) -> bytes:
    return _ifinfo(0) + _attr(IFLA_IFNAME, name.encode() + b"\0")


def _check(results: list[tuple[int, list[bytes]]], what: list[str], ok: tuple[int, ...] = ()) -> None:
    for (code, _), step in zip(results, what, strict=True):
        if code and code not in ok:
            raise OSError(code, f"{step}: {os.strerror(code)}")


@contextlib.contextmanager
def rtnl_in(path: str) -> Iterator[Rtnl]:
    """A raw rtnetlink socket inside the netns at `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with rtnl_in_fd(fd) as nl:
            yield nl
    finally:
        os.close(fd)


@contextlib.contextmanager
def rtnl_in_fd(fd: int) -> Iterator[Rtnl]:
    """A raw rtnetlink socket inside the netns of `fd` (the thread setns's in and straight back)."""
    own = os.open(_thread_ns(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.setns(fd, os.CLONE_NEWNET)
        try:
            nl = Rtnl()
        finally:
            os.setns(own, os.CLONE_NEWNET)
    finally:
        os.close(own)
    try:
        yield nl
    finally:
        nl.close()


def configure(nl: Rtnl, name: str, addresses: tuple[str, ...], gateways: tuple[str, ...]) -> None:
    """Address link `name`, set it (and lo) up, add default routes via `gateways`: two round trips."""
    (code, replies), = nl.batch([(RTM_GETLINK, 0, _by_name(name))])
    if code or not replies:
        raise OSError(code or errno.ENODEV, f"finding link {name}: {os.strerror(code or errno.ENODEV)}")
    index = struct.unpack_from("=i", replies[0], 4)[0]
    msgs: list[tuple[int, int, bytes]] = []
    what: list[str] = []
    for cidr in addresses:
        addr, _, plen_s = cidr.partition("/")
        plen = int(plen_s)
        if ":" in addr:
            raw = socket.inet_pton(socket.AF_INET6, addr)
            body = struct.pack("=BBBBi", socket.AF_INET6, plen, IFA_F_NODAD, 0, index)
            body += _attr(IFA_ADDRESS, raw) + _attr(IFA_FLAGS, struct.pack("=I", IFA_F_NODAD))
        else:
            raw = socket.inet_pton(socket.AF_INET, addr)
            body = struct.pack("=BBBBi", socket.AF_INET, plen, 0, 0, index)
            body += _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
            if plen < 31:
                host = (1 << (32 - plen)) - 1
                bcast = struct.pack("!I", struct.unpack("!I", raw)[0] | host)
                body += _attr(IFA_BROADCAST, bcast)
        msgs.append((RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body))
        what.append(f"adding address {cidr} to {name}")
    msgs.append((RTM_NEWLINK, 0, _ifinfo(index, IFF_UP, IFF_UP)))
    what.append(f"setting {name} up")
    msgs.append((RTM_NEWLINK, 0, _ifinfo(LOOPBACK_IFINDEX, IFF_UP, IFF_UP)))
    what.append("setting lo up")
    routes = []
    for gw in gateways:
        fam = socket.AF_INET6 if ":" in gw else socket.AF_INET
        body = struct.pack("=BBBBBBBBI", fam, 0, 0, 0, 254, 3, 0, 1, 0)  # main, boot, universe, unicast
        body += _attr(RTA_GATEWAY, socket.inet_pton(fam, gw))
        routes.append((RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body))
        what.append(f"adding the default route via {gw}")
    res = nl.batch(msgs + routes)
    _check(res[:len(msgs)], what[:len(msgs)], (errno.EEXIST,))
    _check(res[len(msgs):], what[len(msgs):], (errno.EEXIST,))


def delete_link(nl: Rtnl, name: str) -> None:
    """Delete link `name` in the socket's netns; a missing link is fine."""
    _check(nl.batch([(RTM_DELLINK, 0, _by_name(name))]), [f"deleting link {name}"], (errno.ENODEV,))


# --- netns files ---------------------------------------------------------------------------------

def create_netns(path: str) -> None:
    """A new network namespace bind-mounted on `path` (the file is created if missing), lo up.

    No process is forked: the calling thread unshares its netns, brings lo up, bind-mounts its
    ns file on `path` and setns's back. On failure nothing is left (the file only if it existed)."""
    try:
        existed = os.path.lexists(path)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
    except OSError as exc:
        raise _fail(path, "creating the mount point", exc) from None
    step = "saving the thread's netns"
    mounted = False
    try:
        own = os.open(_thread_ns(), os.O_RDONLY | os.O_CLOEXEC)
        try:
            step = "unshare(CLONE_NEWNET)"
            os.unshare(os.CLONE_NEWNET)
            try:
                step = "setting lo up"
                nl = Rtnl()
                try:
                    _check(nl.batch([(RTM_NEWLINK, 0, _ifinfo(LOOPBACK_IFINDEX, IFF_UP, IFF_UP))]),
                           ["setting lo up"])
                finally:
                    nl.close()
                step = "bind-mounting the namespace"
                if _c().mount(os.fsencode(_thread_ns()), os.fsencode(path), None, MS_BIND, None) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
                mounted = True
            finally:
                os.setns(own, os.CLONE_NEWNET)  # back to where the thread was
        finally:
            os.close(own)
    except OSError as exc:
        if mounted:
            _c().umount2(os.fsencode(path), MNT_DETACH)
        if not existed:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise _fail(path, step, exc) from None


def is_netns(path: str) -> bool:
    """Whether `path` has a netns mounted on it (nsfs, not the plain file)."""
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path) or ".").st_dev
    except OSError:
        return False


def delete_netns(path: str) -> None:
    """Unmount (every stacked mount) and remove `path`; a missing path is fine. The kernel then
    destroys the netns and its links once no process is in it."""
    for _ in range(8):
        if _c().umount2(os.fsencode(path), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                break
            raise _fail(path, "unmounting", OSError(err, os.strerror(err)))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _fail(path, "removing the file", exc) from None


def link_name(msg: bytes) -> str:
    """IFLA_IFNAME of one RTM_*LINK message (header included)."""
    pos = 32
    while pos + 4 <= len(msg):
        alen, atype = struct.unpack_from("=HH", msg, pos)
        if alen < 4:
            break
        if atype == IFLA_IFNAME:
            return msg[pos + 4: pos + alen].split(b"\0", 1)[0].decode(errors="replace")
        pos += (alen + 3) & ~3
    return ""


def _deleted_names(buf: bytes) -> set[str]:
    """Names of the links in the RTM_DELLINK messages of a notification buffer."""
    out = set()
    off = 0
    while off + 16 <= len(buf):
        length, kind = struct.unpack_from("=IH", buf, off)
        if length < 16:
            break
        if kind == RTM_DELLINK:
            out.add(link_name(buf[off: off + length]))
        off += (length + 3) & ~3
    return out


def wait_links_gone(names: list[str], timeout: float) -> list[str]:
    """Wait (on RTM_DELLINK notifications, no polling) until these host links are gone; the rest."""
    nl = Rtnl(RTMGRP_LINK)  # subscribed before looking: no deletion is missed
    try:
        left = {n for n in names if os.path.lexists(f"/sys/class/net/{n}")}
        deadline = time.monotonic() + timeout
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([nl.sock], [], [], wait)[0]:
                break
            try:
                while True:
                    left -= _deleted_names(nl.sock.recv(65536, socket.MSG_DONTWAIT))
            except BlockingIOError:
                pass
            except OSError:  # ENOBUFS: notifications were lost, look again
                left = {n for n in left if os.path.lexists(f"/sys/class/net/{n}")}
        # RTM_DELLINK is sent just before the sysfs entry goes: wait for that too
        gone = {n for n in set(names) - left if os.path.lexists(f"/sys/class/net/{n}")}
        while gone and time.monotonic() < deadline:
            time.sleep(0.0002)
            gone = {n for n in gone if os.path.lexists(f"/sys/class/net/{n}")}
        return sorted(left | gone)
    finally:
        nl.close()
