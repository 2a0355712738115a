"""The manager's side of a shim: start one detached, talk to it, probe it after a restart.

Synchronous and blocking (one short-lived unix connection per call; attach and exec keep theirs
open as a ``Stream``). ``client_async`` wraps these for trio. Everything needed to find a shim
again lives in its directory (``shim.json``, ``shim.pid``, ``shim.sock``, ``state.json``), so a
new engine reconnects with ``ShimClient(directory)`` and checks liveness with ``probe``.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from stackd.engine.shim import protocol as P
from stackd.engine.shim.__main__ import command
from stackd.errors import EngineError

PACKAGE_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)


class ShimError(EngineError):
    """A shim could not be started or reached, or refused a request."""


def shim_python() -> str:
    """The interpreter for shims: $STACKD_SHIM_PYTHON, else the distribution's python3, else ours.

    The shim imports only C modules of the standard library and runs on CPython >= 3.11.
    Debian's statically linked /usr/bin/python3 keeps a shim about 1 MB smaller than a shared
    libpython build (9.5 vs 10.5 MB RSS here), which is what decides the 10 MB budget.
    """
    explicit = os.environ.get("STACKD_SHIM_PYTHON")
    if explicit:
        return explicit
    system = os.path.realpath("/usr/bin/python3")
    name = os.path.basename(system)
    if (
        name.startswith("python3.")
        and name[8:].isdigit()
        and int(name[8:]) >= 11
        and os.access(system, os.X_OK)
    ):
        return system
    return sys.executable


@dataclass
class ShimConfig:
    """What a shim runs; written to ``<dir>/shim.json``. Times in seconds."""

    id: str
    bundle: str
    runtime: str = "runc"
    runtime_root: str | None = None
    runtime_args: list[str] = field(default_factory=list)
    log_path: str | None = None
    log_max_size: int = 0
    log_max_file: int = 1
    restart: str = "no"
    stdin: bool = False
    health: dict[str, object] | None = None
    stop_signal: int = 15
    console_size: tuple[int, int] | None = None  # (rows, cols) of the container's terminal
    start_on_attach: bool = False  # created only; the first attach (or start) starts it

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()}


def start_shim(
    directory: str, config: ShimConfig, *, python: str | None = None, timeout: float = 30.0
) -> ShimClient:
    """Start a detached shim for ``config`` in ``directory``; return once the container runs.

    With stackd-runtime a fork of this process creates the container in-process and becomes
    the shim (``adopt``); other runtimes go through ``spawn`` → ``serve`` → the runtime's CLI.
    Raises ShimError with the runtime's message if the container cannot be created or started.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(os.path.join(directory, "shim.json"), "w") as f:
        json.dump(config.to_json(), f)
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiling at every start costs time and RSS
    env.update(LC_ALL="C", PYTHONCOERCECLOCALE="0")  # no locale archive mapped: -128 kB RSS
    from stackd.engine.shim import adopt

    if adopt.applies(config):  # our runtime: created in-process by a fork of ours (adopt.py)
        answer = adopt.start(directory, config, python or shim_python(), env, timeout)
    else:
        answer = _spawn_shim(directory, python or shim_python(), env, timeout)
    if answer != "ok":
        detail = answer.removeprefix("error: ") or _tail(os.path.join(directory, "shim.log"))
        raise ShimError(
            f"container {config.id}: starting the shim failed: {detail or 'no reason given'}"
        )
    return ShimClient(directory)


def _spawn_shim(directory: str, python: str, env: dict[str, str], timeout: float) -> str:
    """The general path: ``spawn`` → ``serve``, which runs the runtime's CLI."""
    r, w = os.pipe2(os.O_CLOEXEC)
    log = os.open(
        os.path.join(directory, "shim.log"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
        0o600,
    )
    try:
        proc = subprocess.Popen(
            command(python, "spawn", directory, w),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(w,),
            start_new_session=True,
            env=env,
            cwd="/",
        )
    finally:
        os.close(w)
        os.close(log)
    try:
        proc.wait(timeout)
        return read_answer(r, timeout)
    finally:
        os.close(r)


def read_answer(fd: int, timeout: float) -> str:
    """The shim's answer on the ready pipe: "ok", or up to EOF (a container may hold the pipe)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.startswith(b"ok\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise ShimError("timed out waiting for the shim to start the container")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode("utf-8", "replace").strip()


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _connect(path: str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    addr, dirfd = path, -1
    if len(path.encode()) >= 100:
        dirfd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
        addr = f"/proc/self/fd/{dirfd}/{os.path.basename(path)}"
    try:
        sock.connect(addr)
    except OSError as exc:
        sock.close()
        raise ShimError(f"cannot reach the shim at {path}: {exc.strerror or exc}")
    finally:
        if dirfd >= 0:
            os.close(dirfd)
    return sock


class Stream:
    """An open attach or exec session: send stdin, read output frames and the exit event."""

    def __init__(
        self,
        sock: socket.socket,
        decoder: P.Decoder,
        channel: int,
        info: dict[str, object],
        frames: list[P.Frame],
    ) -> None:
        self.sock = sock
        self.decoder = decoder
        self.channel = channel
        self.info = info
        self.exit_code: int | None = None
        self._frames = frames

    def write(self, data: bytes) -> None:
        self.sock.sendall(P.data(self.channel, P.STDIN, data))

    def close_stdin(self) -> None:
        self.sock.sendall(P.eof(self.channel, P.STDIN))

    def events(self, timeout: float | None = None) -> Iterator[tuple[int, bytes]]:
        """(stream, data) for output, (stream, b"") at EOF of a stream; ends at the exit event."""
        self.sock.settimeout(timeout)
        while True:
            while self._frames:
                f = self._frames.pop(0)
                if (
                    f.kind == P.MSG
                    and f.msg
                    and f.msg.get("event") == "exit"
                    and f.msg.get("channel") == self.channel
                ):
                    code = f.msg.get("exit_code")
                    self.exit_code = code if isinstance(code, int) else None
                    return
                if f.channel == self.channel and f.kind in (P.DATA, P.EOF):
                    yield f.stream, f.payload
            try:
                chunk = self.sock.recv(262144)
            except TimeoutError:
                raise ShimError("timed out reading from the shim")
            if not chunk:
                return
            self._frames.extend(self.decoder.feed(chunk))

    def collect(self, timeout: float | None = None) -> tuple[int | None, bytes, bytes]:
        """Read to the end: (exit code, stdout, stderr)."""
        out = {P.STDOUT: bytearray(), P.STDERR: bytearray()}
        for stream, data in self.events(timeout):
            if stream in out:
                out[stream] += data
        return self.exit_code, bytes(out[P.STDOUT]), bytes(out[P.STDERR])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ShimClient:
    """Talks to the shim serving ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.socket_path = os.path.join(directory, "shim.sock")
        self._next_id = 1

    def _request(
        self,
        sock: socket.socket,
        decoder: P.Decoder,
        op: str,
        args: dict[str, object],
        rest: list[P.Frame] | None = None,
    ) -> object:
        """Send a request and return its result; frames after the reply go to ``rest``."""
        req_id = self._next_id
        self._next_id += 1
        sock.sendall(P.request(req_id, op, **args))
        while True:
            try:
                chunk = sock.recv(262144)
            except TimeoutError:
                raise ShimError(f"timed out waiting for the shim's answer to {op}")
            if not chunk:
                raise ShimError(f"the shim closed the connection during {op}")
            frames = decoder.feed(chunk)
            for i, f in enumerate(frames):
                if f.kind == P.MSG and f.msg is not None and f.msg.get("id") == req_id:
                    if not f.msg.get("ok"):
                        raise ShimError(str(f.msg.get("error")))
                    if rest is not None:
                        rest.extend(frames[i + 1 :])
                    return f.msg.get("result")

    def call(self, op: str, *, io_timeout: float | None = 30.0, **args: object) -> object:
        """One request/reply on a fresh connection."""
        sock = _connect(self.socket_path, io_timeout)
        try:
            return self._request(sock, P.Decoder(), op, args)
        finally:
            sock.close()

    def state(self) -> dict[str, object]:
        return self.call("state")  # type: ignore[return-value]

    def kill(self, signal: int = 15, *, all: bool = False) -> None:
        self.call("kill", signal=signal, all=all)

    def stop(self, timeout: float = 10.0, signal: int | None = None) -> dict[str, object]:
        """Stop signal, then SIGKILL after ``timeout`` (done by the shim); returns exit info."""
        args: dict[str, object] = {"timeout": timeout}
        if signal is not None:
            args["signal"] = signal
        return self.call("stop", io_timeout=None, **args)  # type: ignore[return-value]

    def start(self) -> dict[str, object]:
        """Start the container again after it exited (same bundle, logs appended)."""
        return self.call("start")  # type: ignore[return-value]

    def wait(self, timeout: float | None = None) -> dict[str, object]:
        """Block until the container exits; returns {"exit_code", "oom_killed"}."""
        return self.call("wait", io_timeout=timeout)  # type: ignore[return-value]

    def resize(self, rows: int, cols: int, channel: int = 0) -> None:
        self.call("resize", rows=rows, cols=cols, channel=channel)

    def close_stdin(self, channel: int = 0) -> None:
        self.call("close_stdin", channel=channel)

    def shutdown(self, *, force: bool = False) -> None:
        """Delete the (exited) container from the runtime and end the shim."""
        self.call("shutdown", io_timeout=None if force else 30.0, force=force)

    def attach(self, *, stdin: bool = False, stdout: bool = True, stderr: bool = True) -> Stream:
        sock = _connect(self.socket_path, 30.0)
        decoder = P.Decoder()
        rest: list[P.Frame] = []
        try:
            info = self._request(
                sock, decoder, "attach", {"stdin": stdin, "stdout": stdout, "stderr": stderr}, rest
            )
        except BaseException:
            sock.close()
            raise
        assert isinstance(info, dict)
        return Stream(sock, decoder, 0, info, rest)

    def exec(
        self,
        args: list[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        env: list[str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        rows: int = 0,
        cols: int = 0,
    ) -> Stream:
        sock = _connect(self.socket_path, 30.0)
        decoder = P.Decoder()
        rest: list[P.Frame] = []
        req: dict[str, object] = {
            "args": args,
            "tty": tty,
            "stdin": stdin,
            "rows": rows,
            "cols": cols,
        }
        if env:
            req["env"] = env
        if cwd:
            req["cwd"] = cwd
        if user:
            req["user"] = user
        try:
            info = self._request(sock, decoder, "exec", req, rest)
        except BaseException:
            sock.close()
            raise
        assert isinstance(info, dict)
        return Stream(sock, decoder, int(info["channel"]), info, rest)

    def exec_run(
        self, args: list[str], *, timeout: float | None = 60.0, **kw: object
    ) -> tuple[int | None, bytes, bytes]:
        """Run ``args`` in the container to completion: (exit code, stdout, stderr)."""
        with self.exec(args, **kw) as s:  # type: ignore[arg-type]
            return s.collect(timeout)


@dataclass(frozen=True)
class ShimStatus:
    """What a (new) engine finds in a shim directory.

    ``container`` is the runtime's view: created, running, paused, stopped, or missing (the
    runtime does not know it: deleted after exit). ``state`` is the shim's last state.json.
    """

    shim_alive: bool
    shim_pid: int
    container: str
    container_pid: int
    state: dict[str, object]

    @property
    def running(self) -> bool:
        return self.container in ("running", "paused")


def probe(shim_dir: str) -> ShimStatus:
    """Tell whether the shim lives and what the runtime says of its container."""
    state = _load(os.path.join(shim_dir, "state.json"))
    cfg = _load(os.path.join(shim_dir, "shim.json"))
    pid = 0
    try:
        with open(os.path.join(shim_dir, "shim.pid")) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pass
    alive = pid > 0 and _is_shim(pid, shim_dir)
    container, cpid = "missing", 0
    root = cfg.get("runtime_root")
    if cfg.get("id") and not (root and not os.path.isdir(os.path.join(str(root), str(cfg["id"])))):
        argv = [str(cfg.get("runtime") or "runc")]
        if cfg.get("runtime_root"):
            argv += ["--root", str(cfg["runtime_root"])]
        res = subprocess.run([*argv, "state", str(cfg["id"])], capture_output=True, check=False)
        if res.returncode == 0:
            try:
                rt = json.loads(res.stdout)
                container, cpid = str(rt.get("status", "unknown")), int(rt.get("pid") or 0)
            except (ValueError, AttributeError):
                container = "unknown"
    return ShimStatus(alive, pid, container, cpid, state)


def _load(path: str) -> dict[str, object]:
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _is_shim(pid: int, shim_dir: str) -> bool:
    """Alive and really our shim (not a recycled pid): its command line names the directory."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return False
    except OSError:
        return False
    return (
        (b"serve" in args or b"adopt" in args)
        and os.fsencode(shim_dir) in args
        and any(b"stackd.engine.shim" in a for a in args)
    )
