"""The shim launcher: a small warm process that forks shims for stackd-runtime containers.

Forking a shim from the engine copies the engine's whole address space (a warm daemon worker
maps ~65 MB) three times per container: the detaching child, the future shim and, inside the
runtime, the container's init. `stackd daemon` therefore keeps this process beside it: it
imports only the runtime, so those copies are small. It is single-threaded and serves
``<run root>/shim-launcher.sock`` (0600, root only): a request names the shim directory (whose
``shim.json`` the engine wrote), the shim interpreter and its environment, and carries the
ready pipe's write end; the shim answers on that pipe exactly as when the engine forks it
itself (``adopt.start``, which falls back to that when no launcher answers).
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import sys

SOCKET_NAME = "shim-launcher.sock"
PR_SET_PDEATHSIG = 1
BOOT = "import sys;from stackd.engine.shim.launcher import main;sys.exit(main(sys.argv[1:]))"


def socket_for(shim_dir: str) -> str:
    """The launcher socket of the run root that holds ``shim_dir`` (``<run root>/shims/<id>``)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(shim_dir))), SOCKET_NAME)


def launch(shim_dir: str, python: str, env: dict[str, str], ready: int) -> bool:
    """Ask the launcher to fork the shim of ``shim_dir``; False if no launcher serves it (the
    caller then forks the shim itself)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_for(shim_dir))
        request = json.dumps({"dir": shim_dir, "python": python, "env": env}).encode()
        sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [ready]))])
        answer = sock.recv(4096)
    except OSError:
        return False
    finally:
        sock.close()
    return answer == b"forked"


def main(argv: list[str]) -> int:
    """``python -c BOOT SOCKET``: serve until SIGTERM."""
    from stackd.engine.shim import adopt

    if len(argv) != 1:
        sys.stderr.write("usage: stackd.engine.shim.launcher SOCKET\n")
        return 2
    path = argv[0]
    sysc = adopt.preload(tty=True)
    sysc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # type: ignore[attr-defined]  # the daemon's death ends us
    if os.getppid() == 1:  # it died before that
        return 0
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    tmp = f"{path}.{os.getpid()}.tmp"
    listener.bind(tmp)
    os.chmod(tmp, 0o600)
    listener.listen(64)
    os.rename(tmp, path)
    inode = os.stat(path).st_ino
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            conn, _ = listener.accept()
            with conn:
                _serve(conn, sysc)
    finally:
        if os.stat(path).st_ino == inode:
            os.unlink(path)


def _serve(conn: socket.socket, sysc: object) -> None:
    from stackd.engine.shim import adopt
    from stackd.engine.shim.client import ShimConfig

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    fds = array.array("i")
    data, ancdata, _, _ = conn.recvmsg(1 << 20, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    try:
        if uid not in (0, os.geteuid()) or len(fds) != 1:
            return
        req = json.loads(data)
        directory, python, env = str(req["dir"]), str(req["python"]), dict(req["env"])
        with open(os.path.join(directory, "shim.json")) as f:
            cfg = ShimConfig(**json.load(f))
        tty = adopt._terminal(cfg.bundle)
        os.waitpid(adopt.fork_detached(directory, cfg, python, env, sysc, tty, fds[0]), 0)
        conn.send(b"forked")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"shim launcher: {exc}\n")
    finally:
        for fd in fds:
            os.close(fd)
