"""`stackd image …` (pull, ls, rm, inspect, load, save, prune), `stackd images`, `login`, `logout`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from stackd.cli.roots import state_root


def _images() -> Any:
    from stackd.engine.images import ImageStore

    return ImageStore(state_root())


def _in_use() -> set[str]:
    """Image IDs used by containers (empty until the container store exists)."""
    try:
        from stackd.engine.containers import images_in_use  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return set()
    return set(images_in_use(state_root()))


def _ago(ts: str | float | None) -> str:
    if ts is None or ts == "":
        return "N/A"
    if isinstance(ts, str):
        from datetime import datetime

        try:
            ts = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return str(ts)
    secs = max(0, time.time() - ts)
    for unit, n in (("years", 365 * 86400), ("months", 30 * 86400), ("weeks", 7 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if secs >= 2 * n:
            return f"{int(secs // n)} {unit} ago"
    return "Less than a minute ago" if secs < 60 else "About a minute ago"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{n}B"
        n /= 1000  # type: ignore[assignment]
    return f"{n}B"


_PLAIN = {
    "waiting": "Waiting", "downloading": "Downloading", "verifying": "Verifying Checksum",
    "downloaded": "Download complete", "exists": "Already exists", "extracting": "Extracting",
    "extracted": "Pull complete",
}


def _is_layer(ident: str) -> bool:
    return len(ident) == 12 and all(c in "0123456789abcdef" for c in ident)


class _Plain:
    """One line per layer step, like `docker pull` when piped."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last: dict[str, str] = {}
        self.unchanged = True

    def event(self, ev: Any) -> None:
        if ev.status in ("downloading", "downloaded"):
            self.unchanged = False
        if self.quiet or not _is_layer(ev.id) or self.last.get(ev.id) == ev.status:
            return
        self.last[ev.id] = ev.status
        click.echo(f"{ev.id}: {_PLAIN[ev.status]}")

    def close(self) -> None:
        pass


class _Bars(_Plain):
    """Per-layer rich progress bars (bytes, rate, verifying, extracting) on a terminal."""

    def __init__(self) -> None:
        super().__init__(quiet=False)
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=30), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("{task.fields[step]}"),
        )
        self.tasks: dict[str, Any] = {}
        self.bars.start()

    def event(self, ev: Any) -> None:
        if ev.status in ("downloading", "downloaded"):
            self.unchanged = False
        if not _is_layer(ev.id):
            return
        task = self.tasks.get(ev.id)
        if task is None:
            task = self.tasks[ev.id] = self.bars.add_task(ev.id, total=ev.total or None, step="")
        self.bars.update(task, completed=ev.current, total=ev.total or None, step=_PLAIN[ev.status])

    def close(self) -> None:
        self.bars.stop()


def renderer(*, quiet: bool, tty: bool) -> _Plain:
    return _Bars() if tty and not quiet else _Plain(quiet)


@click.group("image", context_settings={"help_option_names": ["-h", "--help"]})
def image() -> None:
    """Manage images: pull, list, remove, inspect, load, save, prune."""


@image.command("pull")
@click.option("--platform", default=None, help="os/arch[/variant] (default linux/amd64).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image name.")
@click.argument("name")
def pull_cmd(name: str, platform: str | None, quiet: bool) -> None:
    """Pull an image from a registry."""
    import trio

    from stackd.engine import reference
    from stackd.engine.auth import AuthConfig
    from stackd.engine.pull import Puller
    from stackd.engine.registry_config import load

    ref = reference.parse(name)
    render = renderer(quiet=quiet, tty=sys.stdout.isatty())
    if not quiet:
        click.echo(f"{ref.tag or ref.digest}: Pulling from {ref.familiar_name()}" if ref.tag else f"Pulling {ref.familiar()}")
    puller = Puller(state_root(), registries=load(), auth=AuthConfig.default(), progress=render.event)
    try:
        rec = trio.run(puller.pull, name, platform)
    finally:
        render.close()
    if not quiet:
        click.echo(f"Digest: {rec.index_digest or rec.manifest_digest}")
        click.echo(f"Status: Image is up to date for {ref.familiar()}" if render.unchanged else f"Status: Downloaded newer image for {ref.familiar()}")
    click.echo(str(ref))


def _ls(fmt: str | None, quiet: bool, all_: bool) -> None:
    from stackd.engine import reference

    recs = _images().list()
    rows: list[tuple[str, str, Any]] = []
    for rec in recs:
        if not rec.names:
            rows.append(("<none>", "<none>", rec))
        for n in rec.names:
            r = reference.parse(n)
            rows.append((r.familiar_name(), r.tag or "<none>", rec))
    if quiet:
        seen: list[str] = []
        for *_, rec in rows:
            if rec.short_id not in seen:
                seen.append(rec.short_id)
        click.echo("\n".join(seen) if seen else "", nl=bool(seen))
        return
    if fmt == "json":
        for repo, tag, rec in rows:
            click.echo(json.dumps({"Repository": repo, "Tag": tag, "ID": rec.short_id, "Digest": rec.manifest_digest,
                                   "CreatedAt": rec.created, "Size": _size(rec.size), "Platform": rec.platform}))
        return
    if fmt:
        raise click.UsageError("--format supports only 'json'")
    table = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    table += [(repo, tag, rec.short_id, _ago(rec.created), _size(rec.size)) for repo, tag, rec in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        click.echo("   ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "   " + row[4])


@image.command("ls")
@click.option("--format", "fmt", default=None, help="Output format: json.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all images (including untagged).")
def ls_cmd(fmt: str | None, quiet: bool, all_: bool) -> None:
    """List images."""
    _ls(fmt, quiet, all_)


@click.command("images")
@click.option("--format", "fmt", default=None, help="Output format: json.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all images (including untagged).")
def images_cmd(fmt: str | None, quiet: bool, all_: bool) -> None:
    """List images (alias of `stackd image ls`)."""
    _ls(fmt, quiet, all_)


@image.command("rm")
@click.option("-f", "--force", is_flag=True, help="Remove an image with several names.")
@click.argument("names", nargs=-1, required=True)
def rm_cmd(names: tuple[str, ...], force: bool) -> None:
    """Remove one or more images."""
    store = _images()
    used = _in_use()
    for name in names:
        for line in store.remove(name, force=force, in_use=used):
            click.echo(line)


@image.command("inspect")
@click.argument("names", nargs=-1, required=True)
def inspect_cmd(names: tuple[str, ...]) -> None:
    """Show image details as JSON."""
    store = _images()
    out = []
    for name in names:
        rec = store.resolve(name)
        data = rec.to_json()
        cfg = json.loads(store.content.read(rec.config_digest))
        data["Config"] = cfg.get("config") or {}
        data["Architecture"], data["Os"] = cfg.get("architecture"), cfg.get("os")
        out.append(data)
    click.echo(json.dumps(out, indent=4))


@image.command("load")
@click.option("-i", "--input", "path", required=True, type=click.Path(exists=True, dir_okay=True), help="Archive or OCI layout dir.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output.")
def load_cmd(path: str, quiet: bool) -> None:
    """Load images from a docker-archive, oci-archive or OCI layout directory."""
    from stackd.engine import archive, reference

    for rec, names in archive.load(state_root(), Path(path)):
        if quiet:
            continue
        for n in names:
            click.echo(f"Loaded image: {reference.familiar(n)}")
        if not names:
            click.echo(f"Loaded image ID: {rec.id}")


@image.command("save")
@click.option("-o", "--output", "path", required=True, type=click.Path(dir_okay=False), help="Archive to write.")
@click.argument("names", nargs=-1, required=True)
def save_cmd(path: str, names: tuple[str, ...]) -> None:
    """Save images to a docker-archive (tar), as `docker save` does."""
    from stackd.engine import archive

    archive.save(state_root(), list(names), Path(path))


@image.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
def prune_cmd(all_: bool, force: bool) -> None:
    """Remove unused images, blobs and snapshots."""
    if not force:
        what = "all images without at least one container associated to them" if all_ else "all dangling images"
        click.confirm(f"WARNING! This will remove {what}.\nAre you sure you want to continue?", abort=True)
    snap: Any = None
    try:
        from stackd.engine.snapshots import Snapshotter  # type: ignore[import-not-found,unused-ignore]

        snap = Snapshotter(state_root() / "snapshots")
    except ImportError:
        pass
    removed, freed = _images().prune(all=all_, in_use=_in_use(), snapshotter=snap)
    if removed:
        click.echo("Deleted Images:")
        for line in removed:
            click.echo(line)
        click.echo()
    click.echo(f"Total reclaimed space: {_size(freed)}")


@click.command("login")
@click.option("-u", "--username", default=None)
@click.option("-p", "--password", default=None, help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.argument("server", required=False, default="docker.io")
def login(server: str, username: str | None, password: str | None, password_stdin: bool) -> None:
    """Log in to a registry (credentials are checked, then stored 0600)."""
    import trio

    from stackd.engine.auth import AuthConfig, Credentials
    from stackd.engine.pull import check_login
    from stackd.engine.registry_config import load

    if password_stdin:
        if password is not None:
            raise click.UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    if username is None:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    host = server.removeprefix("https://").removeprefix("http://").split("/")[0]
    creds = Credentials(username, password)
    trio.run(check_login, host, creds, load())
    AuthConfig.default().store(host, creds)
    click.echo("Login Succeeded")


@click.command("logout")
@click.argument("server", required=False, default="docker.io")
def logout(server: str) -> None:
    """Log out from a registry (removes stackd's stored credentials)."""
    from stackd.engine.auth import AuthConfig

    host = server.removeprefix("https://").removeprefix("http://").split("/")[0]
    if AuthConfig.default().remove(host):
        click.echo(f"Removing login credentials for {host}")
    else:
        click.echo(f"Not logged in to {host}")
