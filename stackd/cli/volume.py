"""`stackd volume ls|create|rm|inspect|prune` on stackd's VolumeStore, and the CLI output helpers.

The helpers at the end (aligned tables, `--format json` or a template, Docker-style filters and
multi-object error reporting) are shared with `stackd.cli.network`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import click

from stackd.cli.roots import state_root
from stackd.errors import NotFoundError, StackdError, UsageError

if TYPE_CHECKING:
    from stackd.engine.volumes import VolumeRecord, VolumeStore


def _store() -> VolumeStore:
    from stackd.engine.volumes import VolumeStore

    return VolumeStore(state_root())


def _to_json(rec: VolumeRecord) -> dict[str, Any]:
    """`docker volume inspect`'s shape (empty labels and options are null, as Docker prints them)."""
    return {"CreatedAt": rfc3339(rec.created), "Driver": rec.driver, "Labels": dict(rec.labels) or None,
            "Mountpoint": rec.mountpoint, "Name": rec.name, "Options": dict(rec.options) or None,
            "Scope": rec.scope}


class NounGroup(click.Group):
    """A management noun's group: a state root stackd may not write is one error line, not a bug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PermissionError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise StackdError(f"permission denied{where} ({exc.strerror or exc}); stackd needs root "
                              "or a writable $STACKD_STATE_ROOT") from None


@click.group("volume", cls=NounGroup, context_settings={"help_option_names": ["-h", "--help"]})
def volume() -> None:
    """Manage volumes."""


@volume.command("ls")
@click.option("--format", "fmt", default=None, help="Output format: json or a Go-like template.")
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names.")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter (dangling=, driver=, label=, name=).")
def ls_cmd(fmt: str | None, quiet: bool, filters: tuple[str, ...]) -> None:
    """List volumes."""
    by_key = parse_filters(filters, ("dangling", "driver", "label", "name"))
    dangling = None
    if by_key.get("dangling"):
        values = {parse_bool("dangling", v) for v in by_key["dangling"]}
        dangling = values.pop() if len(values) == 1 else None
    recs = [r for r in _store().list(dangling=dangling)
            if all(any(_match(k, v, r) for v in vs) for k, vs in by_key.items() if k != "dangling")]
    if quiet:
        for r in recs:
            click.echo(r.name)
        return
    if fmt:
        emit_formatted(fmt, [{"Availability": "N/A", "Driver": r.driver, "Group": "N/A",
                              "Labels": labels_text(r.labels), "Links": "N/A", "Mountpoint": r.mountpoint,
                              "Name": r.name, "Scope": r.scope, "Size": "N/A", "Status": "N/A"}
                             for r in recs])
        return
    table(["DRIVER", "VOLUME NAME"], [[r.driver, r.name] for r in recs])


def _match(key: str, value: str, rec: VolumeRecord) -> bool:
    if key == "name":
        return value in rec.name
    if key == "driver":
        return rec.driver == value
    return label_match(rec.labels, value)


@volume.command("create")
@click.option("-d", "--driver", default="local", show_default=True, help="Volume driver (local).")
@click.option("-o", "--opt", "opts", multiple=True, help="Driver option: type=, device=, o= (tmpfs, bind).")
@click.option("-l", "--label", "labels", multiple=True, help="Label k=v.")
@click.option("--name", "name_opt", default=None, help="Volume name (same as the argument).")
@click.argument("name", required=False, default="")
def create_cmd(driver: str, opts: tuple[str, ...], labels: tuple[str, ...], name_opt: str | None,
               name: str) -> None:
    """Create a volume (a random 64-hex-digit name when none is given)."""
    if name and name_opt and name != name_opt:
        raise UsageError(f"conflicting volume names: {name!r} and --name {name_opt!r}")
    rec = _store().create(name or name_opt or "", driver=driver, labels=parse_kv(labels, "--label"),
                          driver_opts=parse_kv(opts, "--opt", need_value=True))
    click.echo(rec.name)


@volume.command("rm")
@click.option("-f", "--force", is_flag=True, help="Do not error on volumes that do not exist.")
@click.argument("names", nargs=-1, required=True)
def rm_cmd(names: tuple[str, ...], force: bool) -> None:
    """Remove one or more volumes (a volume in use is never removed)."""
    store = _store()
    errors: list[StackdError] = []
    for name in names:
        try:
            users = store.users(name)
            if users:
                raise _InUse(f"volume {name} is in use by container(s) {', '.join(u[:12] for u in users)}: "
                             "remove them first")
            store.remove(name)
            click.echo(name)
        except NotFoundError as exc:
            if not force:
                errors.append(exc)
        except StackdError as exc:
            errors.append(exc)
    finish(errors)


class _InUse(StackdError):
    """A volume a container still uses."""


@volume.command("inspect")
@click.option("-f", "--format", "fmt", default=None, help="Format: json (one line each) or a template.")
@click.argument("names", nargs=-1, required=True)
def inspect_cmd(names: tuple[str, ...], fmt: str | None) -> None:
    """Display detailed information on one or more volumes."""
    store = _store()
    out: list[dict[str, Any]] = []
    errors: list[StackdError] = []
    for name in names:
        try:
            out.append(_to_json(store.inspect(name)))
        except StackdError as exc:
            errors.append(exc)
    emit_inspect(out, fmt, errors)


def _du(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}GB"  # pragma: no cover


@volume.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused volumes, not just anonymous ones.")
@click.option("--filter", "filters", multiple=True, help="Filter (label=).")
def prune_cmd(force: bool, all_: bool, filters: tuple[str, ...]) -> None:
    """Remove unused volumes: anonymous ones, or every unused one with -a."""
    label = dict(kv.partition("=")[::2] for kv in parse_filters(filters, ("label",)).get("label", []))
    if not force:
        what = "all local volumes" if all_ else "anonymous local volumes"
        click.confirm(f"WARNING! This will remove {what} not used by at least one container.\n"
                      "Are you sure you want to continue?", abort=True)
    store = _store()
    sizes = {r.name: _du(r.mountpoint) for r in store.list(label=label or None, dangling=True)
             if all_ or r.anonymous}
    gone = store.prune(all_=all_, label=label or None)
    if gone:
        click.echo("Deleted Volumes:")
        for name in gone:
            click.echo(name)
        click.echo()
    click.echo(f"Total reclaimed space: {_size(sum(sizes.get(n, 0) for n in gone))}")


# -- output and flag helpers (shared with stackd.cli.network) ----------------------------------
def table(header: list[str], rows: Iterable[list[str]]) -> None:
    """Columns aligned with three spaces, as Docker's tabwriter does (also when piped)."""
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        click.echo(("".join(c.ljust(w + 3) for c, w in zip(r, widths, strict=False)) + r[-1]).rstrip())


_FIELD = re.compile(r"\{\{\s*(json\s+)?\.([A-Za-z0-9_.]*)\s*\}\}")


def render_template(fmt: str, obj: Mapping[str, Any]) -> str:
    """A small Go-template subset: `{{.Field}}`, `{{.A.B}}`, `{{json .}}`, `{{json .Field}}`, `\\t`."""

    def field(m: re.Match[str]) -> str:
        value: Any = obj
        for part in filter(None, m.group(2).split(".")):
            value = value.get(part) if isinstance(value, Mapping) else None
        if m.group(1):
            return json.dumps(value)
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        if isinstance(value, bool):
            return str(value).lower()
        return "<no value>" if value is None else str(value)

    return _FIELD.sub(field, fmt.replace("\\t", "\t").replace("\\n", "\n"))


def emit_formatted(fmt: str, objs: list[dict[str, Any]]) -> None:
    """`--format json` (one object per line) or a template per object."""
    if fmt == "json":
        for o in objs:
            click.echo(json.dumps(o))
        return
    if "{{" not in fmt:
        raise UsageError(f"unsupported --format {fmt!r} (json or a template like '{{{{.Name}}}}')")
    for o in objs:
        click.echo(render_template(fmt, o))


def emit_inspect(out: list[dict[str, Any]], fmt: str | None, errors: list[StackdError]) -> None:
    """Docker's inspect: a JSON array of what was found, one error line per miss, exit 1 if any."""
    if fmt:
        emit_formatted(fmt, out)
    else:
        click.echo(json.dumps(out, indent=4))
    finish(errors)


def finish(errors: list[StackdError]) -> None:
    """After a multi-object verb: one line per error; the last is raised so the CLI exits non-zero."""
    for exc in errors[:-1]:
        click.echo(f"error: {exc}", err=True)
    if errors:
        raise errors[-1]


def parse_kv(items: Iterable[str], flag: str, *, need_value: bool = False) -> dict[str, str]:
    out = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not k or (need_value and not (eq and v)):
            raise UsageError(f"invalid {flag} {item!r} (expected key=value)")
        out[k] = v
    return out


def parse_filters(filters: Iterable[str], keys: Iterable[str]) -> dict[str, list[str]]:
    allowed = tuple(keys)
    out: dict[str, list[str]] = {}
    for f in filters:
        k, eq, v = f.partition("=")
        if not eq or k not in allowed:
            raise UsageError(f"invalid filter {f!r} (one of: {', '.join(k + '=' for k in allowed)})")
        out.setdefault(k, []).append(v)
    return out


def parse_bool(key: str, value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise UsageError(f"invalid filter '{key}={value}' (true or false)")


def label_match(labels: Mapping[str, str], spec: str) -> bool:
    """`key` (present) or `key=value` (equal)."""
    k, eq, v = spec.partition("=")
    return k in labels and (not eq or labels[k] == v)


def labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
