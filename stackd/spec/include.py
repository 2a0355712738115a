"""Apply top-level `include`: load each included project with its own directory and env files.

An included project's services, networks, volumes, secrets, configs and models are added to the
including file; a resource defined on both sides is merged, the including file winning (as
compose-go does). Include cycles are errors.
"""

from __future__ import annotations

import os
from typing import Any

from stackd.errors import SpecError
from stackd.spec.extends import Context, _display, apply_extends, load_tree
from stackd.spec.merge import merge, merge_files, strip_tags
from stackd.spec.source import Node, Seq, error_at

RESOURCES = ("services", "volumes", "networks", "secrets", "configs", "models")


def _strings(value: Any, tree: Node, path: tuple[str | int, ...]) -> list[str]:
    value = strip_tags(value)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise error_at(tree, path, "must be a path or a list of paths")


def apply_include(tree: Node, ctx: Context, project_dir: str, chain: tuple[str, ...]) -> Node:
    """The tree with its `include`d projects merged in and the `include` key removed."""
    if "include" not in tree:
        return tree
    entries = strip_tags(tree["include"])
    out = tree.copy_node()
    del out["include"]
    if entries is None:
        return out
    if not isinstance(entries, Seq):
        raise error_at(tree, ("include",), "include must be a list")
    for index, entry in enumerate(entries):
        where: tuple[str | int, ...] = ("include", index)
        if isinstance(entry, str):
            entry = Node({"path": entry}, pos=entries.position_of(index))
        if not isinstance(entry, dict):
            raise error_at(tree, where, "an include entry must be a path or a mapping with `path`")
        unknown = sorted(set(entry) - {"path", "project_directory", "env_file"})
        if unknown:
            raise error_at(tree, (*where, unknown[0]), f"unknown include key {unknown[0]!r} (expected path, project_directory, env_file)")
        paths = [os.path.normpath(os.path.join(project_dir, p)) for p in _strings(entry.get("path"), tree, (*where, "path"))]
        if not paths:
            raise error_at(tree, where, "include needs a path")
        for i, p in enumerate(paths):
            if not os.path.isfile(p):
                raise error_at(tree, (*where, "path") if isinstance(entry.get("path"), str) else (*where, "path", i), f"included file {p} not found")
        if paths[0] in chain:
            cycle = " -> ".join(_display(p, ctx.working_dir) for p in (*chain, paths[0]))
            raise error_at(tree, where, f"include cycle: {cycle}")
        pd = entry.get("project_directory")
        sub_dir = os.path.normpath(os.path.join(project_dir, pd)) if isinstance(pd, str) else os.path.dirname(paths[0])
        sub_ctx = _sub_context(ctx, entry, tree, where, project_dir, sub_dir)
        imported = load_project(paths, sub_ctx, sub_dir, (*chain, paths[0]))
        ctx.warnings.extend(w for w in sub_ctx.warnings if w not in ctx.warnings)
        _import(imported, out)
    return out


def _sub_context(ctx: Context, entry: Any, tree: Node, where: tuple[str | int, ...], project_dir: str, sub_dir: str) -> Context:
    from stackd.spec.environment import read_env_files

    given = _strings(entry.get("env_file"), tree, (*where, "env_file"))
    if given:
        files = [os.path.normpath(os.path.join(project_dir, f)) for f in given if f != "/dev/null"]
        for f in files:
            if not os.path.isfile(f):
                raise error_at(tree, (*where, "env_file"), f"env file {f} not found")
    else:
        default = os.path.join(sub_dir, ".env")
        files = [default] if os.path.isfile(default) else []
    env = read_env_files(files, ctx.environment)
    env.update(ctx.environment)
    return Context(env, ctx.environ, ctx.interpolate, ctx.stdin_text, [], working_dir=ctx.working_dir)


def load_project(files: list[str], ctx: Context, project_dir: str, chain: tuple[str, ...]) -> Node:
    """Load, include, extend and merge a list of files forming one project."""
    trees = []
    for path in files:
        tree = load_tree(path, ctx, project_dir)
        tree = apply_include(tree, ctx, project_dir, (*chain, path) if path not in chain else chain)
        trees.append(apply_extends(tree, path, ctx))
    return merge_files(trees)


def _import(source: Node, target: Node) -> None:
    for key in RESOURCES:
        items = source.get(key)
        if not isinstance(items, Node):
            continue
        existing = target.get(key)
        if existing is None:
            target.set(key, items, source.val_pos.get(key), source.key_pos.get(key))
            continue
        if not isinstance(existing, Node):
            raise SpecError(f"{key} must be a mapping", position=target.position_of(key), path=key)
        merged = existing.copy_node()
        for name, value in items.items():
            if name in existing:
                merged[name] = merge(value, existing[name], (key, name))
            else:
                merged.set(name, value, items.val_pos.get(name), items.key_pos.get(name))
        target[key] = merged
