"""`stackd container …` end to end in subprocesses: run (attached, -d, --rm, -i, -it through a pty) and every verb."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import termios
import time

from tests.engine.containers.conftest import STACKD, World
from tests.engine.containers.conftest import hub as hub
from tests.engine.containers.conftest import world as world


def test_container_run_attached_exit_code_streams_env_and_rm(world: World, tmp_path: object) -> None:
    assert world.cli("image", "rm", "busybox").returncode == 0
    envf = os.path.join(str(tmp_path), "env")
    with open(envf, "w") as f:
        f.write("# comment\nFROM_FILE=yes\n")
    res = world.cli("container", "run", "--rm", "-e", "A=1", "--env-file", envf, "-w", "/srv", "-u", "app",
                    "busybox", "sh", "-c", 'echo "$A $FROM_FILE $(pwd) $(id -un)"; echo oops >&2; exit 3')
    assert res.returncode == 3, res.stderr
    assert res.stdout == b"1 yes /srv app\n"
    assert b"oops\n" in res.stderr and b"Unable to find image 'busybox' locally" in res.stderr  # pulled
    assert world.cli("container", "ls", "-a", "-q").stdout == b""  # --rm removed it
    res = world.cli("container", "run", "-i", "--name", "cat", "busybox", "cat", input=b"through stdin\n")
    assert (res.returncode, res.stdout) == (0, b"through stdin\n")
    assert world.cli("container", "ls", "-q").stdout == b""  # exited: not in the default list
    rows = [json.loads(x) for x in world.cli("container", "ls", "-a", "--format", "json").stdout.splitlines()]
    assert [(r["Names"], r["State"], r["ExitCode"]) for r in rows] == [("cat", "exited", 0)]
    assert rows[0]["Status"].startswith("Exited (0)")
    world.cli("container", "rm", "cat", check=True)


def test_container_verbs_on_a_detached_container(world: World) -> None:
    def cli(*a: str) -> str:
        return world.cli(*a, check=True).stdout.decode()

    cid = cli("container", "run", "-d", "--name", "web", "-l", "tier=front", "--stop-timeout", "1", "busybox",
              "sh", "-c", "trap 'echo bye; exit 0' TERM; echo one; echo two; while true; do sleep 0.05; done").strip()
    assert len(cid) == 64
    out = cli("container", "ps", "--filter", "label=tier=front")
    assert "web" in out and "CONTAINER ID" in out and "Up " in out
    end = time.monotonic() + 5
    while cli("container", "logs", "web") != "one\ntwo\n" and time.monotonic() < end:
        time.sleep(0.05)
    assert cli("container", "logs", "--tail", "1", "web") == "two\n"
    assert cli("container", "logs", "-t", "web").split()[0].endswith("Z")
    res = world.cli("container", "exec", "-e", "X=7", "-w", "/tmp", "web", "sh", "-c", "echo $X $(pwd); exit 4")
    assert (res.returncode, res.stdout) == (4, b"7 /tmp\n")
    assert "sleep" in cli("container", "top", "web")
    stats = json.loads(cli("container", "stats", "--no-stream", "--format", "json", "web"))
    assert stats["Name"] == "web" and stats["PIDs"] >= 1
    cli("container", "pause", "web")
    assert cli("container", "inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "web") == "paused true\n"
    cli("container", "unpause", "web")
    cli("container", "rename", "web", "site")
    assert cli("container", "inspect", "-f", "{{.Name}}", cid[:8]) == "/site\n"
    cli("container", "stop", "site")
    assert cli("container", "wait", "site") == "0\n"
    assert cli("container", "logs", "site").endswith("bye\n")
    cli("container", "start", "site")
    cli("container", "restart", "site")
    cli("container", "kill", "-s", "KILL", "site")
    assert cli("container", "wait", "site") == "137\n"
    res = world.cli("container", "unpause", "site")
    assert res.returncode == 1 and b"cannot unpause" in res.stderr and b"Traceback" not in res.stderr
    cli("container", "rm", "site")
    res = world.cli("container", "rm", "site")
    assert res.returncode == 1 and res.stderr.decode().strip() == "error: no such container: site"


def _read_until(fd: int, want: bytes, timeout: float = 10.0) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while want not in buf:
        left = end - time.monotonic()
        assert left > 0, f"did not see {want!r} in {buf!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_container_run_it_through_a_pty(world: World) -> None:
    pid, master = pty.fork()
    if pid == 0:  # the child: stackd on the pty's slave side, which is its terminal
        os.execve(STACKD, [STACKD, "container", "run", "-it", "--rm", "busybox", "sh"], world.env)
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        _read_until(master, b"# ")
        os.write(master, b"stty size; tty\n")
        out = _read_until(master, b"/dev/pts/")
        assert b"33 101" in out, out
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.kill(pid, 28)  # SIGWINCH, as the terminal would send it
        time.sleep(0.2)
        os.write(master, b"stty size\n")
        assert b"40 120" in _read_until(master, b"40 120")
        os.write(master, b"sleep 30; echo slept\n")
        time.sleep(0.3)
        t0 = time.monotonic()
        os.write(master, b"\x03")  # Ctrl-C interrupts the sleep inside the container
        os.write(master, b"echo rc=$?\n")
        out = _read_until(master, b"rc=130")
        assert time.monotonic() - t0 < 5 and b"\nslept" not in out
        os.write(master, b"exit 5\n")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 5
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(master)
    end = time.monotonic() + 5
    while world.cli("container", "ls", "-aq").stdout and time.monotonic() < end:
        time.sleep(0.05)
    assert world.cli("container", "ls", "-aq").stdout == b""
