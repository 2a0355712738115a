"""A `stackd daemon` on a test's own roots, stopped (and checked gone) afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stackd.daemon.server import wait_for_socket
from tests.engine.containers.conftest import STACKD


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path

    def workers(self) -> list[int]:
        """The pids of the workers it forked so far (from its --debug log)."""
        return [int(m) for m in re.findall(r"worker (\d+):", self.log.read_text())]


@contextmanager
def running_daemon(env: dict[str, str], log: Path, *args: str) -> Iterator[Daemon]:
    """Start `stackd daemon --debug ARGS` with `env`; on exit SIGTERM it and check its socket is gone."""
    sock = Path(env["STACKD_RUN_ROOT"]) / "stackd.sock"
    with open(log, "ab") as out:
        proc = subprocess.Popen([STACKD, "daemon", "--debug", *args], env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        if not wait_for_socket(str(sock), 60) or proc.poll() is not None:
            raise AssertionError(f"the daemon did not start: {log.read_text()}")
        yield Daemon(proc, sock, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert not sock.exists(), "the daemon left its socket behind"
    assert not (sock.parent / "shim-launcher.sock").exists(), "the daemon left its shim launcher behind"


def daemon_env(tmp_path: Path) -> dict[str, str]:
    """An environment with this test's own roots (and no other STACKD_ settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKD_")}
    env.update(STACKD_STATE_ROOT=str(tmp_path / "state"), STACKD_RUN_ROOT=str(tmp_path / "run"))
    return env
