"""`stackd config`: load, validate and print the stack in canonical form (as `docker compose config`).

Imports only click, yaml and pydantic-core (through stackd.spec): no pydantic, trio, httpx,
networkx or rich.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import click

from stackd.errors import UsageError


def load_options(obj: Any, *, interpolate: bool = True) -> Any:
    """The spec LoadOptions for the command line's global options (`-f -` reads stdin)."""
    from stackd.spec.options import LoadOptions

    files = tuple(getattr(obj, "files", ()) or ())
    stdin_text = sys.stdin.read() if "-" in files else None
    return LoadOptions(
        files=files,
        project_name=getattr(obj, "project_name", None),
        project_directory=getattr(obj, "project_directory", None),
        env_files=tuple(getattr(obj, "env_files", ()) or ()),
        profiles=tuple(getattr(obj, "profiles", ()) or ()),
        environ=dict(getattr(obj, "environ", None) or os.environ),
        working_dir=os.getcwd(),
        interpolate=interpolate,
        stdin_text=stdin_text,
    )


def _variables(options: Any, fmt: str) -> str:
    from stackd.spec.resolve import variables

    found = variables(options)
    if fmt == "json":
        import json

        data = {v.name: {"name": v.name, "required": v.required, "defaultValue": v.default or "", "alternateValue": v.alternate or ""} for v in found}
        return json.dumps(data, indent=2) + "\n"
    rows = [("NAME", "REQUIRED", "DEFAULT VALUE", "ALTERNATE VALUE")]
    rows += [(v.name, str(v.required).lower(), v.default or "", v.alternate or "") for v in found]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows)


@click.command(name="config")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", help="Output format.")
@click.option("--services", "services_only", is_flag=True, help="Print the service names, one per line.")
@click.option("--volumes", "volumes_only", is_flag=True, help="Print the volume names, one per line.")
@click.option("--networks", "networks_only", is_flag=True, help="Print the network names, one per line.")
@click.option("--profiles", "profiles_only", is_flag=True, help="Print the profile names, one per line.")
@click.option("--images", "images_only", is_flag=True, help="Print the image names, one per line.")
@click.option("--hash", "hash_of", metavar="SERVICE|*", help="Print the config hash of services ('*' for all).")
@click.option("--no-interpolate", is_flag=True, help="Don't interpolate environment variables.")
@click.option("--variables", "variables_only", is_flag=True, help="Print the variables the stack uses and their defaults.")
@click.option("-q", "--quiet", is_flag=True, help="Only validate the configuration, print nothing.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write the output to FILE.")
@click.argument("service_names", nargs=-1)
@click.pass_obj
def config(
    obj: Any,
    fmt: str,
    services_only: bool,
    volumes_only: bool,
    networks_only: bool,
    profiles_only: bool,
    images_only: bool,
    hash_of: str | None,
    no_interpolate: bool,
    variables_only: bool,
    quiet: bool,
    output: str | None,
    service_names: tuple[str, ...],
) -> None:
    """Parse, resolve and render the stack file in canonical form."""
    # loading validates with pydantic-core alone (stackd.spec.schema); should a path still build the
    # pydantic models, spare its scan of every installed distribution for plugins (~30 ms)
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # a short-lived command: cyclic GC passes during pydantic's schema building cost ~10%
    collecting = gc.isenabled()
    gc.disable()
    try:
        _config(obj, fmt, (services_only, volumes_only, networks_only, profiles_only, images_only), hash_of, no_interpolate, variables_only, quiet, output, service_names)
    finally:
        if collecting:
            gc.enable()


def _config(
    obj: Any,
    fmt: str,
    lists: tuple[bool, bool, bool, bool, bool],
    hash_of: str | None,
    no_interpolate: bool,
    variables_only: bool,
    quiet: bool,
    output: str | None,
    service_names: tuple[str, ...],
) -> None:
    options = load_options(obj, interpolate=not (no_interpolate or variables_only))
    if variables_only:
        _emit(_variables(options, fmt), output, quiet)
        return
    from stackd.spec.load import load

    project = load(options, services=service_names)
    tree = project.tree
    if service_names:
        unknown = [s for s in service_names if s not in tree["services"]]
        if unknown:
            raise UsageError(f"no such service: {unknown[0]}")
        for name in list(tree["services"]):
            if name not in service_names:
                del tree["services"][name]
    if project.warnings and not quiet:
        for warning in project.warnings:
            click.echo(f"warning: {warning}", err=True)
    text = _listing(project, *lists, hash_of)
    if text is None:
        from stackd.spec.render import render

        text = render(tree, fmt)
    _emit(text, output, quiet)


def _listing(project: Any, services: bool, volumes: bool, networks: bool, profiles: bool, images: bool, hash_of: str | None) -> str | None:
    tree = project.tree
    lines: list[str]
    if services:
        lines = list(tree["services"])
    elif volumes:
        lines = list(tree.get("volumes") or {})
    elif networks:
        lines = list(tree.get("networks") or {})
    elif profiles:
        lines = list(project.profiles)
    elif images:
        lines = [svc.get("image") or f"{project.name}-{name}" for name, svc in tree["services"].items()]
    elif hash_of is not None:
        from stackd.spec.hash import config_hash

        wanted = list(tree["services"]) if hash_of.strip() == "*" else [s.strip() for s in hash_of.split(",") if s.strip()]
        for name in wanted:
            if name not in tree["services"]:
                raise UsageError(f"no such service: {name}")
        lines = [f"{name} {config_hash(tree, name, environment=project.environment)}" for name in wanted]
    else:
        return None
    return "".join(f"{line}\n" for line in lines)


def _emit(text: str, output: str | None, quiet: bool) -> None:
    if quiet:
        return
    if output:
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror}") from None
        return
    click.echo(text, nl=False)
