"""Helpers for bundle tests: a busybox-static rootfs, cgroup paths."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "/bin/busybox"
PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:App:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
wheel:x:10:root
audio:x:29:app
staff:x:50:app,root
app:x:1000:
nogroup:x:65534:
"""


def make_rootfs(root: Path) -> Path:
    """A minimal image root: /bin/busybox, its applets as symlinks, /etc/passwd and /etc/group."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            (root / "bin" / a).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    for d in ("tmp", "root", "home/app"):
        (root / d).mkdir(parents=True)
    os.chmod(root / "tmp", 0o1777)
    os.chown(root / "home/app", 1000, 1000)
    return root


@dataclass
class Result:
    rc: int
    out: str
    err: str


def cgroup_dirs(cgroups_path: str) -> list[Path]:
    """Every directory a container's cgroupsPath may have made (v1 controllers and unified)."""
    base = Path("/sys/fs/cgroup")
    rel = cgroups_path.lstrip("/")
    if (base / "cgroup.controllers").exists():
        return [base / rel]
    return [p / rel for p in base.iterdir() if p.is_dir() and not p.is_symlink()]
