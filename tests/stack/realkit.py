"""A real StackEngine on throwaway roots (tmp state/run roots, a test nftables table, link prefix
and cgroup parent), torn down completely: for the contract suite and the stack tests."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.engine.containers.conftest import World, force_clean, leaks


def pool() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(worker[2:]) if worker[2:].isdigit() else 0
    return f"10.214.{(n % 4) * 64}.0/18:24"


def net_leaks(tag: str, state: Path) -> list[str]:
    import subprocess

    out = [f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith(tag)]
    if tag in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout:
        out.append(f"nft table {tag}")
    if (state / "net" / "dns.pid").exists():
        out.append("DNS server still running")
    return out


def net_clean(tag: str, state: Path) -> None:
    import subprocess
    import sys

    from stackd.net import dns_server
    from stackd.net.linux import LinuxKernel
    from stackd.net.manager import NetManager

    k = LinuxKernel()
    try:
        m = NetManager(state, k, link_prefix=tag, table=tag)
        for a in m.attachments():
            m.detach(a.container_id)
        for n in m.networks():
            m.remove_network(n.name)
        dns_server.stop(state)
    except Exception as exc:
        print(f"network cleanup failed: {exc}", file=sys.stderr)
    finally:
        close = getattr(k, "close", None)
        if close:
            close()
    for n in os.listdir("/sys/class/net"):
        if n.startswith(tag):
            subprocess.run(["ip", "link", "del", n], capture_output=True, check=False)
    for family in ("inet", "ip", "ip6"):
        subprocess.run(["nft", "delete", "table", family, tag], capture_output=True, check=False)


@contextlib.contextmanager
def real_engine(registries_config: Path, tmp_path: Path) -> Iterator[Any]:
    """A RealStackEngine on fresh roots; everything it made is gone afterwards (asserted)."""
    from stackd.engine.engine import Engine
    from stackd.engine.registry_config import load
    from stackd.stack.backend import Backend
    from stackd.stack.engine_adapter import RealStackEngine

    tag = "sc" + secrets.token_hex(2)
    cg = f"/stackd-test-{tag}"
    env = {"STACKD_NET_TABLE": tag, "STACKD_NET_LINK_PREFIX": tag, "STACKD_NET_POOLS": pool(),
           "STACKD_REGISTRIES_CONFIG": str(registries_config), "STACKD_CGROUP_PARENT": cg}
    world = World(tmp_path / "state", tmp_path / "run", cg, env, "runc")
    eng = Engine(world.state, world.run, runtime="runc", cgroup_parent=cg, registries=load(str(registries_config)),
                 net_table=tag, net_link_prefix=tag, net_pools=pool())
    try:
        yield RealStackEngine(Backend(eng))
        for rec in eng.containers.list():
            with contextlib.suppress(Exception):
                eng.containers.remove(rec.id, force=True)
        for n in eng.networks.networks():
            eng.networks.remove_network(n.name)
        eng.close()
        assert not leaks(world), f"left behind: {leaks(world)}"
        assert not net_leaks(tag, world.state), f"left behind: {net_leaks(tag, world.state)}"
    finally:
        force_clean(world)
        net_clean(tag, world.state)
