"""The daemon's socket: accept clients, check who they are, fork a warm worker per command.

The daemon imports the whole of stackd once (warm.preload) and then only waits: for each
allowed client it forks a worker that already has every module, pydantic model and native
library loaded, and the worker runs the client's command line on the client's own stdin,
stdout, stderr and working directory (see worker.py). This loop is single-threaded, runs no
user code and keeps no engine state, so a crash of one command cannot hurt the next, and the
worker can fork (shims, runtimes) safely. Workers outlive the daemon: stopping or restarting
it never cuts a command short.
"""

from __future__ import annotations

import contextlib
import grp
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from stackd.daemon import wire
from stackd.errors import StackdError

STAMP_INTERVAL = 1.0  # seconds between checks of stackd's code on disk


class DaemonError(StackdError):
    """The daemon cannot start (socket in use, bad group)."""


@dataclass
class Session:
    """One client's command: its connection and, once forked, the worker's pid."""

    conn: socket.socket
    pid: int = 0
    refusal: str = ""  # why this peer may not run commands
    uid: int = 0  # the peer's user


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of `conn` (SO_PEERCRED)."""
    data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def _groups_of(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


class Server:
    """The accept loop of one daemon (state root `state_root`, socket at `path`)."""

    def __init__(self, path: str, state_root: str, *, group: str | None = None,
                 log: Callable[[str], None] | None = None, stamp: Callable[[], object] | None = None,
                 debug: bool = False) -> None:
        self.path = path
        self.state_root = state_root
        self.gid: int | None = None
        if group is not None:
            try:
                self.gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise DaemonError(f"stackd daemon: --group {group}: no such group") from None
        self.log = log or (lambda msg: sys.stderr.write(f"stackd daemon: {msg}\n"))
        self.stamp = stamp
        self.debug = debug
        self.code_stamp = stamp() if stamp else None
        self.sel = selectors.DefaultSelector()
        self.sessions: dict[int, Session] = {}  # by connection fd
        self.by_pid: dict[int, Session] = {}
        self.listener: socket.socket | None = None
        self.socket_inode = 0
        self.stop_requests = 0
        self.stale = False
        self.next_stamp = time.monotonic() + STAMP_INTERVAL

    # --- set-up ------------------------------------------------------------------------------

    def bind(self) -> None:
        """Listen on the socket path (0660, group as asked); refuse if another daemon answers there."""
        os.makedirs(os.path.dirname(self.path), mode=0o711, exist_ok=True)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            probe.connect(self.path)
        except OSError:
            pass
        else:
            raise DaemonError(f"stackd daemon: another daemon already listens on {self.path}")
        finally:
            probe.close()
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.bind(tmp)
            os.chmod(tmp, 0o660)
            if self.gid is not None:
                os.chown(tmp, -1, self.gid)
            sock.listen(128)
            os.rename(tmp, self.path)  # atomically replaces a stale socket file
            self.socket_inode = os.stat(self.path).st_ino
        except OSError as exc:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise DaemonError(f"stackd daemon: cannot listen on {self.path}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        self.listener = sock

    def allowed(self, pid: int, uid: int, gid: int) -> bool:
        """root, the daemon's own user, and members of the socket's group (like Docker's)."""
        if uid in (0, os.geteuid()):
            return True
        return self.gid is not None and (gid == self.gid or self.gid in _groups_of(pid))

    # --- the loop ----------------------------------------------------------------------------

    def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT/SIGHUP; then stop accepting and return once the commands
        in flight have ended (a second signal returns at once: their clients are told)."""
        assert self.listener is not None
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        if on_ready:
            on_ready()
        try:
            while self.stop_requests == 0 or (self.stop_requests == 1 and self.by_pid):
                if self.stop_requests and self.listener is not None:
                    self.log(f"stopping: {len(self.by_pid)} command(s) still running")
                    self._close_listener()
                for key, _ in self.sel.select(STAMP_INTERVAL):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 4096)
                    else:
                        self._on_client(key.data)
                self._reap()
                self._check_code()
        finally:
            self._close_listener()
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)
            for session in list(self.sessions.values()):
                self._drop(session)  # their workers run on; the clients hear the daemon left

    def _on_stop(self, signum: int, _frame: object) -> None:
        self.stop_requests += 1

    def _check_code(self) -> None:
        """Note (at most once a STAMP_INTERVAL) that stackd changed on disk: new commands then run
        in their clients, on the new code, until the daemon is restarted."""
        if self.stamp is None or self.stale or time.monotonic() < self.next_stamp:
            return
        self.next_stamp = time.monotonic() + STAMP_INTERVAL
        if self.stamp() != self.code_stamp:
            self.stale = True
            self.log("stackd changed on disk since the daemon started: commands now run embedded; "
                     "restart the daemon to serve them again")

    def _close_listener(self) -> None:
        if self.listener is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.listener)
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.socket_inode:  # not a successor's socket
                os.unlink(self.path)
        self.listener.close()
        self.listener = None

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log(f"accept: {exc}")
                return
            conn.setblocking(False)
            session = Session(conn)
            pid, uid, gid = peer_credentials(conn)
            session.uid = uid
            if not self.allowed(pid, uid, gid):  # answered once its request is in (see _start)
                self.log(f"refused pid {pid} uid {uid}: not root, not in the socket's group")
                session.refusal = f"permission denied: uid {uid} may not use {self.path}"
            self.sessions[conn.fileno()] = session
            self.sel.register(conn, selectors.EVENT_READ, session)

    def _on_client(self, session: Session) -> None:
        try:
            message, fds = wire.recv(session.conn)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ValueError):
            message, fds = None, []
        if session.pid == 0:
            self._start(session, message, fds)
            return
        for fd in fds:  # a client has nothing more to hand over
            os.close(fd)
        if message is None:  # the client is gone: as a hang-up of its terminal
            self._kill(session, signal.SIGHUP)
            self._forget_conn(session)
        elif isinstance(message.get("signal"), int):
            self._kill(session, int(message["signal"]))  # type: ignore[call-overload]

    def _start(self, session: Session, request: dict[str, object] | None, fds: list[int]) -> None:
        """Check the request and fork its worker (the descriptors are the worker's)."""
        if session.refusal:  # after the request, so the client reads the answer before the close
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                wire.send(session.conn, {"error": session.refusal})
            self._drop(session)
            return
        try:
            reason = self._refusal(request, fds)
            if reason is not None:
                with contextlib.suppress(OSError):
                    wire.send(session.conn, {"fallback": reason})
                self._drop(session)
                return
            assert request is not None
            pid = self._fork(session, request, fds)
        finally:
            for fd in fds:
                os.close(fd)
        session.pid = pid
        self.by_pid[pid] = session
        if self.debug:
            from stackd.cli import COMMANDS

            verb = next((a for a in request["argv"] if a in COMMANDS), "")  # type: ignore[attr-defined]
            self.log(f"worker {pid}: {verb or '(no verb)'}")
        try:
            wire.send(session.conn, {"pid": pid})
        except OSError:
            self._kill(session, signal.SIGHUP)
            self._forget_conn(session)

    def _refusal(self, request: dict[str, object] | None, fds: list[int]) -> str | None:
        """Why this request should run in the client instead (None: run it here)."""
        if request is None or not isinstance(request.get("argv"), list) or len(fds) != 4 \
                or not isinstance(request.get("env"), dict):
            return "malformed request"
        if request.get("state_root") != self.state_root:
            return f"the daemon serves state root {self.state_root}"
        if self.stale:
            return "stackd changed on disk since the daemon started"
        return None

    def _fork(self, session: Session, request: dict[str, object], fds: list[int]) -> int:
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                signal.set_wakeup_fd(-1)
                for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(s, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                self.sel.close()
                if self.listener is not None:
                    self.listener.close()
                for other in self.sessions.values():
                    other.conn.close()
                from stackd.daemon.worker import run

                run(request, fds, trusted=session.uid in (0, os.geteuid()))
            finally:
                os._exit(70)
        return pid

    def _kill(self, session: Session, signum: int) -> None:
        if session.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(session.pid, signum)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            session = self.by_pid.pop(pid, None)
            if session is None:
                continue
            if os.WIFSIGNALED(status):
                message: dict[str, object] = {"signal": os.WTERMSIG(status)}
            else:
                message = {"exit": os.waitstatus_to_exitcode(status)}
            with contextlib.suppress(OSError):
                wire.send(session.conn, message)
            self._drop(session)

    def _forget_conn(self, session: Session) -> None:
        """Stop listening to a client whose worker still runs (it is reaped later)."""
        fd = session.conn.fileno()
        if fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(session.conn)
            self.sessions.pop(fd, None)
            session.conn.close()

    def _drop(self, session: Session) -> None:
        self._forget_conn(session)
        if session.pid:
            self.by_pid.pop(session.pid, None)


def code_stamp(package_dir: str) -> tuple[tuple[str, int], ...]:
    """The modification times of stackd's modules (a changed stackd is not served stale)."""
    out = []
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                p = os.path.join(root, name)
                with contextlib.suppress(OSError):
                    out.append((p, os.stat(p).st_mtime_ns))
    return tuple(sorted(out))


def wait_for_socket(path: str, timeout: float = 10.0) -> bool:
    """True once a daemon answers on `path` (for scripts and tests that start one)."""
    deadline = time.monotonic() + timeout
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            probe.connect(path)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        finally:
            probe.close()
