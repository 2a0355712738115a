"""`stackd daemon` and the thin client: same results as the embedded CLI, signals, who may connect."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import Daemon, daemon_env, running_daemon
from tests.engine.containers.conftest import ROOT as REPO
from tests.engine.containers.conftest import STACKD

NOBODY = 65534  # nobody:nogroup on Debian

STACK = """\
services:
  web:
    image: busybox
    command: ["echo", "${GREETING:-hi}"]
    env_file: [web.env]
"""


def cli(env: dict[str, str], *args: str, cwd: Path | None = None, input: bytes | None = None,
        embedded: bool = False) -> subprocess.CompletedProcess[bytes]:
    env = dict(env, **({"STACKD_NO_DAEMON": "1"} if embedded else {}))
    return subprocess.run([STACKD, *args], env=env, cwd=cwd, input=input, capture_output=True, timeout=60)


def wait_until(pred: object, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return daemon_env(tmp_path)


@pytest.fixture
def daemon(env: dict[str, str], tmp_path: Path) -> object:
    with running_daemon(env, tmp_path / "daemon.log") as d:
        yield d


def test_results_are_the_embedded_clis(daemon: Daemon, env: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    (project / "compose.yaml").write_text(STACK)
    (project / "web.env").write_text("FROM_FILE=1\n")
    (project / "bad.yaml").write_text("services:\n  web:\n    image: busybox\n    ports: ['99999:80']\n")
    run_env = dict(env, GREETING="hello from the client's environment")
    cases: list[tuple[tuple[str, ...], Path, bytes | None]] = [
        (("--version",), project, None),
        (("config",), project / "sub", None),  # found upwards from the client's working directory
        (("-f", "bad.yaml", "config"), project, None),  # a user error: exit 1, one paragraph
        (("config", "--no-such-flag"), project, None),  # a usage error: exit 2
        (("-f", "-", "config"), tmp_path, b"services:\n  a:\n    image: busybox\n"),  # stdin is the client's
        (("--help",), project, None),
    ]
    for args, cwd, stdin in cases:
        via = cli(run_env, *args, cwd=cwd, input=stdin)
        here = cli(run_env, *args, cwd=cwd, input=stdin, embedded=True)
        assert (via.returncode, via.stdout, via.stderr) == (here.returncode, here.stdout, here.stderr), args
    assert b"hello from the client's environment" in cli(run_env, "config", cwd=project).stdout
    assert cli(run_env, "-f", "bad.yaml", "config", cwd=project).returncode == 1
    assert cli(run_env, "config", "--no-such-flag", cwd=project).returncode == 2
    assert len(daemon.workers()) == len(cases) + 3


def test_a_shim_launcher_runs_beside_it(daemon: Daemon) -> None:
    sock = daemon.socket.parent / "shim-launcher.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600


def test_closed_stdin_and_umask(daemon: Daemon, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("services:\n  a:\n    image: busybox\n")
    res = subprocess.run(["sh", "-c", f"umask 077; exec 0<&-; {STACKD} -f {tmp_path}/c.yaml config -o {tmp_path}/out"],
                         env=env, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o600  # written with the client's umask
    assert len(daemon.workers()) == 1


def test_signals_reach_the_command(daemon: Daemon, env: dict[str, str]) -> None:
    results = {}
    for mode in ("daemon", "embedded"):
        for sig in (signal.SIGINT, signal.SIGTERM):
            proc = subprocess.Popen([STACKD, "-p", "sig", "events"], env=dict(env, **(
                {"STACKD_NO_DAEMON": "1"} if mode == "embedded" else {})), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
            time.sleep(1.0)  # let it start waiting for events
            proc.send_signal(sig)
            proc.communicate(timeout=20)
            results[(mode, sig)] = proc.returncode
    assert results[("daemon", signal.SIGINT)] == results[("embedded", signal.SIGINT)]
    assert results[("daemon", signal.SIGTERM)] == results[("embedded", signal.SIGTERM)] == -signal.SIGTERM
    assert len(daemon.workers()) == 2


def test_a_killed_client_hangs_up_its_command(daemon: Daemon, env: dict[str, str]) -> None:
    proc = subprocess.Popen([STACKD, "-p", "hup", "events"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert wait_until(lambda: daemon.workers())
    worker = daemon.workers()[0]
    assert alive(worker)
    proc.kill()
    proc.wait()
    assert wait_until(lambda: not alive(worker)), "the worker outlived its client"


def as_nobody(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` (with stackd.client importable) as nobody:nogroup on the system's python3, which
    they may execute (the venv's interpreter may live in root's home)."""
    def become_nobody() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    return subprocess.run(["/usr/bin/python3", "-S", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); {code}"],
                          env=env, capture_output=True, text=True, timeout=60, preexec_fn=become_nobody, cwd="/")


CLIENT_VERSION = ("import sys; sys.argv = ['stackd', '--version']; from stackd import client; "
                  "client.embedded = lambda argv: print('ran embedded') or 0; sys.exit(client.main())")


@pytest.fixture
def open_env(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`env` with a run root other users can reach (pytest's own temporary directories are 0700)."""
    run = tempfile.mkdtemp(prefix="stackd-daemon-test-")
    os.chmod(run, 0o755)
    try:
        yield dict(env, STACKD_RUN_ROOT=run)
    finally:
        shutil.rmtree(run, ignore_errors=True)


def test_other_users_are_refused(open_env: dict[str, str], tmp_path: Path) -> None:
    with running_daemon(open_env, tmp_path / "daemon.log") as daemon:
        _refused(daemon, open_env)


def _refused(daemon: Daemon, env: dict[str, str]) -> None:
    mode = stat.S_IMODE(daemon.socket.stat().st_mode)
    assert mode == 0o660
    # The socket's mode keeps them out: nobody cannot connect, and would run the command itself.
    res = as_nobody(env, CLIENT_VERSION)
    assert (res.returncode, res.stdout) == (0, "ran embedded\n"), res.stderr
    # Were the socket opened to all, the daemon still checks the peer's credentials.
    os.chmod(daemon.socket, 0o666)
    res = as_nobody(env, CLIENT_VERSION)
    assert res.returncode == 1, res.stderr
    assert "permission denied: uid 65534 may not use" in res.stderr and res.stdout == ""
    assert daemon.workers() == []
    assert "refused pid" in daemon.log.read_text()


def test_group_members_may_use_the_socket(open_env: dict[str, str], tmp_path: Path) -> None:
    with running_daemon(open_env, tmp_path / "daemon.log", "--group", "nogroup") as d:
        st = d.socket.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, NOBODY)
        res = as_nobody(open_env, CLIENT_VERSION)
        assert res.returncode == 0 and res.stdout.startswith("stackd, version"), res.stderr
        assert len(d.workers()) == 1
        # The worker runs as root: a member's PATH, LD_* and PYTHON* do not reach what it starts.
        stack = Path(open_env["STACKD_RUN_ROOT"]) / "env.yaml"
        stack.write_text("services:\n  a:\n    image: busybox\n    environment:\n"
                         "      P: ${PATH}\n      L: ${LD_PRELOAD:-stripped}\n      M: ${MINE}\n")
        stack.chmod(0o644)
        member_env = dict(open_env, PATH="/tmp/evil:/usr/bin", LD_PRELOAD="/tmp/evil.so", MINE="kept")
        res = as_nobody(member_env, "import sys; sys.argv = ['stackd', '-f', " + repr(str(stack)) +
                        ", 'config']; from stackd import client; sys.exit(client.main())")
        assert res.returncode == 0, res.stderr
        assert "P: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in res.stdout
        assert "L: stripped" in res.stdout and "M: kept" in res.stdout
        assert len(d.workers()) == 2


def test_another_state_root_runs_embedded(daemon: Daemon, env: dict[str, str], tmp_path: Path) -> None:
    res = cli(dict(env, STACKD_STATE_ROOT=str(tmp_path / "other")), "--version")
    assert res.returncode == 0 and res.stdout.startswith(b"stackd, version")
    assert daemon.workers() == []


def test_stale_socket_and_second_daemon(env: dict[str, str], tmp_path: Path) -> None:
    with running_daemon(env, tmp_path / "a.log") as d:
        res = cli(env, "daemon")  # a second daemon on the same run root
        assert res.returncode == 1 and b"another daemon already listens on" in res.stderr
        d.proc.kill()  # leaves its socket file behind
        d.proc.wait()
        assert d.socket.exists()
        launcher = d.socket.parent / "shim-launcher.sock"
        assert wait_until(lambda: not launcher.exists()), "the shim launcher outlived its daemon"
        res = cli(env, "--version")  # nobody answers: the client runs it
        assert res.returncode == 0 and res.stdout.startswith(b"stackd, version")
        with running_daemon(env, tmp_path / "b.log") as d2:  # the stale file is replaced
            assert cli(env, "--version").returncode == 0
            assert len(d2.workers()) == 1
        d.socket.unlink(missing_ok=True)


def test_stop_waits_for_commands_in_flight(env: dict[str, str], tmp_path: Path) -> None:
    with running_daemon(env, tmp_path / "daemon.log") as d:
        proc = subprocess.Popen([STACKD, "-p", "flight", "events"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        assert wait_until(lambda: d.workers())
        d.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: not d.socket.exists()), "still accepting after SIGTERM"
        assert cli(env, "--version").returncode == 0  # new commands run embedded meanwhile
        time.sleep(0.3)
        assert d.proc.poll() is None, "the daemon left while a command was running"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert b"daemon went away" not in err
        d.proc.wait(20)
        assert d.workers() and not alive(d.workers()[0])


def test_the_client_imports_no_library() -> None:
    res = subprocess.run([sys.executable, "-c", "import sys, stackd.client; print(sorted(m for m in "
                          "('enum', 're', 'socket', 'json', 'signal', 'click', 'pydantic') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_detach_runs_in_the_background(env: dict[str, str], tmp_path: Path) -> None:
    res = cli(env, "daemon", "-d")
    assert res.returncode == 0, res.stderr
    run = Path(env["STACKD_RUN_ROOT"])
    pid = int((run / "stackd.pid").read_text())
    try:
        assert f"running (pid {pid})".encode() in res.stdout
        assert alive(pid) and (run / "stackd.sock").exists()
        assert cli(env, "--version").returncode == 0
        assert "listening on" in (tmp_path / "state" / "daemon.log").read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not alive(pid)), "the detached daemon did not stop"
    assert not (run / "stackd.sock").exists() and not (run / "stackd.pid").exists()
    assert wait_until(lambda: not (run / "shim-launcher.sock").exists())
