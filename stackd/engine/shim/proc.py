"""Process plumbing for the shim: spawning, the runtime's command line, fds, atomic files.

Synchronous, stdlib C modules only (the shim stays small): ``os.posix_spawn`` with dup2
file actions, ``_socket`` for the console socket's SCM_RIGHTS, ``select.poll`` for collecting
short outputs.
"""

from __future__ import annotations

import _signal
import _socket
import _struct
import os
import select

from stackd.engine.shim.protocol import dumps, loads

DEVNULL = "/dev/null"


def exit_code(status: int) -> int:
    """Shell-style exit code of a wait status: the code, or 128 + the signal number."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def spawn(
    argv: list[str],
    *,
    stdin: int = -1,
    stdout: int = -1,
    stderr: int = -1,
    env: dict[str, str] | None = None,
) -> int:
    """Start ``argv`` with the given fds as 0/1/2 (-1: /dev/null); return its pid."""
    actions: list[tuple[object, ...]] = []
    null = -1
    for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
        if fd < 0:
            if null < 0:
                null = os.open(DEVNULL, os.O_RDWR | os.O_CLOEXEC)
            fd = null
        actions.append((os.POSIX_SPAWN_DUP2, fd, target))
    try:
        return os.posix_spawnp(
            argv[0], argv, env if env is not None else os.environ, file_actions=actions
        )
    finally:
        if null >= 0:
            os.close(null)


def pipe() -> tuple[int, int]:
    """A close-on-exec pipe (read end, write end)."""
    return os.pipe2(os.O_CLOEXEC)


def set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


def run(argv: list[str], *, stdin: int = -1) -> tuple[int, bytes, bytes]:
    """Run ``argv`` to completion; return (exit code, stdout, stderr)."""
    out_r, out_w = pipe()
    err_r, err_w = pipe()
    try:
        pid = spawn(argv, stdin=stdin, stdout=out_w, stderr=err_w)
    finally:
        os.close(out_w)
        os.close(err_w)
    bufs = {out_r: bytearray(), err_r: bytearray()}
    poller = select.poll()
    for fd in bufs:
        poller.register(fd, select.POLLIN)
    open_fds = set(bufs)
    try:
        while open_fds:
            for fd, _ev in poller.poll():
                chunk = os.read(fd, 65536)
                if chunk:
                    bufs[fd] += chunk
                else:
                    poller.unregister(fd)
                    open_fds.discard(fd)
    finally:
        os.close(out_r)
        os.close(err_r)
    _, status = os.waitpid(pid, 0)
    return exit_code(status), bytes(bufs[out_r]), bytes(bufs[err_r])


def waitpid_blocking(pid: int) -> int:
    """Wait for child ``pid`` and return its exit code."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return exit_code(status)
        except ChildProcessError:
            return 255
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync of the directory."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_json(path: str) -> object:
    with open(path, "rb") as f:
        return loads(f.read())


def write_json(path: str, obj: object) -> None:
    write_atomic(path, dumps(obj).encode("ascii") + b"\n")


def recv_fd(sock: _socket.socket) -> int:
    """Receive one fd sent with SCM_RIGHTS on ``sock`` (the runtime's console master)."""
    msg, anc, _flags, _addr = sock.recvmsg(4096, _socket.CMSG_SPACE(4 * 4))
    fds: list[int] = []
    for level, typ, payload in anc:
        if level == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS:
            n = len(payload) // 4
            fds.extend(_struct.unpack(f"{n}i", payload[: n * 4]))
    if not fds:
        raise OSError(f"no file descriptor received on the console socket ({msg!r})")
    for extra in fds[1:]:
        os.close(extra)
    os.set_inheritable(fds[0], False)
    return fds[0]


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """Set a terminal's window size (TIOCSWINSZ)."""
    import fcntl
    import termios

    if rows > 0 and cols > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, _struct.pack("HHHH", rows, cols, 0, 0))


def unix_address(path: str) -> tuple[str, int]:
    """An address usable for a socket path of any length: the path, or /proc/self/fd/N/name.

    Returns (address, dirfd); close dirfd (if not -1) after bind/connect.
    """
    if len(path.encode()) < 100:
        return path, -1
    dirfd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_CLOEXEC)
    return f"/proc/self/fd/{dirfd}/{os.path.basename(path)}", dirfd


class Runtime:
    """The OCI runtime's command line (runc, crun, stackd-runtime): argv builders and calls.

    For stackd-runtime, start/kill/delete run its library in a forked child (``forked``).
    """

    def __init__(
        self,
        binary: str,
        *,
        root: str | None = None,
        log: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.base = [binary]
        self.root = root
        # our own runtime: its verbs run as a library in a forked child (no interpreter start)
        self.library = os.path.basename(binary) == "stackd-runtime" and bool(root) and not extra
        if root:
            self.base += ["--root", root]
        if log:
            self.base += ["--log", log, "--log-format", "json"]
        self.base += extra or []
        self.log = log

    def create_argv(self, cid: str, bundle: str, pid_file: str, console: str | None) -> list[str]:
        argv = [*self.base, "create", "--bundle", bundle, "--pid-file", pid_file]
        if console:
            argv += ["--console-socket", console]
        return [*argv, cid]

    def exec_argv(
        self,
        cid: str,
        args: list[str],
        *,
        pid_file: str,
        tty: bool = False,
        console: str | None = None,
        env: list[str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
    ) -> list[str]:
        argv = [*self.base, "exec", "--detach", "--pid-file", pid_file]
        if tty:
            argv += ["--tty", "--console-socket", console or ""]
        for e in env or []:
            argv += ["--env", e]
        if cwd:
            argv += ["--cwd", cwd]
        if user:
            argv += ["--user", user]
        return [*argv, cid, *args]

    def call(self, *args: str) -> tuple[int, str]:
        """Run a runtime verb; return (exit code, error text)."""
        rc, out, err = run([*self.base, *args])
        return rc, self.error_text(err or out)

    def start(self, cid: str) -> tuple[int, str]:
        if self.library:
            return self.forked("start", cid)
        return self.call("start", cid)

    def kill(self, cid: str, sig: int, all_processes: bool = False) -> tuple[int, str]:
        if self.library:
            return self.forked("kill", cid, sig, all_processes)
        return self.call("kill", *(["--all"] if all_processes else []), cid, str(sig))

    def delete(self, cid: str, force: bool = False) -> tuple[int, str]:
        if self.library:
            return self.forked("delete", cid, force)
        return self.call("delete", *(["--force"] if force else []), cid)

    def forked(self, verb: str, cid: str, *args: object) -> tuple[int, str]:
        """``stackd.engine.runtime.api.<verb>(root, cid, *args)`` in a forked child.

        The runtime's code runs without an interpreter start of its own, and the shim never
        imports it (its RSS stays small): only the short-lived child does. Returns (exit code,
        error text), the text being what the CLI would have logged.
        """
        r, w = pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            code = 1
            try:
                import gc

                gc.disable()
                _signal.set_wakeup_fd(-1)
                from stackd.engine.runtime import api

                try:
                    getattr(api, verb)(self.root, cid, *args)
                    code = 0
                except BaseException as exc:
                    os.write(w, str(api.translate(cid, verb, exc)).encode("utf-8", "replace"))
            finally:
                os._exit(code)
        os.close(w)
        out = bytearray()
        try:
            while chunk := os.read(r, 65536):
                out += chunk
        finally:
            os.close(r)
        return waitpid_blocking(pid), out.decode("utf-8", "replace")

    def knows(self, cid: str) -> bool:
        """False when the runtime has no state for ``cid`` (its ``<root>/<id>`` directory is gone)."""
        return not self.root or os.path.isdir(os.path.join(self.root, cid))

    def state(self, cid: str) -> dict[str, object] | None:
        """The runtime's ``state`` JSON, or None when the container is unknown to it."""
        rc, out, _err = run([*self.base, "state", cid])
        if rc != 0:
            return None
        try:
            obj = loads(out)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    def error_text(self, raw: bytes = b"") -> str:
        """The last error the runtime logged (its --log JSON file), else ``raw`` stripped."""
        text = ""
        if self.log:
            try:
                with open(self.log, "rb") as f:
                    f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
                    lines = f.read().splitlines()
            except OSError:
                lines = []
            for line in reversed(lines):
                try:
                    rec = loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("level") in ("error", "fatal"):
                    text = str(rec.get("msg", ""))
                    break
        return text or raw.decode("utf-8", "replace").strip()
