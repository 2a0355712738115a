"""The dependency graph of a stack's services (networkx), and the plain-Python walks `up` needs.

Edges point from a dependency to its dependent (`db → api`: db comes first). The functions that
run on every `up` (`order`, `closure`) avoid importing networkx; `service_graph` builds the
networkx form for `stackd graph` and for checks.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from stackd.errors import SpecError

if TYPE_CHECKING:
    import networkx as nx

Deps = Mapping[str, Iterable[str]]
"""service → the services it depends on."""


def order(deps: Deps) -> list[str]:
    """Services in dependency order, ties broken by name; raises SpecError on a cycle.

    Dependencies that are not services (optional ones switched off) are ignored."""
    needs = {s: {d for d in ds if d in deps and d != s} for s, ds in deps.items()}
    dependents: dict[str, list[str]] = {s: [] for s in deps}
    for s, ds in needs.items():
        for d in ds:
            dependents[d].append(s)
    ready = [s for s, ds in needs.items() if not ds]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        s = heapq.heappop(ready)
        out.append(s)
        for t in dependents[s]:
            needs[t].discard(s)
            if not needs[t]:
                heapq.heappush(ready, t)
    if len(out) != len(needs):
        stuck = sorted(s for s in needs if s not in out)
        raise SpecError(f"dependency cycle between services: {', '.join(stuck)}")
    return out


def closure(deps: Deps, selected: Iterable[str]) -> set[str]:
    """The selected services and everything they depend on, transitively."""
    seen: set[str] = set()
    todo = list(selected)
    while todo:
        s = todo.pop()
        if s in seen:
            continue
        seen.add(s)
        todo.extend(d for d in deps.get(s, ()) if d in deps)
    return seen


def dependents(deps: Deps, service: str) -> set[str]:
    """Services that depend on `service`, transitively."""
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for s, ds in deps.items():
            if s not in out and any(d == service or d in out for d in ds):
                out.add(s)
                changed = True
    return out


def service_graph(deps: Deps, conditions: Mapping[tuple[str, str], str] | None = None) -> nx.DiGraph:
    """A networkx DiGraph dependency → dependent, edges labelled with their condition."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(sorted(deps))
    for s, ds in sorted(deps.items()):
        for d in sorted(ds):
            graph.add_edge(d, s, condition=(conditions or {}).get((s, d), "service_started"))
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        raise SpecError("dependency cycle between services: " + " → ".join(e[0] for e in cycle))
    return graph


def to_dot(graph: nx.DiGraph, name: str = "stack") -> str:
    """Graphviz DOT text of a service graph (stable order)."""
    lines = [f'digraph "{name}" {{']
    lines += [f'  "{n}";' for n in sorted(graph.nodes)]
    lines += [f'  "{a}" -> "{b}" [label="{graph.edges[a, b].get("condition", "")}"];'
              for a, b in sorted(graph.edges)]
    return "\n".join([*lines, "}"]) + "\n"


def to_mermaid(graph: nx.DiGraph) -> str:
    """A mermaid flowchart of a service graph (stable order)."""
    lines = ["flowchart TD"]
    lines += [f"  {n}" for n in sorted(graph.nodes) if graph.degree(n) == 0]
    lines += [f"  {a} -->|{graph.edges[a, b].get('condition', '')}| {b}" for a, b in sorted(graph.edges)]
    return "\n".join(lines) + "\n"
