"""The Plan DAG: recreate strategies, dependency conditions, and its deterministic renderings."""

from __future__ import annotations

import json
import textwrap

import networkx as nx
from stackkit import desired_state, plan_of, project, running, steps, with_container

from stackd.planner.plan import Action

D = {"busybox": "sha256:" + "d" * 64}

QUICK = """
services:
  web:
    image: busybox
    ports: ["8080:80"]
    environment: {MARK: "1"}
    networks: [front]
    depends_on: {api: {condition: service_healthy}}
  api:
    image: busybox
    environment: {MARK: "1"}
    networks: [front, back]
    healthcheck: {test: ["CMD", "true"]}
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
  migrate:
    image: busybox
    volumes: [data:/data]
    networks: [back]
    depends_on: {db: {condition: service_healthy}}
  db:
    image: busybox
    volumes: [data:/data]
    networks: [back]
    healthcheck: {test: ["CMD", "true"]}
networks: {front: {}, back: {}}
volumes: {data: {}}
"""


def _before(plan, first: str, then: str) -> bool:
    nodes = {f"{a.kind} {a.target}": a for a in plan.actions}
    return nx.has_path(plan.graph, nodes[first], nodes[then])


def test_fresh_plan_golden(tmp_path) -> None:
    plan = plan_of(desired_state(project(tmp_path, QUICK, name="quick")))
    assert plan.render() == textwrap.dedent("""\
        Stack quick: stackd will perform these actions:

          ↓ pull            busybox          image not present
          + create-network  quick_back       missing
          + create-network  quick_front      missing
          + create-volume   quick_data       missing
          + create          quick-api-1      api: missing
          + create          quick-db-1       db: missing
          + create          quick-migrate-1  migrate: missing
          + create          quick-web-1      web: missing
          ▸ start           quick-db-1       db: missing
          … wait-healthy    quick-db-1       db: migrate needs it healthy
          ▸ start           quick-migrate-1  migrate: missing
          … wait-completed  quick-migrate-1  migrate: api needs it completed successfully
          ▸ start           quick-api-1      api: missing
          … wait-healthy    quick-api-1      api: web needs it healthy
          ▸ start           quick-web-1      web: missing

        Plan: 4 to create, 0 unchanged; 1 image to pull; 2 networks, 1 volume to create.
        """)
    assert _before(plan, "pull busybox", "create quick-web-1")
    assert _before(plan, "create-network quick_back", "create quick-db-1")
    assert _before(plan, "wait-completed quick-migrate-1", "start quick-api-1")
    assert not _before(plan, "start quick-migrate-1", "start quick-db-1")


def test_recreate_golden_and_json(tmp_path) -> None:
    observed = running(desired_state(project(tmp_path, QUICK, name="quick"), D))
    changed = desired_state(project(tmp_path, QUICK.replace('MARK: "1"}\n    networks: [front, back]',
                                                            'MARK: "2"}\n    networks: [front, back]'), name="quick"), D)
    plan = plan_of(changed, observed)
    text = plan.render()
    tmp = f"{changed.services['api'].config_hash[:12]}_quick-api-1"
    assert text == textwrap.dedent(f"""\
        Stack quick: stackd will perform these actions:

          + create  {tmp}  api: recreate: environment.MARK changed
          ■ stop    quick-api-1               api: recreate: environment.MARK changed
          - remove  quick-api-1               api: recreate: environment.MARK changed
          ~ rename  {tmp} → quick-api-1  api: recreate: environment.MARK changed
          ▸ start   quick-api-1               api: recreate: environment.MARK changed

        Plan: 1 to recreate (environment.MARK changed), 3 unchanged.
        """)
    doc = plan.to_json()
    json.dumps(doc)
    assert doc["summary"] == "1 to recreate (environment.MARK changed), 3 unchanged"
    assert [a["kind"] for a in doc["actions"]] == ["create", "stop", "remove", "rename", "start"]
    assert doc["actions"][3]["after"] == [0, 2]
    assert plan_of(changed, observed).render() == text  # deterministic


def test_fixed_ports_stop_before_create(tmp_path) -> None:
    observed = running(desired_state(project(tmp_path, QUICK), D))
    changed = desired_state(project(tmp_path, QUICK.replace('MARK: "1"}\n    networks: [front]\n',
                                                            'MARK: "2"}\n    networks: [front]\n')), D)
    assert steps(plan_of(changed, observed)) == ["stop demo-web-1", "remove demo-web-1", "create demo-web-1",
                                                 "start demo-web-1"]


START_FIRST = """
services:
  app:
    image: busybox
    environment: {V: "1"}
    deploy: {update_config: {order: start-first}}
    healthcheck: {test: ["CMD", "true"]}
"""


def test_start_first_keeps_old_until_new_is_healthy(tmp_path) -> None:
    observed = running(desired_state(project(tmp_path, START_FIRST), D))
    changed = desired_state(project(tmp_path, START_FIRST.replace('V: "1"', 'V: "2"')), D)
    plan = plan_of(changed, observed)
    tmp = f"{changed.services['app'].config_hash[:12]}_demo-app-1"
    assert steps(plan) == [f"create {tmp}", f"start {tmp}", f"wait-healthy {tmp}", "stop demo-app-1",
                           "remove demo-app-1", f"rename {tmp}"]
    assert list(nx.topological_sort(plan.graph)) == list(plan.actions)  # a chain
    no_health = START_FIRST.replace('    healthcheck: {test: ["CMD", "true"]}\n', "")
    observed = running(desired_state(project(tmp_path, no_health), D))
    plan = plan_of(desired_state(project(tmp_path, no_health.replace('V: "1"', 'V: "2"')), D), observed)
    assert [a.kind for a in plan.actions] == ["create", "start", "stop", "remove", "rename"]


def test_restart_dependents_stop_before_dependency_and_start_after(tmp_path) -> None:
    text = """
    services:
      web:
        image: busybox
        depends_on: {db: {condition: service_healthy, restart: true}}
      db:
        image: busybox
        environment: {V: "1"}
        healthcheck: {test: ["CMD", "true"]}
    """
    observed = running(desired_state(project(tmp_path, text)))
    plan = plan_of(desired_state(project(tmp_path, text.replace('V: "1"', 'V: "2"'))), observed)
    assert _before(plan, "stop demo-web-1", "stop demo-db-1")
    assert _before(plan, "wait-healthy demo-db-1", "start demo-web-1")
    assert "restart" in plan.render().splitlines()[-1]


def test_unhealthy_running_dependency_gets_a_wait(tmp_path) -> None:
    desired = desired_state(project(tmp_path, QUICK))
    observed = with_container(running(desired), "demo-api-1", state="exited", exit_code=0, stopped=True)
    observed = with_container(observed, "demo-db-1", health="starting")
    plan = plan_of(desired, observed)
    assert steps(plan) == ["wait-healthy demo-db-1", "start demo-api-1"]  # web runs: no wait for api
    assert plan.actions[0].ref == next(c.id for c in observed.containers if c.name == "demo-db-1")


def test_scale_down_and_orphans_stop_then_remove(tmp_path) -> None:
    text = "services:\n  w: {image: busybox, scale: 3}\n"
    observed = running(desired_state(project(tmp_path, text)))
    observed = with_container(observed, "demo-w-2", state="exited", exit_code=0, stopped=True)
    plan = plan_of(desired_state(project(tmp_path, text.replace("3", "1"))), observed)
    assert steps(plan) == ["stop demo-w-3", "remove demo-w-2", "remove demo-w-3"]
    assert plan.render().splitlines()[-1] == "Plan: 2 to remove, 1 unchanged."


def test_no_start_only_creates(tmp_path) -> None:
    plan = plan_of(desired_state(project(tmp_path, QUICK), {"busybox": "sha256:1"}), no_start=True)
    assert {a.kind for a in plan.actions} == {"create", "create-network", "create-volume"}


def test_empty_plan_renders_up_to_date(tmp_path) -> None:
    desired = desired_state(project(tmp_path, QUICK))
    plan = plan_of(desired, running(desired))
    assert plan.empty
    assert plan.render() == "Stack demo: no changes, the stack is up to date.\n\nPlan: 4 unchanged.\n"
    assert plan.to_json()["actions"] == []


def test_actions_compare_by_kind_target_service() -> None:
    a = Action("start", "x", "s", reason="one")
    assert a == Action("start", "x", "s", reason="two")
    assert len({a, Action("stop", "x", "s")}) == 2


def test_joining_another_services_namespaces_or_volumes_creates_after_it_started(tmp_path) -> None:
    plan = plan_of(desired_state(project(tmp_path, """
services:
  db: {image: busybox}
  sidecar: {image: busybox, network_mode: "service:db"}
  shell: {image: busybox, ipc: "service:db"}
  backup: {image: busybox, volumes_from: ["db:ro"]}
  api: {image: busybox, depends_on: [db]}
""")))
    for joiner in ("sidecar", "shell", "backup"):
        assert _before(plan, "start demo-db-1", f"create demo-{joiner}-1"), joiner
    # a plain dependency only orders the starts: its container is created beside the others
    assert _before(plan, "start demo-db-1", "start demo-api-1")
    assert not _before(plan, "start demo-db-1", "create demo-api-1")
