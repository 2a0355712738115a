"""`stackd volume …` for real: named, anonymous and tmpfs volumes, in-use refusal, prune, output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackd.cli import main
from stackd.engine.volumes import VolumeStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def mounts_under(root: Path) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4]
            if target.startswith(str(root)):
                out.append(target)
    return out


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The state root; any mount left under it is unmounted afterwards (and counted as a leak)."""
    state = tmp_path / "state"
    monkeypatch.setenv("STACKD_STATE_ROOT", str(state))
    try:
        yield state
    finally:
        left = mounts_under(state)
        for target in reversed(left):
            subprocess.run(["umount", "-l", target])
        assert not left, f"leaked mounts {left}"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = run(capsys, *args)
    assert code == 0, err
    return out


def one_error(capsys: pytest.CaptureFixture[str], *args: str, code: int = 1) -> str:
    got, out, err = run(capsys, *args)
    assert got == code, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_create_ls_inspect_rm(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ok(capsys, "volume", "create", "-l", "app=web", "-l", "tier", "data").strip() == "data"
    assert ok(capsys, "volume", "create", "--name", "logs").strip() == "logs"
    assert ok(capsys, "volume", "create", "data").strip() == "data"  # idempotent, as Docker
    lines = ok(capsys, "volume", "ls").splitlines()
    assert lines == ["DRIVER   VOLUME NAME", "local    data", "local    logs"]
    objs = [json.loads(ln) for ln in ok(capsys, "volume", "ls", "--format", "json").splitlines()]
    assert [(o["Name"], o["Driver"], o["Labels"], o["Scope"]) for o in objs] == [
        ("data", "local", "app=web,tier=", "local"), ("logs", "local", "", "local")]
    assert objs[0]["Mountpoint"] == str(root / "volumes" / "data" / "_data")
    [info, info2] = json.loads(ok(capsys, "volume", "inspect", "data", "logs"))
    assert set(info) == {"CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"}
    assert info["Labels"] == {"app": "web", "tier": ""} and info["Options"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["CreatedAt"])
    assert info2["Labels"] is None and Path(info2["Mountpoint"]).is_dir()
    assert ok(capsys, "volume", "inspect", "-f", "{{.Mountpoint}}", "logs").strip() == info2["Mountpoint"]
    assert ok(capsys, "volume", "ls", "-q", "--filter", "label=app=web").split() == ["data"]
    assert ok(capsys, "volume", "ls", "-q", "--filter", "label=tier").split() == ["data"]
    assert ok(capsys, "volume", "ls", "-q", "--filter", "name=lo").split() == ["logs"]
    assert ok(capsys, "volume", "ls", "--format", "{{.Name}}\\t{{.Driver}}", "-f", "driver=local").splitlines() == [
        "data\tlocal", "logs\tlocal"]
    assert ok(capsys, "volume", "rm", "data", "logs").split() == ["data", "logs"]
    assert ok(capsys, "volume", "ls", "-q") == ""
    assert not (root / "volumes" / "data").exists()


def test_anonymous_volumes_and_prune(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anon = ok(capsys, "volume", "create").strip()
    assert re.fullmatch(r"[0-9a-f]{64}", anon)
    ok(capsys, "volume", "create", "-l", "keep=yes", "named1")
    ok(capsys, "volume", "create", "named2")
    (root / "volumes" / anon / "_data" / "f").write_bytes(b"x" * 10000)
    out = ok(capsys, "volume", "prune", "-f")
    assert out.splitlines()[:3] == ["Deleted Volumes:", anon, ""]
    assert out.splitlines()[3].startswith("Total reclaimed space: ") and "kB" in out  # 10 kB of data
    assert ok(capsys, "volume", "ls", "-q").split() == ["named1", "named2"]
    assert ok(capsys, "volume", "prune", "-f", "-a", "--filter", "label=keep=yes").splitlines()[:2] == [
        "Deleted Volumes:", "named1"]
    assert ok(capsys, "volume", "prune", "-f", "-a").splitlines()[:2] == ["Deleted Volumes:", "named2"]
    assert ok(capsys, "volume", "prune", "-f", "-a") == "Total reclaimed space: 0B\n"
    assert ok(capsys, "volume", "ls", "-q") == ""


def test_tmpfs_volume_in_use_is_never_removed(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m,mode=0750", "scratch")
    [info] = json.loads(ok(capsys, "volume", "inspect", "scratch"))
    assert info["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m,mode=0750"}
    store = VolumeStore(root)  # what a container's start does
    store.acquire("scratch", "c" * 64)
    try:
        assert mounts_under(root) == [info["Mountpoint"]]
        fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", info["Mountpoint"]],
                            capture_output=True, text=True).stdout
        assert fs.startswith("tmpfs") and "size=1024k" in fs and "mode=750" in fs
        assert ok(capsys, "volume", "ls", "-q", "-f", "dangling=false").split() == ["scratch"]
        assert ok(capsys, "volume", "ls", "-q", "-f", "dangling=true") == ""
        assert "in use by container(s) cccccccccccc" in one_error(capsys, "volume", "rm", "scratch")
        assert "in use" in one_error(capsys, "volume", "rm", "-f", "scratch")  # -f does not override
        assert ok(capsys, "volume", "prune", "-f", "-a") == "Total reclaimed space: 0B\n"
    finally:
        store.release("scratch", "c" * 64)
    assert mounts_under(root) == []
    assert ok(capsys, "volume", "rm", "scratch").strip() == "scratch"
    assert not (root / "volumes" / "scratch").exists()


def test_errors_are_one_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert one_error(capsys, "volume", "rm", "nope") == "error: no such volume: nope"
    code, out, err = run(capsys, "volume", "rm", "-f", "nope")
    assert (code, out, err) == (0, "", "")
    code, out, err = run(capsys, "volume", "inspect", "nope")
    assert code == 1 and json.loads(out) == [] and "no such volume: nope" in err
    assert "not supported" in one_error(capsys, "volume", "create", "-d", "nfs", "x", code=2)
    assert "unknown driver_opts" in one_error(capsys, "volume", "create", "-o", "color=red", "x", code=2)
    assert "need both type and device" in one_error(capsys, "volume", "create", "-o", "type=tmpfs", "x", code=2)
    assert "invalid volume name" in one_error(capsys, "volume", "create", "bad/name", code=2)
    ok(capsys, "volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "t")
    assert "different options" in one_error(capsys, "volume", "create", "t")
    assert "invalid filter" in one_error(capsys, "volume", "ls", "-f", "dangling=maybe", code=2)
    ok(capsys, "volume", "rm", "t")


def test_unwritable_state_root_is_one_error_line(root: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACKD_STATE_ROOT", "/sys/stackd-test")  # EPERM even for root
    monkeypatch.setenv("STACKD_NET_TABLE", "sdvtest")  # never the host's real table
    monkeypatch.setenv("STACKD_NET_LINK_PREFIX", "sdvt")
    assert "permission denied: /sys/stackd-test" in one_error(capsys, "volume", "create", "x")
    assert "permission denied" in one_error(capsys, "network", "create", "x")


def test_volume_ls_subprocess_is_lean(root: Path) -> None:
    code = "import sys; from stackd.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "STACKD_STATE_ROOT": str(root)}
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code, "volume", "ls"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout == "DRIVER   VOLUME NAME\n"
    imported = {ln.split("|")[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    assert "stackd.engine.volumes" in imported
    heavy = {m for m in imported if m.split(".")[0] in ("pyroute2", "trio", "httpx", "pydantic")
             or m.startswith("stackd.net")}
    assert not heavy, heavy
    r = subprocess.run([sys.executable, "-c", code, "volume", "rm", "ghost"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 1 and r.stderr == "error: no such volume: ghost\n"
