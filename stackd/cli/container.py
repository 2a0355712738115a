"""`stackd container …`: run, create, ls/ps, logs, exec, start/stop/restart/kill/rm, inspect, wait, top, stats, …"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from stackd.cli.roots import run_root, state_root

CTX = {"help_option_names": ["--help"]}


def engine(runtime: str | None = None) -> Any:
    from stackd.engine.engine import Engine

    return Engine(state_root(), run_root(), runtime=runtime,
                  cgroup_parent=os.environ.get("STACKD_CGROUP_PARENT") or "/stackd")


def manager(runtime: str | None = None) -> Any:
    return engine(runtime).containers


@click.group("container", context_settings=CTX)
def container() -> None:
    """Manage containers: run, ls, logs, exec, start, stop, rm, inspect, …"""


def _run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--name", help="Container name."),
        click.option("-e", "--env", multiple=True, help="Set environment variables (KEY=VALUE or KEY)."),
        click.option("--env-file", multiple=True, help="Read environment variables from a file."),
        click.option("-v", "--volume", multiple=True, help="Bind mount or volume: SRC:DST[:ro]."),
        click.option("--mount", multiple=True, help="type=bind|volume|tmpfs,source=…,target=…[,readonly]."),
        click.option("-w", "--workdir", help="Working directory inside the container."),
        click.option("-u", "--user", help="user[:group] (names or numbers)."),
        click.option("--hostname", help="Container host name."),
        click.option("--entrypoint", default=None, help="Overwrite the image's ENTRYPOINT."),
        click.option("--restart", default="no", help="no | always | unless-stopped | on-failure[:N]."),
        click.option("--health-cmd", help="Command to run to check health."),
        click.option("--health-interval", help="Time between checks (e.g. 30s)."),
        click.option("--health-timeout", help="Maximum time for one check."),
        click.option("--health-retries", type=int, default=None, help="Failures before unhealthy."),
        click.option("--health-start-period", help="Start period for the container to initialize."),
        click.option("--no-healthcheck", is_flag=True, help="Disable the image's HEALTHCHECK."),
        click.option("-m", "--memory", help="Memory limit (e.g. 512m)."),
        click.option("--cpus", type=float, default=None, help="Number of CPUs."),
        click.option("--pids-limit", type=int, default=None, help="Process limit (-1: unlimited)."),
        click.option("--cap-add", multiple=True, help="Add a Linux capability."),
        click.option("--cap-drop", multiple=True, help="Drop a Linux capability."),
        click.option("--privileged", is_flag=True, help="Give extended privileges."),
        click.option("--read-only", is_flag=True, help="Mount the root filesystem read-only."),
        click.option("--security-opt", multiple=True, help="no-new-privileges, seccomp=…"),
        click.option("--init", is_flag=True, help="Run an init inside the container (signals, reaping)."),
        click.option("-l", "--label", multiple=True, help="Set metadata (key=value)."),
        click.option("--runtime", default=None, help="OCI runtime: stackd-runtime, runc, crun or a path."),
        click.option("--stop-signal", help="Signal to stop the container."),
        click.option("--stop-timeout", type=int, default=None, help="Seconds to wait before killing."),
        click.option("--network", "--net", default="", help="Network: a name, bridge (default), none, host, container:NAME."),
        click.option("--network-alias", multiple=True, help="Network-scoped alias for the container."),
        click.option("--ip", default="", help="IPv4 address on the network (e.g. 172.30.100.104)."),
        click.option("--ip6", default="", help="IPv6 address on the network."),
        click.option("--mac-address", default="", help="MAC address on the network."),
        click.option("-p", "--publish", multiple=True, help="Publish a port: [IP:][HOST:]CONTAINER[/udp]."),
        click.option("--dns", multiple=True, help="Custom DNS server."),
        click.option("--dns-search", multiple=True, help="Custom DNS search domain."),
        click.option("--dns-option", multiple=True, help="DNS option (resolv.conf options)."),
        click.option("--add-host", multiple=True, help="Add a host-to-IP mapping (host:ip, host-gateway)."),
        click.option("--domainname", default="", help="Container NIS domain name."),
        click.option("--tmpfs", multiple=True, help="Mount a tmpfs: PATH[:OPTIONS]."),
        click.option("--volumes-from", multiple=True, help="Mount the volumes of a container: NAME[:ro|rw]."),
        click.option("--log-opt", multiple=True, help="max-size=…, max-file=…"),
        click.option("--pull", type=click.Choice(["missing", "always", "never"]), default="missing"),
        click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open."),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _create(o: dict[str, Any], image: str, command: tuple[str, ...]) -> tuple[Any, Any]:
    from stackd.cli.container_opts import build_config

    eng = engine(o.get("runtime"))
    cfg = build_config(o, image, command, os.environ)
    try:
        eng.images.resolve(image)
    except Exception:
        if o.get("pull") == "never":
            raise
        click.echo(f"Unable to find image '{image}' locally", err=True)
        eng.ensure_image(image, pull="always")
    else:
        if o.get("pull") == "always":
            eng.ensure_image(image, pull="always")
    return eng, eng.containers.create(cfg)


@container.command("create", context_settings={**CTX, "ignore_unknown_options": True})
@_run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def create_cmd(image: str, command: tuple[str, ...], **o: Any) -> None:
    """Create a container (not started)."""
    _, rec = _create(o, image, command)
    click.echo(rec.id)


@container.command("run", context_settings={**CTX, "ignore_unknown_options": True, "allow_interspersed_args": False})
@_run_options
@click.option("-d", "--detach", is_flag=True, help="Run in the background and print the container ID.")
@click.option("--rm", is_flag=True, help="Remove the container when it exits.")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_cmd(image: str, command: tuple[str, ...], detach: bool, rm: bool, **o: Any) -> None:
    """Create and start a container; exits with the container's exit code."""
    from stackd.cli import container_io as io

    eng, rec = _create(o, image, command)
    m = eng.containers
    tty = bool(o.get("tty"))
    interactive = bool(o.get("interactive"))
    size = io.terminal_size() if tty else None
    try:
        m.start(rec.id, console_size=size, on_attach=not detach)
        if detach:
            click.echo(rec.id)
            return
        client = m._client(rec.id)
        with io.raw_terminal(tty and interactive and os.isatty(0)):
            stream = client.attach(stdin=interactive)  # this starts it: no output is missed
            if tty:
                io.on_winch(lambda r, c: client.resize(r, c))
            else:
                io.forward_signals(lambda s: m.kill(rec.id, s))
            if interactive:
                io.pump_stdin(stream)
            io.copy_stream(stream)
        code = m.wait(rec.id).exit_code or 0
    finally:
        if rm:
            m.remove(rec.id, force=True, volumes=True)
    sys.exit(code)


def _each(names: tuple[str, ...], fn: Callable[[str], Any], *, echo: bool = True) -> None:
    failed = []
    for n in names:
        try:
            fn(n)
            if echo:
                click.echo(n)
        except Exception as exc:
            from stackd.errors import StackdError

            if not isinstance(exc, StackdError):
                raise
            click.echo(f"error: {exc}", err=True)
            failed.append(n)
    if failed:
        sys.exit(1)


@container.command("start", context_settings=CTX)
@click.option("-a", "--attach", is_flag=True, help="Attach to the output and wait.")
@click.argument("containers", nargs=-1, required=True)
def start_cmd(containers: tuple[str, ...], attach: bool) -> None:
    """Start stopped containers."""
    m = manager()
    if attach and len(containers) == 1:
        from stackd.cli import container_io as io

        rec = m.start(containers[0])
        for r in m.logs(rec.id, follow=True, tail=0):
            io.write_out(r.stream, r.data)
        sys.exit(m.wait(rec.id).exit_code or 0)
    _each(containers, m.start)


@container.command("stop", context_settings=CTX)
@click.option("-t", "--time", "timeout", type=int, default=None, help="Seconds to wait before killing.")
@click.option("-s", "--signal", default=None, help="Signal to send.")
@click.argument("containers", nargs=-1, required=True)
def stop_cmd(containers: tuple[str, ...], timeout: int | None, signal: str | None) -> None:
    """Stop running containers (stop signal, grace period, then SIGKILL)."""
    m = manager()
    _each(containers, lambda c: m.stop(c, timeout=timeout, signal=signal))


@container.command("restart", context_settings=CTX)
@click.option("-t", "--time", "timeout", type=int, default=None)
@click.argument("containers", nargs=-1, required=True)
def restart_cmd(containers: tuple[str, ...], timeout: int | None) -> None:
    """Restart containers."""
    m = manager()
    _each(containers, lambda c: m.restart(c, timeout=timeout))


@container.command("kill", context_settings=CTX)
@click.option("-s", "--signal", default="KILL", help="Signal to send (default KILL).")
@click.argument("containers", nargs=-1, required=True)
def kill_cmd(containers: tuple[str, ...], signal: str) -> None:
    """Send a signal to running containers."""
    m = manager()
    _each(containers, lambda c: m.kill(c, signal))


@container.command("rm", context_settings=CTX)
@click.option("-f", "--force", is_flag=True, help="Kill and remove running containers.")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes too.")
@click.argument("containers", nargs=-1, required=True)
def rm_cmd(containers: tuple[str, ...], force: bool, volumes: bool) -> None:
    """Remove containers."""
    m = manager()
    _each(containers, lambda c: m.remove(c, force=force, volumes=volumes))


@container.command("port", context_settings=CTX)
@click.argument("name")
@click.argument("port", required=False)
def port_cmd(name: str, port: str | None) -> None:
    """List the container's published ports (or those of one PORT[/PROTO])."""
    rows = manager().ports(name)
    if port:
        num, _, proto = port.partition("/")
        rows = [r for r in rows if str(r.container_port) == num and r.protocol == (proto or "tcp")]
        if not rows:
            raise click.ClickException(f"no public port '{port}' published for {name}")
        for r in rows:
            click.echo(f"{r.host_ip or '0.0.0.0'}:{r.host_port}")
        return
    for r in rows:
        click.echo(f"{r.container_port}/{r.protocol} -> {r.host_ip or '0.0.0.0'}:{r.host_port}")


@container.command("pause", context_settings=CTX)
@click.argument("containers", nargs=-1, required=True)
def pause_cmd(containers: tuple[str, ...]) -> None:
    """Pause all processes in containers."""
    m = manager()
    _each(containers, m.pause)


@container.command("unpause", context_settings=CTX)
@click.argument("containers", nargs=-1, required=True)
def unpause_cmd(containers: tuple[str, ...]) -> None:
    """Resume paused containers."""
    m = manager()
    _each(containers, m.unpause)


@container.command("rename", context_settings=CTX)
@click.argument("old")
@click.argument("new")
def rename_cmd(old: str, new: str) -> None:
    """Rename a container."""
    manager().rename(old, new)


@container.command("wait", context_settings=CTX)
@click.argument("containers", nargs=-1, required=True)
def wait_cmd(containers: tuple[str, ...]) -> None:
    """Block until containers stop; print their exit codes."""
    m = manager()
    for c in containers:
        click.echo(m.wait(c).exit_code or 0)


@container.command("inspect", context_settings=CTX)
@click.option("-f", "--format", "fmt", default=None, help="A Go-template-like {{.Path.To.Field}}.")
@click.argument("containers", nargs=-1, required=True)
def inspect_cmd(containers: tuple[str, ...], fmt: str | None) -> None:
    """Show low-level information on containers (JSON)."""
    m = manager()
    docs = [m.inspect(c) for c in containers]
    if fmt:
        from stackd.cli.container_ls import render_template

        for d in docs:
            click.echo(render_template(fmt, d))
        return
    click.echo(json.dumps(docs, indent=4))


@container.command("top", context_settings=CTX)
@click.argument("container_")
def top_cmd(container_: str) -> None:
    """Show the processes of a container."""
    from stackd.cli.container_ls import table

    cols, rows = manager().top(container_)
    click.echo(table(cols, rows))


@container.command("stats", context_settings=CTX)
@click.option("--no-stream", is_flag=True, help="Print one sample and exit (always, for now).")
@click.option("--format", "fmt", default=None, help="json for one JSON object per line.")
@click.argument("containers", nargs=-1)
def stats_cmd(containers: tuple[str, ...], no_stream: bool, fmt: str | None) -> None:
    """Show resource usage (CPU, memory, pids) from the containers' cgroups."""
    from stackd.cli.container_ls import human, table

    m = manager()
    names = containers or tuple(r.id for r in m.list(all=False))
    stats = [m.stats(c, interval=0.2) for c in names]
    if fmt == "json":
        for s in stats:
            click.echo(json.dumps(s))
        return
    rows = [[s["ID"][:12], s["Name"], f"{s['CPUPerc']:.2f}%", f"{human(s['MemUsage'])} / {human(s['MemLimit'])}",
             f"{s['MemPerc']:.2f}%", str(s["PIDs"])] for s in stats]
    click.echo(table(["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"], rows))


@container.command("logs", context_settings=CTX)
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("-n", "--tail", default="all", help="Number of lines from the end (default all).")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("--since", default=None, help="RFC3339 time or relative (10m, 1h30m).")
@click.argument("container_")
def logs_cmd(container_: str, follow: bool, tail: str, timestamps: bool, since: str | None) -> None:
    """Fetch the logs of a container."""
    from stackd.cli import container_io as io
    from stackd.cli.container_ls import since_ns

    n = None if tail == "all" else int(tail)
    for r in manager().logs(container_, follow=follow, tail=n, since_ns=since_ns(since) if since else 0):
        io.write_out(r.stream, (r.time.encode() + b" " if timestamps else b"") + r.data)


@container.command("exec", context_settings={**CTX, "ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@click.option("-e", "--env", multiple=True, help="Set environment variables.")
@click.option("-u", "--user", default=None, help="user[:group].")
@click.option("-w", "--workdir", default=None, help="Working directory.")
@click.option("-d", "--detach", is_flag=True, help="Run the command in the background.")
@click.argument("container_")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(container_: str, command: tuple[str, ...], interactive: bool, tty: bool, env: tuple[str, ...],
             user: str | None, workdir: str | None, detach: bool) -> None:
    """Run a command in a running container; exits with its exit code."""
    from stackd.cli import container_io as io

    m = manager()
    size = io.terminal_size() if tty else None
    stream = m.exec(container_, list(command), tty=tty, stdin=interactive, env=list(env) or None, cwd=workdir,
                    user=user, rows=size[0] if size else 0, cols=size[1] if size else 0)
    if detach:
        return
    rec = m.get(container_)
    with io.raw_terminal(tty and interactive):
        if tty:
            client = m._client(rec.id)
            io.on_winch(lambda r, c: client.resize(r, c, stream.channel))
        if interactive:
            io.pump_stdin(stream)
        code = io.copy_stream(stream)
    sys.exit(code or 0)


@container.command("attach", context_settings=CTX)
@click.option("--no-stdin", is_flag=True, help="Do not attach STDIN.")
@click.argument("container_")
def attach_cmd(container_: str, no_stdin: bool) -> None:
    """Attach to a running container's input and output."""
    from stackd.cli import container_io as io

    m = manager()
    rec = m.get(container_)
    stdin = rec.config.stdin_open and not no_stdin
    stream = m.attach(rec.id, stdin=stdin)
    with io.raw_terminal(rec.config.tty and stdin):
        if stdin:
            io.pump_stdin(stream, close=False)
        io.copy_stream(stream)
    sys.exit(m.wait(rec.id).exit_code or 0)


@container.command("ls", context_settings=CTX)
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default: running).")
@click.option("-q", "--quiet", is_flag=True, help="Only IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("--format", "fmt", default=None, help="json, or a {{.Field}} template.")
@click.option("-f", "--filter", "filters", multiple=True, help="name=, id=, status=, label=k[=v], ancestor=")
def ls_cmd(all_: bool, quiet: bool, no_trunc: bool, fmt: str | None, filters: tuple[str, ...]) -> None:
    """List containers."""
    from stackd.cli.container_ls import render

    render(manager().list(all=True), all_=all_, quiet=quiet, no_trunc=no_trunc, fmt=fmt, filters=filters)


container.add_command(ls_cmd, "ps")
container.add_command(ls_cmd, "list")
