"""The `stackd` command line: global options, lazily loaded verbs, and error reporting.

Start-up time is a feature: this module imports click and nothing heavy. Each verb lives in its
own module under `stackd.cli` and is imported only when it is the one being run.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from stackd import __version__
from stackd.errors import StackdError

# verb → ("module:attribute", one-line help); a module is imported only when its verb runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "image": ("stackd.cli.image:image", "Manage images (pull, ls, rm, inspect, load, save, prune)."),
    "images": ("stackd.cli.image:images_cmd", "List images (alias of `image ls`)."),
    "login": ("stackd.cli.image:login", "Log in to a container registry."),
    "logout": ("stackd.cli.image:logout", "Log out from a container registry."),
    "container": ("stackd.cli.container:container", "Manage containers (run, ls, logs, exec, stop, rm, …)."),
    "config": ("stackd.cli.config:config", "Parse, resolve and render the stack file in canonical form."),
    "network": ("stackd.cli.network:network", "Manage networks (ls, create, rm, inspect, connect, prune, …)."),
    "volume": ("stackd.cli.volume:volume", "Manage volumes (ls, create, rm, inspect, prune)."),
    "up": ("stackd.cli.stack:up", "Create and start the stack's containers."),
    "down": ("stackd.cli.stack:down", "Stop and remove the stack's containers and networks."),
    "plan": ("stackd.cli.stack:plan", "Show what `up` would do, and why."),
    "graph": ("stackd.cli.stack:graph", "Show the services' dependency graph (text, dot, mermaid)."),
    "ps": ("stackd.cli.stack:ps", "List the stack's containers."),
    "logs": ("stackd.cli.stack_ops:logs", "Show the logs of the stack's containers."),
    "exec": ("stackd.cli.stack_ops:exec_", "Run a command in a running service container."),
    "run": ("stackd.cli.stack_ops:run", "Run a one-off command in a new service container."),
    "start": ("stackd.cli.stack_ops:start", "Start the stack's existing containers."),
    "stop": ("stackd.cli.stack_ops:stop", "Stop the stack's containers."),
    "restart": ("stackd.cli.stack_ops:restart", "Restart the stack's containers."),
    "kill": ("stackd.cli.stack_ops:kill", "Kill the stack's containers."),
    "rm": ("stackd.cli.stack_ops:rm", "Remove the stack's stopped containers."),
    "pause": ("stackd.cli.stack_ops:pause", "Pause the stack's containers."),
    "unpause": ("stackd.cli.stack_ops:unpause", "Unpause the stack's containers."),
    "pull": ("stackd.cli.stack_ops:pull", "Pull the services' images."),
    "top": ("stackd.cli.stack_ops:top", "Show the processes of the stack's containers."),
    "port": ("stackd.cli.stack_ops:port", "Print the public address of a service port."),
    "wait": ("stackd.cli.stack_ops:wait", "Wait for the services' containers to stop."),
    "ls": ("stackd.cli.stack_ls:ls", "List the stacks and their status."),
    "events": ("stackd.cli.stack_ls:events", "Stream the stack's container events."),
    "daemon": ("stackd.daemon.command:daemon", "Keep the engine warm behind a socket (commands run in forked workers)."),
}


@dataclass(frozen=True)
class GlobalOptions:
    """The options given before the verb, as `docker compose` takes them."""

    files: tuple[str, ...] = ()
    project_name: str | None = None
    project_directory: str | None = None
    env_files: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    parallel: int | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attr = self.lazy[cmd_name][0].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the verbs from the static table, so `--help` imports none of them."""
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        rows += [
            (name, cmd.get_short_help_str())
            for name, cmd in sorted(self.commands.items())
            if name not in self.lazy and not cmd.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--file", "files", multiple=True, metavar="FILE", help="Stack file(s) (- for stdin).")
@click.option("-p", "--project-name", help="Project name.")
@click.option("--project-directory", metavar="DIR", help="Project directory (default: the first file's).")
@click.option("--env-file", "env_files", multiple=True, metavar="FILE", help="Environment file(s).")
@click.option("--profile", "profiles", multiple=True, metavar="PROFILE", help="Enable a profile.")
@click.option("--parallel", type=int, default=None, help="Maximum parallel actions.")
@click.version_option(__version__, "-v", "--version", prog_name="stackd")
@click.pass_context
def cli(
    ctx: click.Context,
    files: tuple[str, ...],
    project_name: str | None,
    project_directory: str | None,
    env_files: tuple[str, ...],
    profiles: tuple[str, ...],
    parallel: int | None,
) -> None:
    """stackd: declarative, Compose-compatible stacks on stackd's own container engine."""
    ctx.obj = GlobalOptions(
        files=files,
        project_name=project_name,
        project_directory=project_directory,
        env_files=env_files,
        profiles=profiles,
        parallel=parallel,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: user errors print one paragraph and exit 1; bugs print a traceback (70)."""
    try:
        result = cli.main(args=argv, prog_name="stackd", standalone_mode=False)
    except StackdError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception:
        import traceback

        traceback.print_exc()
        click.echo("stackd: internal error (a bug): please report the traceback above", err=True)
        return 70
    # In non-standalone mode click returns ctx.exit()'s code, or the command's own return value.
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
