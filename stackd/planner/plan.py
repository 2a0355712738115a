"""The Plan: a DAG of actions built from a Diff, with deterministic text and JSON renderings.

The DAG is kept as plain tuples (the executor walks those); `Plan.graph` gives the networkx
DiGraph on demand, so planning does not pay networkx's import.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from stackd.planner.desired import ContainerSpec, NetworkSpec, VolumeSpec
from stackd.planner.diff import Change, Diff

if TYPE_CHECKING:
    import networkx as nx

ActionKind = Literal["pull", "create-network", "create-volume", "create", "start", "stop", "remove",
                     "rename", "wait-healthy", "wait-completed"]
RANK = {k: i for i, k in enumerate(("pull", "create-network", "create-volume", "create", "stop", "remove",
                                    "rename", "start", "wait-healthy", "wait-completed"))}


@dataclass(frozen=True)
class Action:
    """One engine call. `target` names the image, network, volume or container it acts on.

    `ref` is the id of an existing container; `new_name` the name a rename gives; `spec` what a
    create needs; `optional` marks a wait for a `required: false` dependency (a failure warns).
    """

    kind: ActionKind
    target: str
    service: str = ""
    reason: str = field(default="", compare=False)
    ref: str = field(default="", compare=False)
    new_name: str = field(default="", compare=False)
    spec: ContainerSpec | NetworkSpec | VolumeSpec | None = field(default=None, compare=False)
    optional: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        return f"{self.kind} {self.target}"


@dataclass(frozen=True)
class Plan:
    diff: Diff
    actions: tuple[Action, ...]
    """In deterministic topological order."""
    edges: tuple[tuple[Action, Action], ...] = ()

    @property
    def project(self) -> str:
        return self.diff.desired.project

    @property
    def empty(self) -> bool:
        return not self.actions

    @cached_property
    def predecessors(self) -> dict[Action, tuple[Action, ...]]:
        preds: dict[Action, list[Action]] = {a: [] for a in self.actions}
        for a, b in self.edges:
            preds[b].append(a)
        return {a: tuple(sorted(p, key=_key)) for a, p in preds.items()}

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The plan as a networkx DiGraph of Action nodes."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(self.actions)
        g.add_edges_from(self.edges)
        return g

    def render(self) -> str:
        from stackd.planner.render import render_text

        return render_text(self)

    def to_json(self) -> dict[str, Any]:
        from stackd.planner.render import render_json

        return render_json(self)


def _key(a: Action) -> tuple[int, str, str]:
    return (RANK[a.kind], a.service, a.target)


def topological(actions: Iterable[Action], edges: Iterable[tuple[Action, Action]]) -> list[Action]:
    """Kahn's order with stable tie-breaks (kind rank, service, target); ValueError on a cycle."""
    nodes = list(dict.fromkeys(actions))
    succ: dict[Action, list[Action]] = {a: [] for a in nodes}
    indeg = dict.fromkeys(nodes, 0)
    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
    heap = [(_key(a), a) for a in nodes if indeg[a] == 0]
    heapq.heapify(heap)
    out = []
    while heap:
        _, a = heapq.heappop(heap)
        out.append(a)
        for b in succ[a]:
            indeg[b] -= 1
            if indeg[b] == 0:
                heapq.heappush(heap, (_key(b), b))
    if len(out) != len(nodes):
        raise ValueError("plan has a cycle: " + ", ".join(str(a) for a in nodes if indeg[a]))
    return out


def tmp_name(spec: ContainerSpec, config_hash: str) -> str:
    return f"{config_hash[:12]}_{spec.name}"


class _Builder:
    def __init__(self, diff: Diff) -> None:
        self.diff = diff
        self.nodes: dict[Action, None] = {}
        self.edges: list[tuple[Action, Action]] = []
        self.starts: dict[str, list[Action]] = {}  # service → nodes that start its containers
        self.started: dict[str, list[Action]] = {}  # service → nodes after which it counts as started
        self.old_stops: dict[str, list[Action]] = {}  # service → stops of containers it replaces
        self.restart_stops: dict[str, list[Action]] = {}
        self.final: dict[str, list[tuple[Action, str]]] = {}  # service → (last node, final name)
        self.renames: dict[str, Action] = {}
        self.creates: dict[str, list[Action]] = {}  # service → its create actions

    def add(self, action: Action, *after: Action | None) -> Action:
        self.nodes[action] = None
        self.edges.extend((a, action) for a in after if a is not None)
        return action

    def chain(self, *actions: Action | None) -> None:
        last = None
        for a in actions:
            if a is None:
                continue
            if last is not None:
                self.edges.append((last, a))
            last = a

    def build(self) -> Plan:
        diff = self.diff
        pulls = {img: self.add(Action("pull", img, reason="image not present" if not self._known(img)
                                      else "--pull always")) for img in diff.pulls}
        nets = {n.name: self.add(Action("create-network", n.name, reason="missing", spec=n)) for n in diff.networks}
        vols = {v.name: self.add(Action("create-volume", v.name, reason="missing", spec=v)) for v in diff.volumes}
        for change in diff.changes:
            svc = diff.desired.services.get(change.service)
            prereq: list[Action | None] = []
            if svc is not None:
                prereq = [pulls.get(svc.image), *(nets.get(n) for n in svc.networks),
                          *(vols.get(v) for v in svc.volumes)]
            getattr(self, "_" + change.kind)(change, prereq)
        self._dependencies()
        order = topological(self.nodes, self.edges)
        return Plan(diff, tuple(order), tuple(dict.fromkeys(self.edges)))

    def _known(self, image: str) -> bool:
        return any(s.image == image and s.image_digest for s in self.diff.desired.services.values())

    def _start_node(self, change: Change, prereq: list[Action | None], after: Action | None = None,
               ref: str = "", name: str = "", why: str = "") -> Action | None:
        if self.diff.no_start:
            return None
        node = self.add(Action("start", name or change.name, change.service, why or change.reason, ref=ref), after)
        self.starts.setdefault(change.service, []).append(node)
        self.started.setdefault(change.service, []).append(node)
        self.final.setdefault(change.service, []).append((node, change.name))
        return node

    def _unchanged(self, change: Change, prereq: list[Action | None]) -> None:
        pass

    def _start(self, change: Change, prereq: list[Action | None]) -> None:
        old = change.old
        assert old is not None
        self._start_node(change, prereq, self.renames.get(change.name), ref=old.id)

    def _create(self, change: Change, prereq: list[Action | None]) -> None:
        create = self.add(Action("create", change.name, change.service, change.reason, spec=change.spec), *prereq)
        self.creates.setdefault(change.service, []).append(create)
        self._start_node(change, prereq, create)

    def _remove(self, change: Change, prereq: list[Action | None]) -> None:
        old = change.old
        assert old is not None
        stop = None
        if old.state in ("running", "restarting", "paused"):
            stop = self.add(Action("stop", old.name, change.service, change.reason, ref=old.id))
        self.add(Action("remove", old.name, change.service, change.reason, ref=old.id), stop)

    def _rename(self, change: Change, prereq: list[Action | None]) -> None:
        old = change.old
        assert old is not None
        self.renames[change.name] = self.add(
            Action("rename", old.name, change.service, change.reason, ref=old.id, new_name=change.name))

    def _restart(self, change: Change, prereq: list[Action | None]) -> None:
        old = change.old
        assert old is not None
        stop = self.add(Action("stop", change.name, change.service, change.reason, ref=old.id))
        self.restart_stops.setdefault(change.service, []).append(stop)
        self._start_node(change, prereq, stop, ref=old.id)

    def _recreate(self, change: Change, prereq: list[Action | None]) -> None:
        old, spec = change.old, change.spec
        assert old is not None and spec is not None
        svc = self.diff.desired.services[change.service]
        why = f"recreate: {change.reason}"
        stop = self.add(Action("stop", old.name, change.service, why, ref=old.id)) \
            if old.state in ("running", "restarting", "paused") else None
        self.old_stops.setdefault(change.service, []).extend([stop] if stop else [])
        remove = self.add(Action("remove", old.name, change.service, why, ref=old.id), stop)
        if svc.fixed_ports or old.name != spec.name:
            # host ports (or a leftover's name) are in the way: stop first, create after
            create = self.add(Action("create", spec.name, change.service, why, spec=spec), remove, *prereq)
            self.creates.setdefault(change.service, []).append(create)
            self._start_node(change, prereq, create, why=why)
            return
        tmp = tmp_name(spec, svc.config_hash)
        create = self.add(Action("create", tmp, change.service, why, spec=spec.renamed(tmp)), *prereq)
        self.creates.setdefault(change.service, []).append(create)
        rename = Action("rename", tmp, change.service, why, new_name=spec.name)
        if svc.start_first and not self.diff.no_start:
            start = self._start_node(change, prereq, create, name=tmp, why=why)
            wait = self.add(Action("wait-healthy", tmp, change.service, "start-first: healthy before the old stops"),
                            start) if svc.healthcheck else None
            self.chain(start, wait, stop, remove)
            self.add(rename, remove)
            self.final[change.service][-1] = (rename, spec.name)
            self.started[change.service][-1] = rename
        else:
            self.add(rename, create, remove)
            self._start_node(change, prereq, rename, why=why)

    def _dependencies(self) -> None:
        diff = self.diff
        services = diff.desired.services
        waits: dict[tuple[str, str], list[Action]] = {}
        for name in diff.selected:
            starts = self.starts.get(name)
            for dep in services[name].depends_on:
                if dep.service not in services or dep.service not in diff.selected:
                    continue
                # dependents marked restart: true stop before the dependency's old containers go
                for stop in self.restart_stops.get(name, []) if dep.restart else []:
                    for old_stop in self.old_stops.get(dep.service, []):
                        self.edges.append((stop, old_stop))
                if not starts:
                    continue
                ready = self._ready(dep.service, dep.condition, dep.required, waits, name)
                for start in starts:
                    self.edges.extend((r, start) for r in ready)
                if _joins(self.creates.get(name, []), dep.service):  # its namespaces or volumes
                    for create in self.creates[name]:
                        self.edges.extend((r, create) for r in self.started.get(dep.service, []))

    def _ready(self, service: str, condition: str, required: bool,
               waits: dict[tuple[str, str], list[Action]], dependent: str) -> list[Action]:
        if condition == "service_started":
            return self.started.get(service, [])
        if (service, condition) in waits:
            return waits[(service, condition)]
        kind: ActionKind = "wait-healthy" if condition == "service_healthy" else "wait-completed"
        why = f"{dependent} needs it {'healthy' if kind == 'wait-healthy' else 'completed successfully'}"
        nodes = []
        finals = self.final.get(service)
        if finals:
            for last, final in finals:
                nodes.append(self.add(Action(kind, final, service, why, optional=not required), last))
        elif not self.diff.ready.get(service, True):
            for c in self.diff.changes:
                if c.service == service and c.old is not None and c.kind == "unchanged":
                    nodes.append(self.add(Action(kind, c.name, service, why, ref=c.old.id, optional=not required)))
        waits[(service, condition)] = nodes
        return nodes


def _joins(creates: list[Action], service: str) -> bool:
    """Whether these containers use `service`'s container at creation: its network, IPC or PID
    namespace (`service:NAME`) or its volumes (`volumes_from`), so it must run first."""
    ref = f"service:{service}"
    for create in creates[:1]:
        cfg = create.spec.config if create.spec is not None else {}
        if ref in (cfg.get("network_mode"), cfg.get("ipc"), cfg.get("pid")):
            return True
        if any(str(v).split(":")[0] == service for v in cfg.get("volumes_from") or ()):
            return True
    return False


def build_plan(diff: Diff) -> Plan:
    """The action DAG that takes the observed state to the desired one."""
    return _Builder(diff).build()


def summary(diff: Diff) -> str:
    """`3 to create, 1 to recreate (environment.MARK changed), 6 unchanged`."""
    counts = Counter(c.kind for c in diff.changes)
    parts = []
    for kind in ("create", "recreate", "start", "restart", "rename", "remove"):
        if counts[kind]:
            text = f"{counts[kind]} to {kind}"
            if kind == "recreate":
                reasons = sorted({c.reason for c in diff.changes if c.kind == "recreate"})
                text += f" ({'; '.join(reasons)})"
            parts.append(text)
    parts.append(f"{counts['unchanged']} unchanged")
    text = ", ".join(parts)
    if diff.pulls:
        text += f"; {_plural(len(diff.pulls), 'image')} to pull"
    made = [_plural(n, what) for what, n in (("network", len(diff.networks)), ("volume", len(diff.volumes))) if n]
    if made:
        text += f"; {', '.join(made)} to create"
    return text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
