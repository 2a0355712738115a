"""`stackd ls` (every stack with its status, like `docker compose ls`) and `stackd events`."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from stackd.cli.stack import CTX, backend, project_name


def stacks(b: Any, *, all_: bool) -> list[dict[str, Any]]:
    from collections import Counter

    from stackd.stack.backend import records

    by: dict[str, Counter[str]] = {}
    for r in records(b, None):
        by.setdefault(r.config.labels["io.stackd.stack"], Counter())[r.status] += 1
    out = []
    for name in sorted(by):
        counts = by[name]
        if not all_ and not any(counts[s] for s in ("running", "paused", "restarting")):
            continue
        status = ", ".join(f"{s}({n})" for s, n in sorted(counts.items()))
        out.append({"Name": name, "Status": status})
    return out


@click.command("ls", context_settings=CTX)
@click.option("-a", "--all", "all_", is_flag=True, help="Show stopped stacks too.")
@click.option("-q", "--quiet", is_flag=True, help="Only names.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def ls(all_: bool, quiet: bool, fmt: str) -> None:
    """List the stacks on this engine and their status."""
    rows = stacks(backend(), all_=all_)
    if quiet:
        for r in rows:
            click.echo(r["Name"])
    elif fmt == "json":
        click.echo(json.dumps(rows))
    else:
        width = max([4, *(len(r["Name"]) for r in rows)])
        click.echo(f"{'NAME':<{width}}   STATUS")
        for r in rows:
            click.echo(f"{r['Name']:<{width}}   {r['Status']}")


@click.command("events", context_settings=CTX)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.argument("services", nargs=-1)
@click.pass_obj
def events(obj: Any, services: tuple[str, ...], as_json: bool) -> None:
    """Stream container status changes of the stack (polled from the engine's records)."""
    from stackd.stack.backend import records

    name, _ = project_name(obj)
    b = backend()
    last: dict[str, tuple[str, str, str]] = {}
    first = True
    try:
        while True:
            seen = set()
            for r in records(b, name):
                svc = r.config.labels.get("io.stackd.service", "")
                if services and svc not in services:
                    continue
                seen.add(r.id)
                health = str((r.health or {}).get("Status") or "")
                now = (r.status, r.started_at, health)
                before = last.get(r.id)
                if before != now and not first:
                    if before is None:
                        _emit(as_json, r.name, svc, r.id, "create")
                    if before is None or (before[1] != now[1] and r.status == "running"):
                        _emit(as_json, r.name, svc, r.id, "start")
                    elif before[0] != now[0]:
                        _emit(as_json, r.name, svc, r.id, {"exited": "die"}.get(r.status, r.status))
                    if health and (before is None or before[2] != health):
                        _emit(as_json, r.name, svc, r.id, f"health_status: {health}")
                last[r.id] = now
            for cid in [c for c in last if c not in seen]:
                _emit(as_json, cid[:12], "", cid, "destroy")
                del last[cid]
            first = False
            time.sleep(0.5)
    except KeyboardInterrupt:
        return


def _emit(as_json: bool, name: str, service: str, cid: str, action: str) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    if as_json:
        click.echo(json.dumps({"time": now, "type": "container", "action": action, "id": cid,
                               "service": service, "attributes": {"name": name}}), nl=True)
    else:
        click.echo(f"{now} container {action} {cid[:12]} (name={name}, service={service})")
