"""The fast shim start for stackd-runtime: the container created in-process, the shim adopting it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stackd.engine.shim.client import ShimClient, ShimConfig, ShimError, probe, start_shim

from .conftest import CGROUP_ROOT, Env, wait_for

STACKD_RUNTIME = str(Path(sys.executable).parent / "stackd-runtime")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(STACKD_RUNTIME, os.X_OK), reason="needs root"
)


class FastEnv(Env):
    """Env on stackd-runtime (the fast path); ``runtime`` may switch a start to another one."""

    def start(  # type: ignore[override]
        self, args: list[str], *, tty: bool = False, pidns: bool = True, runtime: str = "",
        **kw: object
    ) -> ShimClient:
        cid, bundle = self.bundle(args, tty=tty, pidns=pidns)
        shim_dir = str(self.tmp / f"shim-{cid}")
        self.shims.append((cid, shim_dir))
        cfg = ShimConfig(id=cid, bundle=bundle, runtime=runtime or STACKD_RUNTIME,  # type: ignore[arg-type]
                         runtime_root=self.root, **kw)
        return start_shim(shim_dir, cfg)

    def cleanup(self) -> list[str]:
        for _cid, shim_dir in self.shims:
            try:
                os.kill(int(Path(shim_dir, "shim.pid").read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for cid, _ in self.shims:
            for rt in (STACKD_RUNTIME, "runc"):
                subprocess.run([rt, "--root", self.root, "delete", "--force", cid],
                               capture_output=True, check=False)
        return super().cleanup()


@pytest.fixture
def fenv(tmp_path: Path, runc_template: dict[str, object]) -> object:
    e = FastEnv(tmp_path, runc_template)
    try:
        yield e
    finally:
        leaks = e.cleanup()
    assert not leaks, f"cgroups left behind: {leaks}"


def _shim_pid(c: ShimClient) -> int:
    return int(Path(c.directory, "shim.pid").read_text())


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _log(c: ShimClient) -> list[tuple[str, str]]:
    with open(os.path.join(c.directory, "container-json.log")) as f:
        return [(r["stream"], r["log"]) for r in map(json.loads, f)]


def test_fast_path_adopts_the_container_and_records_the_exit(fenv: FastEnv) -> None:
    c = fenv.start(["sh", "-c", "echo hello; echo oops >&2; read x; exit 3"], stdin=True)
    shim = _shim_pid(c)
    cmd = Path(f"/proc/{shim}/cmdline").read_bytes().split(b"\0")
    assert b"adopt" in cmd and b"spawn" not in cmd and b"serve" not in cmd
    assert int(_status(shim)["PPid"]) != os.getpid()
    st = c.state()
    assert st["status"] == "running" and st["started_at"]
    assert int(_status(int(st["pid"]))["PPid"]) == shim  # type: ignore[call-overload]
    assert json.loads(Path(c.directory, "state.json").read_text())["status"] == "running"
    rt = json.loads(subprocess.run([STACKD_RUNTIME, "--root", fenv.root, "state", fenv.shims[0][0]],
                                   capture_output=True, check=True).stdout)
    assert (rt["status"], rt["pid"]) == ("running", st["pid"])
    # exec through the runtime CLI: its process is reparented to the shim (subreaper kept by exec)
    assert c.exec_run(["sh", "-c", "echo via exec; exit 4"]) == (4, b"via exec\n", b"")
    a = c.attach(stdin=True)
    a.write(b"\n")
    a.close_stdin()
    a.collect(10)
    a.close()
    assert c.wait(10) == {"exit_code": 3, "oom_killed": False}
    assert _log(c) == [("stdout", "hello\n"), ("stderr", "oops\n")]
    assert not os.path.exists(os.path.join(fenv.root, fenv.shims[0][0]))  # deleted at exit
    c.shutdown()
    wait_for(lambda: not Path(c.directory, "shim.pid").exists())


def test_fast_path_from_a_worker_thread(fenv: FastEnv, capfd: pytest.CaptureFixture[str]) -> None:
    """As in `stackd up` (trio's thread pool): the fork happens in a thread that is not the main one."""
    import threading

    out: list[object] = []

    def run() -> None:
        try:
            out.append(fenv.start(["sh", "-c", "echo from a thread"]))
        except BaseException as exc:
            out.append(exc)

    blocker = threading.Event()
    idle = threading.Thread(target=blocker.wait)  # one more thread alive during the fork
    idle.start()
    try:
        t = threading.Thread(target=run)
        t.start()
        t.join(30)
    finally:
        blocker.set()
        idle.join()
    c = out[0]
    assert isinstance(c, ShimClient), c
    assert c.wait(10)["exit_code"] == 0
    assert _log(c) == [("stdout", "from a thread\n")]
    assert "DeprecationWarning" not in capfd.readouterr().err


def test_fast_path_tty_console_size(fenv: FastEnv) -> None:
    c = fenv.start(["sh", "-c", "stty size; read x; stty size"], tty=True, stdin=True,
                   console_size=(24, 80))
    a = c.attach(stdin=True)
    wait_for(lambda: any("24 80" in log for _, log in _log(c)))
    c.resize(40, 100)
    a.write(b"\n")
    code, out, _ = a.collect(10)
    assert code == 0 and b"40 100" in out


def test_fast_path_start_on_attach(fenv: FastEnv) -> None:
    c = fenv.start(["echo", "first words"], start_on_attach=True)
    st = c.state()
    assert st["status"] == "created" and st["pid"]
    assert _status(int(st["pid"]))["PPid"] == str(_shim_pid(c))  # type: ignore[call-overload]
    a = c.attach()
    assert a.collect(10) == (0, b"first words\n", b"")


def test_fast_path_create_failure_leaves_nothing(fenv: FastEnv) -> None:
    before = set(os.listdir("/proc"))
    with pytest.raises(ShimError, match=r"stackd-runtime create failed: .*(not found|no such file)"):
        fenv.start(["/bin/does-not-exist"])
    cid = fenv.shims[0][0]
    assert not os.path.exists(os.path.join(fenv.root, cid))
    assert not any((ctrl / fenv.cgroups[0].lstrip("/")).exists() for ctrl in CGROUP_ROOT.iterdir())
    new = set(os.listdir("/proc")) - before
    for pid in new:
        try:
            assert cid.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            pass


def _wrapper(env: FastEnv) -> tuple[str, Path]:
    """A stackd-runtime that records its command lines: which verbs still exec the CLI."""
    d = env.tmp / "wrapped"
    d.mkdir(exist_ok=True)
    log = d / "calls"
    log.touch()
    path = d / "stackd-runtime"
    path.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {STACKD_RUNTIME} "$@"\n')
    path.chmod(0o755)
    return str(path), log


def test_fast_path_execs_no_runtime_cli(fenv: FastEnv) -> None:
    runtime, calls = _wrapper(fenv)
    c = fenv.start(["sh", "-c", "echo hi; exit 2"], runtime=runtime, start_on_attach=True)
    assert c.attach().collect(10) == (2, b"hi\n", b"")
    c.shutdown()
    d = fenv.start(["sleep", "1000"], runtime=runtime)
    assert d.stop(0.2)["exit_code"] == 137  # kill (TERM, then KILL --all) and delete, in-process
    assert calls.read_text() == ""
    assert not os.listdir(fenv.root) or os.listdir(fenv.root) == ["@seccomp-cache"]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_library_verbs_give_the_cli_messages(fenv: FastEnv) -> None:
    import stackd.engine.runtime.api  # noqa: F401  (imported before the fork: pytest has threads)
    from stackd.engine.shim.proc import Runtime

    rt = Runtime(STACKD_RUNTIME, root=fenv.root)
    assert rt.library
    rc, err = rt.delete("no-such-container", force=True)
    cli = subprocess.run([STACKD_RUNTIME, "--root", fenv.root, "delete", "--force",
                          "no-such-container"], capture_output=True, text=True)
    assert (rc, f"stackd-runtime: {err}\n") == (cli.returncode, cli.stderr)
    assert rc != 0 and "no-such-container" in err
    assert not Runtime("runc", root=fenv.root).library


def _creator(env: FastEnv) -> int:
    state = Path(env.root, env.shims[-1][0], "state.json").read_text()
    return int(json.loads(state)["creator"])


def test_fast_path_bad_shim_interpreter_leaves_nothing(fenv: FastEnv) -> None:
    cid, bundle = fenv.bundle(["sleep", "1000"])
    shim_dir = str(fenv.tmp / "shim-bad")
    fenv.shims.append((cid, shim_dir))
    cfg = ShimConfig(id=cid, bundle=bundle, runtime=STACKD_RUNTIME, runtime_root=fenv.root)
    with pytest.raises(ShimError, match="cannot run the shim interpreter /nonexistent/python"):
        start_shim(shim_dir, cfg, python="/nonexistent/python")
    assert not os.path.exists(os.path.join(fenv.root, cid))


def test_fast_path_restart_policy_goes_through_the_cli(fenv: FastEnv) -> None:
    runtime, calls = _wrapper(fenv)
    c = fenv.start(["sh", "-c", "echo run; test -f /once && exec sleep 1000; touch /once; exit 1"],
                   restart="on-failure:2", runtime=runtime)
    assert _creator(fenv) == _shim_pid(c)  # the first run: created by the shim itself (in-process)
    wait_for(lambda: c.state()["restart_count"] == 1 and c.state()["status"] == "running")
    assert _creator(fenv) not in (_shim_pid(c), 0)  # the restart: by `stackd-runtime create`
    st = c.state()
    assert int(_status(int(st["pid"]))["PPid"]) == _shim_pid(c)  # type: ignore[call-overload]
    assert [log for _, log in _log(c)] == ["run\n"] * 2
    assert c.stop(0.2)["exit_code"] == 137
    assert [line.split()[6] for line in calls.read_text().splitlines()] == ["create"]


def test_fast_path_shim_killed_is_reported(fenv: FastEnv) -> None:
    c = fenv.start(["sleep", "1000"])
    before = c.state()
    os.kill(_shim_pid(c), signal.SIGKILL)
    status = wait_for(lambda: (lambda s: s if not s.shim_alive else None)(probe(c.directory)))
    assert status.container == "running"  # type: ignore[attr-defined]
    assert status.container_pid == before["pid"]  # type: ignore[attr-defined]
    with pytest.raises(ShimError, match="cannot reach"):
        c.state()
    subprocess.run([STACKD_RUNTIME, "--root", fenv.root, "kill", fenv.shims[0][0], "KILL"],
                   check=True)
    wait_for(lambda: probe(c.directory).container == "stopped")


def test_fast_path_shim_rss_under_10_mb(fenv: FastEnv) -> None:
    from stackd.engine.shim.client import PACKAGE_ROOT, shim_python

    pkg = Path(PACKAGE_ROOT, "stackd")  # steady state: a shim that compiles its modules is bigger
    subprocess.run([shim_python(), "-m", "compileall", "-q", "-l", str(pkg), str(pkg / "engine"),
                    str(pkg / "engine/shim")], check=True)
    c = fenv.start(["sleep", "1000"])
    assert c.exec_run(["true"])[0] == 0
    c.state()
    pid = _shim_pid(c)
    rss_kb = int(_status(pid)["VmRSS"].split()[0])
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "_ctypes" not in maps and "libffi" not in maps
    assert rss_kb < 10 * 1024
    c.stop(0.1)


def test_runc_keeps_the_spawn_path(fenv: FastEnv) -> None:
    c = fenv.start(["sh", "-c", "echo via runc"], runtime="runc")
    cmd = Path(f"/proc/{_shim_pid(c)}/cmdline").read_bytes().split(b"\0")
    assert b"serve" in cmd and b"adopt" not in cmd
    assert c.wait(10)["exit_code"] == 0
    assert _log(c) == [("stdout", "via runc\n")]
