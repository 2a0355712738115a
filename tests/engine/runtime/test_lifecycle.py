"""The runc command line and the OCI lifecycle, observed on real busybox containers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root


def wait_for(pred, timeout: float = 10.0) -> None:
    """Poll a condition the kernel reaches asynchronously (process exit, state change)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_run_foreground_exits_with_container_status(runtime, bundle):
    bundle.write(["sh", "-c", "echo hello; exit 7"])
    p = runtime.run(bundle)
    assert p.returncode == 7, p.stderr
    assert p.stdout == "hello\n"
    assert runtime("list", "--format", "json").stdout.strip() == "[]"  # run deletes the container


def test_run_killed_by_signal_is_128_plus_signal(runtime, bundle):
    import subprocess

    bundle.write(["sleep", "1000"])
    proc = subprocess.Popen([*runtime.argv, "--root", str(runtime.root), "run", "--bundle", str(bundle.path), "c1"])
    try:
        wait_for(lambda: (runtime.root / "c1" / "state.json").exists()
                 and runtime.state("c1")["status"] == "running")
        runtime("kill", "c1", "SIGKILL")
        assert proc.wait(timeout=20) == 128 + 9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_create_start_state_kill_delete(runtime, bundle, tmp_path):
    bundle.write(["sleep", "1000"])
    pidfile = tmp_path / "pid"
    runtime("create", "--bundle", str(bundle.path), "--pid-file", str(pidfile), "c1")
    st = runtime.state("c1")
    assert st["status"] == "created" and st["id"] == "c1" and st["bundle"] == str(bundle.path)
    assert st["pid"] == int(pidfile.read_text()) > 0
    # the process waits before exec: it is still the runtime, not sleep
    assert os.readlink(f"/proc/{st['pid']}/exe") != "/bin/busybox"
    runtime("start", "c1")
    st = runtime.state("c1")
    assert st["status"] == "running"
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"sleep", b"1000"]
    p = runtime("delete", "c1", check=False)
    assert p.returncode == 1 and "cannot delete container c1 in state 'running'" in p.stderr
    runtime("kill", "c1", "KILL")
    wait_for(lambda: runtime.state("c1")["status"] == "stopped")
    assert runtime.state("c1")["status"] == "stopped"
    runtime("delete", "c1")
    p = runtime("state", "c1", check=False)
    assert p.returncode == 1 and "c1" in p.stderr and "does not exist" in p.stderr


def test_invalid_verbs_name_state(runtime, bundle):
    bundle.write(["sleep", "1000"])
    runtime("create", "--bundle", str(bundle.path), "c1")
    p = runtime("resume", "c1", check=False)
    assert p.returncode == 1 and "cannot resume container c1 in state 'created'" in p.stderr
    runtime("start", "c1")
    p = runtime("start", "c1", check=False)
    assert "cannot start container c1 in state 'running'" in p.stderr
    runtime("kill", "c1", "9")
    runtime("delete", "--force", "c1")
    assert runtime("list", "-q").stdout == ""


def test_kill_by_name_and_delete_force_created(runtime, bundle):
    bundle.write(["sh", "-c", "trap 'exit 3' USR1; while true; do sleep 0.01; done"])
    runtime("create", "--bundle", str(bundle.path), "c1")
    pid = runtime.state("c1")["pid"]
    runtime("delete", "--force", "c1")
    assert not os.path.exists(f"/proc/{pid}/exe") or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_list_and_duplicate_id(runtime, bundle):
    bundle.write(["sleep", "1000"])
    runtime("run", "--detach", "--bundle", str(bundle.path), "a")
    p = runtime("create", "--bundle", str(bundle.path), "a", check=False)
    assert p.returncode == 1 and "container a already exists" in p.stderr
    states = json.loads(runtime("list", "--format", "json").stdout)
    assert [(s["id"], s["status"]) for s in states] == [("a", "running")]
    assert "running" in runtime("list").stdout


def test_errors_name_container_and_step(runtime, bundle):
    bundle.write(["/no/such/program"])
    p = runtime("create", "--bundle", str(bundle.path), "bad", check=False)
    assert p.returncode == 1
    assert "container bad" in p.stderr and "find executable" in p.stderr and "/no/such/program" in p.stderr
    assert runtime("list", "-q").stdout == ""  # nothing left behind


def test_spec_features_version(runtime, tmp_path):
    runtime("spec", "--bundle", str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["ociVersion"].startswith("1.") and cfg["process"]["noNewPrivileges"] is True
    assert "seccomp" in cfg["linux"]
    feats = json.loads(runtime("features").stdout)
    assert "user" in feats["linux"]["namespaces"] and "CAP_KILL" in feats["linux"]["capabilities"]
    assert "stackd-runtime version" in runtime("--version").stdout
    assert runtime("bogus", check=False).returncode == 2


def test_bad_config_is_reported_with_the_key(runtime, bundle):
    bundle.config["ociVersion"] = "2.0.0"
    bundle.write(["true"])
    p = runtime("create", "--bundle", str(bundle.path), "c1", check=False)
    assert p.returncode == 1 and "ociVersion" in p.stderr and "not supported" in p.stderr


def test_log_json(runtime, bundle, tmp_path):
    log = tmp_path / "log.json"
    p = runtime("--log", str(log), "--log-format", "json", "state", "nope", check=False)
    assert p.returncode == 1
    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec["level"] == "error" and "nope" in rec["msg"]


def test_api_in_process_lifecycle(bundle, tmp_path):
    from stackd.engine.runtime import api

    bundle.write(["sh", "-c", "exit 5"])
    root = str(tmp_path / "api-root")
    r, w = os.pipe()
    try:
        pid = api.create(root, "x", str(bundle.path), stdio=(r, w, w))
        assert api.state(root, "x")["status"] == "created"
        api.start(root, "x")
        _, status = os.waitpid(pid, 0) if _is_child(pid) else (0, 5 << 8)
        assert os.waitstatus_to_exitcode(status) == 5
        wait_for(lambda: api.state(root, "x")["status"] == "stopped")
        assert api.state(root, "x")["status"] == "stopped"
        api.delete(root, "x")
    finally:
        os.close(r)
        os.close(w)
        if os.path.exists(os.path.join(root, "x")):
            api.delete(root, "x", force=True)


def _is_child(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
