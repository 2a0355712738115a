"""Fixtures for real stack tests: tmp roots, a test nftables table and link prefix, the busybox mirror,
the `stackd` CLI as a subprocess, and leak checks (containers, mounts, cgroups, links, netns, DNS)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.images_fixture import busybox_mirror  # noqa: F401  (session fixture)
from tests.engine.containers.conftest import World, force_clean, leaks
from tests.stack.realkit import net_clean, net_leaks, pool

ROOT = Path(__file__).resolve().parents[2]
STACKD = str(Path(sys.executable).parent / "stackd")

@dataclass
class Stack:
    """One test's stack directory, project name, environment and CLI runner."""

    world: World
    dir: Path
    project: str
    tag: str

    @property
    def env(self) -> dict[str, str]:
        return self.world.env

    def write(self, text: str, name: str = "stack.yaml") -> Path:
        path = self.dir / name
        path.write_text(textwrap.dedent(text))
        return path

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([STACKD, "-p", self.project, *args], capture_output=True, text=True,
                             timeout=timeout, env=self.env, cwd=self.dir)
        if check and res.returncode != 0:
            raise AssertionError(f"stackd {' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res

    def load(self):  # type: ignore[no-untyped-def]
        """The stack file loaded in-process, as the CLI loads it."""
        from stackd.spec.load import load
        from stackd.spec.options import LoadOptions

        return load(LoadOptions(files=(str(self.dir / "stack.yaml"),), project_name=self.project,
                                environ=dict(self.env), working_dir=str(self.dir)))

    def noop(self):  # type: ignore[no-untyped-def]
        """The no-op fast path's verdict on the current stack file."""
        from stackd.stack.fastpath import noop

        return noop(self.load(), self.world.state, self.world.run)

    def engine(self):  # type: ignore[no-untyped-def]
        from stackd.engine.engine import Engine

        return Engine(self.world.state, self.world.run, runtime="runc", cgroup_parent=self.world.cgroup_parent,
                      net_table=self.tag, net_link_prefix=self.tag, net_pools=self.env["STACKD_NET_POOLS"])


@pytest.fixture
def stack(busybox_mirror, tmp_path: Path) -> Iterator[Stack]:  # noqa: F811
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("real stacks need root and runc")
    tag = "sk" + secrets.token_hex(2)
    cg = f"/stackd-test-{tag}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKD_")}
    env.update(STACKD_STATE_ROOT=str(tmp_path / "state"), STACKD_RUN_ROOT=str(tmp_path / "run"),
               STACKD_REGISTRIES_CONFIG=str(busybox_mirror.registries_config), STACKD_RUNTIME="runc",
               STACKD_CGROUP_PARENT=cg, STACKD_NET_TABLE=tag, STACKD_NET_LINK_PREFIX=tag,
               STACKD_NET_POOLS=pool(), PYTHONPATH=str(ROOT))
    world = World(tmp_path / "state", tmp_path / "run", cg, env, "runc")
    d = tmp_path / "proj"
    d.mkdir()
    s = Stack(world, d, f"t{tag}", tag)
    try:
        yield s
        assert not leaks(world), f"left behind: {leaks(world)}"
        assert not net_leaks(tag, world.state), f"left behind: {net_leaks(tag, world.state)}"
    finally:
        force_clean(world)
        net_clean(tag, world.state)
