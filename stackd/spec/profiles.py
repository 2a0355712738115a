"""Profiles: which services are enabled (`--profile`, COMPOSE_PROFILES, services named explicitly)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stackd.spec.source import Node, error_at


def active_profiles(options_profiles: Iterable[str], environ: Mapping[str, str]) -> frozenset[str]:
    """`--profile` values, else COMPOSE_PROFILES (comma-separated); `*` enables every profile."""
    given = [p for p in options_profiles if p]
    if not given:
        given = [p.strip() for p in environ.get("COMPOSE_PROFILES", "").split(",") if p.strip()]
    return frozenset(given)


def profiles_of_services(tree: Node, names: Iterable[str]) -> frozenset[str]:
    """The profiles of services named explicitly on the command line (they enable them)."""
    services: dict[str, Any] = tree.get("services") or {}
    out: set[str] = set()
    for name in names:
        service = services.get(name)
        if isinstance(service, dict):
            out.update(p for p in service.get("profiles") or () if isinstance(p, str))
    return frozenset(out)


def is_enabled(service: Any, active: frozenset[str]) -> bool:
    profiles = service.get("profiles") if isinstance(service, dict) else None
    if not profiles:
        return True
    return "*" in active or any(p in active for p in profiles)


def apply_profiles(tree: Node, active: frozenset[str]) -> tuple[str, ...]:
    """Remove disabled services from `tree` (in place); returns their names, sorted.

    A required dependency of an enabled service on a disabled one is an error; an optional one
    (`required: false`) is dropped, as compose does.
    """
    services: Node = tree["services"]
    disabled = tuple(sorted(name for name, svc in services.items() if not is_enabled(svc, active)))
    if not disabled:
        return ()
    off = set(disabled)
    for name, service in services.items():
        if name in off:
            continue
        depends = service.get("depends_on") or {}
        for dep in list(depends):
            if dep not in off:
                continue
            if isinstance(depends[dep], dict) and depends[dep].get("required") is False:
                del depends[dep]
                continue
            profiles = ", ".join(services[dep].get("profiles") or ())
            raise error_at(
                tree,
                ("services", name, "depends_on", dep),
                f'depends on service "{dep}", which is disabled (enable its profile: --profile {profiles.split(", ")[0]})'
                if profiles else f'depends on disabled service "{dep}"',
            )
    for name in disabled:
        del services[name]
    return disabled
