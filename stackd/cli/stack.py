"""The stack verbs `up`, `down`, `plan`, `graph` and `ps` (docker compose's flags and output)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from stackd.errors import UsageError

CTX = {"help_option_names": ["-h", "--help"]}


# --- shared plumbing (also used by stack_ops) ------------------------------------------------------

def project_of(obj: Any, services: tuple[str, ...] = ()) -> Any:
    from stackd.cli.config import load_options
    from stackd.spec.load import load

    p = load(load_options(obj), services=services)
    for w in p.warnings:
        click.echo(f"warning: {w}", err=True)
    return p


def project_name(obj: Any) -> tuple[str, Any]:
    """The project name, and the project when a stack file is found (`down -p X` works without one)."""
    from stackd.errors import SpecError

    try:
        p = project_of(obj)
        return p.name, p
    except SpecError:
        if getattr(obj, "project_name", None) and not getattr(obj, "files", ()):
            return obj.project_name, None
        raise


def backend() -> Any:
    from stackd.cli.container import engine
    from stackd.stack.backend import Backend

    eng = engine()
    if "networks" in type(eng).__dict__:
        return Backend(eng)
    from stackd.cli.network import net_manager

    return Backend(eng, net_manager())


def reporter(final_only: bool = True) -> Any:
    tty = sys.stdout.isatty()
    finals = {"Created", "Started", "Stopped", "Removed", "Recreated", "Healthy", "Exited", "Pulled",
              "Running", "Error", "Killed", "Paused", "Unpaused", "Restarted"}

    def report(kind: str, name: str, status: str) -> None:
        word = status.split(" ")[0]
        if final_only and word not in finals and not status.startswith("Warning"):
            return
        if tty:
            mark = click.style("✘", fg="red") if word == "Error" else click.style("✔", fg="green")
            click.echo(f" {mark} {kind} {name}  {click.style(status, fg='green' if word != 'Error' else 'red')}")
        else:
            click.echo(f"{kind} {name}  {status}")

    return report


def parse_scale(items: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, n = item.partition("=")
        if not sep or not n.isdigit():
            raise UsageError(f"--scale {item!r}: expected SERVICE=NUM")
        out[name] = int(n)
    return out


def parallel_of(obj: Any) -> int | None:
    return getattr(obj, "parallel", None)


# --- up / plan -------------------------------------------------------------------------------------

def _up_options(obj: Any, services: tuple[str, ...], **o: Any) -> Any:
    from stackd.stack.usecases import UpOptions

    if o.get("force_recreate") and o.get("no_recreate"):
        raise UsageError("--force-recreate and --no-recreate are incompatible")
    return UpOptions(services=services, force_recreate=o.get("force_recreate", False),
                     no_recreate=o.get("no_recreate", False), no_deps=o.get("no_deps", False),
                     remove_orphans=o.get("remove_orphans", False), scale=parse_scale(o.get("scale", ())),
                     pull=o.get("pull"), no_start=o.get("no_start", False), wait=o.get("wait", False),
                     wait_timeout=o.get("wait_timeout"), parallel=parallel_of(obj))


@click.command("up", context_settings=CTX)
@click.option("-d", "--detach", is_flag=True, help="Run containers in the background.")
@click.option("--wait", is_flag=True, help="Wait for services to be running|healthy (implies -d).")
@click.option("--wait-timeout", type=float, default=None, help="Seconds to wait with --wait.")
@click.option("--force-recreate", is_flag=True, help="Recreate containers even if unchanged.")
@click.option("--no-recreate", is_flag=True, help="Never recreate existing containers.")
@click.option("--no-deps", is_flag=True, help="Don't start linked services.")
@click.option("--remove-orphans", is_flag=True, help="Remove containers of services not in the file.")
@click.option("--scale", multiple=True, metavar="SERVICE=NUM", help="Scale SERVICE to NUM replicas.")
@click.option("--pull", type=click.Choice(["always", "missing", "never"]), default=None, help="Pull policy.")
@click.option("--no-start", is_flag=True, help="Create but don't start.")
@click.option("--dry-run", is_flag=True, help="Show the plan, change nothing.")
@click.option("--abort-on-container-exit", is_flag=True, help="Stop all containers if any exits.")
@click.option("--exit-code-from", metavar="SERVICE", default=None, help="Exit with this service's exit code.")
@click.option("-t", "--timeout", type=float, default=None, help="Shutdown timeout in seconds.")
@click.argument("services", nargs=-1)
@click.pass_obj
def up(obj: Any, /, services: tuple[str, ...], detach: bool, dry_run: bool, abort_on_container_exit: bool,
       exit_code_from: str | None, timeout: float | None, **o: Any) -> None:
    """Create and start the stack's containers (converging from any state)."""
    from stackd.stack import usecases

    if exit_code_from:
        abort_on_container_exit = True
    if detach and abort_on_container_exit:
        raise UsageError("--abort-on-container-exit and --exit-code-from cannot be combined with -d")
    opts = _up_options(obj, services, **o)
    project = project_of(obj, services)
    b = backend()
    if dry_run:
        click.echo(usecases.plan(project, b, opts).render(), nl=False)
        return
    import time

    report = reporter()
    since = time.time_ns()
    result = usecases.up(project, b, opts, report)
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if detach or opts.wait or opts.no_start:
        return
    from stackd.cli.stack_logs import foreground

    code = foreground(project, b, result.selected, abort=abort_on_container_exit,
                      exit_code_from=exit_code_from, timeout=timeout, report=report, since_ns=since)
    sys.exit(code)


@click.command("plan", context_settings=CTX)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", help="Output format.")
@click.option("--force-recreate", is_flag=True)
@click.option("--no-recreate", is_flag=True)
@click.option("--no-deps", is_flag=True)
@click.option("--remove-orphans", is_flag=True)
@click.option("--scale", multiple=True, metavar="SERVICE=NUM")
@click.option("--pull", type=click.Choice(["always", "missing", "never"]), default=None)
@click.argument("services", nargs=-1)
@click.pass_obj
def plan(obj: Any, /, services: tuple[str, ...], fmt: str, **o: Any) -> None:
    """Show what `up` would do: each action, its reason, and a summary."""
    from stackd.stack import usecases

    p = usecases.plan(project_of(obj, services), backend(), _up_options(obj, services, **o))
    if fmt == "json":
        click.echo(json.dumps(p.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(p.render(), nl=False)


@click.command("graph", context_settings=CTX)
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid"]), default="text")
@click.pass_obj
def graph(obj: Any, fmt: str) -> None:
    """Show the services' dependency graph (text, Graphviz DOT or mermaid)."""
    from stackd.planner import graph as g

    project = project_of(obj)
    services = project.tree["services"]
    deps = {s: list(svc.get("depends_on") or {}) for s, svc in services.items()}
    conds = {(s, d): str((v or {}).get("condition", "service_started"))
             for s, svc in services.items() for d, v in (svc.get("depends_on") or {}).items()}
    if fmt == "text":
        for s in g.order(deps):
            needs = ", ".join(f"{d} ({conds[(s, d)]})" for d in sorted(deps[s]) if d in deps)
            click.echo(f"{s}" + (f" ← {needs}" if needs else ""))
        return
    graph_ = g.service_graph(deps, conds)
    click.echo(g.to_dot(graph_, project.name) if fmt == "dot" else g.to_mermaid(graph_), nl=False)


# --- down / ps -------------------------------------------------------------------------------------

@click.command("down", context_settings=CTX)
@click.option("-v", "--volumes", is_flag=True, help="Remove named volumes declared in the stack.")
@click.option("--rmi", type=click.Choice(["local", "all"]), default=None, help="Remove images.")
@click.option("--remove-orphans", is_flag=True, help="Remove containers of services not in the file.")
@click.option("-t", "--timeout", type=float, default=None, help="Shutdown timeout in seconds.")
@click.pass_obj
def down(obj: Any, volumes: bool, rmi: str | None, remove_orphans: bool, timeout: float | None) -> None:
    """Stop and remove containers, networks (and volumes with -v)."""
    from stackd.stack.usecases import DownOptions
    from stackd.stack.usecases import down as do_down

    name, project = project_name(obj)
    do_down(name, backend(), DownOptions(volumes, rmi, remove_orphans, timeout, parallel_of(obj)),
            project=project, report=reporter())


def ps_rows(b: Any, name: str, services: tuple[str, ...], all_: bool) -> list[dict[str, Any]]:
    from stackd.stack.backend import health_status, records

    rows = []
    for r in records(b, name):
        labels = r.config.labels
        svc = labels.get("io.stackd.service", "")
        if services and svc not in services:
            continue
        if not all_ and r.status not in ("running", "paused", "restarting"):
            continue
        health = health_status(r)
        status = r.status + (f" ({health})" if health and r.status == "running" else "")
        if r.status == "exited":
            status = f"exited ({r.exit_code})"
        pub = []
        m = b.networks
        if m is not None:
            pub = [p for p in m.published(r.id)]
        rows.append({"ID": r.id, "Name": r.name, "Image": r.image, "Command": " ".join(_command(r)),
                     "Project": name, "Service": svc, "State": r.status, "Health": health or "",
                     "ExitCode": r.exit_code or 0, "Status": status,
                     "Publishers": [_pub(p) for p in pub]})
    return sorted(rows, key=lambda x: x["Name"])


def _command(r: Any) -> list[str]:
    c = r.config
    entry = list(c.entrypoint if c.entrypoint is not None else c.image_config.entrypoint or ())
    cmd = list(c.command if c.command is not None else (c.image_config.cmd or ()) if c.entrypoint is None else ())
    return entry + cmd


def _pub(p: Any) -> dict[str, Any]:
    return {"URL": getattr(p, "host_ip", "") or "0.0.0.0", "TargetPort": getattr(p, "container_port", 0),
            "PublishedPort": getattr(p, "host_port", 0), "Protocol": getattr(p, "protocol", "tcp")}


@click.command("ps", context_settings=CTX)
@click.option("-a", "--all", "all_", is_flag=True, help="Show stopped containers too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--services", "services_only", is_flag=True, help="Print the services.")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
@click.argument("services", nargs=-1)
@click.pass_obj
def ps(obj: Any, services: tuple[str, ...], all_: bool, fmt: str, services_only: bool, quiet: bool) -> None:
    """List the stack's containers."""
    name, _ = project_name(obj)
    rows = ps_rows(backend(), name, services, all_)
    if quiet:
        for r in rows:
            click.echo(r["ID"])
    elif services_only:
        for s in sorted({r["Service"] for r in rows}):
            click.echo(s)
    elif fmt == "json":
        click.echo(json.dumps(rows))
    else:
        table = [["NAME", "IMAGE", "COMMAND", "SERVICE", "STATUS", "PORTS"]]
        for r in rows:
            cmd = r["Command"]
            cmd = json.dumps(cmd if len(cmd) <= 22 else cmd[:21] + "…", ensure_ascii=False)
            ports = ", ".join(f"{p['URL']}:{p['PublishedPort']}->{p['TargetPort']}/{p['Protocol']}"
                              for p in r["Publishers"])
            table.append([r["Name"], r["Image"], cmd, r["Service"], r["Status"], ports])
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            click.echo("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())



