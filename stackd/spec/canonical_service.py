"""Canonical long syntax for one service: a table of per-key rules applied to the positioned tree."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stackd.spec.source import Node, Path, Seq
from stackd.spec.types import (
    format_duration,
    parse_bytes,
    parse_duration,
    parse_port,
    parse_volume,
    type_name,
)

if TYPE_CHECKING:
    from stackd.spec.canonical import Canon

Rule = Callable[["Canon", Any, Path], Any]


def _duration(canon: Canon, value: Any, path: Path) -> Any:
    if value is None or canon.templated(value):
        return value
    try:
        return format_duration(parse_duration(value))
    except ValueError as exc:
        raise canon.fail(path, str(exc)) from None


def _bytes(canon: Canon, value: Any, path: Path) -> Any:
    if value is None or canon.templated(value):
        return value
    try:
        return str(parse_bytes(value))
    except ValueError as exc:
        raise canon.fail(path, str(exc)) from None


def _strings(canon: Canon, value: Any, path: Path) -> Any:
    return None if value is None else canon.string_list(value, path)


def _mapping(canon: Canon, value: Any, path: Path) -> Any:
    return None if value is None else canon.string_map(value, path)


def _shell(canon: Canon, value: Any, path: Path) -> Any:
    if value is None or isinstance(value, Seq):
        return None if value is None else canon.string_list(value, path)
    if not isinstance(value, str):
        raise canon.fail(path, f"must be a string or a list of strings, not {type_name(value)}")
    try:
        words = shlex.split(value)
    except ValueError as exc:
        import json

        raise canon.fail(path, f"{json.dumps(value)}: {str(exc).lower()} (quotes must be balanced)") from None
    out = Seq(pos=canon.pos_of(path))
    for word in words:
        out.add(word, out.pos)
    return out


def _mode(canon: Canon, value: Any, path: Path) -> str:
    """A file mode as compose prints it (`"0440"`). YAML `0440` reaches us as 288 (a leading
    zero is octal, as in compose-go); text (from interpolation) follows the same rule."""
    if canon.templated(value):
        return str(value)
    text = str(value)
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or (text.startswith("0") and any(c in "89" for c in text)):
        raise canon.fail(path, f'"{value}" is not a file mode (an octal number such as 0440)')
    mode = value if isinstance(value, int) else int(text, 8 if text.startswith("0") else 10)
    if mode > 0o7777:
        raise canon.fail(path, f'"{value}" is not a file mode (an octal number such as 0440)')
    return f"0{mode:o}"


def _file_refs(canon: Canon, value: Any, path: Path) -> Any:
    """configs/secrets: `name` → `{source: name}`; uid/gid as text, mode as octal text."""
    if value is None:
        return None
    if not isinstance(value, Seq):
        raise canon.fail(path, f"must be a list, not {type_name(value)}")
    out = Seq(pos=value.pos)
    for index, item in enumerate(value):
        ipath = (*path, index)
        if isinstance(item, str):
            ref = Node(pos=value.position_of(index))
            ref.set("source", item)
        else:
            ref = canon.expect_map(item, ipath, "a name or a mapping with source")
            for key in ("uid", "gid"):
                if isinstance(ref.get(key), int) and not isinstance(ref.get(key), bool):
                    ref[key] = str(ref[key])
            if ref.get("mode") is not None:
                ref["mode"] = _mode(canon, ref["mode"], (*ipath, "mode"))
        out.add(ref, value.position_of(index))
    return out


def _depends_on(canon: Canon, value: Any, path: Path) -> Any:
    if value is None:
        return None
    out = Node(pos=value.pos if isinstance(value, (Node, Seq)) else None)
    if isinstance(value, Seq):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise canon.fail((*path, index), f"must be a service name, not {type_name(item)}")
            entry = Node(pos=value.position_of(index))
            entry.set("condition", "service_started")
            entry.set("required", True)
            out.set(item, entry, value.position_of(index))
        return out
    canon.expect_map(value, path, "a list of service names or a mapping")
    for name, entry in value.items():
        if entry is None:
            entry = Node(pos=value.position_of(name))
        canon.expect_map(entry, (*path, name))
        if "condition" not in entry:
            _insert_first(entry, "condition", "service_started")
        if "required" not in entry:
            entry.set("required", True)
        out.set(name, entry, value.val_pos.get(name), value.key_pos.get(name))
    return out


def _insert_first(node: Node, key: str, value: Any) -> None:
    items = [(k, node[k], node.val_pos.get(k), node.key_pos.get(k)) for k in node]
    node.clear()
    node.set(key, value)
    for k, v, vp, kp in items:
        node.set(k, v, vp, kp)


def _ports(canon: Canon, value: Any, path: Path) -> Any:
    if value is None:
        return None
    if not isinstance(value, Seq):
        raise canon.fail(path, f"must be a list of ports, not {type_name(value)}")
    out = Seq(pos=value.pos)
    for index, item in enumerate(value):
        pos = value.position_of(index)
        if isinstance(item, Node):
            if item.get("published") is not None and not isinstance(item["published"], (dict, list)):
                item["published"] = str(item["published"])
            if isinstance(item.get("target"), str) and item["target"].isascii() and item["target"].isdigit():
                item["target"] = int(item["target"])
            item.setdefault("mode", "ingress")
            item.setdefault("protocol", "tcp")
            out.add(item, pos)
            continue
        if canon.templated(item):
            out.add(item, pos)
            continue
        try:
            expanded = parse_port(item)
        except ValueError as exc:
            raise canon.fail((*path, index), str(exc)) from None
        for port in expanded:
            node = Node(port, pos=pos)
            for key in port:
                node.set(key, port[key], pos)
            out.add(node, pos)
    return out


def _volumes(canon: Canon, value: Any, path: Path) -> Any:
    if value is None:
        return None
    if not isinstance(value, Seq):
        raise canon.fail(path, f"must be a list of volumes, not {type_name(value)}")
    out = Seq(pos=value.pos)
    for index, item in enumerate(value):
        ipath = (*path, index)
        pos = value.position_of(index)
        if canon.templated(item):
            out.add(item, pos)
            continue
        if not isinstance(item, Node):
            try:
                parsed = parse_volume(item)
            except ValueError as exc:
                original = getattr(item, "original", None)  # the text before paths were made absolute
                message = str(exc).replace(f'"{item}"', f'"{original}"', 1) if original else str(exc)
                raise canon.fail(ipath, message) from None
            item = Node(pos=pos)
            for key, val in parsed.items():
                item.set(key, Node(val, pos=pos) if isinstance(val, dict) else val, pos)
        vtype = item.get("type")
        if vtype == "bind" and isinstance(item.get("source"), str):
            item["source"] = canon.abspath(item["source"])
        if isinstance(item.get("target"), str) and item["target"].startswith("/"):
            import posixpath

            item["target"] = posixpath.normpath(item["target"])
        tmpfs = item.get("tmpfs")
        if isinstance(tmpfs, Node) and tmpfs.get("size") is not None:
            tmpfs["size"] = _bytes(canon, tmpfs["size"], (*ipath, "tmpfs", "size"))
        out.add(item, pos)
    return out


def _networks(canon: Canon, value: Any, path: Path) -> Any:
    if value is None or isinstance(value, Node):
        return value
    if not isinstance(value, Seq):
        raise canon.fail(path, f"must be a list of network names or a mapping, not {type_name(value)}")
    out = Node(pos=value.pos)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise canon.fail((*path, index), f"must be a network name, not {type_name(item)}")
        out.set(item, None, value.position_of(index))
    return out


def _extra_hosts(canon: Canon, value: Any, path: Path) -> Any:
    if value is None:
        return None
    out = Seq(pos=getattr(value, "pos", None))
    if isinstance(value, Node):
        for host in value:
            ips = value[host] if isinstance(value[host], Seq) else [value[host]]
            for ip in ips:
                out.add(f"{host}={ip}", value.position_of(host))
        return out
    for index, item in enumerate(canon.string_list(value, path)):
        sep = "=" if "=" in item else ":"
        host, found, ip = item.partition(sep)
        if not found or not host or not ip:
            raise canon.fail((*path, index), f'"{item}" is not HOST=IP or HOST:IP')
        out.add(f"{host}={ip}", value.position_of(index) if isinstance(value, Seq) else None)
    return out


def _healthcheck(canon: Canon, value: Any, path: Path) -> Any:
    if value is None:
        return None
    canon.expect_map(value, path)
    test = value.get("test")
    if isinstance(test, str):
        seq = Seq(pos=value.position_of("test"))
        seq.add("CMD-SHELL", seq.pos)
        seq.add(test, seq.pos)
        value["test"] = seq
    for key in ("interval", "timeout", "start_period", "start_interval"):
        if key in value:
            value[key] = _duration(canon, value[key], (*path, key))
    return value


def _devices(canon: Canon, value: Any, path: Path) -> Any:
    if not isinstance(value, Seq):
        return value
    out = Seq(pos=value.pos)
    for index, item in enumerate(value):
        if isinstance(item, str):
            parts = item.split(":")
            node = Node(pos=value.position_of(index))
            node.set("source", parts[0])
            node.set("target", parts[1] if len(parts) > 1 else parts[0])
            node.set("permissions", parts[2] if len(parts) > 2 else "rwm")
            item = node
        out.add(item, value.position_of(index))
    return out


def _ulimits(canon: Canon, value: Any, path: Path) -> Any:
    return value


def _pull_policy(canon: Canon, value: Any, path: Path) -> Any:
    return "missing" if value == "if_not_present" else value


def _user(canon: Canon, value: Any, path: Path) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _hooks(canon: Canon, value: Any, path: Path) -> Any:
    for index, hook in enumerate(value if isinstance(value, Seq) else ()):
        if isinstance(hook, Node):
            if "command" in hook:
                hook["command"] = _shell(canon, hook["command"], (*path, index, "command"))
            if "environment" in hook:
                hook["environment"] = canon.string_map(hook["environment"], (*path, index, "environment"), keep_none=True)
    return value


SERVICE_RULES: dict[str, Rule] = {
    "annotations": _mapping,
    "command": _shell,
    "entrypoint": _shell,
    "configs": _file_refs,
    "secrets": _file_refs,
    "depends_on": _depends_on,
    "devices": _devices,
    "dns": _strings,
    "dns_search": _strings,
    "dns_opt": _strings,
    "tmpfs": _strings,
    "expose": _strings,
    "extra_hosts": _extra_hosts,
    "healthcheck": _healthcheck,
    "networks": _networks,
    "ports": _ports,
    "volumes": _volumes,
    "sysctls": _mapping,
    "storage_opt": _mapping,
    "ulimits": _ulimits,
    "stop_grace_period": _duration,
    "mem_limit": _bytes,
    "mem_reservation": _bytes,
    "memswap_limit": _bytes,
    "shm_size": _bytes,
    "pull_policy": _pull_policy,
    "user": _user,
    "cap_add": _strings,
    "cap_drop": _strings,
    "security_opt": _strings,
    "links": _strings,
    "external_links": _strings,
    "volumes_from": _strings,
    "profiles": _strings,
    "group_add": _strings,
    "device_cgroup_rules": _strings,
    "post_start": _hooks,
    "pre_stop": _hooks,
}


def canonical_service(canon: Canon, service: Node, name: str) -> None:
    """Rewrite one service mapping in place."""
    from stackd.spec.canonical_extra import (
        build_rule,
        deploy_rule,
        environment_and_labels,
        logging_rule,
    )

    base: Path = ("services", name)
    for key in list(service):
        if key in SERVICE_RULES:
            service[key] = SERVICE_RULES[key](canon, service[key], (*base, key))
    if "build" in service:
        service["build"] = build_rule(canon, service["build"], (*base, "build"))
    if "deploy" in service:
        service["deploy"] = deploy_rule(canon, service["deploy"], (*base, "deploy"))
    if "logging" in service:
        service["logging"] = logging_rule(canon, service["logging"], (*base, "logging"))
    environment_and_labels(canon, service, base)
