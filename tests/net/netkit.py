"""Helpers for the real network tests (named netns, leak probes); fixtures are in conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stackd.net.ipam import Pool
from stackd.net.manager import NetManager
from stackd.net.resolvconf import HostResolv, ResolvOptions, resolv_conf

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def worker_pool() -> Pool:
    """10.213.0.0/16 split per xdist worker so parallel tests never pick the same subnet."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(worker[2:]) if worker[2:].isdigit() else 0
    return Pool(f"10.213.{(n % 4) * 64}.0/18", 24)


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def forward_rules() -> str:
    return subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True).stdout


def sh(*cmd: str, timeout: float = 20, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=check)


class Netns:
    """Named network namespaces (`ip netns`), each with its own /etc/netns/<name>/resolv.conf."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.names: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def new(self, resolv: str = "") -> str:
        name = f"{self.tag}n{len(self.names)}"
        sh("ip", "netns", "add", name, check=True)
        self.names.append(name)
        if resolv:
            self.resolv(name, resolv)
        return name

    def resolv(self, name: str, text: str) -> None:
        d = Path("/etc/netns") / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(text)

    def path(self, name: str) -> str:
        return f"/run/netns/{name}"

    def run(self, name: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", name, *cmd, timeout=timeout)

    def spawn(self, name: str, *cmd: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["ip", "netns", "exec", name, *cmd],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for name in self.names:
            sh("ip", "netns", "del", name)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)



def container_resolv(manager: NetManager, network: str) -> str:
    return resolv_conf(HostResolv(), ResolvOptions(), embedded_dns=manager.dns_server_for(network))
