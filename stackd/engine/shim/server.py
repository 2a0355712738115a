"""The shim process: runs one container through the runtime and serves its control socket.

Single-threaded, epoll based, stdlib C modules only (RSS matters: one shim per container).
It is the container's subreaper (set before exec by ``__main__``), owns its stdio (pipes, or
the pty master received on the console socket), writes the json-file log, records exits in
``state.json`` atomically, restarts per policy with backoff, runs the healthcheck through
``<runtime> exec``, and serves ``shim.sock`` (0600). Stop (signal, grace period, SIGKILL) is
implemented here, so it completes even if the engine goes away. Files in the shim directory:
``shim.json`` (config, written by the client), ``shim.pid``, ``shim.sock``, ``state.json``,
``init.pid``, ``runtime.log``. With stackd-runtime the first run is ``adopt``ed: the engine's
detached fork made the container in-process (``adopt.py``) and exec'd us with its stdio.
"""

from __future__ import annotations

import _signal
import _socket
import os
import select
import time

from stackd.engine.shim import host
from stackd.engine.shim import protocol as P
from stackd.engine.shim.health import HealthConfig, HealthMonitor
from stackd.engine.shim.health_probe import HealthProber
from stackd.engine.shim.logs import LogWriter, format_time
from stackd.engine.shim.ops import handle_frame
from stackd.engine.shim.proc import (
    Runtime,
    exit_code,
    pipe,
    read_json,
    set_nonblocking,
    set_winsize,
    spawn,
    waitpid_blocking,
    write_json,
)
from stackd.engine.shim.restart import RestartManager, RestartPolicy
from stackd.engine.shim.session import Conn, Session, Timers

IN = select.EPOLLIN
OUT = select.EPOLLOUT
CREATED, RUNNING, RESTARTING, EXITED = "created", "running", "restarting", "exited"


class ShimError(Exception):
    """Starting the container failed; the message goes back through the ready pipe."""


class Shim:
    """One container's shim: state, sessions and the event loop."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        cfg = read_json(os.path.join(directory, "shim.json"))
        assert isinstance(cfg, dict)
        self.cfg = cfg
        self.id = str(cfg["id"])
        self.bundle = str(cfg["bundle"])
        self.runtime = Runtime(
            str(cfg.get("runtime") or "runc"),
            root=cfg.get("runtime_root") or None,
            log=os.path.join(directory, "runtime.log"),
            extra=list(cfg.get("runtime_args") or []),
        )
        proc = host.bundle_process(self.bundle)
        self.tty = bool(proc.get("terminal"))
        self.open_stdin = bool(cfg.get("stdin"))
        self.logs = LogWriter(
            str(cfg.get("log_path") or os.path.join(directory, "container-json.log")),
            max_size=int(cfg.get("log_max_size") or 0),
            max_file=int(cfg.get("log_max_file") or 1),
        )
        self.restart = RestartManager(
            RestartPolicy.parse(str(cfg.get("restart") or "no")), time.monotonic
        )
        health = cfg.get("health")
        self.health = (
            HealthMonitor(HealthConfig.from_dict(health), time.time)
            if isinstance(health, dict)
            else None
        )
        self.prober = HealthProber(self)
        self.stop_signal = int(cfg.get("stop_signal") or 15)
        self.cgroup = host.cgroup_path(self.bundle)
        self.ep = select.epoll()
        self.handlers: dict[int, object] = {}
        self.timers = Timers()
        self.conns: dict[int, Conn] = {}
        self.sessions: dict[int, Session] = {}
        self.next_channel = 1
        self.waiters: list[tuple[Conn, int]] = []
        self.children: dict[int, Session | str] = {}
        self.status = CREATED
        self.pid = 0
        self.exit_code: int | None = None
        self.oom = False
        self.started_at = ""
        self.finished_at = ""
        self.error = ""
        self.main = Session(0, tty=self.tty)
        self.stop_timer: list[object] | None = None
        self.restart_timer: list[object] | None = None
        self.done = False
        self.shutdown_after_exit = False
        self.defer_start = bool(cfg.get("start_on_attach"))
        self.pending_start = False
        self.state_path = os.path.join(directory, "state.json")

    # --- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, object]:
        return {
            "id": self.id,
            "status": self.status,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "oom_killed": self.oom,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "restart_count": self.restart.restart_count,
            "restart_policy": str(self.restart.policy),
            "manually_stopped": self.restart.manually_stopped,
            "health": self.health.to_dict() if self.health else None,
            "log_dropped": self.logs.dropped,
            "log_error": self.logs.last_error,
            "error": self.error,
            "shim_pid": os.getpid(),
            "tty": self.tty,
        }

    def save(self) -> None:
        write_json(self.state_path, self.state())

    # --- container lifecycle ----------------------------------------------------------------

    def launch(self) -> None:
        """Create and start the container through the runtime; raise ShimError on failure."""
        pid_file = os.path.join(self.dir, "init.pid")
        if os.path.exists(pid_file):
            os.unlink(pid_file)
        if self.pid or self.exit_code is not None:  # a restart: the previous run may linger
            self.runtime.delete(self.id, force=True)
        main = self.main = Session(0, tty=self.tty)
        child_fds: list[int] = []
        console = None
        listener = None
        try:
            if self.tty:
                listener, console = host.console_listener()
                stdio = (-1, -1, -1)
            else:
                in_fd = -1
                if self.open_stdin:
                    r, w = pipe()
                    main.stdin_fd, in_fd = w, r
                    child_fds.append(r)
                out_r, out_w = pipe()
                err_r, err_w = pipe()
                child_fds += [out_w, err_w]
                main.out_fds = {out_r: P.STDOUT, err_r: P.STDERR}
                stdio = (in_fd, out_w, err_w)
            pid = spawn(
                self.runtime.create_argv(self.id, self.bundle, pid_file, console),
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
            )
            if listener is not None:
                try:
                    master = host.accept_console(listener, pid)
                except OSError as exc:
                    os.kill(pid, 9)
                    waitpid_blocking(pid)
                    raise ShimError(
                        f"receiving the console from the runtime: {exc} {self.runtime.error_text()}"
                    )
                main.out_fds = {master: P.STDOUT}
                main.stdin_fd = master
                main.master = master
                size = self.cfg.get("console_size")
                if isinstance(size, list) and len(size) == 2:
                    set_winsize(master, int(size[0]), int(size[1]))
            rc = waitpid_blocking(pid)
            for fd in child_fds:
                os.close(fd)
            child_fds = []
            if rc != 0:
                raise ShimError(
                    f"{self.runtime.base[0]} create failed: {self.runtime.error_text()}"
                )
            with open(pid_file) as f:
                self.pid = int(f.read().strip() or 0)
            self._watch(main)
            if self.defer_start:  # start_on_attach: the first attach (or start) starts it
                self._created()
                return
            self.start_created()
        except BaseException:
            for fd in child_fds:
                os.close(fd)
            main.close_all(self)
            raise
        finally:
            if listener is not None:
                listener.close()

    def adopt(
        self, pid: int, in_fd: int, out_fd: int, err_fd: int, master: int, started: bool
    ) -> None:
        """Take over a container the engine's fork of us made in-process (``adopt`` stage).

        Its init ``pid`` is our child; the fds are its stdio (-1: none), inherited across exec.
        """
        main = self.main = Session(0, tty=self.tty)
        for fd in (in_fd, out_fd, err_fd, master):
            if fd >= 0:
                os.set_inheritable(fd, False)
        if master >= 0:
            main.out_fds = {master: P.STDOUT}
            main.stdin_fd = main.master = master
        else:
            main.out_fds = {fd: s for fd, s in ((out_fd, P.STDOUT), (err_fd, P.STDERR)) if fd >= 0}
            main.stdin_fd = in_fd
        self.pid = pid
        self._watch(main)
        if started:
            self.defer_start = False
            self._running()
        else:
            self._created()

    def _watch(self, main: Session) -> None:
        for fd in main.out_fds:
            set_nonblocking(fd)
            self.register(fd, IN, self.on_output)
        if main.stdin_fd >= 0 and main.master < 0:
            set_nonblocking(main.stdin_fd)

    def _created(self) -> None:
        """Created, not started: the first attach (or start) starts it (start_on_attach)."""
        self.defer_start = False
        self.pending_start = True
        self.save()

    def start_created(self) -> None:
        """Start the created container (``runtime start``); raise ShimError on failure."""
        self.pending_start = False
        rc, err = self.runtime.start(self.id)
        if rc != 0:
            self.runtime.delete(self.id, force=True)
            raise ShimError(f"{self.runtime.base[0]} start failed: {err}")
        self._running()

    def _running(self) -> None:
        self.pending_start = False
        self.status = RUNNING
        self.exit_code = None
        self.oom = False
        self.error = ""
        self.started_at = format_time(time.time())
        self.finished_at = ""
        self.restart.started()
        if self.health and self.health.config.argv():
            self.health.container_started()
            self.prober.schedule()
        self.save()

    def container_exited(self, code: int) -> None:
        """The init process was reaped: drain output, record, clean up, maybe restart."""
        self.main.drain(self)
        self.main.close_all(self)
        self.logs.flush()
        self.oom = host.oom_killed(self.cgroup)
        self.runtime.delete(self.id, force=True)
        self.exit_code = code
        self.pid = 0
        self.finished_at = format_time(time.time())
        if self.stop_timer is not None:
            self.timers.cancel(self.stop_timer)
            self.stop_timer = None
        if self.health:
            self.health.container_stopped()
        for conn in list(self.conns.values()):
            if conn.attached:
                conn.send(
                    P.eof(0, P.STDOUT)
                    + P.eof(0, P.STDERR)
                    + P.event("exit", channel=0, exit_code=code)
                )
                conn.attached = False
        for conn, req_id in self.waiters:
            conn.send(P.reply(req_id, {"exit_code": code, "oom_killed": self.oom}))
        self.waiters = []
        delay = self.restart.exited(code)
        if self.shutdown_after_exit:
            self.done = True
            delay = None
        if delay is None:
            self.status = EXITED
        else:
            self.status = RESTARTING
            self.restart_timer = self.timers.add(delay, self.do_restart)
        self.save()

    def do_restart(self) -> None:
        self.restart_timer = None
        try:
            self.launch()
        except ShimError as exc:
            self.error = str(exc)
            self.logs.write("stderr", f"stackd-shim: restart failed: {exc}\n".encode())
            self.container_exited(128)

    def stop(self, sig: int, timeout: float) -> None:
        self.restart.stopped_by_user()
        if self.status == RESTARTING:
            if self.restart_timer is not None:
                self.timers.cancel(self.restart_timer)
                self.restart_timer = None
            self.status = EXITED
            self.save()
            return
        if self.status != RUNNING:
            return
        self.save()
        self.runtime.kill(self.id, sig)
        if self.stop_timer is None:
            self.stop_timer = self.timers.add(max(0.0, timeout), self.stop_timeout)

    def stop_timeout(self) -> None:
        self.stop_timer = None
        if self.status == RUNNING:
            rc, _ = self.runtime.kill(self.id, 9, all_processes=True)
            if rc != 0 and self.pid:
                try:
                    os.kill(self.pid, 9)
                except ProcessLookupError:
                    pass

    # --- healthcheck ------------------------------------------------------------------------

    # --- event loop -------------------------------------------------------------------------

    def register(self, fd: int, events: int, handler: object) -> None:
        self.handlers[fd] = handler
        self.ep.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.ep.modify(fd, events)

    def unregister(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def on_signal(self, fd: int, _events: int) -> None:
        host.drain_fd(fd)
        self.reap()

    def on_output(self, fd: int, _events: int) -> None:
        """Container (channel 0) output is readable: log it and fan it out to attachers."""
        self.main.read_ready(self, fd)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_code(status)
            owner = self.children.pop(pid, None)
            if pid == self.pid and self.status == RUNNING:
                self.container_exited(code)
            elif owner == "health":
                self.prober.done(code)
            elif isinstance(owner, Session):
                owner.process_exited(self, code)

    def serve(self, ready_fd: int, adopted: tuple[int, int, int, int, int, bool] | None = None) -> None:
        """Start (or ``adopt``) the container, report readiness on ``ready_fd``, loop until shutdown."""
        sig_r, sig_w = pipe()
        set_nonblocking(sig_r)
        set_nonblocking(sig_w)
        _signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False)
        _signal.signal(_signal.SIGCHLD, host.noop)
        _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
        _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
        self.register(sig_r, IN, self.on_signal)
        sock_path = os.path.join(self.dir, "shim.sock")
        listener = host.listen(sock_path)
        self.register(listener.fileno(), IN, lambda fd, ev: self.accept(listener))
        try:
            if adopted is not None:
                self.adopt(*adopted)
            else:
                self.launch()
        except ShimError as exc:
            self.error = str(exc)
            self.status = EXITED
            self.save()
            host.report(ready_fd, "error: " + str(exc))
            return
        host.report(ready_fd, "ok")
        self.reap()
        while not self.done:
            timeout = self.timers.timeout()
            try:
                events = self.ep.poll(timeout)
            except InterruptedError:  # pragma: no cover
                continue
            for fd, ev in events:
                handler = self.handlers.get(fd)
                if handler is not None:
                    handler(fd, ev)  # type: ignore[operator]
            self.timers.run()
        self.logs.close()
        listener.close()
        for path in (sock_path, os.path.join(self.dir, "shim.pid")):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def accept(self, listener: _socket.socket) -> None:
        try:
            fd = listener._accept()[0]  # type: ignore[attr-defined]
        except BlockingIOError:
            return
        os.set_blocking(fd, False)
        conn = Conn(fd, self.ep)
        self.conns[fd] = conn
        self.register(fd, IN, self.on_conn)

    def on_conn(self, fd: int, events: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        if events & OUT:
            conn.flush(self)
        if events & (IN | select.EPOLLHUP | select.EPOLLERR):
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.drop_conn(conn)
                return
            try:
                frames = conn.decoder.feed(chunk)
            except P.ProtocolError:
                self.drop_conn(conn)
                return
            for frame in frames:
                handle_frame(self, conn, frame)

    def drop_conn(self, conn: Conn) -> None:
        self.conns.pop(conn.fd, None)
        self.waiters = [(c, i) for c, i in self.waiters if c is not conn]
        self.unregister(conn.fd)
        conn.closed = True
        os.close(conn.fd)
