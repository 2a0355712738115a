"""Real `up`/`ps`/`logs`/`exec`/`down` of small busybox stacks on stackd's engine (root, runc)."""

from __future__ import annotations

import json

STACK = """
services:
  db:
    image: busybox
    command: ["sh", "-c", "echo db up; touch /tmp/ready; exec sleep 1000"]
    network_mode: none
    stop_signal: SIGKILL
    environment: {MARK: "1"}
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 200ms
      retries: 30
  migrate:
    image: busybox
    command: ["sh", "-c", "echo migrated"]
    network_mode: none
    depends_on:
      db: {condition: service_healthy}
  api:
    image: busybox
    command: ["sh", "-c", "echo api up; exec sleep 1000"]
    network_mode: none
    stop_signal: SIGKILL
    environment: {MARK: "1"}
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
"""


def ps(stack, *args: str) -> dict[str, dict]:
    rows = json.loads(stack.cli("ps", "--format", "json", *args).stdout)
    return {r["Name"]: r for r in rows}


def test_up_ps_logs_exec_noop_recreate_scale_down(stack) -> None:
    p = stack.project
    stack.write(STACK)
    out = stack.cli("up", "-d").stdout
    assert f"Container {p}-api-1  Started" in out
    rows = ps(stack, "-a")
    assert set(rows) == {f"{p}-db-1", f"{p}-migrate-1", f"{p}-api-1"}
    assert rows[f"{p}-db-1"]["State"] == "running" and rows[f"{p}-db-1"]["Health"] == "healthy"
    assert rows[f"{p}-migrate-1"]["State"] == "exited" and rows[f"{p}-migrate-1"]["ExitCode"] == 0
    assert rows[f"{p}-api-1"]["State"] == "running"
    assert set(ps(stack)) == {f"{p}-db-1", f"{p}-api-1"}

    logs = stack.cli("logs").stdout
    assert f"{p}-migrate-1 | migrated" in logs.replace("  ", " ").replace("  ", " ") or "migrated" in logs
    assert "db up" in logs and "api up" in logs
    res = stack.cli("exec", "-T", "api", "sh", "-c", "echo $MARK; exit 3", check=False)
    assert (res.returncode, res.stdout.strip()) == (3, "1")

    # no-op: nothing changes, Compose-style "Running" lines
    ids = {n: r["ID"] for n, r in ps(stack, "-a").items()}
    out = stack.cli("up", "-d").stdout
    assert f"Container {p}-api-1  Running" in out
    assert {n: r["ID"] for n, r in ps(stack, "-a").items()} == ids
    assert "no changes" in stack.cli("plan").stdout
    # the fast path agrees with the planner (and is what answered the no-op)
    assert stack.noop() == [(f"{p}-db-1", "Running"), (f"{p}-migrate-1", "Exited (0)"), (f"{p}-api-1", "Running")]

    # change one service's environment: only it is recreated, and the plan says why
    stack.write(STACK.replace('command: ["sh", "-c", "echo api up; exec sleep 1000"]',
                              'command: ["sh", "-c", "echo api up; exec sleep 1000"]\n    labels: {x: "1"}')
                .replace('environment: {MARK: "1"}\n    depends_on', 'environment: {MARK: "2"}\n    depends_on'))
    assert stack.noop() is None
    plan = stack.cli("plan").stdout
    assert "1 to recreate" in plan and "environment.MARK" in plan, plan
    assert "2 unchanged" in plan, plan
    stack.cli("up", "-d")
    after = {n: r["ID"] for n, r in ps(stack, "-a").items()}
    assert after[f"{p}-db-1"] == ids[f"{p}-db-1"] and after[f"{p}-migrate-1"] == ids[f"{p}-migrate-1"]
    assert after[f"{p}-api-1"] != ids[f"{p}-api-1"]
    assert stack.cli("exec", "-T", "api", "sh", "-c", "echo $MARK").stdout.strip() == "2"

    # scale up and down (highest numbers removed first)
    stack.cli("up", "-d", "--scale", "api=3")
    assert {f"{p}-api-1", f"{p}-api-2", f"{p}-api-3"} <= set(ps(stack))
    stack.cli("up", "-d", "--scale", "api=1")
    assert {n for n in ps(stack) if "-api-" in n} == {f"{p}-api-1"}

    out = stack.cli("down", "-v").stdout
    assert f"Container {p}-db-1  Removed" in out
    assert ps(stack, "-a") == {}
    assert stack.engine().containers.list() == []


NET_STACK = """
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-$$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www"]
    stop_signal: SIGKILL
    ports: ["{port}:80"]
    networks:
      front: {{aliases: [site]}}
  client:
    image: busybox
    command: ["sh", "-c", "echo data > /data/file; exec sleep 1000"]
    stop_signal: SIGKILL
    volumes: [data:/data]
    networks: [front, back]
    depends_on: [web]
networks:
  front: {{}}
  back: {{internal: true}}
volumes:
  data: {{}}
"""


def test_networks_volumes_ports_and_dns(stack) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = stack.project
    stack.write(NET_STACK.format(port=port))
    out = stack.cli("up", "-d").stdout
    assert f"Network {p}_front  Created" in out and f"Volume {p}_data  Created" in out, out
    # DNS: the service name and the alias resolve on the shared network
    for host in ("web", "site"):
        got = stack.cli("exec", "-T", "client", "wget", "-qO-", f"http://{host}/").stdout
        assert got.startswith("hello-"), got
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        assert r.read().startswith(b"hello-")
    assert stack.cli("port", "web", "80").stdout.strip().endswith(f":{port}")
    # the named volume survives down without -v, and goes with -v
    stack.cli("down")
    vols = {v.name for v in stack.engine().volumes.list()}
    assert f"{p}_data" in vols
    stack.cli("up", "-d")
    assert stack.cli("exec", "-T", "client", "cat", "/data/file").stdout.strip() == "data"
    stack.cli("down", "-v")
    assert {v.name for v in stack.engine().volumes.list()} == set()
    assert stack.engine().networks.networks() == [] or all(
        n.labels.get("io.stackd.stack") != p for n in stack.engine().networks.networks())


FAILING = """
services:
  db:
    image: busybox
    command: ["sh", "-c", "exec sleep 1000"]
    network_mode: none
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD-SHELL", "echo not-ready-yet; exit 1"]
      interval: 100ms
      retries: 2
  api:
    image: busybox
    command: ["sleep", "1000"]
    network_mode: none
    depends_on:
      db: {condition: service_healthy}
  worker:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    network_mode: none
"""


def test_failure_report_lifecycle_verbs_and_oneoff(stack) -> None:
    p = stack.project
    stack.write(FAILING)
    res = stack.cli("up", "-d", check=False)
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr
    assert f"service db: wait-healthy {p}-db-1 failed" in res.stderr, res.stderr
    assert "not-ready-yet" in res.stderr  # the healthcheck's last output
    assert f"{p}-api-1" not in {n for n, r in ps(stack, "-a").items() if r["State"] == "running"}

    # the worker is up; stop/start/restart act on it, and `up` starts a stopped container again
    stack.cli("up", "-d", "worker")
    assert ps(stack)[f"{p}-worker-1"]["State"] == "running"
    stack.cli("stop", "worker")
    assert ps(stack, "-a")[f"{p}-worker-1"]["State"] == "exited"
    assert stack.noop() is None  # a stopped container is for the planner to start
    assert "1 to start" in stack.cli("plan", "worker").stdout
    stack.cli("start", "worker")
    assert ps(stack)[f"{p}-worker-1"]["State"] == "running"
    stack.cli("kill", "worker")
    stack.cli("up", "-d", "--wait", "--wait-timeout", "20", "worker")
    assert ps(stack)[f"{p}-worker-1"]["State"] == "running"
    assert f"{p}\n" in stack.cli("ls", "-q").stdout

    # one-off containers are labelled, do not count as replicas, and go with --rm
    res = stack.cli("run", "--rm", "--no-deps", "-T", "-e", "X=42", "worker", "sh", "-c", "echo run-$X; exit 5",
                    check=False)
    assert (res.returncode, res.stdout.strip().splitlines()[-1]) == (5, "run-42"), res
    assert not any("-run-" in n for n in ps(stack, "-a"))

    stack.cli("down", "-t", "1")
    assert ps(stack, "-a") == {}


FOREGROUND = """
services:
  a:
    image: busybox
    network_mode: none
    command: ["sh", "-c", "echo from-a; sleep 0.3; echo a-done"]
  b:
    image: busybox
    network_mode: none
    command: ["sh", "-c", "echo from-b; exit 7"]
"""


def test_foreground_up_streams_prefixed_logs_and_exit_code_from(stack) -> None:
    p = stack.project
    stack.write(FOREGROUND)
    res = stack.cli("up", "--exit-code-from", "b", check=False, timeout=60)
    assert res.returncode == 7, res
    lines = res.stdout.splitlines()
    assert any(line.startswith(f"{p}-b-1 | from-b") for line in lines), res.stdout
    assert any(line.startswith(f"{p}-a-1 | from-a") for line in lines), res.stdout
    res = stack.cli("up", "a", timeout=60)
    assert f"{p}-a-1 | a-done" in res.stdout
    assert "from-b" not in res.stdout  # only what this run produced
    stack.cli("down")


def test_network_mode_service_shares_the_dependencys_namespace(stack) -> None:
    """`network_mode: service:db` (resolved through the engine's records at create time)."""
    stack.write("""
services:
  db:
    image: busybox
    command: ["sleep", "1000"]
    stop_signal: SIGKILL
  sidecar:
    image: busybox
    command: ["sleep", "1000"]
    stop_signal: SIGKILL
    network_mode: service:db
    depends_on: [db]
""")
    stack.cli("up", "-d")
    try:
        def net_ns(service: str) -> str:
            return stack.cli("exec", "-T", service, "readlink", "/proc/self/ns/net").stdout.strip()

        assert net_ns("sidecar") == net_ns("db") != ""
        hosts = stack.cli("exec", "-T", "db", "cat", "/etc/hosts").stdout
        ip = stack.cli("exec", "-T", "db", "hostname", "-i", check=False).stdout.split()
        assert ip, hosts
        assert ip and ip == stack.cli("exec", "-T", "sidecar", "hostname", "-i").stdout.split()
    finally:
        stack.cli("down")
