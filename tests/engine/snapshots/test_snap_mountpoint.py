"""`mounts.is_mountpoint`: other devices by stat, same-file-system bind mounts through mountinfo."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from stackd.engine import mounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


@pytest.mark.parametrize("name", ["plain", "with space", "back\\slash", "tab\there"])
def test_bind_mounts_and_tmpfs_are_mount_points(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    target.mkdir()
    assert not mounts.is_mountpoint(target)
    for argv in (["mount", "--bind", str(target), str(target)], ["mount", "-t", "tmpfs", "tmpfs", str(target)]):
        subprocess.run(argv, check=True)
        try:
            assert mounts.is_mountpoint(target)
            assert not mounts.is_mountpoint(tmp_path)
        finally:
            subprocess.run(["umount", str(target)], check=True)
        assert not mounts.is_mountpoint(target)
