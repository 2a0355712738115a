"""seccomp: OCI sections compiled with libseccomp, loaded in a forked child, observed by syscalls."""

from __future__ import annotations

import ctypes
import errno
import os
import signal

import pytest

from stackd.engine.runtime import seccomp, seccomp_default
from stackd.errors import RuntimeSpecError

pytestmark = [
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are x86_64's"),
    # pytest-xdist workers have threads; the forked children only make syscalls, then _exit.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]
LIBC = ctypes.CDLL(None, use_errno=True)  # resolved before any fork: children never dlopen
LIBC.syscall.restype = ctypes.c_long

NR = {"keyctl": 250, "add_key": 248, "getpriority": 140, "personality": 135, "unshare": 272,
      "mount": 165, "clone3": 435, "init_module": 175, "getppid": 110, "setns": 308, "bpf": 321,
      "mseal": 462, "huge": 1000, "request_key": 249, "kexec_load": 246, "kexec_file_load": 320,
      "open_by_handle_at": 304, "perf_event_open": 298, "umount2": 166, "finit_module": 313, "delete_module": 176,
      "swapon": 167, "reboot": 169, "acct": 163, "settimeofday": 164, "iopl": 172, "kcmp": 312, "fsopen": 430}  # fmt: skip
CLONE_NEWUSER, CLONE_NEWUTS = 0x10000000, 0x04000000


def cat(path: str) -> str:
    with open(path) as f:
        return f.read()


def syscall(name: str, *args: int) -> int:
    """Call a syscall; returns its result, or -errno on failure."""
    ctypes.set_errno(0)
    rc = LIBC.syscall(ctypes.c_long(NR[name]), *(ctypes.c_long(a) for a in args))
    return -ctypes.get_errno() if rc == -1 else rc


def in_child(prepared: seccomp.Prepared, fn) -> tuple[str, int]:
    """Fork; the child loads the filter, runs fn, and reports fn's result; returns (result, status)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            prepared.load()
            os.write(w, str(fn()).encode())
        except BaseException as e:
            os.write(w, f"error: {e}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return out, status


def compile_quiet(section: dict) -> seccomp.Prepared:
    warnings: list[str] = []
    prepared = seccomp.prepare(section, warn=warnings.append)
    assert prepared is not None
    return prepared


def allow_all(*rules: dict, **extra: object) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": list(rules), **extra}


def test_none_and_empty_mean_no_filter() -> None:
    assert seccomp.prepare(None) is None
    assert seccomp.prepare({}) is None


def test_errno_rule_custom_errno_and_status_line() -> None:
    p = compile_quiet(allow_all(
        {"names": ["keyctl", "add_key"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42},
    ))  # fmt: skip

    def probe() -> str:
        status = cat("/proc/self/status")
        mode = status.split("Seccomp:")[1].split()[0]
        return f"{syscall('keyctl', 0, 0)} {syscall('add_key', 0, 0, 0, 0, 0)} {syscall('getpriority', 0, 0)} {syscall('getppid') > 0} {mode}"

    out, status = in_child(p, probe)
    assert out == f"{-errno.EPERM} {-errno.EPERM} -42 True 2"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_arg_conditions_and_same_index_rules_are_ored() -> None:
    p = compile_quiet(allow_all(
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 7,
         "args": [{"index": 0, "value": 0x1234, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 0x4321, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9,
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 0xF0, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"}]},
    ))  # fmt: skip
    out, _ = in_child(
        p,
        lambda: [
            syscall("personality", 0x1234), syscall("personality", 0x4321), syscall("personality", 0xFFFFFFFF) >= 0,
            syscall("getpriority", 0, 0x1F), syscall("getpriority", 0, 0x20) >= 0, syscall("getpriority", 1, 0x10),
        ],
    )  # fmt: skip
    # getpriority(PRIO_PGRP, 0x10) fails on its own with ESRCH, not by the filter's errno 9.
    assert out == "[-7, -7, True, -9, True, -3]"


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"])
def test_kill_and_trap_end_the_process_with_sigsys(action: str) -> None:
    p = compile_quiet(allow_all({"names": ["keyctl"], "action": action}))
    out, status = in_child(p, lambda: syscall("keyctl", 0, 0))
    assert out == ""
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_log_allows() -> None:
    p = compile_quiet(allow_all({"names": ["getppid"], "action": "SCMP_ACT_LOG"}))
    out, status = in_child(p, lambda: syscall("getppid") == os.getppid())
    assert out == "True" and os.WEXITSTATUS(status) == 0


def test_default_errno_ret_and_allowlist() -> None:
    section = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"],
        "syscalls": [{"names": ["write", "exit", "exit_group", "getppid", "rt_sigreturn"], "action": "SCMP_ACT_ALLOW"}],
    }
    p = compile_quiet(section)
    assert p.flags == 7
    out, _ = in_child(p, lambda: f"{syscall('getppid') > 0} {syscall('keyctl', 0, 0)}")
    assert out == f"True {-errno.ENOSYS}"


def test_syscalls_newer_than_the_allowlist_get_enosys() -> None:
    p = compile_quiet({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["write", "exit", "exit_group", "getppid", "rt_sigreturn", "fchmodat2"], "action": "SCMP_ACT_ALLOW"}]})  # fmt: skip
    out, _ = in_child(p, lambda: f"{syscall('keyctl', 0, 0)} {syscall('mseal', 0, 0, 0)} {syscall('huge')}")
    assert out == f"{-errno.EPERM} {-errno.ENOSYS} {-errno.ENOSYS}"
    docker = compile_quiet(seccomp.default_profile())
    assert in_child(docker, lambda: syscall("mseal", 0, 0, 0))[0] == str(-errno.ENOSYS)


def test_unknown_syscall_warns_and_is_skipped() -> None:
    warnings: list[str] = []
    p = seccomp.prepare(allow_all({"names": ["no_such_call", "keyctl"], "action": "SCMP_ACT_ERRNO"}), warn=warnings.append)
    assert p is not None and len(warnings) == 1 and "no_such_call" in warnings[0]
    out, _ = in_child(p, lambda: syscall("keyctl", 0, 0))
    assert out == str(-errno.EPERM)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (allow_all(listenerPath="/run/agent.sock"), "listenerPath"),
        (allow_all({"names": ["keyctl"], "action": "SCMP_ACT_NOTIFY"}), "SCMP_ACT_NOTIFY"),
        (allow_all({"names": ["keyctl"], "action": "SCMP_ACT_NOPE"}), "unknown action"),
        (allow_all(flags=["SECCOMP_FILTER_FLAG_NEW_LISTENER"]), "unsupported flag"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}, "unknown architecture"),
        (allow_all({"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 7, "op": "SCMP_CMP_EQ"}]}), "index"),
        (allow_all({"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "op": "SCMP_CMP_LIKE"}]}), "comparison"),
    ],
)
def test_invalid_sections_raise_clear_errors(section: dict, message: str) -> None:
    with pytest.raises(RuntimeSpecError, match=message):
        seccomp.prepare(section)


def test_disk_cache_gives_the_same_program(tmp_path) -> None:
    section = allow_all({"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5})
    seccomp._MEMO.clear()
    first = compile_quiet(section)
    seccomp._MEMO.clear()
    seccomp.prepare(section, cache_dir=str(tmp_path))
    assert len(list(tmp_path.iterdir())) == 1
    seccomp._MEMO.clear()
    cached = seccomp.prepare(section, cache_dir=str(tmp_path))
    assert cached is not None and cached.program == first.program
    assert in_child(cached, lambda: syscall("keyctl", 0, 0))[0] == "-5"


# -- Docker's default profile --------------------------------------------------------------------


def test_default_profile_compiles_without_unknown_names() -> None:
    warnings: list[str] = []
    p = seccomp.prepare(seccomp.default_profile(), warn=warnings.append)
    assert p is not None and warnings == []
    names = {n for s in seccomp.default_profile()["syscalls"] for n in s["names"]}
    assert {"read", "execve", "clone", "personality", "arch_prctl", "socket"} <= names
    assert not names & {"keyctl", "add_key", "request_key", "init_module", "finit_module", "delete_module",
                        "kexec_load", "mount", "umount2", "bpf", "perf_event_open", "unshare", "setns",
                        "open_by_handle_at", "reboot", "swapon"}  # fmt: skip


def test_default_profile_blocks_escapes_and_allows_ordinary_work() -> None:
    p = compile_quiet(seccomp.default_profile())
    out, status = in_child(
        p,
        lambda: [
            syscall("keyctl", 0, 0), syscall("unshare", CLONE_NEWUSER), syscall("mount", 0, 0, 0, 0, 0),
            syscall("init_module", 0, 0, 0), syscall("setns", -1, 0), syscall("bpf", 0, 0, 0),
            syscall("clone3", 0, 0), syscall("personality", 0x0008) >= 0, syscall("getppid") > 0,
        ],
    )  # fmt: skip
    eperm = -errno.EPERM
    assert out == f"[{eperm}, {eperm}, {eperm}, {eperm}, {eperm}, {eperm}, {-errno.ENOSYS}, True, True]"
    assert os.WEXITSTATUS(status) == 0


ESCAPES = ["add_key", "request_key", "kexec_load", "kexec_file_load", "open_by_handle_at", "perf_event_open",
           "umount2", "finit_module", "delete_module", "swapon", "reboot", "acct", "settimeofday", "iopl", "kcmp",
           "fsopen"]  # fmt: skip


def test_default_profile_denies_the_escape_syscalls_with_eperm() -> None:
    p = compile_quiet(seccomp.default_profile())
    out, _ = in_child(p, lambda: [syscall(n, 0, 0, 0, 0, 0) for n in ESCAPES])
    assert out == str([-errno.EPERM] * len(ESCAPES))


def test_default_profile_with_sys_admin_allows_namespaces() -> None:
    p = compile_quiet(seccomp.default_profile([*seccomp_default.DEFAULT_CAPS, "CAP_SYS_ADMIN"]))
    out, _ = in_child(p, lambda: syscall("unshare", CLONE_NEWUTS))  # the child's own new UTS ns
    assert out == "0"


def test_default_profile_conditions_on_caps() -> None:
    def names(caps: list[str]) -> set[str]:
        return {n for s in seccomp_default.default_profile(caps)["syscalls"] if not s["args"] and s["action"] == "SCMP_ACT_ALLOW" for n in s["names"]}

    base = names(seccomp_default.DEFAULT_CAPS)
    assert "chroot" in base and "ptrace" in base  # Docker: ptrace allowed on kernels >= 4.8
    assert "chroot" not in names([])
    assert {"init_module", "finit_module", "delete_module"} <= names(["SYS_MODULE"])
    assert {"kcmp", "pidfd_getfd"} <= names(["CAP_SYS_PTRACE"]) and "kcmp" not in base
    clone = [s for s in seccomp_default.default_profile([])["syscalls"] if s["names"] == ["clone"]]
    assert clone[0]["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"


def test_busybox_shell_runs_under_the_default_profile(tmp_path) -> None:
    if not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed")
    p = compile_quiet(seccomp.default_profile())
    out = tmp_path / "out"
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            p.load()
            script = "echo hello; ls / >/dev/null && echo ls-ok; grep Seccomp: /proc/self/status; unshare -U true || echo unshare-denied; mount -t tmpfs x /mnt || echo mount-denied"
            os.execv("/bin/busybox", ["sh", "-c", script])
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    text = out.read_text()
    assert os.WEXITSTATUS(status) == 0, text
    for word in ("hello", "ls-ok", "Seccomp:\t2", "unshare-denied", "mount-denied"):
        assert word in text, text
