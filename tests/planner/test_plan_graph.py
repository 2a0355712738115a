"""The service dependency graph: order, closure, dependents, cycles, DOT and mermaid."""

from __future__ import annotations

import pytest

from stackd.errors import SpecError
from stackd.planner import graph

DEPS = {"web": ["api"], "api": ["db", "migrate"], "migrate": ["db"], "db": [], "lone": ["gone"]}


def test_order_closure_dependents() -> None:
    assert graph.order(DEPS) == ["db", "lone", "migrate", "api", "web"]
    assert graph.closure(DEPS, ["api"]) == {"api", "db", "migrate"}
    assert graph.dependents(DEPS, "db") == {"migrate", "api", "web"}


def test_cycles_are_rejected() -> None:
    with pytest.raises(SpecError, match="dependency cycle between services: a, b"):
        graph.order({"a": ["b"], "b": ["a"], "c": []})
    with pytest.raises(SpecError, match="dependency cycle"):
        graph.service_graph({"a": ["b"], "b": ["a"]})


def test_dot_and_mermaid() -> None:
    g = graph.service_graph({"api": ["db"], "db": [], "x": []}, {("api", "db"): "service_healthy"})
    assert graph.to_dot(g, "demo") == ('digraph "demo" {\n  "api";\n  "db";\n  "x";\n'
                                       '  "db" -> "api" [label="service_healthy"];\n}\n')
    assert graph.to_mermaid(g) == "flowchart TD\n  x\n  db -->|service_healthy| api\n"
