"""Real-world tar output: layers written by umoci from busybox-static unpack and merge correctly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stackd.engine import mounts
from stackd.engine.snapshots import LayerRef, Snapshotter
from tests.conftest import requires_root

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
pytestmark = [
    requires_root,
    pytest.mark.skipif(not shutil.which("umoci") or not os.path.exists(BUSYBOX),
                       reason="needs umoci and busybox-static"),
]


def umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True)


def build_image(tmp: Path) -> Path:
    """Two layers: busybox with applet symlinks, then a layer deleting `vi` and adding a file."""
    layout, bundle = tmp / "oci", tmp / "bundle"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:bb")
    umoci("unpack", "--image", f"{layout}:bb", str(bundle))
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", rootfs / "bin" / a)
    (rootfs / "etc").mkdir()
    (rootfs / "etc/motd").write_text("hello\n")
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:bb", str(bundle))
    os.unlink(rootfs / "bin/vi")
    (rootfs / "etc/second").write_text("2\n")
    umoci("repack", "--image", f"{layout}:bb", str(bundle))
    shutil.rmtree(bundle)
    return layout


def layers_of(layout: Path) -> list[LayerRef]:
    def blob(d: str) -> Path:
        return layout / "blobs" / "sha256" / d.split(":", 1)[1]

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    return [LayerRef(did, blob(la["digest"]), la["mediaType"], la["size"])
            for la, did in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True)]


def test_umoci_busybox_layers(tmp_path: Path, mounted: list[str]) -> None:
    layers = layers_of(build_image(tmp_path))
    assert len(layers) == 2
    snaps = Snapshotter(tmp_path / "snapshots")
    top = snaps.ensure_layers(layers)
    base = snaps.layer_dir(snaps.lineage(top)[-1]) / "fs"
    assert os.readlink(base / "bin/sh") == "busybox"
    assert os.access(base / "bin/busybox", os.X_OK)
    out = subprocess.run(["chroot", str(base), "/bin/sh", "-c", "echo hi from $0"],
                         check=True, capture_output=True, text=True).stdout
    assert out == "hi from /bin/sh\n"
    m = snaps.prepare("bb", top)
    target = tmp_path / "root"
    target.mkdir()
    mounts.mount(m, target)
    mounted.append(str(target))
    assert not os.path.lexists(target / "bin/vi") and os.path.islink(target / "bin/ls")
    assert (target / "etc/second").read_text() == "2\n"
    assert (target / "etc/motd").read_text() == "hello\n"
    mounts.unmount(target)
    snaps.remove("bb")
