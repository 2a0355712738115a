"""Property: for random DAG-shaped stacks and random starting states, the plan is acyclic and
starts every service only after what it depends on is started, healthy or completed."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stackkit import desired_state, plan_of, project, running

from stackd.planner.observed import ObservedState
from stackd.planner.plan import topological

CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


@st.composite
def stacks(draw: st.DrawFn) -> tuple[str, dict[str, dict[str, str]], list[str]]:
    n = draw(st.integers(2, 7))
    names = [f"s{i}" for i in range(n)]
    deps: dict[str, dict[str, str]] = {}
    lines = ["services:"]
    for i, name in enumerate(names):
        chosen = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
        deps[name] = {d: draw(st.sampled_from(CONDITIONS)) for d in chosen}
        lines += [f"  {name}:", "    image: busybox", f"    environment: {{V: '{draw(st.integers(0, 1))}'}}"]
        lines.append(f"    scale: {draw(st.integers(1, 2))}")
        if draw(st.booleans()):
            lines.append("    healthcheck: {test: [CMD, 'true']}")
        if draw(st.booleans()):
            lines.append("    ports: ['80']")
        if draw(st.booleans()):
            lines.append("    deploy: {update_config: {order: start-first}}")
        if deps[name]:
            lines.append("    depends_on:")
            for d, cond in deps[name].items():
                lines.append(f"      {d}: {{condition: {cond}, restart: {str(draw(st.booleans())).lower()}}}")
    changed = draw(st.lists(st.sampled_from(names), unique=True))
    return "\n".join(lines) + "\n", deps, changed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacks(), st.sampled_from(["fresh", "changed", "force"]))
def test_plan_is_acyclic_and_respects_dependencies(case, start) -> None:
    text, deps, changed = case
    with tempfile.TemporaryDirectory() as tmp:
        desired = desired_state(project(Path(tmp), text), {"busybox": "sha256:1"})
        observed = ObservedState()
        if start != "fresh":
            observed = running(desired)
            stale = [replace(c, labels={**c.labels, "io.stackd.config-hash": "old",
                                        "io.stackd.config-keys": '{"environment.V":"x"}'})
                     if c.labels["io.stackd.service"] in changed else c for c in observed.containers]
            observed = replace(observed, containers=tuple(stale))
        plan = plan_of(desired, observed, force_recreate=start == "force")
    graph = plan.graph
    assert nx.is_directed_acyclic_graph(graph)
    assert topological(plan.actions, plan.edges) == list(plan.actions)
    position = {a: i for i, a in enumerate(plan.actions)}
    assert all(position[a] < position[b] for a, b in plan.edges)
    for service, needs in deps.items():
        starts = [a for a in plan.actions if a.kind == "start" and a.service == service]
        for dep, condition in needs.items():
            dep_starts = [a for a in plan.actions if a.kind == "start" and a.service == dep]
            for s in starts:
                for d in dep_starts:
                    assert nx.has_path(graph, d, s), f"{d} must precede {s}"
                if dep_starts and condition != "service_started":
                    kind = "wait-healthy" if condition == "service_healthy" else "wait-completed"
                    assert any(nx.has_path(graph, w, s) for w in plan.actions
                               if w.kind == kind and w.service == dep), f"{s} must wait for {dep} ({kind})"
    # a container name is never created while another container holds it
    for a in plan.actions:
        if a.kind == "create":
            holders = [b for b in plan.actions if b.kind == "remove" and b.target == a.target]
            assert all(nx.has_path(graph, r, a) for r in holders)
