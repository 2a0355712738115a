"""One contract for `Syscalls`: the real kernel (as root, in a throwaway child) and the recording fake."""

from __future__ import annotations

import os
import pickle

import pytest

from stackd.engine.runtime import syscalls as sc
from stackd.engine.runtime.fake import FakeSyscalls


def in_child(fn):
    """Run fn(LinuxSyscalls()) in a forked child inside new mount+uts namespaces; return its result."""
    from stackd.engine.runtime.linux import LinuxSyscalls

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWUTS)
            real = LinuxSyscalls()
            real.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE, None)
            result = ("ok", fn(real))
        except BaseException as e:  # the contract may expect an error
            result = ("err", (type(e).__name__, getattr(e, "errno", None)))
        os.write(w, pickle.dumps(result))
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return pickle.loads(data)


def in_fake(fn):
    try:
        return ("ok", fn(FakeSyscalls()))
    except BaseException as e:
        return ("err", (type(e).__name__, getattr(e, "errno", None)))


@pytest.fixture(params=["linux", "fake"])
def call(request):
    if request.param == "linux" and os.geteuid() != 0:
        pytest.skip("needs root")
    return in_child if request.param == "linux" else in_fake


def test_hostname_roundtrip(call):
    def fn(s):
        s.sethostname("contract-host")
        return s.gethostname()

    assert call(fn) == ("ok", "contract-host")


def test_hostname_too_long_is_einval(call):
    assert call(lambda s: s.sethostname("x" * 65)) == ("err", ("OSError", 22))


def test_mount_tmpfs_then_umount(call, tmp_path):
    target = str(tmp_path)

    def fn(s):
        s.mount("tmpfs", target, "tmpfs", sc.MS_NOSUID, "size=1m")
        seen = (target, "tmpfs") in s.mounts()
        s.umount2(target, sc.MNT_DETACH)
        return seen, (target, "tmpfs") in s.mounts()

    assert call(fn) == ("ok", (True, False))


def test_umount_of_non_mount_is_einval(call, tmp_path):
    assert call(lambda s: s.umount2(str(tmp_path), 0)) == ("err", ("OSError", 22))


def test_openat2_in_root_contains_symlinks(call, tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("inside")
    (root / "abs").symlink_to("/etc")
    (root / "rel").symlink_to("../../../../../../etc")

    def fn(s):
        rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
        out = []
        for p in ("abs/passwd", "rel/passwd", "../../etc/passwd"):
            fd = s.openat2(rootfd, p, os.O_RDONLY | os.O_CLOEXEC, sc.RESOLVE_IN_ROOT)
            out.append(os.read(fd, 100).decode())
            os.close(fd)
        return out

    assert call(fn) == ("ok", ["inside"] * 3)


def test_capset_roundtrip_and_no_raise(call):
    def fn(s):
        _, prm, _ = s.capget()
        keep = prm & ~(1 << 21)  # drop CAP_SYS_ADMIN
        s.capset(keep, keep, 0)
        got = s.capget()
        try:
            s.capset(prm, prm, 0)  # cannot regain it
            regained = True
        except PermissionError:
            regained = False
        return got == (keep, keep, 0), regained

    assert call(fn) == ("ok", (True, False))


def test_prctl_dumpable_and_nnp(call):
    def fn(s):
        s.prctl(sc.PR_SET_DUMPABLE, 0)
        d = s.prctl(sc.PR_GET_DUMPABLE)
        s.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        return d, s.prctl(sc.PR_GET_NO_NEW_PRIVS)

    assert call(fn) == ("ok", (0, 1))


def test_capbset_drop(call):
    def fn(s):
        s.prctl(sc.PR_CAPBSET_DROP, 21)
        return s.prctl(sc.PR_CAPBSET_READ, 21), s.prctl(sc.PR_CAPBSET_READ, 0)

    assert call(fn) == ("ok", (0, 1))


def test_unshare_rejects_unknown_flags(call):
    assert call(lambda s: s.unshare(0x1)) == ("err", ("OSError", 22))


def test_close_range_rejects_reversed_range(call):
    assert call(lambda s: s.close_range(10, 3, 0)) == ("err", ("OSError", 22))
