"""Fixtures for the shim tests: busybox OCI bundles for runc, shims cleaned up whatever happens."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stackd.engine.shim.client import ShimClient, ShimConfig, start_shim

RUNTIME = os.environ.get("STACKD_TEST_RUNTIME", "runc")
CGROUP_ROOT = Path("/sys/fs/cgroup")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which(RUNTIME) is None, reason="needs root and runc"
)


def _busybox_rootfs(rootfs: Path) -> None:
    (rootfs / "bin").mkdir(parents=True)
    for d in ("etc", "tmp", "proc", "sys", "dev", "root"):
        (rootfs / d).mkdir()
    try:
        os.link("/bin/busybox", rootfs / "bin/busybox")
    except OSError:
        shutil.copy2("/bin/busybox", rootfs / "bin/busybox")
    applets = subprocess.run(
        ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for name in applets:
        if name != "busybox":
            os.symlink("busybox", rootfs / "bin" / name)
    (rootfs / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (rootfs / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")


@pytest.fixture(scope="session")
def runc_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("spec")
    subprocess.run([RUNTIME, "spec"], cwd=d, check=True)
    return json.loads((d / "config.json").read_text())  # type: ignore[no-any-return]


class Env:
    """One test's world: bundles and shims under tmp_path, a private runtime root."""

    def __init__(self, tmp: Path, template: dict[str, object]) -> None:
        self.tmp = tmp
        self.template = template
        self.root = str(tmp / "rt")
        self.shims: list[tuple[str, str]] = []  # (id, dir)
        self.cgroups: list[str] = []

    def bundle(
        self, args: list[str], *, tty: bool = False, name: str | None = None, pidns: bool = True
    ) -> tuple[str, str]:
        cid = name or f"shimtest-{uuid.uuid4().hex[:10]}"
        bundle = self.tmp / f"bundle-{cid}"
        _busybox_rootfs(bundle / "rootfs")
        cfg = json.loads(json.dumps(self.template))
        cfg["root"]["readonly"] = False
        cfg["process"]["args"] = args
        cfg["process"]["terminal"] = tty
        cfg["process"]["env"] = ["PATH=/bin", "TERM=xterm", "HOME=/root"]
        cfg["hostname"] = "shimtest"
        cgroup = f"/stackd-shimtest-{cid}"
        cfg["linux"]["cgroupsPath"] = cgroup
        if not pidns:
            cfg["linux"]["namespaces"] = [
                n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"
            ]
        self.cgroups.append(cgroup)
        (bundle / "config.json").write_text(json.dumps(cfg))
        return cid, str(bundle)

    def start(
        self, args: list[str], *, tty: bool = False, pidns: bool = True, **kw: object
    ) -> ShimClient:
        cid, bundle = self.bundle(args, tty=tty, pidns=pidns)
        shim_dir = str(self.tmp / f"shim-{cid}")
        self.shims.append((cid, shim_dir))
        cfg = ShimConfig(id=cid, bundle=bundle, runtime=RUNTIME, runtime_root=self.root, **kw)  # type: ignore[arg-type]
        return start_shim(shim_dir, cfg)

    def cleanup(self) -> list[str]:
        leaks: list[str] = []
        for cid, shim_dir in self.shims:
            try:
                pid = int(Path(shim_dir, "shim.pid").read_text())
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
            subprocess.run(
                [RUNTIME, "--root", self.root, "delete", "--force", cid],
                capture_output=True,
                check=False,
            )
        for cg in self.cgroups:
            for ctrl in CGROUP_ROOT.iterdir():
                path = ctrl / cg.lstrip("/")
                if path.is_dir():
                    leaks.append(str(path))
                    try:
                        path.rmdir()
                    except OSError:
                        pass
        return leaks


@pytest.fixture
def env(tmp_path: Path, runc_template: dict[str, object]) -> Iterator[Env]:
    e = Env(tmp_path, runc_template)
    try:
        yield e
    finally:
        leaks = e.cleanup()
    assert not leaks, f"cgroups left behind: {leaks}"


def wait_for(pred: Callable[[], object], timeout: float = 10.0, step: float = 0.02) -> object:
    """Poll ``pred`` until truthy (for observing another process; fails the test on timeout)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)
