"""Find the stack files, the project directory and name, and make relative paths absolute.

Discovery follows docker compose: `-f` files, else `STACKD_FILE` / `COMPOSE_FILE` (split on
`COMPOSE_PATH_SEPARATOR` or os.pathsep), else the first default name found in the working
directory or its parents, plus its `.override.` sibling.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from stackd.errors import SpecError
from stackd.spec.source import Node, Seq

DEFAULT_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml", "stack.yaml")
OVERRIDE_NAMES = (
    "compose.override.yaml", "compose.override.yml", "docker-compose.override.yaml",
    "docker-compose.override.yml", "stack.override.yaml",
)
_VALID_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_INVALID_CHARS = re.compile(r"[^a-z0-9_-]")


def absolute(path: str, base: str) -> str:
    """`path` made absolute against `base`, normalized."""
    return os.path.normpath(os.path.join(os.path.abspath(base), path))


def env_path_list(environ: Mapping[str, str], key: str) -> list[str]:
    """A path list from the environment, split on COMPOSE_PATH_SEPARATOR (or os.pathsep)."""
    value = environ.get(key, "")
    if not value:
        return []
    sep = environ.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
    return [p for p in value.split(sep) if p]


def discover(working_dir: str) -> list[str]:
    """The default stack file (and its override) in `working_dir` or the nearest parent."""
    directory = os.path.abspath(working_dir)
    while True:
        for name in DEFAULT_NAMES:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate):
                found = [candidate]
                for override in OVERRIDE_NAMES:
                    other = os.path.join(directory, override)
                    if os.path.isfile(other):
                        found.append(other)
                        break
                return found
        parent = os.path.dirname(directory)
        if parent == directory:
            names = ", ".join(DEFAULT_NAMES)
            raise SpecError(f"no stack file found in {os.path.abspath(working_dir)} or its parents (looked for {names}); use -f FILE")
        directory = parent


def stack_files(files: tuple[str, ...], environ: Mapping[str, str], working_dir: str) -> list[str]:
    """Absolute paths of the stack files to load, in merge order (`-` is standard input)."""
    chosen = list(files) or env_path_list(environ, "STACKD_FILE") or env_path_list(environ, "COMPOSE_FILE")
    if not chosen:
        return discover(working_dir)
    out = []
    for path in chosen:
        if path == "-":
            out.append(path)
            continue
        full = absolute(path, working_dir)
        if not os.path.exists(full):
            raise SpecError(f"{path}: no such file")
        out.append(full)
    return out


def normalize_name(name: str) -> str:
    """Compose's project name normalization: lowercase, only [a-z0-9_-], no leading _ or -."""
    return _INVALID_CHARS.sub("", name.lower()).lstrip("_-")


def check_name(name: str, source: str) -> str:
    if not _VALID_NAME.match(name):
        raise SpecError(
            f"invalid project name {name!r} (from {source}): it must contain only lowercase letters, "
            "digits, dashes and underscores, and start with a letter or digit"
        )
    return name


def project_name(explicit: str | None, environment: Mapping[str, str], yaml_name: str | None, directory: str) -> str:
    """`-p` > STACKD_PROJECT_NAME / COMPOSE_PROJECT_NAME > top-level `name` > directory name."""
    if explicit:
        return check_name(explicit, "-p")
    for key in ("STACKD_PROJECT_NAME", "COMPOSE_PROJECT_NAME"):
        if environment.get(key):
            return check_name(environment[key], key)
    if yaml_name:
        name = normalize_name(str(yaml_name))
        if name:
            return name
    name = normalize_name(os.path.basename(os.path.abspath(directory)))
    if not name:
        raise SpecError(f"cannot derive a project name from the directory {directory!r}: use -p NAME or a top-level name")
    return name


# --- relative paths --------------------------------------------------------------------------

_REMOTE = ("https://", "http://", "git://", "ssh://", "github.com/", "git@")


def _host_path(value: str, base: str, home: str | None) -> str:
    if value.startswith("~") and home and (value == "~" or value.startswith("~/")):
        return home + value[1:]
    if os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(base, value))


def _context(value: Any, base: str, home: str | None) -> Any:
    if not isinstance(value, str) or "://" in value or value.startswith("service:") or value.startswith(_REMOTE):
        return value
    return _host_path(value, base, home)


class Rewritten(str):
    """A short-syntax string whose relative path was made absolute; `original` is what the
    user wrote, for error messages."""

    original: str


def _short_volume(value: str, base: str, home: str | None) -> str:
    source, sep, rest = value.partition(":")
    if sep and (source.startswith(".") or source.startswith("~")):
        out = Rewritten(_host_path(source, base, home) + ":" + rest)
        out.original = getattr(value, "original", value)
        return out
    return value


def resolve_paths(tree: Any, base: str, environ: Mapping[str, str]) -> None:
    """Make the relative paths of one file's tree absolute against `base` (in place)."""
    if not isinstance(tree, dict):
        return
    home = environ.get("HOME")
    services = tree.get("services")
    if isinstance(services, dict):
        for service in services.values():
            if isinstance(service, dict):
                _service_paths(_unwrap(service), base, home)
    volumes = tree.get("volumes")
    if isinstance(volumes, dict):
        for volume in volumes.values():
            _bind_device(_unwrap(volume), base, home)
    for section in ("secrets", "configs"):
        group = tree.get(section)
        if isinstance(group, dict):
            for item in group.values():
                item = _unwrap(item)
                if isinstance(item, dict) and isinstance(item.get("file"), str):
                    item["file"] = _host_path(item["file"], base, home)


def _bind_device(volume: Any, base: str, home: str | None) -> None:
    """`driver_opts: {type: none, o: bind, device: ./x}` (a local bind volume): device made absolute."""
    opts = _unwrap(volume.get("driver_opts")) if isinstance(volume, dict) else None
    if not isinstance(opts, dict) or not isinstance(opts.get("device"), str):
        return
    if str(opts.get("type", "")) == "none" and "bind" in str(opts.get("o", "")).split(","):
        opts["device"] = _host_path(opts["device"], base, home)


def _additional_contexts(value: Any, base: str, home: str | None) -> None:
    """Build contexts that are paths (not `docker-image://`, `service:`, URLs) made absolute."""
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = _context(item, base, home)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            name, sep, ctx = item.partition("=") if isinstance(item, str) else ("", "", "")
            if sep:
                value[i] = f"{name}={_context(ctx, base, home)}"


def _unwrap(value: Any) -> Any:
    return getattr(value, "value", value) if not isinstance(value, (dict, list)) else value


def _service_paths(service: Any, base: str, home: str | None) -> None:
    if not isinstance(service, dict):
        return
    build = _unwrap(service.get("build"))
    if isinstance(build, str):
        service["build"] = _context(build, base, home)
    elif isinstance(build, dict):
        if "context" in build:
            build["context"] = _context(build["context"], base, home)
        _additional_contexts(_unwrap(build.get("additional_contexts")), base, home)
    develop = _unwrap(service.get("develop"))
    watch = _unwrap(develop.get("watch")) if isinstance(develop, dict) else None
    if isinstance(watch, list):
        for rule in watch:
            rule = _unwrap(rule)
            if isinstance(rule, dict) and isinstance(rule.get("path"), str):
                rule["path"] = _host_path(rule["path"], base, home)
    for key in ("env_file", "label_file"):
        value = _unwrap(service.get(key))
        if isinstance(value, str):
            service[key] = _host_path(value, base, home)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    value[i] = _host_path(item, base, home)
                elif isinstance(item, dict) and isinstance(item.get("path"), str):
                    item["path"] = _host_path(item["path"], base, home)
    extends = service.get("extends")
    if isinstance(extends, dict) and isinstance(extends.get("file"), str):
        extends["file"] = _host_path(extends["file"], base, home)
    volumes = _unwrap(service.get("volumes"))
    if isinstance(volumes, list):
        for i, item in enumerate(volumes):
            if isinstance(item, str):
                volumes[i] = _short_volume(item, base, home)
            elif isinstance(item, dict) and item.get("type") == "bind" and isinstance(item.get("source"), str):
                item["source"] = _host_path(item["source"], base, home)


__all__ = ["Node", "Seq", "discover", "normalize_name", "project_name", "resolve_paths", "stack_files"]
