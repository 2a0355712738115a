"""examples/redis end to end: Debian's redis-server keeps the client's data across `down`/`up` in its
named volume, and `down -v` drops it. Needs the example images (`make images`)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.e2e.examples_kit import Example, example_stack, free_port, needs_root
from tests.e2e.images_fixture import DockerMirror, busybox_mirror, example_mirror  # noqa: F401

pytestmark = needs_root


def client_run(ex: Example) -> str:
    """`up -d --wait`, then the one-shot client's output once it has exited 0."""
    ex.cli("up", "-d", "--wait", "--wait-timeout", "60")
    assert ex.cli("wait", "client").stdout.split() == ["0"]
    return ex.cli("logs", "--no-log-prefix", "client").stdout


def resp_get(port: int, key: str) -> bytes:
    """GET over RESP's inline form from the host, through the published port."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {key}\r\n".encode())
        return s.recv(100)


def test_redis_data_survives_down_and_goes_with_down_v(example_mirror: DockerMirror, tmp_path: Path) -> None:  # noqa: F811
    port = free_port()
    with example_stack("redis", example_mirror, tmp_path, REDIS_PORT=str(port)) as ex:
        out = client_run(ex)
        assert "client run 1;" in out and out.count("run 1 by ") == 1, out
        assert resp_get(port, "example:runs") == b"$1\r\n1\r\n"
        assert ex.cli("exec", "-T", "redis", "redis-server", "--version").stdout.startswith("Redis server v=7")

        ex.cli("down")  # containers and network go, the volume stays
        assert ex.volumes() == [f"{ex.project}_redisdata"]
        out = client_run(ex)
        assert "client run 2;" in out and "run 1 by " in out and "run 2 by " in out, out
        assert ex.cli("exec", "-T", "redis", "redis-cli", "LLEN", "example:log").stdout.strip() == "2"

        ex.cli("down", "-v")  # and now the data is gone
        assert ex.left_behind() == []
        out = client_run(ex)
        assert "client run 1;" in out and "run 2" not in out, out

        ex.cli("down", "-v")
        assert ex.left_behind() == []
