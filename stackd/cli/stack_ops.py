"""The per-container stack verbs: logs, exec, run, start, stop, restart, kill, rm, pause, unpause,
pull, top, port, images, events, wait and ls (docker compose's flags)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from stackd.cli.stack import CTX, backend, parallel_of, project_name, project_of, reporter
from stackd.errors import NotFoundError, UsageError


def _targets(b: Any, name: str, services: tuple[str, ...], *, oneoff: bool = False) -> list[Any]:
    from stackd.stack.backend import records

    out = []
    for r in records(b, name):
        labels = r.config.labels
        if services and labels.get("io.stackd.service") not in services:
            continue
        if not oneoff and labels.get("io.stackd.oneoff") == "True":
            continue
        out.append(r)
    return out


def _each(obj: Any, services: tuple[str, ...], fn: Callable[[Any, Any, Any], None], word: str,
          *, states: tuple[str, ...] | None = None) -> None:
    from stackd.stack.engine_adapter import RealStackEngine
    from stackd.stack.usecases import parallel_each

    name, _ = project_name(obj)
    b = backend()
    adapter = RealStackEngine(b)
    report = reporter()
    recs = [r for r in _targets(b, name, services) if states is None or r.status in states]

    def one(r: Any) -> None:
        fn(b, adapter, r)
        report("Container", r.name, word)

    errors = parallel_each(one, recs, parallel_of(obj))
    if errors:
        raise errors[0]


def _one(b: Any, name: str, service: str, index: int) -> Any:
    for r in _targets(b, name, (service,)):
        if r.config.labels.get("io.stackd.number") == str(index):
            return r
    raise NotFoundError(f"service {service!r} has no container number {index}; is it running?")


@click.command("logs", context_settings=CTX)
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("-n", "--tail", default="all", help="Number of lines from the end of each container's log.")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("--no-log-prefix", is_flag=True, help="Don't print the container name prefix.")
@click.argument("services", nargs=-1)
@click.pass_obj
def logs(obj: Any, services: tuple[str, ...], follow: bool, tail: str, timestamps: bool, no_log_prefix: bool) -> None:
    """Show the logs of the stack's containers."""
    import threading

    from stackd.cli.stack_logs import Printer, stream

    name, _ = project_name(obj)
    b = backend()
    recs = _targets(b, name, services)
    n = None if tail == "all" else int(tail)
    stop = threading.Event()
    threads = stream(b, recs, Printer([r.name for r in recs], timestamps=timestamps, prefix=not no_log_prefix),
                     follow=follow, tail=n, stop=stop)
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()


@click.command("exec", context_settings={**CTX, "ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-T", "--no-TTY", "no_tty", is_flag=True, help="Disable pseudo-TTY allocation.")
@click.option("-d", "--detach", is_flag=True, help="Run the command in the background.")
@click.option("-e", "--env", multiple=True, help="Set environment variables.")
@click.option("-u", "--user", default=None, help="Run as this user.")
@click.option("-w", "--workdir", default=None, help="Working directory.")
@click.option("--index", type=int, default=1, help="Index of the container (default 1).")
@click.argument("service")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def exec_(obj: Any, service: str, command: tuple[str, ...], no_tty: bool, detach: bool, env: tuple[str, ...],
          user: str | None, workdir: str | None, index: int) -> None:
    """Run a command in a running container of a service; exits with its exit code."""
    from stackd.cli import container_io as io

    name, _ = project_name(obj)
    b = backend()
    rec = _one(b, name, service, index)
    tty = not no_tty and sys.stdin.isatty() and sys.stdout.isatty()
    size = io.terminal_size() if tty else None
    m = b.containers
    s = m.exec(rec.id, list(command), tty=tty, stdin=tty, env=list(env) or None, cwd=workdir, user=user,
               rows=size[0] if size else 0, cols=size[1] if size else 0)
    if detach:
        return
    with io.raw_terminal(tty):
        if tty:
            client = m._client(rec.id)
            io.on_winch(lambda r, c: client.resize(r, c, s.channel))
            io.pump_stdin(s)
        code = io.copy_stream(s)
    sys.exit(code or 0)


def _simple(verb: str, help_: str, fn: Callable[[Any, Any, Any], object], word: str,
            states: tuple[str, ...] | None = None, timeout: bool = False, signal_opt: bool = False) -> click.Command:
    @click.pass_obj
    def cmd(obj: Any, services: tuple[str, ...], timeout: float | None = None, signal: str | None = None) -> None:
        def call(b: Any, adapter: Any, r: Any) -> None:
            fn(b, adapter, (r, timeout, signal))

        _each(obj, services, call, word, states=states)

    cmd.__doc__ = help_
    c = click.command(verb, context_settings=CTX)(cmd)
    c = click.argument("services", nargs=-1)(c)
    if timeout:
        c = click.option("-t", "--timeout", type=float, default=None, help="Seconds to wait before killing.")(c)
    if signal_opt:
        c = click.option("-s", "--signal", default="SIGKILL", help="Signal to send (default SIGKILL).")(c)
    return c


LIVE = ("running", "paused", "restarting")
start = _simple("start", "Start the stack's existing containers.",
                lambda b, a, x: a.start_sync(x[0].id), "Started", ("created", "exited"))
stop = _simple("stop", "Stop the stack's containers.", lambda b, a, x: a.stop_sync(x[0].id, x[1]), "Stopped",
               LIVE, timeout=True)
restart = _simple("restart", "Restart the stack's containers.",
                  lambda b, a, x: (a.stop_sync(x[0].id, x[1]), a.start_sync(x[0].id)), "Restarted", timeout=True)
kill = _simple("kill", "Kill the stack's containers.",
               lambda b, a, x: (b.mark_stopped(x[0].id, True), b.containers.kill(x[0].id, x[2])), "Killed",
               ("running", "restarting"), signal_opt=True)
pause = _simple("pause", "Pause the stack's containers.", lambda b, a, x: b.containers.pause(x[0].id), "Paused",
                ("running",))
unpause = _simple("unpause", "Unpause the stack's containers.", lambda b, a, x: b.containers.unpause(x[0].id),
                  "Unpaused", ("paused",))


@click.command("rm", context_settings=CTX)
@click.option("-f", "--force", is_flag=True, help="Don't ask to confirm removal.")
@click.option("-s", "--stop", "stop_first", is_flag=True, help="Stop the containers first.")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes too.")
@click.argument("services", nargs=-1)
@click.pass_obj
def rm(obj: Any, services: tuple[str, ...], force: bool, stop_first: bool, volumes: bool) -> None:
    """Remove the stack's stopped containers."""
    def one(b: Any, a: Any, r: Any) -> None:
        if stop_first:
            a.stop_sync(r.id)
        a.remove_sync(r.id, volumes=volumes)

    _each(obj, services, one, "Removed", states=None if stop_first else ("created", "exited", "dead"))


@click.command("pull", context_settings=CTX)
@click.option("-q", "--quiet", is_flag=True, help="Pull without printing progress.")
@click.option("--ignore-pull-failures", is_flag=True, help="Pull what it can.")
@click.argument("services", nargs=-1)
@click.pass_obj
def pull(obj: Any, services: tuple[str, ...], quiet: bool, ignore_pull_failures: bool) -> None:
    """Pull the services' images."""
    from stackd.stack.usecases import pull_images

    p = project_of(obj, services)
    refs = [svc["image"] for s, svc in p.tree["services"].items()
            if svc.get("image") and (not services or s in services)]
    try:
        pull_images(backend(), refs, (lambda *a: None) if quiet else reporter(), policy="always",
                    parallel=parallel_of(obj))
    except Exception:
        if not ignore_pull_failures:
            raise


@click.command("run", context_settings={**CTX, "ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="Run in the background, print the container ID.")
@click.option("--rm", is_flag=True, help="Remove the container when it exits.")
@click.option("-e", "--env", multiple=True, help="Set environment variables.")
@click.option("--no-deps", is_flag=True, help="Don't start linked services.")
@click.option("-T", "--no-TTY", "no_tty", is_flag=True, help="Disable pseudo-TTY allocation.")
@click.option("--name", default=None, help="The container's name.")
@click.option("--entrypoint", default=None, help="Override the entrypoint.")
@click.option("-u", "--user", default=None, help="Run as this user.")
@click.option("-w", "--workdir", default=None, help="Working directory.")
@click.argument("service")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run(obj: Any, /, service: str, command: tuple[str, ...], **o: Any) -> None:
    """Run a one-off command in a new container of a service."""
    from stackd.cli.stack_run import run_oneoff

    sys.exit(run_oneoff(obj, service, command, **o))


@click.command("top", context_settings=CTX)
@click.argument("services", nargs=-1)
@click.pass_obj
def top(obj: Any, services: tuple[str, ...]) -> None:
    """Show the processes of the stack's running containers."""
    name, _ = project_name(obj)
    b = backend()
    for r in _targets(b, name, services):
        if r.status != "running":
            continue
        titles, rows = b.containers.top(r.id)
        click.echo(r.name)
        table = [titles, *rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(titles))]
        for row in table:
            click.echo("   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
        click.echo()


@click.command("port", context_settings=CTX)
@click.option("--protocol", default="tcp", type=click.Choice(["tcp", "udp", "sctp"]))
@click.option("--index", type=int, default=1)
@click.argument("service")
@click.argument("private_port", type=int)
@click.pass_obj
def port(obj: Any, service: str, private_port: int, protocol: str, index: int) -> None:
    """Print the public address of a service's port."""
    name, _ = project_name(obj)
    b = backend()
    rec = _one(b, name, service, index)
    m = b.networks
    for p in (m.published(rec.id) if m is not None else []):
        if p.container_port == private_port and p.protocol == protocol:
            click.echo(f"{p.host_ip or '0.0.0.0'}:{p.host_port}")
            return
    raise UsageError(f"no port {private_port}/{protocol} published for {service}")


@click.command("images", context_settings=CTX)
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.argument("services", nargs=-1)
@click.pass_obj
def images(obj: Any, services: tuple[str, ...], quiet: bool, fmt: str) -> None:
    """List the images the stack's containers use."""
    name, _ = project_name(obj)
    b = backend()
    rows = []
    for r in _targets(b, name, services):
        repo, _, tag = r.image.rpartition(":") if ":" in r.image.split("/")[-1] else (r.image, "", "latest")
        rows.append({"ContainerName": r.name, "Repository": repo, "Tag": tag, "ID": r.image_id})
    if quiet:
        for i in sorted({x["ID"] for x in rows}):
            click.echo(i)
    elif fmt == "json":
        click.echo(json.dumps(rows))
    else:
        click.echo("CONTAINER   REPOSITORY   TAG   IMAGE ID")
        for x in rows:
            click.echo(f"{x['ContainerName']}   {x['Repository']}   {x['Tag']}   {x['ID'].removeprefix('sha256:')[:12]}")


@click.command("wait", context_settings=CTX)
@click.option("--down-project", is_flag=True, help="Drop the project when the first container stops.")
@click.argument("services", nargs=-1, required=True)
@click.pass_obj
def wait(obj: Any, services: tuple[str, ...], down_project: bool) -> None:
    """Block until the services' containers stop; print their exit codes."""
    name, project = project_name(obj)
    b = backend()
    code = 0
    for r in _targets(b, name, services):
        rec = b.containers.wait(r.id)
        click.echo(str(rec.exit_code or 0))
        code = code or (rec.exit_code or 0)
    if down_project:
        from stackd.stack.usecases import DownOptions, down

        down(name, b, DownOptions(), project=project, report=reporter())
    sys.exit(code)
