"""Each config.json feature, observed from inside a real busybox container."""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.root


def run_out(runtime, bundle, script: str) -> str:
    bundle.write(["sh", "-c", script])
    p = runtime.run(bundle)
    assert p.returncode == 0, p.stderr
    return p.stdout


def status_field(text: str, name: str) -> str:
    return next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith(name + ":"))


def test_capabilities_all_sets(runtime, bundle):
    caps = bundle.config["process"]["capabilities"]
    caps["bounding"] = ["CAP_KILL", "CAP_NET_RAW", "CAP_CHOWN"]
    caps["permitted"] = ["CAP_KILL", "CAP_NET_RAW"]
    caps["effective"] = ["CAP_KILL"]
    caps["inheritable"] = ["CAP_NET_RAW"]
    caps["ambient"] = ["CAP_NET_RAW"]
    out = run_out(runtime, bundle, "cat /proc/self/status")
    # sh's status after exec: ambient NET_RAW raised (bit 13), bounding KILL|NET_RAW|CHOWN
    assert int(status_field(out, "CapBnd"), 16) == (1 << 5) | (1 << 13) | (1 << 0)
    assert int(status_field(out, "CapAmb"), 16) == 1 << 13
    assert int(status_field(out, "CapInh"), 16) == 1 << 13
    assert int(status_field(out, "NoNewPrivs")) == 1


def test_user_groups_umask_env_cwd(runtime, bundle):
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 7], "umask": 0o077}
    bundle.config["process"]["env"].append("GREETING=hi there")
    bundle.config["process"]["cwd"] = "/tmp"
    out = run_out(runtime, bundle, "id -u; id -g; id -G; umask; echo $GREETING; pwd")
    assert out.split("\n")[:6] == ["1000", "1001", "1001 5 7", "0077", "hi there", "/tmp"]


def test_hostname_domainname_and_namespaces(runtime, bundle):
    bundle.config["hostname"] = "box"
    bundle.config["domainname"] = "example.org"
    out = run_out(runtime, bundle, "hostname; cat /proc/sys/kernel/domainname; echo $$; ls /proc | grep -c '^[0-9]'")
    host, domain, pid, nprocs = out.split()
    assert (host, domain, pid) == ("box", "example.org", "1")
    assert int(nprocs) <= 3  # only the container's processes are visible


def test_rlimits_and_clamp_warning(runtime, bundle):
    bundle.config["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576},
        {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
    ]
    bundle.write(["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u; ulimit -Hu"])
    p = runtime.run(bundle)
    assert p.returncode == 0, p.stderr
    soft_n, hard_n, soft_u, hard_u = p.stdout.split()
    host_hard = int(Path("/proc/self/limits").read_text().split("Max open files")[1].split()[1])
    assert (soft_u, hard_u) == ("300", "400")
    if host_hard < 1048576:  # this host: no CAP_SYS_RESOURCE, so clamp with a warning
        assert int(hard_n) == host_hard and "RLIMIT_NOFILE" in p.stderr and "clamped" in p.stderr
    else:
        assert soft_n == "1048576"


def test_user_namespace_maps(runtime, bundle):
    bundle.config["linux"]["namespaces"].append({"type": "user"})
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    # the rootfs must be owned by the mapped root to be usable; chown the copy
    os.system(f"chown -hR 100000:100000 {bundle.rootfs}")
    for parent in bundle.rootfs.parents:  # pytest's tmp dirs are 0700: let the mapped root through
        if str(parent) in ("/", "/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    out = run_out(runtime, bundle, "cat /proc/self/uid_map /proc/self/gid_map; id -u")
    assert out.split() == ["0", "100000", "65536", "0", "100000", "65536", "0"]


@pytest.mark.parametrize("abstract", [False, True], ids=["long-path", "abstract"])
def test_console_socket_gets_pty_master(runtime, bundle, tmp_path, abstract):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if abstract:  # `@name`: the abstract socket name, as runc reads it (stackd's old shim passes these)
        name = f"stackd-test-console-{os.getpid()}-{secrets.token_hex(4)}"
        srv.bind("\0" + name)
        path = "@" + name
    else:  # a long socket path (> 108 bytes) must work: runc connects through /proc/self/fd
        d = tmp_path / ("x" * 100)
        d.mkdir()
        path = str(d / "console.sock")
        dfd = os.open(d, os.O_PATH)
        srv.bind(f"/proc/self/fd/{dfd}/console.sock")
        os.close(dfd)
    srv.listen(1)
    got: dict[str, object] = {}

    def serve() -> None:
        conn, _ = srv.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        got["name"] = msg.decode()
        data = b""
        while b"done" not in data:
            try:
                chunk = os.read(fds[0], 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        got["data"] = data
        os.close(fds[0])
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    bundle.config["process"]["terminal"] = True
    bundle.write(["sh", "-c", "tty; test -t 0 && test -t 1 && echo done"])
    p = runtime("run", "--bundle", str(bundle.path), "--console-socket", path, "c1", check=False)
    t.join(10)
    srv.close()
    assert p.returncode == 0, p.stderr
    assert str(got["name"]).startswith("/dev/pts/")
    assert b"/dev/pts/0" in got["data"] and b"done" in got["data"]


def test_preserve_fds_and_listen_fds(runtime, bundle, tmp_path):
    import subprocess

    f = tmp_path / "shared"
    f.write_text("from the host\n")
    bundle.write(["sh", "-c", "cat <&3; cat <&4; echo $LISTEN_FDS $LISTEN_PID; test -e /proc/self/fd/7 && echo leak"])
    argv = [*runtime.argv, "--root", str(runtime.root), "run", "--preserve-fds", "1", "--bundle", str(bundle.path),
            "c1"]
    # fd 3 is passed by socket activation (LISTEN_FDS), fd 4 by --preserve-fds; fd 7 must not leak
    script = 'export LISTEN_PID=$$ LISTEN_FDS=1; exec 3<"$0" 4<"$0" 7<"$0"; exec "$@"'
    p = subprocess.run(["sh", "-c", script, str(f), *argv], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p.stderr  # `test -e` failed: no leak
    assert p.stdout.splitlines() == ["from the host", "from the host", "1 1"]


def test_hooks_get_state_on_stdin(runtime, bundle, tmp_path):
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho \"$1 $MYVAR $(cat)\" >> {log}\n")
    hook.chmod(0o755)
    kinds = ["prestart", "createRuntime", "poststart", "poststop"]
    bundle.config["hooks"] = {k: [{"path": str(hook), "args": ["hook.sh", k], "env": ["MYVAR=v"], "timeout": 5}]
                              for k in kinds}
    bundle.write(["true"])
    p = runtime.run(bundle)
    assert p.returncode == 0, p.stderr
    lines = log.read_text().splitlines()
    assert [ln.split(" ", 1)[0] for ln in lines] == kinds
    for ln in lines:
        _, var, state = ln.split(" ", 2)
        assert var == "v" and json.loads(state)["id"] == "c1"
    assert json.loads(lines[0].split(" ", 2)[2])["pid"] > 0


def test_failing_hook_aborts_create(runtime, bundle, tmp_path):
    bundle.config["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}
    bundle.write(["true"])
    p = runtime("create", "--bundle", str(bundle.path), "c1", check=False)
    assert p.returncode == 1 and "createRuntime hook /bin/false" in p.stderr
    assert runtime("list", "-q").stdout == ""


def test_exec_into_running_container(runtime, bundle, tmp_path):
    bundle.config["hostname"] = "inside"
    bundle.write(["sleep", "1000"])
    runtime("run", "-d", "--bundle", str(bundle.path), "c1")
    p = runtime("exec", "--env", "A=b", "--cwd", "/tmp", "--user", "1000:1000", "c1",
                "sh", "-c", "hostname; echo $A; pwd; id -u; cat /proc/1/cmdline; exit 4", check=False)
    assert p.returncode == 4, p.stderr
    lines = p.stdout.split("\n")
    assert lines[:4] == ["inside", "b", "/tmp", "1000"] and lines[4].startswith("sleep")
    pidfile = tmp_path / "exec.pid"
    runtime("exec", "-d", "--pid-file", str(pidfile), "c1", "sleep", "999")
    pid = int(pidfile.read_text())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().startswith(b"sleep\x00999")
    ps = json.loads(runtime("ps", "--format", "json", "c1").stdout)
    assert pid in ps and runtime.state("c1")["pid"] in ps


def test_pause_resume(runtime, bundle):
    bundle.write(["sleep", "1000"])
    runtime("run", "-d", "--bundle", str(bundle.path), "c1")
    pid = runtime.state("c1")["pid"]
    runtime("pause", "c1")
    assert runtime.state("c1")["status"] == "paused"
    assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("D", "S")
    p = runtime("exec", "c1", "true", check=False)
    assert p.returncode == 1 and "paused" in p.stderr
    runtime("resume", "c1")
    assert runtime.state("c1")["status"] == "running"
    runtime("delete", "--force", "c1")


def test_oom_is_reported(runtime, bundle):
    bundle.config["linux"]["resources"]["memory"] = {"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024}
    bundle.write(["sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"])
    p = runtime.run(bundle)
    assert p.returncode == 137
