"""Fixtures for real network tests: a NetManager per test, named netns, leak checks."""

from __future__ import annotations

import fcntl
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # netkit, for --import-mode=importlib
from netkit import Netns, forward_rules, links, nft_tables, worker_pool

from stackd.net import dns_server
from stackd.net.linux import LinuxKernel
from stackd.net.manager import NetManager


@pytest.fixture
def tag() -> str:
    return "sdt" + secrets.token_hex(2)


FORWARD_LOCK = "/tmp/stackd-tests-net-forward.lock"


@pytest.fixture
def forward_policy_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that flip the host's FORWARD policy hold this exclusively; other real network tests
    hold it shared, so a policy flip never happens under another xdist worker's test."""
    exclusive = "docker_like" in request.fixturenames
    with open(FORWARD_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


@pytest.fixture
def make_manager(
    tmp_path: Path, tag: str, forward_policy_lock: None
) -> Iterator[Callable[..., NetManager]]:
    """NetManager factory on one state root; teardown removes everything and checks for leaks."""
    made: list[NetManager] = []
    kernels: list[LinuxKernel] = []
    before = links()

    def make(**kw: object) -> NetManager:
        k = LinuxKernel()
        kernels.append(k)
        opts: dict[str, object] = {"pools": [worker_pool()], "link_prefix": tag, "table": tag}
        opts.update(kw)
        m = NetManager(tmp_path / "state", k, **opts)  # type: ignore[arg-type]
        made.append(m)
        return m

    try:
        yield make
    finally:
        if made:
            m = made[-1]
            for a in m.attachments():
                m.detach(a.container_id)
            for n in m.networks():
                m.remove_network(n.name)
            dns_server.stop(m.root)
        for k in kernels:
            k.close()
        leaked = {n for n in links() - before if n.startswith(tag)}
        assert not leaked, f"leaked links {leaked}"
        assert tag not in nft_tables(), "leaked nftables table"
        assert f"{tag}:" not in forward_rules(), "leaked iptables FORWARD rules"
        assert not (tmp_path / "state" / "net" / "dns.pid").exists(), "DNS server still running"


@pytest.fixture
def manager(make_manager: Callable[..., NetManager]) -> NetManager:
    return make_manager()


@pytest.fixture
def netns(tag: str) -> Iterator[Netns]:
    ns = Netns(tag)
    try:
        yield ns
    finally:
        ns.cleanup()
        left = [n for n in os.listdir("/run/netns")] if os.path.isdir("/run/netns") else []
        assert not [n for n in left if n.startswith(tag)], "leaked netns"
