"""Fixtures for bundle tests: a busybox-static rootfs and running bundles under runc/stackd-runtime."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # bundlekit, for --import-mode=importlib
from bundlekit import Result, cgroup_dirs, make_rootfs


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path / "bundle" / "rootfs")


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A unique cgroup parent; removed afterwards (it must hold no container cgroup by then)."""
    parent = "/stackd-bt-" + uuid.uuid4().hex[:10]
    yield parent
    for d in cgroup_dirs(parent):
        if d.exists():
            d.rmdir()


@pytest.fixture
def run_bundle(tmp_path: Path) -> Iterator:
    """run_bundle(bundle_dir, runtime="runc") -> Result; deletes the container and checks its cgroups are gone."""
    made: list[tuple[list[str], str, str]] = []

    def run(bundle: Path, runtime: str = "runc", timeout: float = 30) -> Result:
        cid = "stackd-bt-" + uuid.uuid4().hex[:12]
        state = tmp_path / f"state-{Path(runtime).name}"
        state.mkdir(exist_ok=True)
        base = [runtime, "--root", str(state)]
        cgpath = json.loads((bundle / "config.json").read_text())["linux"]["cgroupsPath"]
        made.append((base, cid, cgpath))
        p = subprocess.run([*base, "run", "--bundle", str(bundle), cid], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return Result(p.returncode, p.stdout, p.stderr)

    yield run
    leaked = []
    for base, cid, cgpath in made:
        subprocess.run([*base, "delete", "-f", cid], capture_output=True, timeout=30)
        for d in cgroup_dirs(cgpath):
            if d.exists():
                leaked.append(str(d))
                for sub in sorted(d.rglob("*"), reverse=True):
                    if sub.is_dir():
                        sub.rmdir()
                d.rmdir()
    assert not leaked, f"cgroups left behind: {leaked}"
