"""The `stackd image …`, `images`, `login`/`logout` commands, run in-process against real registries."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from stackd.cli import main
from tests.engine.images.conftest import PASSWORD, USER, Registry, TokenIssuer, World


@pytest.fixture
def env(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = tmp_path / "registries.toml"
    cfg.write_text(f'[registry."docker.io"]\nmirrors = ["{world.plain.url}"]\n')
    monkeypatch.setenv("STACKD_STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("STACKD_REGISTRIES_CONFIG", str(cfg))
    monkeypatch.setenv("STACKD_AUTH_CONFIG", str(tmp_path / "auth.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_pull_ls_inspect_save_load_rm_prune(env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = cli(capsys, "image", "pull", "busybox")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "latest: Pulling from busybox"
    assert any(line.endswith(": Download complete") for line in lines)
    assert lines[-2] == "Status: Downloaded newer image for busybox:latest"
    assert lines[-1] == "docker.io/library/busybox:latest"
    code, out, _ = cli(capsys, "image", "pull", "-q", "busybox")
    assert (code, out) == (0, "docker.io/library/busybox:latest\n")

    code, out, _ = cli(capsys, "images", "--format", "json")
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["Repository"], row["Tag"], row["Platform"]) == ("busybox", "latest", "linux/amd64")
    code, out, _ = cli(capsys, "image", "ls")
    assert out.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert out.splitlines()[1].startswith("busybox ")
    code, out, _ = cli(capsys, "image", "ls", "-q")
    assert out.strip() == row["ID"]
    code, out, _ = cli(capsys, "image", "inspect", "busybox")
    [data] = json.loads(out)
    assert data["RepoTags"] == ["busybox:latest"] and data["Config"]["Cmd"] == ["/bin/sh"]
    assert len(data["RootFS"]["Layers"]) == 3

    saved = env / "bb.tar"
    assert cli(capsys, "image", "save", "-o", str(saved), "busybox")[0] == 0
    code, out, _ = cli(capsys, "image", "rm", "busybox")
    assert code == 0 and out.splitlines()[0] == "Untagged: busybox:latest" and "Deleted: sha256:" in out
    assert cli(capsys, "images", "-q")[1] == ""
    code, out, _ = cli(capsys, "image", "load", "-i", str(saved))
    assert (code, out) == (0, "Loaded image: busybox:latest\n")
    code, out, _ = cli(capsys, "image", "prune", "-a", "-f")
    assert code == 0 and "deleted: sha256:" in out and "Total reclaimed space:" in out
    assert cli(capsys, "images", "-q")[1] == ""
    assert list((env / "state" / "content" / "blobs" / "sha256").iterdir()) == []


def test_errors_are_one_line(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "image", "pull", "nosuch/thing:9")
    assert code == 1 and err.startswith("error: docker.io/nosuch/thing:9: not found in registry")
    assert "Traceback" not in err
    code, _, err = cli(capsys, "image", "rm", "nothere")
    assert code == 1 and err == "error: no such image: nothere\n"
    code, _, err = cli(capsys, "image", "pull", "Bad//Name")
    assert code == 1 and "invalid reference format" in err


def test_login_logout(env: Path, basic_registry: Registry, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO("wrong-pass-4242\n"))
    code, out, err = cli(capsys, "login", "-u", USER, "--password-stdin", basic_registry.host)
    assert code == 1 and "unauthorized" in err and "wrong-pass-4242" not in out + err
    assert not (env / "auth.json").exists()
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    code, out, err = cli(capsys, "login", "-u", USER, "--password-stdin", basic_registry.host)
    assert (code, out) == (0, "Login Succeeded\n"), err
    assert PASSWORD not in out + err
    assert stat.S_IMODE((env / "auth.json").stat().st_mode) == 0o600
    code, out, err = cli(capsys, "image", "pull", "-q", f"{basic_registry.host}/test/busybox")
    assert code == 0, err
    code, out, _ = cli(capsys, "logout", basic_registry.host)
    assert out == f"Removing login credentials for {basic_registry.host}\n"
    code, out, err = cli(capsys, "image", "pull", "-q", f"{basic_registry.host}/test/busybox:oci")
    assert code == 1 and "unauthorized" in err


def test_login_with_bearer_token_registry(env: Path, token_registry: tuple[Registry, TokenIssuer], capsys: pytest.CaptureFixture[str]) -> None:
    reg, _ = token_registry
    code, out, err = cli(capsys, "login", "-u", USER, "-p", "nope-777", reg.host)
    assert code == 1 and "unauthorized" in err and "nope-777" not in err
    code, out, err = cli(capsys, "login", "-u", USER, "-p", PASSWORD, reg.host)
    assert (code, out) == (0, "Login Succeeded\n"), err
    code, out, err = cli(capsys, "image", "pull", "-q", f"{reg.host}/test/busybox:oci")
    assert (code, out) == (0, f"{reg.host}/test/busybox:oci\n"), err
