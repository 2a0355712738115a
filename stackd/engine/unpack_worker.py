"""The unpack worker process: open the blob, chroot into the layer dir, apply, verify, report.

Run as `python -m stackd.engine.unpack_worker REQUEST_JSON`; prints one JSON line. The blob is
a file (`blob` in the request) or, when `blob` is null, standard input (a pipe). It imports
only the standard library (and zstandard for zstd blobs), all before chroot.
"""

from __future__ import annotations

import json
import os
import sys


def _worker(req: dict[str, object]) -> dict[str, object]:
    import tarfile  # noqa: F401  (imported before chroot: nothing can be imported after)

    from stackd.engine.unpack_stream import (
        ForwardReader,
        LayerFormatError,
        LayerStream,
        LimitExceeded,
        ReadAhead,
    )
    from stackd.engine.unpack_tar import Applier

    blob = req["blob"]
    # The blob file, or (streaming pulls) the pipe the engine writes the blob into as it arrives.
    raw = open(str(blob) if blob is not None else 0, "rb", buffering=0)  # noqa: SIM115
    try:
        stream = LayerStream(raw, str(req["media_type"]), int(req["max_bytes"]))  # type: ignore[call-overload]
        ahead = ReadAhead(stream)
        os.chroot(str(req["dest"]))
        os.chdir("/")
        os.umask(0o022)
        applier = Applier(ForwardReader(ahead), max_entries=int(req["max_entries"]),  # type: ignore[call-overload]
                          writers=int(req["writers"]))  # type: ignore[call-overload]
        try:
            counts = applier.run()
            ahead.finish()
        except BaseException:
            ahead.abort()
            raise
    except LimitExceeded as e:
        return {"error": "limit", "message": str(e)}
    except LayerFormatError as e:
        return {"error": "format", "message": str(e)}
    except OSError as e:
        name = os.fsdecode(e.filename) if e.filename is not None else ""
        return {"error": "os", "message": f"{name}: {e.strerror or e}"}
    finally:
        raw.close()
    digest = stream.digest()
    want = req["diff_id"]
    if want and digest != want:
        return {"error": "digest",
                "message": f"uncompressed digest {digest} does not match diff_id {want}"}
    return {"diff_id": digest, "compression": stream.kind, "tar_bytes": stream.total,
            "warnings": counts.warnings, **counts.c}


def _run(req: dict[str, object]) -> dict[str, object]:
    try:
        return _worker(req)
    except Exception as e:  # a bug or an unexpected tar: report, never a silent half-layer
        return {"error": "internal", "message": f"{type(e).__name__}: {e}"}


def _worker_main() -> int:
    import gc

    gc.disable()  # short-lived, no reference cycles worth collecting; tarfile makes many objects
    if sys.argv[1] == "--serve":
        return _serve(int(sys.argv[2]))
    res = _run(json.loads(sys.argv[1]))
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
    return 1 if "error" in res else 0


def _serve(sock_fd: int) -> int:
    """Fork one worker per request, imports already done (see unpack_server).

    A request is a JSON message on the SOCK_SEQPACKET socket with SCM_RIGHTS fds: the result
    pipe, then (streaming) the blob pipe. The reply carries a pidfd of the forked worker, which
    writes one JSON line to the result pipe. Returns when the engine closes the socket.
    """
    import socket
    import tarfile  # noqa: F401
    import threading  # noqa: F401

    import stackd.engine.unpack_stream
    import stackd.engine.unpack_tar  # noqa: F401

    sock = socket.socket(fileno=sock_fd)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 2)
        except OSError:
            msg, fds = b"", []
        if not msg:
            while True:  # wait for the workers still running (their blob pipes have ended)
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    return 0
        while True:  # reap finished workers
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                sock.close()
                out_fd, *blob = fds
                if blob:
                    os.dup2(blob[0], 0)
                    os.close(blob[0])
                res = _run(json.loads(msg))
                data = (json.dumps(res) + "\n").encode()
                while data:
                    data = data[os.write(out_fd, data):]
                code = 1 if "error" in res else 0
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        try:
            socket.send_fds(sock, [str(pid).encode()], [pidfd])
        except OSError:
            pass  # the engine went away: the next receive ends the loop
        finally:
            os.close(pidfd)


if __name__ == "__main__":
    sys.exit(_worker_main())
