"""In-process network namespaces (no fork, no exec): creation, isolation, errors, cleanup, veth teardown."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from netkit import root_only, worker_pool

from stackd.net import linux_ns
from stackd.net.fake import FakeKernel
from stackd.net.kernel import Kernel, NetKernelError, NsLink
from stackd.net.linux import LinuxKernel

pytestmark = root_only


def mounted(under: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(under))]


@pytest.fixture
def nsdir(tmp_path: Path) -> Iterator[Path]:
    """A directory for netns files; everything mounted or left in it is removed afterwards."""
    d = tmp_path / "netns"
    d.mkdir()
    try:
        yield d
    finally:
        for mp in mounted(d):
            linux_ns.delete_netns(mp)
        for f in os.listdir(d):
            if not (d / f).is_dir():
                linux_ns.delete_netns(str(d / f))
        assert not mounted(d), "leaked netns mounts"


def links_in(path: Path) -> dict[str, int]:
    """Name -> flags of every link inside the netns at `path` (a dump over a socket there)."""
    out = {}
    with linux_ns.rtnl_in(str(path)) as nl:
        nl.sock.send(struct.pack("=IHHII", 32, linux_ns.RTM_GETLINK, 0x1 | 0x300, 1, 0)
                     + linux_ns._ifinfo(0))
        done = False
        while not done:
            buf = nl.sock.recv(65536)
            off = 0
            while off + 16 <= len(buf):
                length, kind = struct.unpack_from("=IH", buf, off)
                if kind == linux_ns.NLMSG_DONE:
                    done = True
                elif kind == linux_ns.RTM_NEWLINK:
                    flags = struct.unpack_from("=I", buf, off + 24)[0]
                    out[linux_ns.link_name(buf[off:off + length])] = flags
                off += (length + 3) & ~3
    return out


def thread_ns() -> str:
    return os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net")


def test_created_netns_has_lo_up_and_is_isolated(nsdir: Path) -> None:
    path = nsdir / "a"
    before = thread_ns()
    linux_ns.create_netns(str(path))
    assert thread_ns() == before, "the calling thread must be back in its own netns"
    assert linux_ns.is_netns(str(path))
    assert os.stat(path).st_ino != os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
    inside = links_in(path)
    assert list(inside) == ["lo"], inside  # none of the host's links
    assert inside["lo"] & linux_ns.IFF_UP
    linux_ns.create_netns(str(nsdir / "b"))
    assert os.stat(nsdir / "b").st_ino != os.stat(path).st_ino  # a namespace each


def test_create_from_another_thread_leaves_every_thread_where_it_was(nsdir: Path) -> None:
    main = thread_ns()
    seen: list[object] = []

    def work() -> None:
        try:
            own = thread_ns()
            linux_ns.create_netns(str(nsdir / "t"))
            seen.append(own == thread_ns())
        except BaseException as exc:
            seen.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [True]
    assert thread_ns() == main
    assert linux_ns.is_netns(str(nsdir / "t"))


@pytest.mark.parametrize(("rel", "step", "code"), [
    ("missing/dir/ns", "creating the mount point", "ENOENT"),
    ("adir", "creating the mount point", "EISDIR"),
])
def test_bad_path_gives_a_clear_error_and_leaves_nothing(nsdir: Path, rel: str, step: str, code: str) -> None:
    (nsdir / "adir").mkdir()
    path = nsdir / rel
    with pytest.raises(NetKernelError) as err:
        linux_ns.create_netns(str(path))
    msg = str(err.value)
    assert str(path) in msg and step in msg and code in msg, msg
    assert not mounted(nsdir)
    assert sorted(os.listdir(nsdir)) == ["adir"]


def test_delete_leaves_no_mount_or_file_and_is_idempotent(nsdir: Path) -> None:
    path = nsdir / "gone"
    path.touch()  # a pre-created empty file is used as is
    linux_ns.create_netns(str(path))
    assert mounted(nsdir) == [str(path)]
    linux_ns.delete_netns(str(path))
    assert not mounted(nsdir) and not path.exists()
    linux_ns.delete_netns(str(path))  # missing is fine


@pytest.fixture(params=["fake", "linux"])
def kernel(request: pytest.FixtureRequest) -> Iterator[Kernel]:
    if request.param == "fake":
        yield FakeKernel()
        return
    k = LinuxKernel()
    try:
        yield k
    finally:
        k.close()


def test_netns_delete_takes_the_veth_pair_with_it(kernel: Kernel, nsdir: Path) -> None:
    tag = "sdn" + os.urandom(2).hex()
    br, host, path = f"{tag}br", f"{tag}v", str(nsdir / "c")
    base = str(next(worker_pool().subnets()).network_address + (61 << 8))[:-1]
    try:
        kernel.bridge_create(br, 1500, (f"{base}1/24",))
        kernel.netns_create(path)
        kernel.veth_create(host, br, path, NsLink("eth0", "eth0", (f"{base}2/24",), 1500,
                                                  "02:42:00:00:00:02", (f"{base}1",)))
        assert kernel.link_exists(host)
        if isinstance(kernel, LinuxKernel):
            inside = links_in(Path(path))
            assert sorted(inside) == ["eth0", "lo"] and inside["eth0"] & linux_ns.IFF_UP
        kernel.netns_delete(path)
        assert kernel.links_wait_gone([host], 5.0) == []
        assert not kernel.link_exists(host)
        assert not os.path.exists(path)
    finally:
        kernel.netns_delete(path)
        kernel.link_delete(host)
        kernel.link_delete(br)


def test_wait_for_links_that_never_go_returns_them(nsdir: Path) -> None:
    assert linux_ns.wait_links_gone(["lo", "sdn-no-such"], 0.01) == ["lo"]
