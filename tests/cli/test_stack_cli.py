"""`stackd plan`, `up --dry-run`, `graph` and stack-verb errors: golden output against an empty real engine."""

from __future__ import annotations

import json
import os
import secrets
import textwrap
from pathlib import Path

import pytest

from stackd.cli import main

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the real (empty) engine opens netlink as root")

STACK = """
services:
  db:
    image: busybox
    healthcheck: {test: ["CMD", "true"]}
  migrate:
    image: busybox
    command: ["true"]
    depends_on: {db: {condition: service_healthy}}
  api:
    image: busybox
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
"""

PLAN = """\
Stack demo: stackd will perform these actions:

  ↓ pull            busybox         image not present
  + create-network  demo_default    missing
  + create          demo-api-1      api: missing
  + create          demo-db-1       db: missing
  + create          demo-migrate-1  migrate: missing
  ▸ start           demo-db-1       db: missing
  … wait-healthy    demo-db-1       db: migrate needs it healthy
  ▸ start           demo-migrate-1  migrate: missing
  … wait-completed  demo-migrate-1  migrate: api needs it completed successfully
  ▸ start           demo-api-1      api: missing

Plan: 3 to create, 0 unchanged; 1 image to pull; 1 network to create.
"""


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tag = "sg" + secrets.token_hex(2)
    monkeypatch.setenv("STACKD_STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("STACKD_RUN_ROOT", str(tmp_path / "run"))
    monkeypatch.setenv("STACKD_NET_TABLE", tag)
    monkeypatch.setenv("STACKD_NET_LINK_PREFIX", tag)
    monkeypatch.setenv("STACKD_CGROUP_PARENT", f"/stackd-test-{tag}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stack.yaml").write_text(textwrap.dedent(STACK))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["-p", "demo", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_text_is_golden(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "plan") == (0, PLAN, "")
    assert run(capsys, "up", "--dry-run") == (0, PLAN, "")
    assert not (proj / "state" / "net" / "state.json").exists()  # nothing was created


def test_plan_json(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["stack"] == "demo"
    assert doc["summary"] == "3 to create, 0 unchanged; 1 image to pull; 1 network to create"
    kinds = [(a["kind"], a["target"]) for a in doc["actions"]]
    assert kinds[0] == ("pull", "busybox")
    by_id = {a["id"]: a for a in doc["actions"]}
    start_api = next(a for a in doc["actions"] if a["kind"] == "start" and a["target"] == "demo-api-1")
    assert {(by_id[i]["kind"], by_id[i]["target"]) for i in start_api["after"]} >= {
        ("wait-healthy", "demo-db-1"), ("wait-completed", "demo-migrate-1")}
    assert sorted(c["container"] for c in doc["changes"]) == ["demo-api-1", "demo-db-1", "demo-migrate-1"]


def test_plan_of_selected_service_without_deps(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--no-deps", "db")
    assert code == 0
    assert "demo-api-1" not in out and "demo-db-1" in out
    assert out.endswith("Plan: 1 to create, 0 unchanged; 1 image to pull; 1 network to create.\n")


def test_graph_formats(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "graph") == (0, "db\nmigrate ← db (service_healthy)\n"
                                       "api ← db (service_healthy), migrate (service_completed_successfully)\n", "")
    assert run(capsys, "graph", "--format", "dot")[1] == textwrap.dedent("""\
        digraph "demo" {
          "api";
          "db";
          "migrate";
          "db" -> "api" [label="service_healthy"];
          "db" -> "migrate" [label="service_healthy"];
          "migrate" -> "api" [label="service_completed_successfully"];
        }
        """)
    assert run(capsys, "graph", "--format", "mermaid")[1] == (
        "flowchart TD\n  db -->|service_healthy| api\n  db -->|service_healthy| migrate\n"
        "  migrate -->|service_completed_successfully| api\n")


@pytest.mark.parametrize(("args", "code", "message"), [
    (("up", "-d", "--scale", "nope=2"), 1, "error: no such service: nope\n"),
    (("up", "-d", "nope"), 1, "error: no such service: nope\n"),
    (("plan", "--scale", "nope=1"), 1, "error: --scale: no such service: nope\n"),
    (("up", "-d", "--scale", "web"), 2, "error: --scale 'web': expected SERVICE=NUM\n"),
    (("up", "--force-recreate", "--no-recreate"), 2, "error: --force-recreate and --no-recreate are incompatible\n"),
])
def test_errors_are_one_paragraph(proj: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                  code: int, message: str) -> None:
    """Spec errors exit 1, usage errors 2 (stackd.errors.UsageError); never a traceback."""
    assert run(capsys, *args) == (code, "", message)


def test_dependency_cycle_and_missing_file(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (proj / "stack.yaml").write_text("services:\n  a: {image: busybox, depends_on: [b]}\n"
                                     "  b: {image: busybox, depends_on: [a]}\n")
    code, out, err = run(capsys, "plan")
    assert code == 1 and out == "" and err.startswith("error: ") and "cycle" in err and "Traceback" not in err
    code, _, err = run(capsys, "-f", "nope.yaml", "ps")
    assert code == 1 and err.startswith("error: ") and "nope.yaml" in err
