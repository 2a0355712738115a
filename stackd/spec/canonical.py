"""Rewrite a resolved project tree from short syntax to Compose's canonical long syntax, in place.

Works on the positioned tree (`source.Node`/`Seq`) so later errors still name file:line:col.
Values end in the forms `docker compose config` prints: durations as Go text (`1m0s`), byte
sizes as decimal strings, published ports and file modes as strings, mapping values as text.
Service rules live in `canonical_service`; this module does the top level and normalization.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from stackd.errors import SpecError
from stackd.spec.source import Node, Path, Seq, error_at, locate
from stackd.spec.types import scalar_text, type_name

RESOURCE_KINDS = ("networks", "volumes", "secrets", "configs")


class Canon:
    """One canonicalization run: the root tree (for error positions) and the project context."""

    def __init__(self, root: Node, project_dir: str, environment: Mapping[str, str], raw: bool = False) -> None:
        self.root = root
        self.project_dir = project_dir
        self.environment = environment
        self.raw = raw

    def templated(self, value: Any) -> bool:
        """Whether `value` is uninterpolated `$` text to keep as written (`--no-interpolate`)."""
        return self.raw and isinstance(value, str) and "$" in value

    def fail(self, path: Path, message: str) -> SpecError:
        return error_at(self.root, path, message)

    def expect_map(self, value: Any, path: Path, what: str = "a mapping") -> Node:
        if not isinstance(value, Node):
            raise self.fail(path, f"must be {what}, not {type_name(value)}")
        return value

    def string_map(self, value: Any, path: Path, *, keep_none: bool = False) -> Node:
        """A KEY=VALUE list or a mapping → a Node of text values (None kept only if asked)."""
        out = Node(pos=getattr(value, "pos", None))
        if isinstance(value, Node):
            for key, item in value.items():
                if isinstance(item, (dict, list)):
                    raise self.fail((*path, key), f"must be a string, number or null, not {type_name(item)}")
                shown = scalar_text(item)
                if shown is None and not keep_none:
                    shown = ""
                out.set(key, shown, value.val_pos.get(key), value.key_pos.get(key))
            return out
        if isinstance(value, Seq):
            for index, item in enumerate(value):
                if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                    raise self.fail((*path, index), f"must be a KEY=VALUE string, not {type_name(item)}")
                key, found, val = str(item).partition("=")
                if not key:
                    raise self.fail((*path, index), f'"{item}": the key before "=" is empty')
                text: str | None = val if found else (None if keep_none else "")
                out.set(key, text, value.position_of(index))
            return out
        raise self.fail(path, f"must be a mapping or a list of KEY=VALUE strings, not {type_name(value)}")

    def string_list(self, value: Any, path: Path) -> Seq:
        """A string or a list of scalars → a Seq of strings."""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            out = Seq(pos=self.pos_of(path))
            out.add(str(value), self.pos_of(path))
            return out
        if not isinstance(value, Seq):
            raise self.fail(path, f"must be a string or a list of strings, not {type_name(value)}")
        out = Seq(pos=value.pos)
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise self.fail((*path, index), f"must be a string, not {type_name(item)}")
            out.add(str(item), value.position_of(index))
        return out

    def pos_of(self, path: Path) -> Any:
        """The position of `path` (or its nearest positioned ancestor) in the root tree."""
        return locate(self.root, path)

    def abspath(self, path: str) -> str:
        """A host path made absolute (`~` from HOME, relative from the project directory)."""
        if path.startswith("~"):
            home = self.environment.get("HOME") or os.path.expanduser("~")
            path = home + path[1:]
        if not os.path.isabs(path):
            path = os.path.join(self.project_dir, path)
        return os.path.normpath(path)


def canonicalize(
    tree: Node,
    *,
    project_name: str,
    project_dir: str,
    environment: Mapping[str, str],
    normalize: bool = True,
    raw: bool = False,
) -> Node:
    """Rewrite `tree` (a resolved project) into canonical long syntax; returns the same tree.

    `raw` is for uninterpolated trees (`config --no-interpolate`): short syntax holding `$`
    is kept as written instead of being parsed.

    `normalize` adds what `docker compose config` adds and compose-go's SkipNormalization
    leaves out: the implicit `default` network, resource `name`s (`project_key`), and the
    depends_on entries implied by links, `network_mode: service:…` and volumes_from.
    """
    from stackd.spec.canonical_service import canonical_service

    canon = Canon(tree, project_dir, environment, raw)
    services = tree.get("services")
    if services is None:
        services = Node(pos=tree.pos)
        tree.set("services", services, tree.pos)
    canon.expect_map(services, ("services",))
    for name in list(services):
        if services[name] is None:
            services[name] = Node(pos=services.position_of(name))
        canonical_service(canon, canon.expect_map(services[name], ("services", name)), name)
    for kind in RESOURCE_KINDS:
        if kind in tree:
            section = tree[kind]
            if section is None:
                tree[kind] = section = Node(pos=tree.position_of(kind))
            canon.expect_map(section, (kind,))
            for key in list(section):
                _resource(canon, section, kind, key)
    if normalize:
        _normalize(canon, tree, project_name)
    return tree


def _resource(canon: Canon, section: Node, kind: str, key: str) -> None:
    path: Path = (kind, key)
    value = section[key]
    if value is None:
        section[key] = value = Node(pos=section.position_of(key))
    canon.expect_map(value, path)
    external = value.get("external")
    if isinstance(external, Node):
        # legacy `external: {name: x}` → `name: x` + `external: true`
        legacy = external.get("name")
        if legacy is not None:
            if "name" in value and value["name"] != legacy:
                raise canon.fail((*path, "external", "name"), f'conflicts with name "{value["name"]}"; keep only one')
            _insert_before(value, "name", legacy, "external")
        value["external"] = True
    for opts in ("driver_opts",):
        if opts in value and value[opts] is not None:
            value[opts] = canon.string_map(canon.expect_map(value[opts], (*path, opts)), (*path, opts))
    if "labels" in value and value["labels"] is not None:
        value["labels"] = canon.string_map(value["labels"], (*path, "labels"))
    if kind in ("secrets", "configs") and isinstance(value.get("file"), str):
        value["file"] = canon.abspath(value["file"])
    if kind == "networks" and isinstance(value.get("ipam"), Node):
        ipam = value["ipam"]
        for index, pool in enumerate(ipam.get("config") or ()):
            if isinstance(pool, Node) and isinstance(pool.get("aux_addresses"), Node):
                pool["aux_addresses"] = canon.string_map(pool["aux_addresses"], (*path, "ipam", "config", index, "aux_addresses"))


def _insert_before(node: Node, key: str, value: Any, before: str) -> None:
    """Set `key` so that it comes before `before` in the mapping's order (compose's order)."""
    pos = node.position_of(before)
    items = [(k, node[k], node.val_pos.get(k), node.key_pos.get(k)) for k in node]
    node.clear()
    for k, v, vp, kp in items:
        if k == before and k != key:
            node.set(key, value, pos, pos)
        if k != key:
            node.set(k, v, vp, kp)


def _normalize(canon: Canon, tree: Node, project_name: str) -> None:
    services: Node = tree["services"]
    uses_default = False
    for name, service in services.items():
        _implied_depends(canon, service, name)
        if "network_mode" in service or "provider" in service:
            continue
        networks = service.get("networks")
        if not networks:
            net = Node(pos=service.pos)
            net.set("default", None, service.pos)
            service.set("networks", net, service.pos)
            uses_default = True
        elif "default" in networks:
            uses_default = True
    if uses_default:
        section = tree.get("networks")
        if section is None:
            section = Node(pos=tree.pos)
            tree.set("networks", section, tree.pos)
        if "default" not in section:
            section.set("default", Node(pos=tree.pos), tree.pos)
    for kind in RESOURCE_KINDS:
        for key, value in (tree.get(kind) or {}).items():
            if value.get("name") is None:
                name = key if value.get("external") is True else f"{project_name}_{key}"
                items = [(k, value[k], value.val_pos.get(k), value.key_pos.get(k)) for k in value]
                value.clear()
                value.set("name", name, value.pos)
                for k, v, vp, kp in items:
                    value.set(k, v, vp, kp)


def _implied_depends(canon: Canon, service: Node, name: str) -> None:
    implied: list[tuple[str, bool]] = []
    for link in service.get("links") or ():
        implied.append((str(link).split(":")[0], True))
    for key in ("network_mode", "ipc", "pid", "uts", "cgroup"):
        ref = service.get(key)
        if isinstance(ref, str) and ref.startswith("service:"):
            implied.append((ref[len("service:"):], True))
    for ref in service.get("volumes_from") or ():
        if isinstance(ref, str) and not ref.startswith("container:"):
            implied.append((ref.split(":")[0], False))
    if not implied:
        return
    depends = service.get("depends_on")
    if depends is None:
        depends = Node(pos=service.pos)
        service.set("depends_on", depends, service.pos)
    for target, restart in implied:
        if target not in depends:
            entry = Node(pos=service.pos)
            entry.set("condition", "service_started")
            if restart:
                entry.set("restart", True)
            entry.set("required", True)
            depends.set(target, entry, service.pos)
