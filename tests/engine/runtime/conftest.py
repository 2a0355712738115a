"""Fixtures for the runtime: busybox-static bundles in tmp dirs and a runtime driver that cleans up."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

BUSYBOX = "/bin/busybox"
RUNTIME = [sys.executable, "-m", "stackd.engine.runtime.cli"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(BUSYBOX), reason="needs root and busybox-static")


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem: /bin/busybox, its applet links, /etc/passwd and /etc/group."""
    if os.geteuid() != 0 or not os.path.exists(BUSYBOX):
        pytest.skip("needs root and busybox-static")
    root = tmp_path_factory.mktemp("rootfs") / "rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (root / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            (root / "bin" / a).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return root


def default_config() -> dict:
    from stackd.engine.runtime.config import default_spec

    cfg = default_spec()
    cfg["process"]["terminal"] = False
    return cfg


class Bundle:
    """A bundle directory with its own rootfs copy; `write(args, **changes)` writes config.json."""

    def __init__(self, path: Path, template: Path) -> None:
        self.path = path
        self.rootfs = path / "rootfs"
        shutil.copytree(template, self.rootfs, symlinks=True)
        self.config = default_config()
        # A cgroup of its own: tests in parallel workers all name their containers c1, c2, ...
        self.config["linux"]["cgroupsPath"] = f"/stackd-test/{uuid.uuid4().hex[:12]}"

    def write(self, args: list[str] | None = None) -> Bundle:
        if args is not None:
            self.config["process"]["args"] = args
        (self.path / "config.json").write_text(json.dumps(self.config))
        return self

    def copy_config(self) -> dict:
        return copy.deepcopy(self.config)


class Runtime:
    """Runs `stackd-runtime` (or runc) with its own --root; deletes what is left at teardown."""

    def __init__(self, root: Path, argv: list[str] | None = None) -> None:
        self.root = root
        self.argv = argv or RUNTIME

    def __call__(self, *args: str, check: bool = True, timeout: float = 30, input: str | None = None,
                 **kw: object) -> subprocess.CompletedProcess[str]:
        # files, not pipes: a created container keeps its stdio open after the runtime exits
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run([*self.argv, "--root", str(self.root), *args], stdout=out, stderr=err,
                               timeout=timeout, input=input.encode() if input else None, **kw)
            out.seek(0)
            err.seek(0)
            p = subprocess.CompletedProcess(p.args, p.returncode, out.read().decode(), err.read().decode())
        if check and p.returncode != 0:
            raise AssertionError(f"{args} failed ({p.returncode}): {p.stderr}")
        return p

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid).stdout)

    def run(self, bundle: Bundle, cid: str = "c1", *extra: str) -> subprocess.CompletedProcess[str]:
        return self("run", "--bundle", str(bundle.path), *extra, cid, check=False)

    def cleanup(self) -> None:
        if not self.root.exists():
            return
        for cid in os.listdir(self.root):
            subprocess.run([*self.argv, "--root", str(self.root), "delete", "--force", cid], capture_output=True,
                           timeout=30)


@pytest.fixture
def bundle(tmp_path: Path, rootfs_template: Path) -> Bundle:
    b = tmp_path / "bundle"
    b.mkdir()
    return Bundle(b, rootfs_template)


@pytest.fixture
def runtime(tmp_path: Path):
    rt = Runtime(tmp_path / "state")
    try:
        yield rt
    finally:
        rt.cleanup()


@pytest.fixture
def runc(tmp_path: Path):
    if not shutil.which("runc"):
        pytest.skip("runc not installed")
    rt = Runtime(tmp_path / "runc-state", ["runc"])
    try:
        yield rt
    finally:
        rt.cleanup()
