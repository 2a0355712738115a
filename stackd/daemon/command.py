"""`stackd daemon`: run the warm engine behind the socket in the run root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import click

from stackd.cli.roots import run_root, state_root
from stackd.daemon import wire
from stackd.daemon.server import DaemonError, Server, code_stamp, wait_for_socket


def _log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} stackd daemon: {msg}\n")
    sys.stderr.flush()


def _detach(log_path: str, sock: str) -> None:
    """Continue in the background (new session, output to `log_path`); the parent exits once the
    socket answers (0) or the child died (1)."""
    pid = os.fork()
    if pid:
        ok = wait_for_socket(sock, timeout=60)
        with contextlib.suppress(ChildProcessError):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done and not ok:
                sys.exit(1)
        click.echo(f"stackd daemon running (pid {pid}), log {log_path}")
        sys.exit(0 if ok else 1)
    os.setsid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)


def _start_launcher(runs: str) -> subprocess.Popen[bytes] | None:
    """The shim launcher beside the daemon (workers fall back to forking shims themselves)."""
    from stackd.engine.shim import launcher

    path = os.path.join(runs, launcher.SOCKET_NAME)
    proc = subprocess.Popen([sys.executable, "-c", launcher.BOOT, path], stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd="/")
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            _log("the shim launcher did not start: workers fork shims themselves")
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            return None
        time.sleep(0.01)
    return proc


@click.command("daemon")
@click.option("--group", metavar="GROUP", help="Let members of GROUP use the socket too (0660 root:GROUP).")
@click.option("-d", "--detach", is_flag=True, help="Run in the background (log in the state root's daemon.log).")
@click.option("--debug", is_flag=True, help="Log every command served (its verb, never its arguments).")
def daemon(group: str | None, detach: bool, debug: bool) -> None:
    """Keep the engine warm: commands run by `stackd` go through the socket to a forked worker.

    The socket is RUN_ROOT/stackd.sock (0660, peer credentials checked: root, the daemon's user,
    and GROUP's members); the pid is in RUN_ROOT/stackd.pid. SIGTERM or SIGINT stops accepting
    and waits for the commands in flight (a second one stops at once). If stackd changes on disk
    (an upgrade), commands run embedded on the new code until the daemon is restarted.
    """
    from stackd.daemon import warm

    runs, states = str(run_root()), str(state_root())
    sock = wire.socket_path(runs)
    server = Server(sock, states, group=group, log=_log, debug=debug,
                    stamp=lambda: code_stamp(os.path.dirname(os.path.dirname(warm.__file__))))
    if wait_for_socket(sock, timeout=0):
        raise DaemonError(f"stackd daemon: another daemon already listens on {sock}")
    if detach:
        os.makedirs(states, exist_ok=True)
        _detach(os.path.join(states, "daemon.log"), sock)
    t0 = time.monotonic()
    count = warm.preload(_log)
    os.makedirs(runs, mode=0o711, exist_ok=True)
    launcher = _start_launcher(runs)  # before the socket: a client may come at once
    try:
        server.bind()
    except BaseException:
        if launcher is not None:
            launcher.terminate()
            launcher.wait()
        raise
    pid_file = os.path.join(runs, wire.PID_NAME)
    with open(pid_file + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(pid_file + ".tmp", pid_file)
    _log(f"listening on {sock} (pid {os.getpid()}, {count} modules warm in {time.monotonic() - t0:.2f} s)")
    try:
        server.serve()
    finally:
        if launcher is not None:
            launcher.terminate()
            launcher.wait()
        with contextlib.suppress(OSError), open(pid_file) as f:
            if f.read().strip() == str(os.getpid()):
                os.unlink(pid_file)
    _log("stopped")
