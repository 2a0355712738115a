"""Apply `extends` (same file or another file, chains, cycles detected) to a file's services.

Also home of `load_tree`, the per-file front stage (read → interpolate → absolute paths) that
extends and include share.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stackd.errors import SpecError
from stackd.spec.merge import merge, strip_tags
from stackd.spec.source import Node, Override, Reset, error_at, locate, parse_yaml, read_file


@dataclass
class Context:
    """What every file of one (sub)project is read with."""

    environment: Mapping[str, str]
    environ: Mapping[str, str]
    interpolate: bool = True
    stdin_text: str | None = None
    warnings: list[str] = field(default_factory=list)
    parsed: dict[str, Any] = field(default_factory=dict)
    working_dir: str = ""

    def lookup(self, name: str) -> str | None:
        return self.environment.get(name)


def load_tree(path: str, ctx: Context, base_dir: str) -> Node:
    """One stack file, interpolated, with relative paths made absolute against `base_dir`."""
    from stackd.spec.interpolate import interpolate_tree
    from stackd.spec.project import resolve_paths

    tree = ctx.parsed.pop(path) if path in ctx.parsed else parse_file(path, ctx)
    if tree is None:
        tree = Node()
    if not isinstance(tree, Node):
        raise SpecError("the top level of a stack file must be a mapping", position=getattr(tree, "pos", None))
    if ctx.interpolate:
        tree = interpolate_tree(tree, ctx.lookup, ctx.warnings)
    resolve_paths(tree, base_dir, ctx.environ)
    return tree  # type: ignore[no-any-return]


def parse_file(path: str, ctx: Context) -> Any:
    """The raw positioned tree of one file (`-` is `ctx.stdin_text`)."""
    if path == "-":
        return parse_yaml(ctx.stdin_text or "", "<stdin>")
    return read_file(path, _display(path, ctx.working_dir))


def _display(path: str, base: str = "") -> str:
    """Paths in messages: relative to the working directory when below it."""
    try:
        rel = os.path.relpath(path, base or None)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def apply_extends(tree: Node, file: str, ctx: Context) -> Node:
    """The tree with every service's `extends` merged in and removed."""
    services = tree.get("services")
    if not isinstance(services, Node) or not any(isinstance(s, dict) and "extends" in s for s in services.values()):
        return tree
    state = _Extender(tree, file, ctx)
    out = services.copy_node()
    for name in services:
        out[name] = _retag(state.extend(name, services, tree, file, ()), services[name])
    result = tree.copy_node()
    result["services"] = out
    return result


def _retag(merged: Any, service: Any) -> Any:
    """Put the service's own `!reset`/`!override` tags back on its extended form, so that they
    also act on what earlier `-f` files set at those paths (as compose-go does)."""
    if not isinstance(merged, Node) or not isinstance(service, dict) or "extends" not in service:
        return merged
    return _retag_map(merged, service)


def _retag_map(merged: Node, service: dict[str, Any]) -> Node:
    out = merged
    for key, value in service.items():
        if key == "extends":
            continue
        tagged: Any = None
        if isinstance(value, Reset):
            tagged = value
        elif isinstance(value, Override) and key in merged:
            tagged = Override(merged[key], value.pos)
        elif isinstance(value, dict) and isinstance(merged.get(key), Node):
            inner = _retag_map(merged[key], value)
            tagged = inner if inner is not merged[key] else None
        if tagged is not None:
            if out is merged:
                out = merged.copy_node()
            out[key] = tagged
    return out


class _Extender:
    def __init__(self, tree: Node, file: str, ctx: Context) -> None:
        self.ctx = ctx
        self.files: dict[str, Node] = {file: tree}
        self.done: dict[tuple[str, str], Any] = {}

    def other(self, path: str) -> Node:
        if path not in self.files:
            self.files[path] = load_tree(path, self.ctx, os.path.dirname(path))
        return self.files[path]

    def extend(self, name: str, services: Node, tree: Node, file: str, chain: tuple[tuple[str, str], ...]) -> Any:
        key = (file, name)
        if key in chain:
            names = [n if f == chain[0][0] else f"{n} ({_display(f, self.ctx.working_dir)})" for f, n in (*chain, key)]
            raise error_at(tree, ("services", name, "extends"), "extends cycle: " + " -> ".join(names))
        if key in self.done:
            return self.done[key]
        service = services.get(name)
        if not isinstance(service, dict) or "extends" not in service:
            return service
        ext = strip_tags(service["extends"])
        where = ("services", name, "extends")
        if isinstance(ext, str):
            ref, ref_file = ext, None
        elif isinstance(ext, dict) and isinstance(ext.get("service"), str):
            ref, ref_file = ext["service"], ext.get("file")
        else:
            raise error_at(tree, where, "extends must be a service name or a mapping with `service` (and `file`)")
        base_tree, base_file = tree, file
        if ref_file is not None:
            if not isinstance(ref_file, str):
                raise error_at(tree, (*where, "file"), "extends.file must be a path")
            if not os.path.isfile(ref_file):
                raise error_at(tree, (*where, "file"), f"{_display(ref_file, self.ctx.working_dir)}: no such file")
            base_tree, base_file = self.other(ref_file), ref_file
        base_services = base_tree.get("services")
        if not isinstance(base_services, Node) or ref not in base_services:
            where_file = f" in {_display(base_file, self.ctx.working_dir)}" if base_file != file else ""
            raise error_at(tree, where, f"cannot extend service {name!r}: service {ref!r} not found{where_file}")
        base = self.extend(ref, base_services, base_tree, base_file, (*chain, key))
        if base is None:
            base = Node()
        merged = merge(base, service, ("services", name))
        if isinstance(merged, Node):
            merged = merged.copy_node()
            merged.pos = service.pos if isinstance(service, Node) else merged.pos
            merged.pop("extends", None)
            merged.key_pos.pop("extends", None)
            merged.val_pos.pop("extends", None)
        self.done[key] = merged
        return merged


__all__ = ["Context", "apply_extends", "load_tree", "locate"]
