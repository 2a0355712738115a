"""examples/quickstart end to end: the page comes through web → api → db, web cannot reach db, the
migration runs once, and `down -v` leaves nothing behind."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from tests.e2e.examples_kit import example_stack, free_port, needs_root
from tests.e2e.images_fixture import DockerMirror, busybox_mirror  # noqa: F401  (session fixture)

pytestmark = needs_root


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def test_quickstart_up_page_isolation_migration_down(busybox_mirror: DockerMirror, tmp_path: Path) -> None:  # noqa: F811
    port = free_port()
    with example_stack("quickstart", busybox_mirror, tmp_path, WEB_PORT=str(port)) as ex:
        ex.cli("up", "-d", "--wait", "--wait-timeout", "60")

        # The page from the host: produced by db, from rows the migration wrote, via api and web.
        page = fetch(f"http://127.0.0.1:{port}/")
        assert "<h1>stackd quick start</h1>" in page
        assert "served by db" in page and "seeded by the migrate job" in page
        assert page.count("migrate v1: applied") == 1 and "already applied" not in page

        ps = {r["Service"]: r for r in ex.ps()}
        assert set(ps) == {"web", "api", "db", "migrate"}
        assert ps["migrate"]["State"] == "exited" and ps["migrate"]["ExitCode"] == 0
        assert all(ps[s]["Health"] == "healthy" for s in ("web", "api", "db"))

        # frontend/backend: api reaches db; web resolves nothing and cannot connect to db's address.
        assert ex.cli("exec", "-T", "api", "sh", "-c", "echo PING | nc db 5432").stdout.strip() == "PONG"
        assert ex.cli("exec", "-T", "web", "nslookup", "db", check=False).returncode != 0
        db_ip = ex.cli("exec", "-T", "api", "sh", "-c", "nslookup db | sed -n 's/^Address: //p' | tail -1").stdout.strip()
        assert db_ip.count(".") == 3, db_ip
        probe = ex.cli("exec", "-T", "web", "sh", "-c", f"echo PING | nc -w 2 {db_ip} 5432", check=False)
        assert probe.returncode != 0 and "PONG" not in probe.stdout, probe

        # A second `up -d` changes nothing: the migration is complete, not re-run.
        before = ex.ids()
        ex.cli("up", "-d", "--wait", "--wait-timeout", "60")
        assert ex.ids() == before
        page = fetch(f"http://127.0.0.1:{port}/")
        assert page.count("migrate v1:") == 1, page

        ex.cli("down", "-v")
        assert ex.left_behind() == []
