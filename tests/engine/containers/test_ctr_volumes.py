"""Volumes in containers for real: named volumes outlive containers, copy-up of image content,
read-only mounts, anonymous volumes and `rm -v`, tmpfs, `--volumes-from`, nocopy."""

from __future__ import annotations

import json

from tests.engine.containers.conftest import World


def out(w: World, *args: str) -> str:
    return w.cli("container", "run", *args, check=True).stdout.decode()


def volumes(w: World) -> dict[str, dict[str, object]]:
    res = w.cli("volume", "ls", "--format", "json", check=True).stdout.decode()
    rows = [json.loads(line) for line in res.splitlines() if line.strip()]
    return {str(r["Name"]): r for r in rows}


def test_ctr_volume_named_survives_rm_and_copy_up(world: World) -> None:
    w = world
    # copy-up: the image's /home (with app/) appears in the new empty volume
    text = out(w, "--rm", "-v", "data:/home", "busybox", "sh", "-c", "ls /home; echo kept > /home/note")
    assert "app" in text.split()
    assert "data" in volumes(w)
    text = out(w, "--rm", "-v", "data:/mnt", "busybox", "sh", "-c", "cat /mnt/note; ls -ld /mnt/app")
    assert "kept" in text and "app" in text, text
    # nocopy: no image content in a fresh volume
    text = out(w, "--rm", "--mount", "type=volume,source=empty,target=/home,volume-nocopy",
               "busybox", "ls", "-A", "/home")
    assert text.strip() == "", text
    # read-only refuses writes
    res = w.cli("container", "run", "--rm", "-v", "data:/mnt:ro", "busybox", "sh", "-c", "echo x > /mnt/y")
    assert res.returncode != 0 and b"Read-only file system" in res.stderr + res.stdout, res
    assert (w.state / "volumes" / "data" / "_data" / "note").read_text() == "kept\n"
    assert not (w.state / "volumes" / "data" / "_data" / "y").exists()
    w.cli("volume", "rm", "data", "empty", check=True)


def test_ctr_volume_anonymous_tmpfs_and_volumes_from(world: World) -> None:
    w = world
    w.cli("container", "run", "-d", "--name", "src", "--stop-signal", "KILL", "-v", "/scratch", "-v", "shared:/shared",
          "--tmpfs", "/fast:size=1m", "busybox", "sh", "-c",
          "echo s > /scratch/f; echo t > /shared/f; sleep 300", check=True)
    try:
        anon = [n for n, v in volumes(w).items() if n != "shared"]
        assert len(anon) == 1 and len(anon[0]) == 64
        res = w.cli("container", "exec", "src", "sh", "-c", "grep ' /fast ' /proc/mounts", check=True)
        assert b"tmpfs" in res.stdout and b"size=1024k" in res.stdout, res.stdout
        # volumes-from: the same volumes, read-only with :ro
        text = out(w, "--rm", "--volumes-from", "src:ro", "busybox", "sh", "-c",
                   "cat /scratch/f /shared/f; touch /shared/no 2>&1; grep -c ' /fast ' /proc/mounts || true")
        assert "s\nt\n" in text and "Read-only" in text, text
        # rm without -v keeps the anonymous volume; the named one always stays
        w.cli("container", "rm", "-f", "src", check=True)
        assert set(volumes(w)) == {"shared", anon[0]}
        w.cli("container", "run", "--name", "again", "-v", "/scratch", "busybox", "true", check=True)
        assert len(volumes(w)) == 3
        w.cli("container", "rm", "-v", "again", check=True)  # -v removes its anonymous volume
        assert set(volumes(w)) == {"shared", anon[0]}
    finally:
        w.cli("container", "rm", "-f", "src", "again")
        w.cli("volume", "prune", "-f")
        w.cli("volume", "rm", "shared")
