"""Capabilities, security_opt, seccomp profiles, sysctls, ulimits and devices: Docker's rules."""

from __future__ import annotations

import json

import pytest

from stackd.engine import bundle_security as sec
from stackd.engine.container_config import ContainerConfig, DeviceConfig, Ulimit

HOST = sec.HostInfo(bounding_caps=frozenset(sec.CAP_NUMBERS) - {"CAP_SYS_RESOURCE"},
                    rlimit_hard={"nofile": 20000, "nproc": -1, "core": 0}, machine="x86_64", kernel=(6, 1))
DOCKER_DEFAULT_MASK = 0x00000000A80425FB


def c(**kw) -> ContainerConfig:
    return ContainerConfig(name="c", image="i", **kw)


def mask(caps: list[str]) -> int:
    return sum(1 << sec.CAP_NUMBERS[x] for x in caps)


def test_default_caps_are_dockers():
    caps = sec.capabilities(c(), HOST)
    assert mask(caps) == DOCKER_DEFAULT_MASK and len(caps) == 14


def test_add_and_drop_with_or_without_prefix_any_case():
    caps = sec.capabilities(c(cap_add=("net_admin", "CAP_SYS_PTRACE"), cap_drop=("CAP_MKNOD", "chown")), HOST)
    assert "CAP_NET_ADMIN" in caps and "CAP_SYS_PTRACE" in caps
    assert "CAP_MKNOD" not in caps and "CAP_CHOWN" not in caps
    assert caps == sorted(caps, key=sec.CAP_NUMBERS.__getitem__)


def test_drop_all_then_add():
    assert sec.capabilities(c(cap_drop=("ALL",), cap_add=("NET_BIND_SERVICE",)), HOST) == ["CAP_NET_BIND_SERVICE"]
    assert sec.capabilities(c(cap_drop=("all",)), HOST) == []


def test_add_all_minus_drops_limited_to_the_bounding_set():
    caps = sec.capabilities(c(cap_add=("ALL",), cap_drop=("SYS_ADMIN",)), HOST)
    assert "CAP_SYS_ADMIN" not in caps and "CAP_SYS_RESOURCE" not in caps and "CAP_BPF" in caps
    assert len(caps) == len(sec.CAP_NUMBERS) - 2


def test_privileged_gets_every_available_cap():
    caps = sec.capabilities(c(privileged=True, cap_drop=("ALL",)), HOST)
    assert set(caps) == HOST.bounding_caps


def test_unknown_or_unavailable_capability():
    with pytest.raises(sec.SecurityError, match="unknown capability 'CAP_NOPE'"):
        sec.capabilities(c(cap_add=("CAP_NOPE",)), HOST)
    with pytest.raises(sec.SecurityError, match="CAP_SYS_RESOURCE: not available on this host"):
        sec.capabilities(c(cap_add=("SYS_RESOURCE",)), HOST)


@pytest.mark.parametrize(("opts", "nnp", "seccomp", "sysp"), [
    ((), False, "", False),
    (("no-new-privileges",), True, "", False),
    (("no-new-privileges:true",), True, "", False),
    (("no-new-privileges=false",), False, "", False),
    (("seccomp=unconfined",), False, "unconfined", False),
    (("seccomp:/etc/p.json",), False, "/etc/p.json", False),
    (("seccomp=/a:b.json",), False, "/a:b.json", False),
    (("systempaths=unconfined", "no-new-privileges"), True, "", True),
])  # fmt: skip
def test_security_opt_forms(opts, nnp, seccomp, sysp):
    warn: list[str] = []
    assert sec.parse_security_opt(opts, warn) == sec.SecurityOpts(nnp, seccomp, sysp)
    assert warn == []


def test_label_and_apparmor_ignored_with_warning():
    warn: list[str] = []
    assert sec.parse_security_opt(("label=disable", "apparmor:unconfined"), warn) == sec.SecurityOpts()
    assert len(warn) == 2 and "SELinux" in warn[0] and "AppArmor" in warn[1]


@pytest.mark.parametrize("opt", ["no-new-privileges:maybe", "seccomp=", "bogus=1", "systempaths=x"])
def test_bad_security_opt(opt):
    with pytest.raises(sec.SecurityError, match="security_opt"):
        sec.parse_security_opt((opt,), [])


def test_seccomp_sections():
    caps = sec.capabilities(c(), HOST)
    default = sec.seccomp_section(sec.SecurityOpts(), caps, False, HOST)
    assert default is not None and default["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = {n for s in default["syscalls"] if s["action"] == "SCMP_ACT_ALLOW" for n in s["names"]}
    assert "read" in allowed and "reboot" not in allowed and "mount" not in allowed
    assert sec.seccomp_section(sec.SecurityOpts(seccomp="unconfined"), caps, False, HOST) is None
    assert sec.seccomp_section(sec.SecurityOpts(), caps, True, HOST) is None


def test_docker_profile_file_converted_to_oci(tmp_path):
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "x"},
            {"name": "old_single", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
            {"names": ["s390_only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
            {"names": ["newer"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "6.5"}},
            {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_CHOWN"]}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    }  # fmt: skip
    f = tmp_path / "p.json"
    f.write_text(json.dumps(profile))
    caps = sec.capabilities(c(), HOST)
    oci = sec.seccomp_section(sec.SecurityOpts(seccomp=str(f)), caps, False, HOST)
    assert oci is not None
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    names = [s["names"] for s in oci["syscalls"]]
    assert names == [["read", "write"], ["old_single"], ["arch_prctl"], ["personality"], ["clone"]]
    assert oci["syscalls"][3]["args"] == [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]
    assert oci["syscalls"][4]["errnoRet"] == 38 and oci["defaultErrnoRet"] == 1
    newer = sec.docker_profile_to_oci(profile, ["CAP_SYS_ADMIN"], sec.HostInfo(kernel=(6, 8)))
    assert ["mount"] in [s["names"] for s in newer["syscalls"]] and ["newer"] in [s["names"] for s in newer["syscalls"]]


def test_bad_profile_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(sec.SecurityError, match=r"seccomp profile .*bad.json: not valid JSON"):
        sec.seccomp_section(sec.SecurityOpts(seccomp=str(bad)), [], False, HOST)
    with pytest.raises(sec.SecurityError, match="No such file"):
        sec.seccomp_section(sec.SecurityOpts(seccomp=str(tmp_path / "missing.json")), [], False, HOST)


def test_namespaced_sysctls_allowed():
    s = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000", "fs.mqueue.msg_max": "20", "kernel.domainname": "x"}
    assert sec.check_sysctls(c(sysctls=s)) == s


@pytest.mark.parametrize(("kw", "msg"), [
    ({"sysctls": {"kernel.pid_max": "10"}}, "sysctl kernel.pid_max is not namespaced"),
    ({"sysctls": {"vm.swappiness": "1"}}, "not namespaced"),
    ({"sysctls": {"net.ipv4.ip_forward": "1"}, "network_mode": "host"}, "network mode 'host'"),
    ({"sysctls": {"kernel.sem": "1"}, "ipc_mode": "host"}, "ipc mode 'host'"),
    ({"sysctls": {"kernel.domainname": "x"}, "uts_mode": "host"}, "uts mode"),
])  # fmt: skip
def test_sysctls_refused(kw, msg):
    with pytest.raises(sec.SecurityError, match=msg):
        sec.check_sysctls(c(**kw))


def test_default_nofile_clamped_with_warning():
    warn: list[str] = []
    assert sec.rlimits((), HOST, warn) == [{"type": "RLIMIT_NOFILE", "soft": 20000, "hard": 20000}]
    assert warn == ["default ulimit nofile 1048576 is above the host's hard limit 20000: using 20000"]
    warn = []
    unlimited = sec.HostInfo(rlimit_hard={"nofile": -1})
    assert sec.rlimits((), unlimited, warn) == [{"type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576}]
    assert warn == []


def test_ulimits_override_and_clamp():
    warn: list[str] = []
    got = sec.rlimits((Ulimit("nofile", 1024, 4096), Ulimit("nproc", 100, 200), Ulimit("core", -1, -1),
                       Ulimit("RLIMIT_MEMLOCK", 64, 64)), HOST, warn)
    assert got == [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096},
                   {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200},
                   {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                   {"type": "RLIMIT_MEMLOCK", "soft": 64, "hard": 64}]
    assert warn == ["ulimit core unlimited is above the host's hard limit 0: using 0"]
    warn = []
    assert sec.rlimits((Ulimit("nofile", 10, 50000),), HOST, warn)[0] == {"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20000}
    assert len(warn) == 1


def test_bad_ulimits():
    with pytest.raises(sec.SecurityError, match="ulimit 'bogus': unknown resource"):
        sec.rlimits((Ulimit("bogus", 1, 1),), HOST, [])
    with pytest.raises(sec.SecurityError, match="soft limit 10 is above hard limit 5"):
        sec.rlimits((Ulimit("nproc", 10, 5),), HOST, [])


def test_devices():
    devs, rules = sec.devices([DeviceConfig("/dev/null", "/dev/mynull", "rw")])
    assert devs == [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666, "uid": 0, "gid": 0}]
    assert rules == [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]
    with pytest.raises(sec.SecurityError, match="not a character or block device"):
        sec.devices([DeviceConfig("/etc/hostname")])
    with pytest.raises(sec.SecurityError, match="invalid permissions"):
        sec.devices([DeviceConfig("/dev/null", "", "rx")])
    paths = [d["path"] for d in sec.host_devices()]
    assert "/dev/null" in paths and not any(p.startswith("/dev/pts/") for p in paths)
