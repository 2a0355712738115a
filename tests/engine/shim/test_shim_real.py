"""The shim for real: runc, busybox bundles, real processes, pipes, ptys, cgroups."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stackd.engine.shim.client import ShimError, probe
from stackd.engine.shim.logs import read_logs

from .conftest import RUNTIME, Env, wait_for


def _log(client) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in open(os.path.join(client.directory, "container-json.log"))]


def _shim_pid(client) -> int:  # type: ignore[no-untyped-def]
    return int(Path(client.directory, "shim.pid").read_text())


def test_shim_exit_code_logs_state_and_shutdown(env: Env) -> None:
    c = env.start(["sh", "-c", "echo hello; echo oops >&2; exit 3"])
    assert c.wait(10) == {"exit_code": 3, "oom_killed": False}
    st = c.state()
    assert (st["status"], st["exit_code"], st["pid"]) == ("exited", 3, 0)
    assert st["started_at"] <= st["finished_at"]  # type: ignore[operator]
    on_disk = json.loads(Path(c.directory, "state.json").read_text())
    assert on_disk["exit_code"] == 3 and on_disk["status"] == "exited"
    assert [(r["stream"], r["log"]) for r in _log(c)] == [
        ("stdout", "hello\n"),
        ("stderr", "oops\n"),
    ]
    assert c.wait(1)["exit_code"] == 3  # already exited: answers at once
    pid = _shim_pid(c)
    c.shutdown()
    wait_for(
        lambda: (
            not os.path.exists(f"/proc/{pid}")
            or b"Z" in Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1][:3]
        )
    )
    assert not os.path.exists(c.socket_path)
    assert (
        subprocess.run(
            [RUNTIME, "--root", env.root, "state", env.shims[0][0]], capture_output=True
        ).returncode
        != 0
    )


def test_shim_start_failure_reports_runtime_error(env: Env) -> None:
    with pytest.raises(ShimError, match=r"no such file|not found|executable"):
        env.start(["/bin/does-not-exist"])


def test_shim_stop_sigterm_is_143_and_sigkill_after_grace(env: Env) -> None:
    c = env.start(["sleep", "1000"], pidns=False)  # not a pid-namespace init: SIGTERM kills it
    t = time.monotonic()
    assert c.stop(timeout=10)["exit_code"] == 143
    assert time.monotonic() - t < 5
    assert c.state()["manually_stopped"] is True
    c2 = env.start(["sleep", "1000"])  # PID 1 of its namespace ignores SIGTERM: SIGKILL after grace
    t = time.monotonic()
    assert c2.stop(timeout=0.3)["exit_code"] == 137
    assert 0.3 <= time.monotonic() - t < 5
    c3 = env.start(["sleep", "1000"])
    c3.kill(signal.SIGKILL)
    assert c3.wait(10)["exit_code"] == 137
    with pytest.raises(ShimError, match="not running"):
        c3.kill(signal.SIGTERM)


def test_shim_logs_rotate_max_size_1k_max_file_3(env: Env) -> None:
    c = env.start(
        ["sh", "-c", "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done"],
        log_max_size=1024,
        log_max_file=3,
    )
    assert c.wait(10)["exit_code"] == 0
    log = os.path.join(c.directory, "container-json.log")
    files = sorted(p.name for p in Path(c.directory).glob("container-json.log*"))
    assert files == ["container-json.log", "container-json.log.1", "container-json.log.2"]
    assert all(Path(c.directory, f).stat().st_size <= 1024 for f in files)
    kept = [r.data.decode() for r in read_logs(log)]
    assert kept[-1] == "line 299\n" and len(kept) > 10
    first = int(kept[0].split()[1])
    assert kept == [f"line {i}\n" for i in range(first, 300)]  # nothing lost inside the window


@pytest.mark.slow
def test_shim_chatty_container_output_is_complete(env: Env) -> None:
    mb = 100
    c = env.start(["sh", "-c", f"head -c {mb}000000 /dev/urandom | base64 | tee /out.txt"])
    assert c.wait(120)["exit_code"] == 0
    produced = Path(env.tmp, f"bundle-{env.shims[0][0]}", "rootfs/out.txt").read_bytes()
    logged = b"".join(r.data for r in read_logs(os.path.join(c.directory, "container-json.log")))
    assert len(produced) > mb * 1_300_000
    assert logged == produced
    assert c.state()["log_dropped"] == 0


def test_shim_restart_on_failure_with_growing_backoff(env: Env) -> None:
    c = env.start(
        ["sh", "-c", "cut -d' ' -f1 /proc/uptime >> /starts; exit 1"], restart="on-failure:4"
    )
    wait_for(lambda: c.state()["status"] == "exited", timeout=15)
    st = c.state()
    assert (st["restart_count"], st["exit_code"]) == (4, 1)
    starts = [
        float(x)
        for x in Path(env.tmp, f"bundle-{env.shims[0][0]}", "rootfs/starts").read_text().split()
    ]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 5
    for gap, delay in zip(gaps, [0.1, 0.2, 0.4, 0.8], strict=True):
        assert gap >= delay - 0.011, gaps  # /proc/uptime has 10 ms resolution
    assert gaps[3] > gaps[0] + 0.5


def test_shim_healthcheck_unhealthy_and_back(env: Env) -> None:
    health = {
        "test": ["CMD-SHELL", "test -f /ok && echo fine"],
        "interval": 0.2,
        "timeout": 2,
        "retries": 2,
    }
    c = env.start(["sleep", "1000"], health=health)
    wait_for(lambda: c.state()["health"]["Status"] == "unhealthy", timeout=10)  # type: ignore[index]
    assert c.exec_run(["touch", "/ok"])[0] == 0
    wait_for(lambda: c.state()["health"]["Status"] == "healthy", timeout=10)  # type: ignore[index]
    h = c.state()["health"]
    assert h["Log"][-1]["ExitCode"] == 0 and h["Log"][-1]["Output"] == "fine\n"  # type: ignore[index]
    assert any(e["ExitCode"] == 1 for e in h["Log"])  # type: ignore[index]
    assert c.exec_run(["rm", "/ok"])[0] == 0
    wait_for(lambda: c.state()["health"]["Status"] == "unhealthy", timeout=10)  # type: ignore[index]
    assert (
        json.loads(Path(c.directory, "state.json").read_text())["health"]["Status"] == "unhealthy"
    )
    c.stop(0.1)


def test_shim_exec_with_and_without_tty(env: Env) -> None:
    c = env.start(["sleep", "1000"])
    assert c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 7"]) == (7, b"out\n", b"err\n")
    code, out, _ = c.exec_run(["sh", "-c", "tty; exit 5"], tty=True)
    assert code == 5 and out.startswith(b"/dev/pts/") and out.endswith(b"\r\n")
    with c.exec(["cat"], stdin=True) as s:
        s.write(b"through stdin\n")
        s.close_stdin()
        assert s.collect(10) == (0, b"through stdin\n", b"")
    with pytest.raises(ShimError, match="exec failed"):
        c.exec_run(["/nope"])
    c.stop(0.1)


def test_shim_attach_stdin_echo_through_cat(env: Env) -> None:
    c = env.start(["cat"], stdin=True)
    a = c.attach(stdin=True)
    a.write(b"ping\n")
    a.close_stdin()
    assert a.collect(10) == (0, b"ping\n", b"")
    a.close()
    assert c.wait(5)["exit_code"] == 0
    assert [r["log"] for r in _log(c)] == ["ping\n"]


def test_shim_tty_container_resize(env: Env) -> None:
    c = env.start(
        ["sh", "-c", "stty size; read x; stty size"], tty=True, stdin=True, console_size=(24, 80)
    )
    a = c.attach(stdin=True)
    wait_for(lambda: any("24 80" in str(r["log"]) for r in _log(c)))
    c.resize(40, 100)
    a.write(b"\n")
    code, out, _ = a.collect(10)
    assert code == 0 and b"40 100" in out


def test_shim_kill9_of_the_shim_leaves_the_container_reported(env: Env) -> None:
    c = env.start(["sleep", "1000"])
    before = c.state()
    os.kill(_shim_pid(c), signal.SIGKILL)
    status = wait_for(lambda: (lambda s: s if not s.shim_alive else None)(probe(c.directory)))
    assert status.container == "running" and status.running  # type: ignore[attr-defined]
    assert status.container_pid == before["pid"] and os.path.exists(f"/proc/{before['pid']}")  # type: ignore[attr-defined]
    with pytest.raises(ShimError, match="cannot reach"):
        c.state()
    subprocess.run([RUNTIME, "--root", env.root, "kill", env.shims[0][0], "KILL"], check=True)
    wait_for(lambda: probe(c.directory).container == "stopped")


def test_shim_full_disk_for_logs_does_not_kill_the_container(env: Env) -> None:
    logdir = env.tmp / "tinylogs"
    logdir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(logdir)], check=True)
    try:
        c = env.start(
            ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; exit 4"],
            log_path=str(logdir / "c.log"),
        )
        assert c.wait(20)["exit_code"] == 4  # ran to its end
        st = c.state()
        assert st["log_dropped"] > 0 and "No space left" in str(st["log_error"])  # type: ignore[operator]
        lines = (logdir / "c.log").read_bytes().splitlines()
        assert lines and all(
            json.loads(line)["stream"] == "stdout" for line in lines
        )  # whole records only
        assert len(lines) + int(st["log_dropped"]) == 3000  # type: ignore[call-overload]
        assert [json.loads(line)["log"] for line in lines] == [
            f"line {i}\n" for i in range(len(lines))
        ]
        c.shutdown()
    finally:
        env.cleanup()  # the shim holds the log file open
        subprocess.run(["umount", str(logdir)], check=True)


def test_shim_rss_under_10_mb_and_startup_time(env: Env) -> None:
    cid, bundle = env.bundle(["sleep", "1000"])
    from stackd.engine.shim.client import ShimConfig, start_shim

    shim_dir = str(env.tmp / "shim-rss")
    env.shims.append((cid, shim_dir))
    t = time.monotonic()
    c = start_shim(
        shim_dir, ShimConfig(id=cid, bundle=bundle, runtime=RUNTIME, runtime_root=env.root)
    )
    elapsed = time.monotonic() - t
    assert c.exec_run(["true"])[0] == 0
    c.state()
    status = Path(f"/proc/{_shim_pid(c)}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    print(f"shim start (incl. runc create+start) {elapsed * 1000:.0f} ms, VmRSS {rss_kb} kB")
    assert rss_kb < 10 * 1024
    assert elapsed < 2
    c.stop(0.1)
