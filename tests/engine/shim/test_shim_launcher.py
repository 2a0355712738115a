"""The shim launcher (`stackd daemon` runs it): shims forked from a small process, same answers."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackd.engine.shim import launcher
from stackd.engine.shim.client import ShimClient, ShimConfig, ShimError, start_shim

from .test_shim_fast import STACKD_RUNTIME, FastEnv, _log
from .test_shim_fast import fenv as fenv

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def running_launcher(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    run = tmp_path / "run"
    (run / "shims").mkdir(parents=True)
    sock = run / launcher.SOCKET_NAME
    proc = subprocess.Popen([sys.executable, "-c", launcher.BOOT, str(sock)], start_new_session=True)
    try:
        end = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < end, "the launcher did not start"
            time.sleep(0.01)
        yield proc, run
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


def _start(env: FastEnv, run: Path, args: list[str], **kw: object) -> ShimClient:
    cid, bundle = env.bundle(args)
    shim_dir = str(run / "shims" / cid)
    env.shims.append((cid, shim_dir))
    cfg = ShimConfig(id=cid, bundle=bundle, runtime=STACKD_RUNTIME, runtime_root=env.root, **kw)  # type: ignore[arg-type]
    return start_shim(shim_dir, cfg)


def test_shims_are_forked_by_the_launcher(fenv: FastEnv, running_launcher: tuple[subprocess.Popen[bytes], Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    proc, run = running_launcher
    assert stat.S_IMODE((run / launcher.SOCKET_NAME).stat().st_mode) == 0o600
    from stackd.engine.shim import adopt

    def no_local_fork(*a: object, **k: object) -> int:
        raise AssertionError("forked locally although a launcher serves this run root")

    monkeypatch.setattr(adopt, "fork_detached", no_local_fork)
    c = _start(fenv, run, ["sh", "-c", "echo hello from the launcher; exit 3"])
    assert c.wait(10)["exit_code"] == 3
    assert ("stdout", "hello from the launcher\n") in _log(c)
    # The runtime's errors come back through the launcher too, and leave nothing behind.
    with pytest.raises(ShimError, match="no-such-program"):
        _start(fenv, run, ["/no-such-program"])
    assert proc.poll() is None  # one failing container does not take the launcher down


def test_without_a_launcher_the_engine_forks(fenv: FastEnv, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "shims").mkdir(parents=True)
    (run / launcher.SOCKET_NAME).touch()  # a stale socket file: nobody answers
    c = _start(fenv, run, ["sh", "-c", "echo local"])
    assert c.wait(10)["exit_code"] == 0
    assert ("stdout", "local\n") in _log(c)


def test_sigterm_stops_the_launcher_and_removes_its_socket(
        running_launcher: tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, run = running_launcher
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not (run / launcher.SOCKET_NAME).exists()
