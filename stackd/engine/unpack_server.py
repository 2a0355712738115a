"""A warm unpack worker parent: started once per pull, it forks one chrooted worker per layer.

Starting `python -m stackd.engine.unpack_worker` costs ~50 ms of interpreter start and imports per
layer; the server pays it once (while the pull still talks to the registry) and then forks. The
protocol is one SOCK_SEQPACKET message per layer (see `unpack_worker._serve`); each worker
reports on its own result pipe and is killed through a pidfd, so no pid can be reused under us.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from stackd.engine.unpack import (
    _PKG_ROOT,
    F_SETPIPE_SZ,
    UnpackLimits,
    UnpackStats,
    parse_result,
    request,
)


class ForkedUnpack:
    """One worker forked by the server: the same interface as `unpack.UnpackProcess`."""

    def __init__(self, what: str, pidfd: int, result_fd: int, blob_fd: int | None) -> None:
        self.what = what
        self.pidfd = pidfd
        self.result_fd = result_fd
        self.blob_fd = blob_fd
        self.t0 = time.monotonic()
        self.done = False

    def take_stdin(self) -> int:
        """The write end of the worker's blob pipe; the caller owns and closes it."""
        assert self.blob_fd is not None, "not a streaming worker"
        fd, self.blob_fd = self.blob_fd, None
        return fd

    def _read_result(self) -> bytes:
        out = bytearray()
        while chunk := os.read(self.result_fd, 1 << 16):
            out += chunk
        return bytes(out)

    def _close(self) -> None:
        if not self.done:
            self.done = True
            for fd in (self.result_fd, self.pidfd, self.blob_fd):
                if fd is not None:
                    os.close(fd)

    def wait(self) -> UnpackStats:
        try:
            if self.blob_fd is not None:
                os.close(self.blob_fd)
                self.blob_fd = None
            out = self._read_result()  # EOF when the worker exits
            return parse_result(self.what, out, b"", "the worker exited without a result",
                                time.monotonic() - self.t0)
        finally:
            self._close()

    def kill(self) -> None:
        """Kill the worker and wait until it is gone (its tree is then left alone)."""
        if self.done:
            return
        try:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            select.select([self.pidfd], [], [], 30.0)  # readable once the process exited
        finally:
            self._close()


class UnpackServer:
    """The warm parent process; `start()` forks a worker. Thread-safe; `close()` when done."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = _PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stackd.engine.unpack_worker", "--serve", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                cwd="/", env=env,
            )
        finally:
            theirs.close()
        self.sock = ours
        self.lock = threading.Lock()

    def start(self, blob_path: Path | str | None, media_type: str, dest_dir: Path | str, *,
              expected_diff_id: str | None, limits: UnpackLimits | None = None,
              what: str | None = None) -> ForkedUnpack:
        """Like `unpack.start_unpack`; raises OSError if the server is gone."""
        req = request(blob_path, media_type, dest_dir, expected_diff_id, limits or UnpackLimits())
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        fds = [result_w]
        blob_w: int | None = None
        if blob_path is None:
            blob_r, blob_w = os.pipe2(os.O_CLOEXEC)
            with contextlib.suppress(OSError):
                fcntl.fcntl(blob_w, F_SETPIPE_SZ, 1 << 20)
            fds.append(blob_r)
        try:
            with self.lock:
                socket.send_fds(self.sock, [json.dumps(req).encode()], fds)
                reply, got, _flags, _addr = socket.recv_fds(self.sock, 64, 1)
            if not reply or not got:
                raise OSError("the unpack server exited")
        except BaseException:
            os.close(result_r)
            if blob_w is not None:
                os.close(blob_w)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        return ForkedUnpack(what or os.fspath(blob_path or "layer stream"), got[0], result_r, blob_w)

    def close(self) -> None:
        """Stop accepting work (running workers finish on their own) and reap the server."""
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
