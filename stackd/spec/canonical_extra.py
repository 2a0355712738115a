"""Canonical forms of the nested service sections: build, deploy, logging, environment and labels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stackd.errors import SpecError
from stackd.spec.source import Node, Path, Seq

if TYPE_CHECKING:
    from stackd.spec.canonical import Canon


def _is_remote(context: str) -> bool:
    return "://" in context or context.startswith(("git@", "github.com/"))


def build_rule(canon: Canon, value: Any, path: Path) -> Any:
    from stackd.spec.canonical_service import _file_refs, _strings

    if value is None:
        return None
    if isinstance(value, str):
        node = Node(pos=canon.pos_of(path))
        node.set("context", value if _is_remote(value) else canon.abspath(value), node.pos)
        value = node
    canon.expect_map(value, path, "a build context path or a mapping")
    context = value.get("context")
    if context is None:
        from stackd.spec.canonical_service import _insert_first

        _insert_first(value, "context", canon.project_dir)
    elif isinstance(context, str) and not _is_remote(context):
        value["context"] = canon.abspath(context)
    if value.get("dockerfile") is None and value.get("dockerfile_inline") is None:
        _insert_after(value, "dockerfile", "Dockerfile", "context")
    for key in ("args",):
        if key in value and value[key] is not None:
            value[key] = canon.string_map(value[key], (*path, key), keep_none=True)
    for key in ("labels",):
        if key in value and value[key] is not None:
            value[key] = canon.string_map(value[key], (*path, key))
    contexts = value.get("additional_contexts")
    if contexts is not None:
        mapped = canon.string_map(contexts, (*path, "additional_contexts"))
        for key, ctx in mapped.items():
            if isinstance(ctx, str) and ":" not in ctx.split("/")[0]:
                mapped[key] = canon.abspath(ctx)
        value["additional_contexts"] = mapped
    for key in ("ssh", "cache_from", "cache_to", "tags", "platforms", "extra_hosts"):
        if key in value:
            value[key] = _strings(canon, value[key], (*path, key))
    if "secrets" in value:
        value["secrets"] = _file_refs(canon, value["secrets"], (*path, "secrets"))
    if "shm_size" in value:
        from stackd.spec.canonical_service import _bytes

        value["shm_size"] = _bytes(canon, value["shm_size"], (*path, "shm_size"))
    return value


def _insert_after(node: Node, key: str, value: Any, after: str) -> None:
    items = [(k, node[k], node.val_pos.get(k), node.key_pos.get(k)) for k in node]
    node.clear()
    for k, v, vp, kp in items:
        node.set(k, v, vp, kp)
        if k == after:
            node.set(key, value, vp, kp)
    if key not in node:
        node.set(key, value)


def deploy_rule(canon: Canon, value: Any, path: Path) -> Any:
    from stackd.spec.canonical_service import _bytes, _duration

    if value is None:
        return None
    canon.expect_map(value, path)
    if value.get("labels") is not None:
        value["labels"] = canon.string_map(value["labels"], (*path, "labels"))
    for section in ("update_config", "rollback_config"):
        sub = value.get(section)
        if isinstance(sub, Node):
            for key in ("delay", "monitor"):
                if key in sub:
                    sub[key] = _duration(canon, sub[key], (*path, section, key))
    policy = value.get("restart_policy")
    if isinstance(policy, Node):
        for key in ("delay", "window"):
            if key in policy:
                policy[key] = _duration(canon, policy[key], (*path, "restart_policy", key))
    resources = value.get("resources")
    if isinstance(resources, Node):
        for section in ("limits", "reservations"):
            sub = resources.get(section)
            if not isinstance(sub, Node):
                continue
            spath = (*path, "resources", section)
            if "memory" in sub:
                sub["memory"] = _bytes(canon, sub["memory"], (*spath, "memory"))
            if isinstance(sub.get("cpus"), str):
                try:
                    sub["cpus"] = float(sub["cpus"])
                except ValueError:
                    raise canon.fail((*spath, "cpus"), f'"{sub["cpus"]}" is not a number of CPUs (such as 0.5)') from None
    return value


def logging_rule(canon: Canon, value: Any, path: Path) -> Any:
    if isinstance(value, Node) and value.get("options") is not None:
        value["options"] = canon.string_map(value["options"], (*path, "options"))
    return value


def environment_and_labels(canon: Canon, service: Node, base: Path) -> None:
    """env_file → list of {path, required}; environment = env files + environment, nulls looked
    up in the project environment; labels = label files + labels (compose-go's order)."""
    from stackd.spec.dotenv import read_dotenv

    env_files = service.get("env_file")
    if env_files is not None:
        service["env_file"] = env_files = _env_file_list(canon, env_files, (*base, "env_file"))
    merged: Node | None = None
    if env_files:
        merged = Node(pos=service.position_of("env_file"))
        for index, entry in enumerate(env_files):
            file = entry.get("path")
            if not isinstance(file, str):
                continue
            try:
                values = read_dotenv(file, canon.environment.get)
            except SpecError as exc:
                if "couldn't find" in exc.message and entry.get("required") is False:
                    continue
                raise canon.fail((*base, "env_file", index), exc.message) from None
            for key, file_val in values.items():
                merged.set(key, file_val, env_files.position_of(index))
    env = service.get("environment")
    if env is not None or merged is not None:
        own = canon.string_map(env, (*base, "environment"), keep_none=True) if env is not None else Node()
        out = merged if merged is not None else Node(pos=own.pos)
        for key, own_val in own.items():
            env_val: str | None = canon.environment.get(key) if own_val is None else own_val
            out.set(key, env_val, own.val_pos.get(key), own.key_pos.get(key))
        if "environment" in service:
            service["environment"] = out
        else:
            service.set("environment", out, service.position_of("env_file"))
    label_files = service.get("label_file")
    if label_files is not None:
        files = canon.string_list(label_files, (*base, "label_file"))
        service["label_file"] = Seq([canon.abspath(f) for f in files], pos=files.pos)
        service["label_file"].item_pos = files.item_pos
        labels = Node(pos=files.pos)
        for index, file in enumerate(service["label_file"]):
            try:
                values = read_dotenv(file, canon.environment.get)
            except SpecError as exc:
                raise canon.fail((*base, "label_file", index), exc.message) from None
            for key, val in values.items():
                labels.set(key, val, files.position_of(index))
        if service.get("labels") is not None:
            for key, val in canon.string_map(service["labels"], (*base, "labels")).items():
                labels.set(key, val)
            service["labels"] = labels
        else:
            service.set("labels", labels, files.pos)
    elif service.get("labels") is not None:
        service["labels"] = canon.string_map(service["labels"], (*base, "labels"))


def _env_file_list(canon: Canon, value: Any, path: Path) -> Seq:
    items = value if isinstance(value, Seq) else Seq([value], pos=canon.pos_of(path))
    out = Seq(pos=items.pos)
    for index, item in enumerate(items):
        pos = items.position_of(index)
        if isinstance(item, str):
            entry = Node(pos=pos)
            entry.set("path", canon.abspath(item), pos)
            entry.set("required", True, pos)
        else:
            entry = canon.expect_map(item, (*path, index), "a path or a mapping with path")
            if isinstance(entry.get("path"), str):
                entry["path"] = canon.abspath(entry["path"])
            if "required" not in entry:
                entry.set("required", True, pos)
        out.add(entry, pos)
    return out
