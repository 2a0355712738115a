"""The shim's control operations: one handler per request ``op``, plus stdin data frames.

Ops: state, wait, kill, stop, start, attach, exec, resize, close_stdin, shutdown. ``wait``,
``stop`` and ``shutdown`` of a running container reply when it has exited.
"""

from __future__ import annotations

import os

from stackd.engine.shim import protocol as P
from stackd.engine.shim.proc import pipe, set_nonblocking, set_winsize, spawn, waitpid_blocking
from stackd.engine.shim.session import Conn, Session

TYPE_CHECKING = False  # typing would cost the shim RSS; mypy honours this name
if TYPE_CHECKING:
    from stackd.engine.shim.server import Shim


class OpError(Exception):
    """A request cannot be served; the message goes back to the client."""


def handle_frame(shim: Shim, conn: Conn, frame: P.Frame) -> None:
    if frame.kind == P.MSG:
        msg = frame.msg or {}
        req_id = msg.get("id")
        op = msg.get("op")
        if not isinstance(req_id, int) or not isinstance(op, str):
            return
        handler = OPS.get(op)
        try:
            if handler is None:
                raise OpError(f"unknown operation {op!r}")
            result = handler(shim, conn, req_id, msg)
        except OpError as exc:
            conn.send(P.error(req_id, str(exc)))
            return
        except OSError as exc:
            conn.send(P.error(req_id, f"{op}: {exc}"))
            return
        if result is not _DEFERRED:
            conn.send(P.reply(req_id, result))
        return
    session = _session_for(shim, conn, frame.channel)
    if session is None:
        return
    if frame.kind == P.DATA and frame.stream == P.STDIN:
        session.write_stdin(shim, frame.payload)
    elif frame.kind == P.EOF and frame.stream == P.STDIN:
        session.close_stdin(shim)


def _session_for(shim: Shim, conn: Conn, channel: int) -> Session | None:
    if channel == 0:
        return shim.main if conn.attached and P.STDIN in conn.streams else None
    s = shim.sessions.get(channel)
    return s if s is not None and s.conn is conn else None


_DEFERRED = object()


def op_state(shim: Shim, conn: Conn, req_id: int, msg: dict[str, object]) -> object:
    return shim.state()


def op_wait(shim: Shim, conn: Conn, req_id: int, msg: dict[str, object]) -> object:
    if shim.status in ("running", "restarting"):
        shim.waiters.append((conn, req_id))
        return _DEFERRED
    return {"exit_code": shim.exit_code, "oom_killed": shim.oom}


def op_kill(shim: Shim, conn: Conn, req_id: int, msg: dict[str, object]) -> object:
    sig = _int(msg.get("signal"), 15)
    if shim.status != "running":
        raise OpError(f"container {shim.id} is not running")
    shim.restart.stopped_by_user()
    shim.save()
    rc, err = shim.runtime.kill(shim.id, sig, bool(msg.get("all")))
    if rc != 0:
        raise OpError(f"kill: {err}")
    return None


def op_stop(shim: Shim, conn: Conn, req_id: int, msg: dict[str, object]) -> object:
    sig = _int(msg.get("signal"), shim.stop_signal)
    timeout = float(msg.get("timeout", 10))  # type: ignore[arg-type]
    if shim.status == "running":
        shim.waiters.append((conn, req_id))
        shim.stop(sig, timeout)
        return _DEFERRED
    shim.stop(sig, timeout)
    return {"exit_code": shim.exit_code, "oom_killed": shim.oom}


def op_start(shim: Shim, conn: Conn, req_id: int, msg: dict[str, object]) -> object:
    from stackd.engine.shim.server import ShimError

    if shim.pending_start:
        _start_pending(shim)
        return shim.state()
    if shim.status == "running":
        raise OpError(f"container {shim.id} is already running")
    if shim.restart_timer is not None:
        shim.timers.cancel(shim.restart_timer)
        shim.restart_timer = None
    shim.restart.reset_user_stop()
    try:
        shim.launch()
    except ShimError as exc:
        shim.error = str(exc)
        shim.save()
        raise OpError(str(exc))
    return shim.state()


def _start_pending(shim: Shim) -> None:
    """Start a container created with ``start_on_attach`` (the first attach or start does)."""
    from stackd.engine.shim.server import ShimError

    try:
        shim.start_created()
    except ShimError as exc:
        shim.error = str(exc)
        shim.main.close_all(shim)
        shim.status = "exited"
        shim.exit_code = 128
        shim.save()
        raise OpError(str(exc))


def op_attach(shim: Shim, conn: Conn, req_id: int, msg: dict[str, object]) -> object:
    streams = {P.STDOUT, P.STDERR}
    if msg.get("stdout") is False:
        streams.discard(P.STDOUT)
    if msg.get("stderr") is False:
        streams.discard(P.STDERR)
    if msg.get("stdin"):
        if shim.main.stdin_fd < 0:
            raise OpError(f"container {shim.id} has no open stdin (start it with stdin open)")
        streams.add(P.STDIN)
    if shim.pending_start:
        _start_pending(shim)
    conn.attached = shim.status == "running"
    conn.streams = streams
    return {"channel": 0, "status": shim.status, "tty": shim.tty, "exit_code": shim.exit_code}


def op_exec(shim: Shim, conn: Conn, req_id: int, msg: dict[str, object]) -> object:
    from stackd.engine.shim.host import accept_console, console_listener, read_pid

    if shim.status != "running":
        raise OpError(f"container {shim.id} is not running")
    args = msg.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise OpError("exec needs a non-empty list of string args")
    tty = bool(msg.get("tty"))
    channel = shim.next_channel
    shim.next_channel += 1
    session = Session(channel, tty=tty, conn=conn)
    pid_file = os.path.join(shim.dir, f"exec-{channel}.pid")
    env = msg.get("env")
    argv = shim.runtime.exec_argv(
        shim.id,
        args,
        pid_file=pid_file,
        tty=tty,
        console=None,
        env=[str(e) for e in env] if isinstance(env, list) else None,
        cwd=str(msg["cwd"]) if msg.get("cwd") else None,
        user=str(msg["user"]) if msg.get("user") else None,
    )
    child: list[int] = []
    listener = None
    try:
        if tty:
            listener, console = console_listener()
            argv[argv.index("--console-socket") + 1] = console
            runtime_pid = spawn(argv)
            try:
                session.master = session.stdin_fd = accept_console(listener, runtime_pid)
                _resize(session, msg)  # as early as possible: the process is starting
            except OSError as exc:
                raise OpError(f"exec: {exc}: {shim.runtime.error_text()}")
            session.out_fds = {session.master: P.STDOUT}
        else:
            in_r = -1
            if msg.get("stdin"):
                in_r, session.stdin_fd = pipe()
                child.append(in_r)
            out_r, out_w = pipe()
            err_r, err_w = pipe()
            child += [out_w, err_w]
            session.out_fds = {out_r: P.STDOUT, err_r: P.STDERR}
            runtime_pid = spawn(argv, stdin=in_r, stdout=out_w, stderr=err_w)
        for fd in child:
            os.close(fd)
        child = []
        rc = waitpid_blocking(runtime_pid)
        pid = read_pid(pid_file) if rc == 0 else 0
        if not pid:
            raise OpError(f"exec failed: {shim.runtime.error_text()}")
    except BaseException:
        for fd in child:
            os.close(fd)
        for fd in list(session.out_fds):
            os.close(fd)
        if session.stdin_fd >= 0 and session.stdin_fd != session.master:
            os.close(session.stdin_fd)
        raise
    finally:
        if listener is not None:
            listener.close()
    if session.stdin_fd >= 0:
        set_nonblocking(session.stdin_fd)
    session.pid = pid
    for fd in session.out_fds:
        set_nonblocking(fd)
        shim.register(fd, 0x001, lambda fd, ev, s=session: s.read_ready(shim, fd))
    shim.sessions[channel] = session
    shim.children[pid] = session
    _resize(session, msg)
    return {"channel": channel, "pid": pid}


def op_resize(shim: Shim, conn: Conn, req_id: int, msg: dict[str, object]) -> object:
    channel = _int(msg.get("channel"), 0)
    session = shim.main if channel == 0 else shim.sessions.get(channel)
    if session is None or session.master < 0:
        raise OpError(f"channel {channel} has no terminal")
    _resize(session, msg)
    return None


def _resize(session: Session, msg: dict[str, object]) -> None:
    if session.master >= 0:
        set_winsize(session.master, _int(msg.get("rows"), 0), _int(msg.get("cols"), 0))


def op_close_stdin(shim: Shim, conn: Conn, req_id: int, msg: dict[str, object]) -> object:
    channel = _int(msg.get("channel"), 0)
    session = shim.main if channel == 0 else shim.sessions.get(channel)
    if session is None:
        raise OpError(f"no session {channel}")
    session.close_stdin(shim)
    return None


def op_shutdown(shim: Shim, conn: Conn, req_id: int, msg: dict[str, object]) -> object:
    if shim.status == "running":
        if not msg.get("force"):
            raise OpError(f"container {shim.id} is running; stop it first")
        shim.restart.stopped_by_user()
        shim.runtime.kill(shim.id, 9, all_processes=True)
        shim.waiters.append((conn, req_id))  # replied by the exit; then the next loop ends
        shim.shutdown_after_exit = True
        return _DEFERRED
    if shim.restart_timer is not None:
        shim.timers.cancel(shim.restart_timer)
        shim.restart_timer = None
    if shim.runtime.knows(shim.id):  # container_exited deleted it already, as a rule
        shim.runtime.delete(shim.id, force=True)
    shim.done = True
    return None


def _int(v: object, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


OPS = {
    "state": op_state,
    "wait": op_wait,
    "kill": op_kill,
    "stop": op_stop,
    "start": op_start,
    "attach": op_attach,
    "exec": op_exec,
    "resize": op_resize,
    "close_stdin": op_close_stdin,
    "shutdown": op_shutdown,
}
