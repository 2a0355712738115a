"""Validate a canonical project: model errors in stackd's words, then the cross-references.

Every error is a SpecError naming `file:line:col: key.path: what is wrong and what is right`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic_core import ValidationError

from stackd.errors import SpecError
from stackd.spec.source import Node, Path, error_at
from stackd.spec.types import type_name

_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
_NAMESPACE_KEYS = ("network_mode", "ipc", "pid", "uts", "cgroup")


def translate(root: Node, exc: ValidationError) -> SpecError:
    """The first pydantic error as a SpecError at its place in the canonical tree."""
    errors = exc.errors(include_url=False)
    # prefer the error that gets deepest into the tree (union branches give several)
    # and, between union branches, the one that fits the kind of value written
    def rank(error: Any) -> tuple[int, bool]:
        path = _tree_path(root, error["loc"])
        container = isinstance(_value_at(root, path), (dict, list))
        return len(path), not (container and error["type"] in _EXPECT and error["type"] not in ("list_type", "dict_type", "model_type"))

    best = max(errors, key=rank)
    path = _tree_path(root, best["loc"])
    value = _value_at(root, path)
    return error_at(root, path, _message(best, value))


def _tree_path(root: Any, loc: tuple[Any, ...]) -> Path:
    """Follow pydantic's loc through the tree, skipping union-branch and extension labels."""
    path: list[str | int] = []
    node = root
    for part in loc:
        if (isinstance(node, dict) and isinstance(part, str) and part in node) or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            path.append(part)
            node = node[part]  # type: ignore[index]
    return tuple(path)


def _value_at(root: Any, path: Path) -> Any:
    node = root
    for part in path:
        node = node[part]
    return node


_EXPECT = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _message(error: Any, value: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    shown = f'"{value}"' if isinstance(value, str) else type_name(value) if isinstance(value, (dict, list)) or value is None else str(value).lower() if isinstance(value, bool) else str(value)
    if kind == "missing":
        field = error["loc"][-1]
        return f'required key "{field}" is missing'
    if kind in _EXPECT:
        if isinstance(value, (dict, list)) or value is None:
            return f"must be {_EXPECT[kind]}, not {type_name(value)}"
        return f"{shown}: must be {_EXPECT[kind]}"
    if kind == "literal_error":
        return f"{shown}: must be one of {str(ctx.get('expected', '')).replace(chr(39), '')}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = {"greater_than_equal": "at least", "less_than_equal": "at most", "greater_than": "more than", "less_than": "less than"}[kind]
        limit = next(iter(ctx.values()), "")
        return f"{shown}: must be {bound} {limit}"
    if kind == "value_error":
        return str(ctx.get("error", error.get("msg", "invalid value")))
    return f"{shown}: invalid value"


def check_references(root: Node) -> None:
    """Cross-references between services and resources, and the combinations compose rejects."""
    services: dict[str, Any] = root.get("services") or {}
    declared = {kind: set(root.get(kind) or {}) for kind in ("networks", "volumes", "secrets", "configs")}
    for name, service in services.items():
        base: Path = ("services", name)
        _check_service(root, services, declared, service, base)
    _check_resources(root)
    _check_cycles(root, services)


_EXTERNAL_CONFLICTS = {
    "networks": ("driver", "driver_opts", "ipam", "internal", "attachable", "labels", "enable_ipv6"),
    "volumes": ("driver", "driver_opts", "labels"),
}


def _check_resources(root: Node) -> None:
    for kind, conflicting in _EXTERNAL_CONFLICTS.items():
        for key, value in (root.get(kind) or {}).items():
            if value.get("external") is True:
                for attr in conflicting:
                    if value.get(attr):
                        raise error_at(root, (kind, key, attr), f'cannot be set on an external {kind[:-1]}; stackd uses the existing one as it is')
    for kind in ("secrets", "configs"):
        for key, value in (root.get(kind) or {}).items():
            sources = [a for a in ("file", "environment", "content") if value.get(a) is not None]
            if value.get("external") is True:
                sources.append("external")
            if len(sources) != 1:
                what = "none" if not sources else " and ".join(sources)
                raise error_at(root, (kind, key), f"needs exactly one of file, environment, content or external (has {what})")


def _check_service(root: Node, services: dict[str, Any], declared: dict[str, set[str]], service: Any, base: Path) -> None:
    if service.get("image") is None and service.get("build") is None and service.get("provider") is None:
        raise error_at(root, base, "has neither an image nor a build context; add image: or build:")
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise error_at(root, (*base, "healthcheck", "test", 0), f'"{test[0]}": a test list starts with CMD, CMD-SHELL or NONE (or write the test as one string)')
    networks = service.get("networks") or {}
    if service.get("network_mode") is not None and networks:
        raise error_at(root, (*base, "network_mode"), '"network_mode" and "networks" cannot be used together; keep one')
    for net in networks:
        if net not in declared["networks"] and net != "default":
            raise error_at(root, (*base, "networks", net), f'network "{net}" is not defined in the top-level networks{_close(net, declared["networks"])}')
    for index, mount in enumerate(service.get("volumes") or ()):
        if isinstance(mount, dict) and mount.get("type") == "volume" and mount.get("source") and mount["source"] not in declared["volumes"]:
            raise error_at(root, (*base, "volumes", index), f'volume "{mount["source"]}" is not defined in the top-level volumes{_close(mount["source"], declared["volumes"])}')
    for kind in ("secrets", "configs"):
        for index, ref in enumerate(service.get(kind) or ()):
            source = ref.get("source") if isinstance(ref, dict) else None
            if source is not None and source not in declared[kind]:
                raise error_at(root, (*base, kind, index), f'{kind[:-1]} "{source}" is not defined in the top-level {kind}{_close(source, declared[kind])}')
    for key in _NAMESPACE_KEYS:
        ref = service.get(key)
        if isinstance(ref, str) and ref.startswith("service:") and ref[8:] not in services:
            raise error_at(root, (*base, key), f'"{ref}": service "{ref[8:]}" is not defined{_close(ref[8:], services)}')
    for index, ref in enumerate(service.get("volumes_from") or ()):
        target = str(ref).split(":")[0]
        if not str(ref).startswith("container:") and target not in services:
            raise error_at(root, (*base, "volumes_from", index), f'"{ref}": service "{target}" is not defined{_close(target, services)}')
    for index, link in enumerate(service.get("links") or ()):
        target = str(link).split(":")[0]
        if target not in services:
            raise error_at(root, (*base, "links", index), f'"{link}": service "{target}" is not defined{_close(target, services)}')
    for dep in service.get("depends_on") or {}:
        entry = service["depends_on"][dep]
        if dep not in services and not (isinstance(entry, dict) and entry.get("required") is False):
            raise error_at(root, (*base, "depends_on", dep), f'depends on undefined service "{dep}"{_close(dep, services)}')
    scale = service.get("scale")
    replicas = (service.get("deploy") or {}).get("replicas") if isinstance(service.get("deploy"), dict) else None
    if service.get("container_name") and any(isinstance(n, int) and not isinstance(n, bool) and n > 1 for n in (scale, replicas)):
        where = "scale" if isinstance(scale, int) and scale > 1 else "deploy.replicas"
        raise error_at(root, (*base, "container_name"), f'"{service["container_name"]}": a fixed container name cannot be used with {where} > 1 (containers need distinct names)')
    restart = service.get("restart")
    if isinstance(restart, str) and not _RESTART.match(restart):
        raise error_at(root, (*base, "restart"), f'"{restart}": must be no, always, on-failure[:N] or unless-stopped')
    for index, port in enumerate(service.get("ports") or ()):
        published = port.get("published") if isinstance(port, dict) else None
        if isinstance(published, str) and published:
            for part in published.split("-"):
                if not (part.isascii() and part.isdigit()) or not 0 <= int(part) <= 65535:
                    raise error_at(root, (*base, "ports", index, "published"), f'"{published}": host port must be a number 1-65535 or a range like 8000-8010')


def _close(name: str, known: Any) -> str:
    from stackd.spec.keys import suggest

    return suggest(name, sorted(known))


def _check_cycles(root: Node, services: dict[str, Any]) -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(services[name].get("depends_on") or {}):
            if dep not in services:
                continue
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                raise error_at(root, ("services", cycle[0], "depends_on", cycle[1]), "dependency cycle detected: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[name] = 2

    for name in sorted(services):
        if name not in state:
            visit(name)
