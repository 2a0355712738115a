"""Fast shim start for stackd-runtime: a detached fork of the engine creates the container in-process.

The engine (Python 3.12, the runtime importable) forks; the child starts a new session and forks
again, then exits, so the grandchild is nobody's child but init's. The grandchild makes itself
the child subreaper (kept across execve), makes the container's stdio as ``Shim.launch`` does,
calls ``runtime.api.create`` (and ``start``) itself, so the container's init is its own child,
then execs the slim shim interpreter with ``adopt`` (``__main__``), passing the stdio fds and
the init's pid. One interpreter start per container instead of four (spawn, serve, create,
start). Errors go back on the ready pipe as ``error: <message>`` like the CLI path's, with
nothing left behind. Only for the engine's side: the shim process itself never imports this.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import warnings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from stackd.engine.shim.client import ShimConfig

PR_SET_CHILD_SUBREAPER = 36


def applies(config: ShimConfig) -> bool:
    """Whether ``config`` runs on our own runtime (same code as the CLI), so it may go in-process."""
    return (
        os.path.basename(config.runtime) == "stackd-runtime"
        and bool(config.runtime_root)
        and not config.runtime_args
        and os.environ.get("STACKD_SHIM_FAST", "1") != "0"
    )


def preload(tty: bool) -> object:
    """Import, before fork, everything the forked grandchild runs (another thread may hold a lock)."""
    import fcntl  # noqa: F401
    import termios  # noqa: F401

    from stackd.engine.runtime import (  # noqa: F401
        api,
        cgroups_warm,
        config,
        container,
        hooks,
        namespaces,
        process,
        rootfs,
        state,
        syscalls,
    )
    from stackd.engine.runtime.linux import LinuxSyscalls
    from stackd.engine.shim import proc  # noqa: F401

    container.cgroups_module()
    container.seccomp_module()
    if tty:
        from stackd.engine.runtime import console  # noqa: F401
    return LinuxSyscalls()


def start(directory: str, config: ShimConfig, python: str, env: dict[str, str], timeout: float) -> str:
    """Fork the detached shim for ``config`` (through the shim launcher when one serves this run
    root, see launcher.py; else from this process); return its answer ("ok" or "error: ...")."""
    from stackd.engine.shim.client import read_answer
    from stackd.engine.shim.launcher import launch

    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        if not launch(directory, python, env, w):
            tty = _terminal(config.bundle)
            os.waitpid(fork_detached(directory, config, python, env, preload(tty), tty, w), 0)
    finally:
        os.close(w)
    try:
        return read_answer(r, timeout)
    finally:
        os.close(r)


def fork_detached(directory: str, config: ShimConfig, python: str, env: dict[str, str], sysc: object,
                  tty: bool, ready: int) -> int:
    """Fork a child that starts a session and forks the future shim (``_grandchild``), then exits;
    returns the child's pid for the caller to wait for. ``ready`` is the ready pipe's write end."""
    log = os.open(
        os.path.join(directory, "shim.log"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
        0o600,
    )
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        with warnings.catch_warnings():  # 3.12 warns of fork() in a multi-threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                if os.fork():
                    os._exit(0)
                _grandchild(directory, config, python, env, sysc, tty, ready, log, null)
            finally:
                os._exit(1)
    finally:
        os.close(log)
        os.close(null)
    return pid


def _terminal(bundle: str) -> bool:
    import json

    with open(os.path.join(bundle, "config.json"), "rb") as f:
        proc = json.load(f).get("process")
    return bool(isinstance(proc, dict) and proc.get("terminal"))


def _grandchild(
    directory: str,
    cfg: ShimConfig,
    python: str,
    env: dict[str, str],
    sysc: object,
    tty: bool,
    ready: int,
    log: int,
    null: int,
) -> None:
    """The future shim, right after the second fork. Never returns."""
    import gc

    gc.disable()  # nothing of the engine's heap may be finalized here (its fds are closed below)
    try:
        _reset_signals()
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        ready = _keep_only(ready)  # the engine's fds (locks, sockets, database) stay with it
        os.chdir("/")
        sysc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # type: ignore[attr-defined]
        pid, fds, started = _make(directory, cfg, tty)
    except _Failed as exc:
        os.write(ready, f"error: {exc}\n".encode("utf-8", "replace"))
        os._exit(1)
    except BaseException as exc:  # a bug: say it rather than leave the engine waiting
        os.write(ready, f"error: {type(exc).__name__}: {exc}\n".encode("utf-8", "replace"))
        os._exit(1)
    for fd in (ready, *fds):
        if fd >= 0:
            os.set_inheritable(fd, True)
    from stackd.engine.shim.__main__ import command

    argv = command(python, "adopt", directory, ready)
    argv += [str(pid), *(str(fd) for fd in fds), "1" if started else "0"]
    try:
        os.execve(python, argv, env)
    except OSError as exc:
        _delete(str(cfg.runtime_root), cfg.id)
        os.write(ready, f"error: cannot run the shim interpreter {python}: {exc}\n".encode())
        os._exit(1)


class _Failed(Exception):
    """Creating or starting failed; the message is the one the CLI path would give."""


def _reset_signals() -> None:
    """Default dispositions and mask: the engine's Python handlers (trio's) must not run here."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGWINCH,
                signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as every Python process (and the shim) has it
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _keep_only(fd: int) -> int:
    """Close every fd above 2 except ``fd``; returns it (moved to 3)."""
    if fd != 3:
        os.dup2(fd, 3, inheritable=False)
    os.closerange(4, 1 << 20)
    return 3


def _make(directory: str, cfg: ShimConfig, tty: bool) -> tuple[int, tuple[int, int, int, int], bool]:
    """Create (and start) the container in-process: (init pid, (in, out, err, master), started)."""
    from stackd.engine.runtime import api
    from stackd.engine.shim.proc import pipe, set_winsize

    root, cid, name = str(cfg.runtime_root), cfg.id, cfg.runtime
    pid_file = os.path.join(directory, "init.pid")
    listener: socket.socket | None = None
    console = None
    in_r = in_w = out_r = out_w = err_r = err_w = -1
    if tty:
        listener, console = _console_listener(directory)
        stdio = (0, 0, 0)
    else:
        if cfg.stdin:
            in_r, in_w = pipe()
        out_r, out_w = pipe()
        err_r, err_w = pipe()
        stdio = (in_r if in_r >= 0 else 0, out_w, err_w)
    try:
        pid = api.create(root, cid, cfg.bundle, pid_file=pid_file, console_socket=console,
                         stdio=stdio, warn=_warn)
    except BaseException as exc:
        raise _Failed(f"{name} create failed: {api.translate(cid, 'create', exc)}") from None
    finally:
        for fd in (in_r, out_w, err_w):
            if fd >= 0:
                os.close(fd)
    master = -1
    if listener is not None:
        try:
            master = _receive_console(listener)
            if cfg.console_size:
                set_winsize(master, int(cfg.console_size[0]), int(cfg.console_size[1]))
        except OSError as exc:
            _delete(root, cid)
            raise _Failed(f"receiving the console from the runtime: {exc}") from None
        finally:
            listener.close()
            os.unlink(str(console))
    if cfg.start_on_attach:
        return pid, (in_w, out_r, err_r, master), False
    try:
        api.start(root, cid, _warn)
    except BaseException as exc:
        _delete(root, cid)
        raise _Failed(f"{name} start failed: {api.translate(cid, 'start', exc)}") from None
    return pid, (in_w, out_r, err_r, master), True


def _warn(msg: str) -> None:
    os.write(2, f"stackd-runtime: warning: {msg}\n".encode("utf-8", "replace"))


def _delete(root: str, cid: str) -> None:
    from stackd.engine.runtime import api

    try:
        api.delete(root, cid, force=True, warn=_warn)
    except BaseException as exc:
        _warn(f"deleting {cid} after a failed start: {exc}")


def _console_listener(directory: str) -> tuple[socket.socket, str]:
    """A listening socket in the shim's directory (stackd-runtime takes a path, not "@name")."""
    from stackd.engine.shim.proc import unix_address

    path = os.path.join(directory, "console.sock")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    addr, dirfd = unix_address(path)
    try:
        sock.bind(addr)
    finally:
        if dirfd >= 0:
            os.close(dirfd)
    os.chmod(path, 0o600)
    sock.listen(1)
    return sock, path


def _receive_console(listener: socket.socket, timeout: float = 10.0) -> int:
    """The pty master the container sent (queued before create returned)."""
    from stackd.engine.shim.proc import recv_fd

    if not select.select([listener], [], [], timeout)[0]:
        raise OSError("timed out waiting for the console")
    conn, _ = listener.accept()
    try:
        return recv_fd(conn)
    finally:
        conn.close()
