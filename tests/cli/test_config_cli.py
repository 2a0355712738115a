"""`stackd config`: output forms, listings, hashes, errors (exit 1, no traceback), lean imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stackd.cli import main

STACK = """\
services:
  web:
    image: nginx:${TAG:-1.27}
    ports: ["8080:80"]
    depends_on: [db]
    volumes: [data:/data]
  db:
    image: postgres:16
  tools:
    build: ./tools
    profiles: [debug]
volumes:
  data:
"""


@pytest.fixture
def stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "stack.yaml").write_text(STACK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COMPOSE_PROFILES", raising=False)
    monkeypatch.delenv("TAG", raising=False)
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    return tmp_path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_yaml_output(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["-p", "demo", "config"], capsys)
    assert code == 0
    data = yaml.safe_load(out)
    assert list(data) == ["name", "services", "networks", "volumes"]
    assert data["services"]["web"]["image"] == "nginx:1.27"
    assert data["services"]["web"]["ports"] == [{"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}]
    assert data["networks"] == {"default": {"name": "demo_default"}}
    assert data["volumes"] == {"data": {"name": "demo_data"}}
    assert "tools" not in data["services"]


def test_json_output_and_file(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["-p", "demo", "config", "--format", "json", "-o", "out.json"], capsys)
    assert code == 0 and out == ""
    data = json.loads((stack_dir / "out.json").read_text())
    assert data["services"]["web"]["depends_on"] == {"db": {"condition": "service_started", "required": True}}


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--services", "web\ndb\n"),
        ("--volumes", "data\n"),
        ("--networks", "default\n"),
        ("--profiles", "debug\n"),
        ("--images", "nginx:1.27\npostgres:16\n"),
    ],
)
def test_listings(stack_dir: Path, capsys: pytest.CaptureFixture[str], flag: str, expected: str) -> None:
    code, out, _ = run(["-p", "demo", "config", flag], capsys)
    assert (code, out) == (0, expected)


def test_profile_enables_service_and_image_default(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["-p", "demo", "--profile", "debug", "config", "--images"], capsys)
    assert (code, out) == (0, "nginx:1.27\npostgres:16\ndemo-tools\n")


def test_hash(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["config", "--hash", "*"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["web", "db"]
    assert all(len(line.split()[1]) == 64 for line in lines)
    code, one, _ = run(["config", "--hash", "db"], capsys)
    assert one == lines[1] + "\n"
    code, _, err = run(["config", "--hash", "nope"], capsys)
    assert code == 2 and "no such service: nope" in err


def test_quiet_no_interpolate_variables(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "-q"], capsys)[:2] == (0, "")
    code, out, _ = run(["config", "--no-interpolate"], capsys)
    assert code == 0 and "nginx:${TAG:-1.27}" in out
    code, out, _ = run(["config", "--variables"], capsys)
    assert code == 0
    assert out.splitlines()[1].split() == ["TAG", "false", "1.27"]


def test_error_exit_code_and_message(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (stack_dir / "stack.yaml").write_text("services:\n  web:\n    imgae: nginx\n")
    code, out, err = run(["config"], capsys)
    assert code == 1 and out == ""
    assert err == 'error: stack.yaml:3:5: services.web.imgae: unknown key; did you mean "image"?\n'


def test_stdin(stack_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from stackd.cli import main; sys.exit(main())", "-f", "-", "-p", "x", "config", "--services"],
        input="services:\n  a:\n    image: busybox\n", capture_output=True, text=True, cwd=stack_dir, check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, "a\n"), proc.stderr


@pytest.mark.parametrize("args", [["config", "-q"], ["config"], ["config", "--format", "json"], ["config", "--hash", "*"]])
def test_config_imports_no_heavy_modules(stack_dir: Path, args: list[str]) -> None:
    # pydantic itself (~100 ms with the model classes) is not needed: pydantic-core validates
    code = (
        f"import sys, io, contextlib; from stackd.cli import main\nwith contextlib.redirect_stdout(io.StringIO()): rc = main({args!r})\n"
        "heavy = [m for m in ('trio', 'httpx', 'networkx', 'rich', 'pydantic') if m in sys.modules];"
        "print(rc, heavy)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=stack_dir, env=env, check=True)
    assert proc.stdout.strip() == "0 []"


def test_bad_yaml_never_tracebacks(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for text in ("services: [", "services:\n  web:\n    ports: {a: 1}\n", "- 1\n", "services:\n  a:\n    image: x\n    ports: [\"99999:1\"]\n"):
        (stack_dir / "stack.yaml").write_text(text)
        code, _, err = run(["config"], capsys)
        assert code == 1, err
        assert "Traceback" not in err and err.startswith("error: stack.yaml:")


def test_version_is_dropped_with_a_warning(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (stack_dir / "stack.yaml").write_text('version: "3.8"\n' + STACK)
    code, out, err = run(["-p", "demo", "config"], capsys)
    assert code == 0 and "version" not in yaml.safe_load(out)
    assert "the attribute `version` is obsolete" in err


def test_no_interpolate_keeps_templated_short_syntax(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (stack_dir / "stack.yaml").write_text(
        'services:\n  web:\n    image: nginx\n    ports: ["${PORT:-8080}:80"]\n    stop_grace_period: ${GRACE:-10s}\n'
    )
    code, out, err = run(["config", "--no-interpolate"], capsys)
    assert code == 0, err
    service = yaml.safe_load(out)["services"]["web"]
    assert service["ports"] == ["${PORT:-8080}:80"]
    assert service["stop_grace_period"] == "${GRACE:-10s}"
    code, out, _ = run(["config"], capsys)
    assert yaml.safe_load(out)["services"]["web"]["ports"][0]["published"] == "8080"
