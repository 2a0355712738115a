"""Attacks from inside real containers built with the default `stackd-runtime spec` config."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root


def run_script(runtime, bundle, script: str, cid: str = "c1"):
    bundle.write(["sh", "-c", script])
    return runtime.run(bundle, cid)


def test_escape_suite_with_default_config(runtime, bundle, tmp_path):
    marker = tmp_path / "host-secret"
    marker.write_text("secret")
    host_pid = os.getpid()
    script = f"""
    echo pids=$(ls /proc | grep -c '^[0-9]')
    mount -t tmpfs none /tmp 2>/dev/null && echo MOUNTED
    echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo PROCSYS
    echo x > /sys/kernel/uevent_helper 2>/dev/null && echo SYSFS
    echo kcore=$(head -c 16 /proc/kcore 2>/dev/null | wc -c)
    insmod /bin/busybox 2>&1 | grep -q 'not permitted' && echo module-eperm
    ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1 && echo RAWSOCKET
    for p in /proc/[0-9]*; do test -e $p/root{marker} && echo HOSTFILE; done
    test -e /proc/{host_pid}/root{marker} && echo HOSTFILE
    for fd in /proc/self/fd/*; do echo fd=${{fd##*/}}=$(readlink $fd); done
    echo cwd=$(readlink /proc/self/cwd)
    grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status
    touch /rootfs-write 2>/dev/null && echo ROOTWRITE
    echo done
    """
    p = run_script(runtime, bundle, script)
    out = p.stdout
    assert "done" in out, p.stderr
    for bad in ("MOUNTED", "PROCSYS", "SYSFS", "RAWSOCKET", "HOSTFILE", "ROOTWRITE"):
        assert bad not in out, out
    assert int(out.split("pids=")[1].split()[0]) <= 4
    assert "kcore=0" in out and "module-eperm" in out
    fds = [ln[3:].split("=", 1) for ln in out.splitlines() if ln.startswith("fd=")]
    assert [n for n, _ in fds][:3] == ["0", "1", "2"]
    assert all(target == "" for n, target in fds if int(n) >= 3), fds  # only the glob's own, closed, fd
    assert "cwd=/\n" in out
    assert "NoNewPrivs:\t1" in out and "CapEff:\t00000000a0000420" not in out
    if "seccomp" in bundle.config["linux"]:
        assert "Seccomp:\t2" in out


def test_runtime_interpreter_unreachable_from_container(runtime, bundle, tmp_path, rootfs_template):
    """CVE-2019-5736 class: a process joining the container cannot open the runtime's /proc/PID/exe."""
    from tests.engine.runtime.conftest import Bundle

    exe = os.path.realpath(sys.executable)
    before = hashlib.sha256(Path(exe).read_bytes()).hexdigest()
    bundle.write(["sleep", "1000"])
    runtime("create", "--bundle", str(bundle.path), "victim")  # its init is still the runtime (python)
    pid = runtime.state("victim")["pid"]
    assert os.path.realpath(f"/proc/{pid}/exe") == exe
    attacker_dir = tmp_path / "attacker"
    attacker_dir.mkdir()
    attacker = Bundle(attacker_dir, rootfs_template)
    for ns in attacker.config["linux"]["namespaces"]:
        if ns["type"] == "pid":
            ns["path"] = f"/proc/{pid}/ns/pid"
    attacker.write(["sh", "-c", "readlink /proc/1/exe || echo noreadlink; cat /proc/1/exe >/dev/null 2>&1 || "
                    "echo noread; (echo x >> /proc/1/exe) 2>/dev/null || echo nowrite; readlink /proc/1/fd/0 >/dev/null 2>&1 "
                    "|| echo nofds"])
    p = runtime.run(attacker, "attacker")
    assert p.stdout.split() == ["noreadlink", "noread", "nowrite", "nofds"], p.stdout + p.stderr
    assert hashlib.sha256(Path(exe).read_bytes()).hexdigest() == before


def test_proc_self_exe_script_runs_sealed_helper_not_python(runtime, bundle):
    """`#!/proc/self/exe` (or a link to it) must never run the host's interpreter inside the container."""
    (bundle.rootfs / "evil").write_text("#!/proc/self/exe\nimport os\n")
    (bundle.rootfs / "evil").chmod(0o755)
    (bundle.rootfs / "evil2").symlink_to("/proc/self/exe")
    for prog in ("/evil", "/evil2"):
        bundle.write([prog])
        p = runtime.run(bundle)
        assert p.returncode == 127, (prog, p.returncode, p.stderr)
        assert "Python" not in p.stderr and "python" not in p.stderr


def test_mount_destination_symlink_cannot_escape(runtime, bundle, tmp_path):
    host_dir = tmp_path / "host-target"
    host_dir.mkdir()
    (bundle.rootfs / "escape").symlink_to(str(host_dir))  # absolute: means rootfs/<host_dir> inside
    (bundle.rootfs / "up").symlink_to("../../../../../../../..")
    bundle.config["mounts"].append({"destination": "/escape/x", "type": "tmpfs", "source": "tmpfs"})
    bundle.config["mounts"].append({"destination": "/up/y", "type": "tmpfs", "source": "tmpfs"})
    out = run_script(runtime, bundle, f"grep -c ' {host_dir}/x ' /proc/self/mountinfo; grep -c ' /y ' /proc/self/mountinfo")
    assert out.stdout.split() == ["1", "1"], out.stderr
    assert list(host_dir.iterdir()) == []  # nothing created or mounted on the host
    assert not os.path.exists("/y")
    assert (bundle.rootfs / str(host_dir).lstrip("/") / "x").is_dir()


def test_rootfs_mounts_dev_masked_readonly(runtime, bundle, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("data")
    bundle.config["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(src), "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["noexec", "size=4m"]},
    ]
    bundle.config["linux"]["devices"] = [{"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3,
                                          "fileMode": 0o600}]
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    script = """cat /data/f; echo; touch /data/g 2>/dev/null || echo data-ro
    cp /bin/busybox /scratch/b && (/scratch/b true 2>/dev/null || echo noexec)
    ls /dev | tr '\\n' ' '; echo; stat -c '%F %t:%T %a' /dev/mydev; readlink /dev/ptmx; readlink /dev/fd
    cat /proc/sys/net/ipv4/ip_forward; grep ' /proc/sys ' /proc/self/mountinfo | grep -c ' ro,'
    cat /proc/timer_list | wc -c"""
    p = run_script(runtime, bundle, script)
    lines = p.stdout.splitlines()
    assert lines[:3] == ["data", "data-ro", "noexec"], p.stdout + p.stderr
    for dev in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd",
                "stdin", "stdout", "stderr", "mydev"):
        assert dev in lines[3].split(), lines[3]
    assert lines[4] == "character special file 1:3 600"
    assert lines[5:7] == ["pts/ptmx", "/proc/self/fd"]
    assert lines[7:10] == ["1", "1", "0"]
    assert not any(ln.split()[4] == "/data" for ln in Path("/proc/self/mountinfo").read_text().splitlines())


def test_no_pivot(runtime, bundle):
    bundle.write(["sh", "-c", "cat /proc/self/mountinfo | head -1; ls /"])
    p = runtime("run", "--no-pivot", "--bundle", str(bundle.path), "c1", check=False)
    assert p.returncode == 0, p.stderr
    assert "bin" in p.stdout.split()


def test_same_results_as_runc(runtime, runc, bundle):
    """Differential: the same bundle under runc shows the same caps, mounts, hostname, limits, /dev."""
    cfg = bundle.config
    cfg["hostname"] = "diff"
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1000, "hard": 1000}]
    script = ("hostname; grep -E '^Cap|^NoNewPrivs|^Seccomp:' /proc/self/status; ulimit -n; ls /dev | tr '\\n' ' '; "
              "echo; awk '{print $5, $9}' /proc/self/mountinfo | sort; id")
    bundle.write(["sh", "-c", script])
    ours = runtime.run(bundle, "d1")
    theirs = runc.run(bundle, "d2")
    assert ours.returncode == theirs.returncode == 0, (ours.stderr, theirs.stderr)
    ours_lines, runc_lines = ours.stdout.splitlines(), theirs.stdout.splitlines()
    # runc 1.1 mounts the v1 hierarchies of this hybrid host the same way; compare everything else exactly
    def strip(lines):
        return [ln for ln in lines if not ln.startswith("/sys/fs/cgroup")]
    assert strip(ours_lines) == strip(runc_lines), json.dumps([ours_lines, runc_lines])


ATTACK_C = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *what, long rc) {
    printf("%s=%s\n", what, rc == -1 ? strerror(errno) : "OK");
}

int main(int argc, char **argv) {
    /* keyctl family: the kernel keyring is not namespaced. */
    report("keyctl", syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, "stackd-test"));
    report("add_key", syscall(SYS_add_key, "user", "stackd", "x", 1, -2 /* SESSION */));
    report("request_key", syscall(SYS_request_key, "user", "stackd", NULL, 0));
    /* ptrace of a host process (its host pid) and of the container's own init. */
    report("ptrace_host", ptrace(PTRACE_ATTACH, atoi(argv[1]), NULL, NULL));
    report("ptrace_init", ptrace(PTRACE_ATTACH, 1, NULL, NULL));
    return 0;
}
"""


@pytest.fixture(scope="module")
def attack_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static program that makes the raw syscalls busybox has no applet for."""
    import shutil
    import subprocess

    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the syscall attack program (apt install gcc libc6-dev)")
    d = tmp_path_factory.mktemp("attack")
    (d / "attack.c").write_text(ATTACK_C)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(d / "attack"), str(d / "attack.c")], check=True)
    return d / "attack"


def test_keyctl_and_ptrace_of_host_processes_fail(runtime, bundle, attack_binary):
    """The default profile denies the keyring calls; host processes cannot be traced (or seen)."""
    import shutil

    shutil.copy(attack_binary, bundle.rootfs / "bin" / "attack")
    p = run_script(runtime, bundle, f"/bin/attack {os.getpid()}")
    result = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    assert result["keyctl"] == result["add_key"] == result["request_key"] == "Operation not permitted", p.stdout
    assert result["ptrace_host"] == "No such process", p.stdout  # the host pid does not exist in here
    assert result["ptrace_init"] != "OK", p.stdout  # PID 1 is itself: not attachable
