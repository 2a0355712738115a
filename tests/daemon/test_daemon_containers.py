"""Containers and stacks through `stackd daemon`: the container CLI's own tests, re-run with a daemon
on the world's roots (so every `stackd` they start is a thin client), and a stack's lifecycle."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli import test_container_cli as container_cli
from tests.daemon.conftest import Daemon, running_daemon
from tests.engine.containers.conftest import World
from tests.engine.containers.conftest import hub as hub
from tests.engine.containers.conftest import rt_world as rt_world
from tests.engine.containers.conftest import world as world


@pytest.fixture
def served(world: World, tmp_path: Path) -> Iterator[tuple[World, Daemon]]:
    """A runc world with a daemon on its roots (stopped before the world checks for leaks)."""
    world.env["STACKD_RUNTIME"] = "stackd-runtime"
    world.runtime = "stackd-runtime"
    with running_daemon(world.env, tmp_path / "daemon.log") as d:
        yield world, d


def test_run_attached_streams_and_exit_code(served: tuple[World, Daemon], tmp_path: Path) -> None:
    world, daemon = served
    container_cli.test_container_run_attached_exit_code_streams_env_and_rm(world, tmp_path)
    assert len(daemon.workers()) == 7  # every command it ran


def test_verbs_on_a_detached_container(served: tuple[World, Daemon]) -> None:
    world, daemon = served
    container_cli.test_container_verbs_on_a_detached_container(world)
    assert len(daemon.workers()) >= 20


def test_run_it_through_a_pty(served: tuple[World, Daemon]) -> None:
    """The terminal is the client's: raw mode, window size (and SIGWINCH), Ctrl-C, exit code."""
    world, daemon = served
    container_cli.test_container_run_it_through_a_pty(world)
    assert daemon.workers()


def test_stack_lifecycle(served: tuple[World, Daemon], tmp_path: Path) -> None:
    world, daemon = served
    proj = tmp_path / "proj"
    proj.mkdir()
    stack = proj / "compose.yaml"
    body = ("services:\n  a:\n    image: busybox\n    command: [sleep, '300']\n    stop_signal: SIGKILL\n"
            "    environment: {{MARK: '{}'}}\n  b:\n    image: busybox\n    command: [sleep, '300']\n"
            "    stop_signal: SIGKILL\n    depends_on: [a]\n")
    stack.write_text(body.format("one"))

    def cli(*args: str) -> str:
        res = world.cli("-p", "dstack", "-f", str(stack), *args)
        assert res.returncode == 0, res.stderr.decode()
        return res.stdout.decode()

    try:
        _lifecycle(cli, stack, body)
    finally:
        world.cli("-p", "dstack", "-f", str(stack), "down")
    assert len(daemon.workers()) >= 8


def _lifecycle(cli: Callable[..., str], stack: Path, body: str) -> None:
    cli("up", "-d", "--wait")
    rows = json.loads(cli("ps", "--format", "json"))
    assert sorted((r["Service"], r["State"]) for r in rows) == [("a", "running"), ("b", "running")]
    assert "2 unchanged" in cli("plan")
    cli("up", "-d")  # no-op
    stack.write_text(body.format("two"))
    cli("up", "-d")
    rows = json.loads(cli("ps", "--format", "json"))
    assert len(rows) == 2 and all(r["State"] == "running" for r in rows)
    assert "MARK=two" in cli("exec", "-T", "a", "env")
    cli("down")
    assert cli("ps", "-a", "-q") == ""
