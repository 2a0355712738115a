"""The diff: every reason a container is created, recreated, started, restarted, removed or kept."""

from __future__ import annotations

import pytest
from stackkit import changes, desired_state, diff, project, running, with_container

from stackd.errors import SpecError
from stackd.planner.diff import DiffOptions
from stackd.planner.observed import ObservedContainer, ObservedState

WEB_DB = """
services:
  web:
    image: busybox
    environment: {MARK: "1"}
    depends_on: {db: {condition: service_healthy, restart: true}}
  db:
    image: busybox
    volumes: [data:/data]
    healthcheck: {test: ["CMD", "true"]}
  worker:
    image: busybox
    environment: {MARK: "1"}
volumes:
  data: {}
"""


@pytest.fixture
def stack(tmp_path):
    return project(tmp_path, WEB_DB)


def test_fresh_stack_creates_everything(stack) -> None:
    d = diff(desired_state(stack), ObservedState())
    assert changes(d) == {"demo-web-1": ("create", "missing"), "demo-db-1": ("create", "missing"),
                          "demo-worker-1": ("create", "missing")}
    assert [n.name for n in d.networks] == ["demo_default"]
    assert [v.name for v in d.volumes] == ["demo_data"]
    assert d.pulls == ("busybox",)
    assert d.order == ("db", "web", "worker")


def test_known_digest_needs_no_pull(stack) -> None:
    d = diff(desired_state(stack, {"busybox": "sha256:aa"}), ObservedState())
    assert d.pulls == ()


def test_no_op_is_empty(stack) -> None:
    desired = desired_state(stack)
    d = diff(desired, running(desired))
    assert d.empty
    assert {k for k, _ in changes(d).values()} == {"unchanged"}


def test_environment_change_names_the_key(tmp_path, stack) -> None:
    observed = running(desired_state(stack))
    changed = project(tmp_path, WEB_DB.replace('web:\n    image: busybox\n    environment: {MARK: "1"}',
                                               'web:\n    image: busybox\n    environment: {MARK: "2", NEW: x}'))
    d = diff(desired_state(changed), observed)
    assert changes(d)["demo-web-1"] == ("recreate", "environment.MARK, environment.NEW changed")
    assert changes(d)["demo-worker-1"][0] == "unchanged"
    assert changes(d)["demo-db-1"][0] == "unchanged"


def test_command_change_names_the_key(tmp_path, stack) -> None:
    observed = running(desired_state(stack))
    changed = project(tmp_path, WEB_DB.replace("  worker:\n    image: busybox\n",
                                               "  worker:\n    image: busybox\n    command: [sleep, '5']\n"))
    assert changes(diff(desired_state(changed), observed))["demo-worker-1"] == ("recreate", "command changed")


def test_image_digest_change_recreates(stack) -> None:
    observed = running(desired_state(stack, {"busybox": "sha256:" + "a" * 64}))
    d = diff(desired_state(stack, {"busybox": "sha256:" + "b" * 64}), observed)
    kind, reason = changes(d)["demo-worker-1"]
    assert kind == "recreate"
    assert reason == f"image changed (sha256:{'a' * 12} → sha256:{'b' * 12})"
    assert d.pulls == ()


def test_digest_learned_after_create_does_not_recreate(stack) -> None:
    observed = running(desired_state(stack), digest="sha256:" + "c" * 64)  # created before the digest was known
    d = diff(desired_state(stack, {"busybox": "sha256:" + "c" * 64}), observed)
    assert d.empty


def test_unlabelled_container_is_config_changed(stack) -> None:
    desired = desired_state(stack)
    observed = with_container(running(desired), "demo-worker-1",
                              labels={**desired.services["worker"].containers[0].labels,
                                      "io.stackd.config-hash": "x", "io.stackd.config-keys": "junk"})
    assert changes(diff(desired, observed))["demo-worker-1"] == ("recreate", "config changed")


def test_dependency_recreated_restarts_dependents(tmp_path, stack) -> None:
    observed = running(desired_state(stack))
    changed = project(tmp_path, WEB_DB.replace('healthcheck: {test: ["CMD", "true"]}',
                                               'healthcheck: {test: ["CMD", "true"], retries: 9}'))
    d = diff(desired_state(changed), observed)
    assert changes(d)["demo-db-1"] == ("recreate", "healthcheck.retries changed")
    assert changes(d)["demo-web-1"] == ("restart", "dependency db recreated (depends_on.restart)")
    assert changes(d)["demo-worker-1"][0] == "unchanged"


def test_missing_network_and_volume(stack) -> None:
    desired = desired_state(stack)
    observed = running(desired)
    from dataclasses import replace

    d = diff(desired, replace(observed, networks=(), volumes=()))
    assert [n.name for n in d.networks] == ["demo_default"]
    assert changes(d)["demo-db-1"] == ("recreate", "network demo_default missing; volume demo_data missing")
    assert changes(d)["demo-worker-1"] == ("recreate", "network demo_default missing")


def test_orphans_warned_or_removed(stack) -> None:
    desired = desired_state(stack)
    orphan = ObservedContainer("o1", "demo-old-1", {"io.stackd.stack": "demo", "io.stackd.service": "old",
                                                    "io.stackd.number": "1"})
    observed = running(desired)
    from dataclasses import replace

    observed = replace(observed, containers=(*observed.containers, orphan))
    kept = diff(desired, observed)
    assert kept.empty
    assert kept.warnings == ("found orphan container demo-old-1 (service old removed); --remove-orphans removes it",)
    removed = diff(desired, observed, DiffOptions(remove_orphans=True))
    assert changes(removed)["demo-old-1"] == ("remove", "orphaned (service old removed)")


def test_other_stacks_and_oneoffs_are_ignored(stack) -> None:
    desired = desired_state(stack)
    observed = running(desired)
    from dataclasses import replace

    others = (ObservedContainer("x1", "other-web-1", {"io.stackd.stack": "other", "io.stackd.service": "zz"}),
              ObservedContainer("x2", "demo-web-run-1", {"io.stackd.stack": "demo", "io.stackd.service": "web",
                                                         "io.stackd.oneoff": "True", "io.stackd.number": "1"}))
    d = diff(desired, replace(observed, containers=(*observed.containers, *others)))
    assert d.empty and not d.warnings


def test_scale_up_and_down(stack) -> None:
    desired = desired_state(stack)
    observed = running(desired)
    up = diff(desired_state(stack, scale={"worker": 3}), observed)
    assert changes(up)["demo-worker-2"] == ("create", "scaled up to 3")
    assert changes(up)["demo-worker-3"] == ("create", "scaled up to 3")
    three = running(desired_state(stack, scale={"worker": 3}))
    down = diff(desired_state(stack, scale={"worker": 1}), three)
    removed = [c.name for c in down.changes if c.kind == "remove"]
    assert removed == ["demo-worker-3", "demo-worker-2"]  # highest numbers first
    assert changes(down)["demo-worker-2"] == ("remove", "scaled down to 1")
    zero = diff(desired_state(stack, scale={"worker": 0}), three)
    assert [c.name for c in zero.changes if c.kind == "remove"] == ["demo-worker-3", "demo-worker-2", "demo-worker-1"]


def test_scale_of_unknown_service_is_an_error(stack) -> None:
    with pytest.raises(SpecError, match="no such service: nope"):
        desired_state(stack, scale={"nope": 2})


ONESHOT = """
services:
  migrate: {image: busybox, command: [sh, -c, "exit 0"]}
  api:
    image: busybox
    depends_on: {migrate: {condition: service_completed_successfully}}
  job: {image: busybox}
  daemon: {image: busybox, restart: always}
  onfail: {image: busybox, restart: on-failure}
"""


def test_exited_containers(tmp_path) -> None:
    desired = desired_state(project(tmp_path, ONESHOT))
    base = running(desired)
    completed = with_container(base, "demo-migrate-1", state="exited", exit_code=0)
    assert changes(diff(desired, completed))["demo-migrate-1"] == ("unchanged", "completed (exit 0)")
    assert diff(desired, completed).empty
    failed = with_container(base, "demo-migrate-1", state="exited", exit_code=2)
    assert changes(diff(desired, failed))["demo-migrate-1"] == (
        "start", "exited (code 2); a dependent needs it to complete")
    job = with_container(base, "demo-job-1", state="exited", exit_code=3)
    assert changes(diff(desired, job))["demo-job-1"] == ("unchanged", "exited (code 3); restart: no")
    daemon = with_container(base, "demo-daemon-1", state="exited", exit_code=0)
    assert changes(diff(desired, daemon))["demo-daemon-1"] == ("start", "exited (code 0); restart: always")
    onfail = with_container(base, "demo-onfail-1", state="exited", exit_code=1)
    assert changes(diff(desired, onfail))["demo-onfail-1"] == ("start", "exited (code 1); restart: on-failure")
    stopped = with_container(base, "demo-job-1", state="exited", exit_code=143, stopped=True)
    assert changes(diff(desired, stopped))["demo-job-1"] == ("start", "stopped")
    created = with_container(base, "demo-job-1", state="created")
    assert changes(diff(desired, created))["demo-job-1"] == ("start", "created, not started")
    dead = with_container(base, "demo-job-1", state="dead")
    assert changes(diff(desired, dead))["demo-job-1"] == ("recreate", "container is dead")


def test_completed_oneshot_reruns_when_changed(tmp_path) -> None:
    desired = desired_state(project(tmp_path, ONESHOT))
    completed = with_container(running(desired), "demo-migrate-1", state="exited", exit_code=0)
    changed = desired_state(project(tmp_path, ONESHOT.replace('"exit 0"', '"echo v2; exit 0"')))
    assert changes(diff(changed, completed))["demo-migrate-1"] == ("recreate", "command changed")


def test_force_and_no_recreate(tmp_path, stack) -> None:
    desired = desired_state(stack)
    observed = running(desired)
    forced = diff(desired, observed, DiffOptions(force_recreate=True))
    assert {c.kind for c in forced.changes} == {"recreate"}
    assert changes(forced)["demo-db-1"][1] == "forced (--force-recreate)"
    changed = desired_state(project(tmp_path, WEB_DB.replace('MARK: "1"', 'MARK: "2"')))
    kept = diff(changed, observed, DiffOptions(no_recreate=True))
    assert changes(kept)["demo-worker-1"] == ("unchanged", "running (--no-recreate)")
    assert kept.empty
    stopped = with_container(observed, "demo-worker-1", state="exited", exit_code=0, stopped=True)
    assert changes(diff(changed, stopped, DiffOptions(no_recreate=True)))["demo-worker-1"] == ("start", "stopped")


def test_selected_services_with_and_without_deps(stack) -> None:
    desired = desired_state(stack)
    with_deps = diff(desired, ObservedState(), DiffOptions(services=("web",)))
    assert set(changes(with_deps)) == {"demo-web-1", "demo-db-1"}
    alone = diff(desired, ObservedState(), DiffOptions(services=("web",), no_deps=True))
    assert set(changes(alone)) == {"demo-web-1"}
    assert [v.name for v in alone.volumes] == []
    with pytest.raises(SpecError, match="no such service: nope"):
        diff(desired, ObservedState(), DiffOptions(services=("nope",)))


def test_interrupted_recreate_converges(stack) -> None:
    desired = desired_state(stack)
    observed = running(desired)
    worker = next(c for c in observed.containers if c.name == "demo-worker-1")
    from dataclasses import replace

    leftover = replace(worker, id="tmp1", name="0123abcd_demo-worker-1", state="created")
    both = replace(observed, containers=(*observed.containers, leftover))
    assert changes(diff(desired, both))["0123abcd_demo-worker-1"] == ("remove", "leftover of an interrupted recreate")
    only_new = with_container(both, "demo-worker-1", drop=True)
    d = diff(desired, only_new)
    assert [(c.kind, c.name, c.reason) for c in d.changes if c.service == "worker"] == [
        ("rename", "demo-worker-1", "finish an interrupted recreate (0123abcd_demo-worker-1)"),
        ("start", "demo-worker-1", "created, not started"),
    ]


PROFILES = """
services:
  app:
    image: busybox
    depends_on:
      cache: {condition: service_started, required: false}
  cache: {image: busybox, profiles: [extra]}
"""


def test_optional_dependency_disabled_by_profile(tmp_path) -> None:
    desired = desired_state(project(tmp_path, PROFILES))
    d = diff(desired, ObservedState())
    assert set(changes(d)) == {"demo-app-1"}
    # the loader drops it; a desired state that still names it is warned about (or refused)
    from dataclasses import replace

    from stackd.planner.desired import Dependency

    app = desired.services["app"]
    for required, expect in ((False, None), (True, "app depends on cache, which is not enabled")):
        odd = replace(desired, services={"app": replace(app, depends_on=(Dependency("cache", required=required),))})
        if expect is None:
            assert diff(odd, ObservedState()).warnings == ("app: optional dependency cache is not enabled, skipped",)
        else:
            with pytest.raises(SpecError, match=expect):
                diff(odd, ObservedState())


def test_required_dependency_disabled_is_refused_by_the_loader(tmp_path) -> None:
    with pytest.raises(SpecError, match="disabled"):
        project(tmp_path, PROFILES.replace("required: false", "required: true"))


def test_container_name_and_labels(tmp_path) -> None:
    desired = desired_state(project(tmp_path, """
        services:
          a: {image: busybox, container_name: fixed, labels: {team: x}}
          b: {image: busybox, deploy: {replicas: 2}}
    """), {"busybox": "sha256:dd"})
    spec = desired.services["a"].containers[0]
    assert spec.name == "fixed"
    assert spec.labels["team"] == "x"
    assert spec.labels["io.stackd.stack"] == "demo"
    assert spec.labels["io.stackd.service"] == "a"
    assert spec.labels["io.stackd.number"] == "1"
    assert spec.labels["io.stackd.oneoff"] == "False"
    assert len(spec.labels["io.stackd.config-hash"]) == 64
    assert [c.name for c in desired.services["b"].containers] == ["demo-b-1", "demo-b-2"]
    assert desired_state(project(tmp_path, "services:\n  a: {image: busybox, container_name: fixed}\n")
                         ).services["a"].config_hash != spec.labels["io.stackd.config-hash"]
    with pytest.raises(SpecError, match="container_name"):
        desired_state(project(tmp_path, "services:\n  a: {image: busybox, container_name: f, scale: 2}\n"))
