"""Start and stop a `stackd daemon` on a benchmark's throwaway roots (Docker's peers keep dockerd running too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

STACKD = os.path.join(os.path.dirname(sys.executable), "stackd")


@contextmanager
def stackd_daemon(env: dict[str, str], log: str) -> Iterator[int]:
    """Run `stackd daemon` with `env` (its roots) until the block ends; yields its pid."""
    sock = os.path.join(env["STACKD_RUN_ROOT"], "stackd.sock")
    with open(log, "ab") as out:
        proc = subprocess.Popen([STACKD, "daemon"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"stackd daemon did not start (see {log})")
            time.sleep(0.05)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
