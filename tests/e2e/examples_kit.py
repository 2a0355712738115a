"""Helpers for the examples' end-to-end tests: one example stack on throwaway roots, driven by the CLI.

`example_stack(name, mirror, tmp_path)` yields an `Example`: tmp state/run roots, a test nftables table,
link prefix, address pool and cgroup parent (never the host's), a unique project name and free host
ports, and `cli(...)` running `stackd -f examples/<name>/stack.yaml -p <project> …` as a subprocess.
On exit it asserts that nothing is left (containers, shims, mounts, cgroups, links, netns, the nft
table, the DNS server, volumes), then force-cleans whatever a failing test left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.images_fixture import DockerMirror
from tests.engine.containers.conftest import World, force_clean, leaks, net_clean, net_leaks

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
STACKD = str(Path(sys.executable).parent / "stackd")

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runc") is None, reason="needs root and runc")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _pool() -> str:
    """An address pool of this xdist worker's own (10.218.0.0/16 is used by no other test)."""
    wk = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(wk[2:]) % 16 if wk[2:].isdigit() else 0
    return f"10.218.{n * 16}.0/20:24"


@dataclass
class Example:
    """One example stack on throwaway roots."""

    world: World
    file: Path
    project: str
    vars: dict[str, str] = field(default_factory=dict)  # interpolated into the stack file

    @property
    def env(self) -> dict[str, str]:
        return {**self.world.env, **self.vars}

    def cli(self, *args: str, check: bool = True, timeout: float = 90,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([STACKD, "-f", str(self.file), "-p", self.project, *args], capture_output=True,
                             text=True, timeout=timeout, env={**self.env, **(env or {})}, cwd=self.file.parent)
        if check and res.returncode != 0:
            raise AssertionError(f"stackd {' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res

    def ps(self) -> list[dict[str, Any]]:
        """`ps -a --format json`, one dict per container."""
        out = self.cli("ps", "-a", "--format", "json").stdout.strip()
        rows = json.loads(out) if out.startswith("[") else [json.loads(x) for x in out.splitlines() if x]
        return list(rows)

    def ids(self) -> dict[str, str]:
        """Container name → ID."""
        return {r["Name"]: r["ID"] for r in self.ps()}

    def volumes(self) -> list[str]:
        return [v for v in self.cli("volume", "ls", "-q").stdout.split() if v.startswith(self.project)]

    def left_behind(self) -> list[str]:
        """Everything of this stack still on the host (empty after `down -v`)."""
        out = leaks(self.world) + net_leaks(self.world)
        out += [f"volume {v}" for v in self.volumes()]
        vols = self.world.state / "volumes"
        if vols.is_dir():
            out += [f"volume dir {d}" for d in os.listdir(vols) if not d.startswith(".")]
        out += [f"container {r['Name']}" for r in self.ps()]
        return out


@contextmanager
def example_stack(name: str, mirror: DockerMirror, tmp_path: Path, **vars: str) -> Iterator[Example]:
    """examples/<name>/stack.yaml on fresh roots; asserts a clean host afterwards (when the test passed)."""
    tag = "ex" + secrets.token_hex(3)
    cg = f"/stackd-test-{tag}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKD_")}
    env.update(STACKD_STATE_ROOT=str(tmp_path / "state"), STACKD_RUN_ROOT=str(tmp_path / "run"),
               STACKD_REGISTRIES_CONFIG=str(mirror.registries_config), STACKD_RUNTIME="runc",
               STACKD_CGROUP_PARENT=cg, STACKD_NET_TABLE=tag, STACKD_NET_LINK_PREFIX=tag,
               STACKD_NET_POOLS=_pool(), PYTHONPATH=str(REPO_ROOT))
    world = World(tmp_path / "state", tmp_path / "run", cg, env, "runc")
    ex = Example(world, EXAMPLES / name / "stack.yaml", f"{name}-{tag}", dict(vars))
    try:
        yield ex
    finally:
        try:
            ex.cli("down", "-v", "-t", "2", check=False, timeout=60)
        finally:
            force_clean(world)
            net_clean(world)
