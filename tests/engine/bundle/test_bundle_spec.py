"""build_spec/write_bundle: the whole OCI config for a ContainerConfig (no container is run here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bundlekit import GROUP, PASSWD

from stackd.engine import bundle_security as sec
from stackd.engine.bundle import (
    STOP_SIGNAL_ANNOTATION,
    BundleError,
    BundleOptions,
    build_spec,
    prepare_rootfs,
    write_bundle,
)
from stackd.engine.bundle_mounts import MASKED_PATHS, MountError, merge_tmpfs_options
from stackd.engine.bundle_user import UserError
from stackd.engine.container_config import ContainerConfig, ImageConfig, MountConfig, Resources
from stackd.engine.mounts import Mount

HOST = sec.HostInfo(bounding_caps=frozenset(sec.CAP_NUMBERS), rlimit_hard={"nofile": 20000},
                    cgroup2=False, swap_accounting=True, blkio_weight=False)
CID = "0123456789abcdef0123"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text(PASSWD)
    (r / "etc/group").write_text(GROUP)
    return r


def spec(root: Path, warnings: list[str] | None = None, options: BundleOptions | None = None, **kw):
    kw.setdefault("image_config", ImageConfig(cmd=("sh",)))
    cfg = ContainerConfig(name="web", image="busybox", **kw)
    opts = options or BundleOptions(host=HOST, init_path="/bin/sh")
    return build_spec(cfg, container_id=CID, rootfs=root, state_dir=root.parent / "state", options=opts,
                      warnings=warnings)


def mount_at(s, dest):
    found = [m for m in s["mounts"] if m["destination"] == dest]
    assert len(found) <= 1
    return found[0] if found else None


def test_defaults_look_like_docker(root):
    warn: list[str] = []
    s = spec(root, warn)
    assert s["ociVersion"].startswith("1.0") and s["root"] == {"path": "rootfs", "readonly": False}
    p = s["process"]
    assert p["args"] == ["sh"] and p["cwd"] == "/" and p["terminal"] is False and p["noNewPrivileges"] is False
    assert p["user"] == {"uid": 0, "gid": 0, "additionalGids": [0, 10, 50]}
    assert "HOSTNAME=0123456789ab" in p["env"] and "HOME=/root" in p["env"]
    assert s["hostname"] == "0123456789ab"
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 20000, "hard": 20000}] and len(warn) == 1
    caps = p["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] and len(caps["bounding"]) == 14
    dests = [m["destination"] for m in s["mounts"]]
    assert dests[:7] == ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]
    assert dests[7:] == ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
    assert mount_at(s, "/dev/pts")["options"] == ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
    assert mount_at(s, "/dev/shm")["options"][-1] == "size=67108864"
    assert "ro" in mount_at(s, "/sys")["options"] and mount_at(s, "/sys/fs/cgroup")["type"] == "cgroup"
    lx = s["linux"]
    assert {n["type"] for n in lx["namespaces"]} == {"pid", "ipc", "uts", "mount", "network", "cgroup"}
    assert all("path" not in n for n in lx["namespaces"])
    assert lx["cgroupsPath"] == f"/stackd/{CID}"
    assert lx["maskedPaths"] == list(MASKED_PATHS) and "/proc/sys" in lx["readonlyPaths"]
    assert lx["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert lx["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert "sysctl" not in lx and "devices" not in lx
    assert s["annotations"] == {STOP_SIGNAL_ANNOTATION: "SIGTERM"}


def test_etc_files_written(root):
    spec(root, hostname="web1", domainname="example.org", addresses=("10.0.0.5",))
    state = root.parent / "state"
    assert (state / "hostname").read_text() == "web1\n"
    hosts = (state / "hosts").read_text()
    assert "127.0.0.1\tlocalhost" in hosts and "10.0.0.5\tweb1.example.org web1" in hosts
    resolv = (state / "resolv.conf").read_text()
    assert "nameserver" in resolv and "nameserver 127." not in resolv


def test_net_layer_files_used_by_path(root, tmp_path):
    (tmp_path / "h").write_text("x")
    s = spec(root, hosts_file=str(tmp_path / "h"), resolv_conf_file=str(tmp_path / "r"))
    assert mount_at(s, "/etc/hosts")["source"] == str(tmp_path / "h")
    assert mount_at(s, "/etc/resolv.conf")["source"] == str(tmp_path / "r")


def test_tty_user_workdir(root):
    s = spec(root, tty=True, user="app", working_dir="/srv/app/")
    assert "TERM=xterm" in s["process"]["env"] and s["process"]["terminal"] is True
    assert s["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 29, 50]}
    assert s["process"]["cwd"] == "/srv/app"
    st = os.stat(root / "srv/app")
    assert (st.st_uid, st.st_gid) == (1000, 1000)


def test_image_user_and_workdir(root):
    s = spec(root, image_config=ImageConfig(cmd=("sh",), user="nobody", working_dir="data"))
    assert s["process"]["user"]["uid"] == 65534 and s["process"]["cwd"] == "/data"
    assert (root / "data").is_dir()


def test_errors_name_the_container_and_image(root):
    with pytest.raises(UserError, match="unable to find user 'ghost' in image busybox"):
        spec(root, user="ghost")
    with pytest.raises(BundleError, match="working_dir 'rel' must be an absolute path"):
        spec(root, working_dir="rel")
    (root / "file").write_text("")
    with pytest.raises(BundleError, match="cannot create working directory /file/x in image busybox"):
        spec(root, working_dir="/file/x")


def test_shm_size_and_read_only(root):
    s = spec(root, shm_size=128 * 1024 * 1024, read_only=True)
    assert "size=134217728" in mount_at(s, "/dev/shm")["options"]
    assert s["root"]["readonly"] is True
    assert "ro" in mount_at(s, "/etc/hosts")["options"]
    with pytest.raises(MountError, match="shm_size must be positive"):
        spec(root, shm_size=0)


def test_init(root):
    s = spec(root, init=True, command=("sleep", "1"))
    assert s["process"]["args"] == ["/sbin/stackd-init", "--", "sleep", "1"]
    m = mount_at(s, "/sbin/stackd-init")
    assert m["source"] == "/bin/sh" and "ro" in m["options"]
    s = spec(root, init=True, pid_mode="host")
    assert s["process"]["args"] == ["/sbin/stackd-init", "-s", "--", "sh"]
    with pytest.raises(MountError, match="tini"):
        spec(root, init=True, options=BundleOptions(host=HOST, init_path="/nonexistent/tini"))


def test_privileged(root):
    s = spec(root, privileged=True)
    lx = s["linux"]
    assert "seccomp" not in lx and lx["maskedPaths"] == [] and lx["readonlyPaths"] == []
    assert lx["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in lx["devices"])
    assert "rw" in mount_at(s, "/sys")["options"] and "rw" in mount_at(s, "/sys/fs/cgroup")["options"]
    assert len(s["process"]["capabilities"]["bounding"]) == len(sec.CAP_NUMBERS)


def test_security_opts_in_spec(root):
    s = spec(root, security_opt=("no-new-privileges", "seccomp=unconfined", "systempaths=unconfined"))
    assert s["process"]["noNewPrivileges"] is True and "seccomp" not in s["linux"]
    assert s["linux"]["maskedPaths"] == []


def test_namespace_modes(root):
    s = spec(root, network_mode="host", pid_mode="host", ipc_mode="host", uts_mode="host")
    assert {n["type"] for n in s["linux"]["namespaces"]} == {"mount", "cgroup"}
    assert "hostname" not in s and mount_at(s, "/dev/shm")["source"] == "/dev/shm"
    opts = BundleOptions(host=HOST, container_pids={"other": 4242})
    s = spec(root, options=opts, network_mode="container:other", pid_mode="container:other", ipc_mode="container:other")
    paths = {n["type"]: n.get("path") for n in s["linux"]["namespaces"]}
    assert paths == {"mount": None, "cgroup": None, "uts": None, "pid": "/proc/4242/ns/pid",
                     "ipc": "/proc/4242/ns/ipc", "network": "/proc/4242/ns/net"}
    assert mount_at(s, "/dev/shm")["source"] == "/proc/4242/root/dev/shm"
    s = spec(root, netns_path="/run/netns/x")
    assert {"type": "network", "path": "/run/netns/x"} in s["linux"]["namespaces"]
    with pytest.raises(BundleError, match="network mode container:gone: container gone is not running"):
        spec(root, network_mode="container:gone")
    with pytest.raises(BundleError, match="invalid pid mode 'weird'"):
        spec(root, pid_mode="weird")


def test_resources(root):
    warn: list[str] = []
    r = Resources(memory=256 << 20, memory_reservation=128 << 20, cpus=1.5, cpu_shares=512, cpuset="0",
                  pids_limit=100, oom_kill_disable=True, oom_score_adj=500, blkio_weight=300)
    s = spec(root, warn, resources=r)
    res = s["linux"]["resources"]
    assert res["memory"] == {"limit": 256 << 20, "swap": 512 << 20, "reservation": 128 << 20, "disableOOMKiller": True}
    assert res["cpu"] == {"period": 100000, "quota": 150000, "shares": 512, "cpus": "0"}
    assert res["pids"] == {"limit": 100} and "blockIO" not in res
    assert s["process"]["oomScoreAdj"] == 500
    assert any("blkio weight ignored" in w for w in warn)
    s = spec(root, resources=Resources(memory=100, memswap=-1, pids_limit=-1))
    assert s["linux"]["resources"]["memory"]["swap"] == -1 and "pids" not in s["linux"]["resources"]
    with pytest.raises(BundleError, match="memswap"):
        spec(root, resources=Resources(memory=100, memswap=50))
    s = spec(root, options=BundleOptions(host=HOST, cgroup_parent="/custom/"))
    assert s["linux"]["cgroupsPath"] == f"/custom/{CID}"


def test_user_mounts(root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    s = spec(root, mounts=(
        MountConfig("bind", "/data", str(src), read_only=True),
        MountConfig("volume", "/var/lib/db", str(src), name="dbdata", propagation="rslave"),
        MountConfig("tmpfs", "/dev/shm", tmpfs_size=1 << 20, tmpfs_mode=0o1777),
        MountConfig("bind", "/data/sub", str(src)),
    ), tmpfs={"/run": "exec,size=2m,mode=755"})
    assert mount_at(s, "/data")["options"] == ["rbind", "rprivate", "ro"]
    assert mount_at(s, "/var/lib/db")["options"] == ["rbind", "rslave", "rw"]
    assert mount_at(s, "/dev/shm") == {"destination": "/dev/shm", "type": "tmpfs", "source": "tmpfs",
                                       "options": ["noexec", "nosuid", "nodev", "rprivate", "size=1048576", "mode=1777"]}
    assert mount_at(s, "/run")["options"] == ["nosuid", "nodev", "rprivate", "exec", "size=2m", "mode=755"]
    dests = [m["destination"] for m in s["mounts"]]
    assert dests.index("/data") < dests.index("/data/sub")


@pytest.mark.parametrize(("m", "msg"), [
    (MountConfig("bind", "rel", "/tmp"), "must be absolute"),
    (MountConfig("bind", "/", "/tmp"), "cannot mount over"),
    (MountConfig("bind", "/x", "/nonexistent-src"), "does not exist"),
    (MountConfig("volume", "/x", name="v"), "host directory was not resolved"),
    (MountConfig("bind", "/x", "/tmp", propagation="weird"), "invalid propagation"),
    (MountConfig("nfs", "/x", "/tmp"), "unknown mount type"),
])  # fmt: skip
def test_bad_mounts(root, m, msg):
    with pytest.raises(MountError, match=msg):
        spec(root, mounts=(m,))


def test_duplicate_mount_point(root):
    with pytest.raises(MountError, match="duplicate mount point /x"):
        spec(root, mounts=(MountConfig("bind", "/x", "/tmp"),), tmpfs={"/x/": ""})


def test_merge_tmpfs_options():
    assert merge_tmpfs_options(["noexec", "size=1m", "exec", "size=2m", "ro", "rw"]) == ["exec", "size=2m", "rw"]


def test_sysctls_annotations_stop_signal(root):
    s = spec(root, sysctls={"net.ipv4.ping_group_range": "0 0"}, annotations={"a": "b"}, stop_signal="SIGINT")
    assert s["linux"]["sysctl"] == {"net.ipv4.ping_group_range": "0 0"}
    assert s["annotations"] == {"a": "b", STOP_SIGNAL_ANNOTATION: "SIGINT"}


def test_write_bundle(tmp_path):
    from bundlekit import make_rootfs

    bdir = tmp_path / "b"
    m = prepare_rootfs(bdir, Mount("overlay", "overlay", "", ("lowerdir=/x",)))
    assert m == Mount("overlay", "overlay", str(bdir / "rootfs"), ("lowerdir=/x",))
    make_rootfs(bdir / "rootfs")
    cfg = ContainerConfig(name="web", image="busybox", command=("true",), stop_grace_period=3)
    b = write_bundle(cfg, container_id=CID, bundle_dir=bdir, state_dir=tmp_path / "st",
                     options=BundleOptions(host=HOST))
    assert json.loads(b.config_path.read_text()) == b.spec
    assert b.rootfs == bdir / "rootfs" and b.stop_signal == "SIGTERM" and b.stop_timeout == 3
    assert not (bdir / "config.json.tmp").exists()
    with pytest.raises(BundleError, match="prepare_rootfs"):
        write_bundle(cfg, container_id=CID, bundle_dir=tmp_path / "none", state_dir=tmp_path / "st")
