"""`stackd run SERVICE [CMD…]`: a one-off container of a service (labelled oneoff), in the foreground."""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

import click


def run_oneoff(obj: Any, service: str, command: tuple[str, ...], *, detach: bool, rm: bool,
               env: tuple[str, ...], no_deps: bool, no_tty: bool, name: str | None, entrypoint: str | None,
               user: str | None, workdir: str | None) -> int:
    """Start the service's dependencies (unless no_deps), then create, start and attach; the exit code."""
    from stackd.cli import container_io as io
    from stackd.cli.stack import backend, parallel_of, project_of, reporter
    from stackd.planner.desired import ContainerSpec, desired_state
    from stackd.planner.graph import closure
    from stackd.planner.observed import LABEL_NUMBER, LABEL_ONEOFF
    from stackd.stack import usecases
    from stackd.stack.engine_adapter import RealStackEngine

    project = project_of(obj, (service,))
    if service not in project.tree["services"]:
        from stackd.errors import SpecError

        raise SpecError(f"no such service: {service}")
    b = backend()
    deps = {s: list(svc.get("depends_on") or {}) for s, svc in project.tree["services"].items()}
    needed = tuple(sorted(closure(deps, deps[service]) - {service}))
    if needed and not no_deps:
        usecases.up(project, b, usecases.UpOptions(services=needed, parallel=parallel_of(obj)), reporter())
    usecases.pull_images(b, [project.tree["services"][service].get("image") or ""], policy="missing")
    desired = desired_state(project, usecases.digests(b, project))
    tmpl = desired.services[service].containers[0] if desired.services[service].containers else None
    if tmpl is None:
        desired = desired_state(project, usecases.digests(b, project), {service: 1})
        tmpl = desired.services[service].containers[0]
    config = dict(tmpl.config)
    config.pop("ports", None)  # compose run does not publish the service's ports (--service-ports does)
    config.pop("container_name", None)
    config.pop("restart", None)
    if command:
        config["command"] = list(command)
    if entrypoint is not None:
        config["entrypoint"] = [entrypoint] if entrypoint else []
    if env:
        environment = dict(config.get("environment") or {})
        for e in env:
            k, sep, v = e.partition("=")
            environment[k] = v if sep else os.environ.get(k)
        config["environment"] = environment
    if user:
        config["user"] = user
    if workdir:
        config["working_dir"] = workdir
    tty = not no_tty and not detach and sys.stdin.isatty() and sys.stdout.isatty()
    config["tty"] = tty
    config["stdin_open"] = tty
    cname = name or f"{project.name}-{service}-run-{secrets.token_hex(6)}"
    labels = {**tmpl.labels, LABEL_ONEOFF: "True", LABEL_NUMBER: "1"}
    spec = ContainerSpec(cname, service, 1, tmpl.image, labels, config, tmpl.networks, tmpl.volumes)
    adapter = RealStackEngine(b)
    cid = adapter.create_sync(spec)
    m = b.containers
    size = io.terminal_size() if tty else None
    try:
        m.start(cid, console_size=size, on_attach=not detach)
        if detach:
            click.echo(cname)
            return 0
        client = m._client(cid)
        with io.raw_terminal(tty):
            stream = client.attach(stdin=tty)
            if tty:
                io.on_winch(lambda r, c: client.resize(r, c))
                io.pump_stdin(stream)
            else:
                io.forward_signals(lambda s: m.kill(cid, s))
            io.copy_stream(stream)
        return int(m.wait(cid).exit_code or 0)
    finally:
        if rm and not detach:
            adapter.remove_sync(cid, force=True, volumes=True)
