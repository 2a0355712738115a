"""Fifty network namespaces on one network all resolve each other through the DNS server."""

from __future__ import annotations

import time

import pytest
from netkit import Netns, container_resolv, root_only

from stackd.net.manager import NetManager, NetworkSpec

pytestmark = [root_only, pytest.mark.slow]

N = 50


def test_fifty_resolve_each_other(manager: NetManager, netns: Netns) -> None:
    manager.create_network(NetworkSpec("many"))
    resolv = container_resolv(manager, "many")
    names = []
    start = time.monotonic()
    for i in range(N):
        ns = netns.new(resolv)
        manager.attach(f"cid-{i}", netns.path(ns), "many", names=(f"c{i}",))
        names.append(ns)
    attach_s = time.monotonic() - start
    ips = {a.names[0]: a.ipv4 for a in manager.attachments()}
    assert len(set(ips.values())) == N
    # every namespace looks up every other name (one shell per namespace)
    script = "; ".join(
        f"busybox nslookup c{j} >/dev/null 2>&1 && echo c{j} || echo MISS c{j}" for j in range(N)
    )
    for i, ns in enumerate(names):
        r = netns.run(ns, "sh", "-c", script, timeout=60)
        missed = [ln for ln in r.stdout.splitlines() if ln.startswith("MISS")]
        assert not missed, f"namespace {i}: {missed}"
    assert attach_s < 30
