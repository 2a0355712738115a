"""Logs of a stack with coloured `name  | ` prefixes, and the foreground `up` (Ctrl-C stops the stack)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import click

COLOURS = ("cyan", "yellow", "green", "magenta", "blue", "bright_cyan", "bright_yellow", "bright_green",
           "bright_magenta", "bright_blue")


class Printer:
    """Writes whole lines with a per-container prefix; one lock so lines never interleave."""

    def __init__(self, names: Iterable[str], *, timestamps: bool = False, prefix: bool = True) -> None:
        names = sorted(names)
        width = max((len(n) for n in names), default=0)
        self.tty = sys.stdout.isatty()
        self.prefix = {n: f"{n:<{width}} | " for n in names} if prefix else dict.fromkeys(names, "")
        self.colour = {n: COLOURS[i % len(COLOURS)] for i, n in enumerate(names)}
        self.timestamps = timestamps
        self.lock = threading.Lock()

    def line(self, name: str, data: bytes, ts: str = "") -> None:
        text = data.decode("utf-8", "replace").rstrip("\n")
        pre = self.prefix.get(name, f"{name} | ")
        if self.tty and pre:
            pre = click.style(pre, fg=self.colour.get(name, "white"))
        stamp = f"{ts} " if self.timestamps and ts else ""
        with self.lock:
            for part in text.split("\n"):
                click.echo(f"{pre}{stamp}{part}")


def stream(b: Any, recs: list[Any], printer: Printer, *, follow: bool, tail: int | None,
           stop: threading.Event, since_ns: int = 0) -> list[threading.Thread]:
    """One thread per container copying its log records to `printer` (returns the threads)."""
    mgr = b.containers

    def one(rec: Any) -> None:
        try:
            for r in mgr.logs(rec.id, follow=follow, tail=tail, stop=stop.is_set, since_ns=since_ns):
                printer.line(rec.name, r.data, r.time)
        except Exception as exc:  # a removed container ends its stream
            if not stop.is_set():
                printer.line(rec.name, f"(log stream ended: {exc})".encode())

    threads = [threading.Thread(target=one, args=(r,), daemon=True) for r in recs]
    for t in threads:
        t.start()
    return threads


def foreground(project: Any, b: Any, services: Iterable[str], *, abort: bool, exit_code_from: str | None,
               timeout: float | None, report: Any, since_ns: int = 0) -> int:
    """Attach to the services' logs (from `since_ns`) until every container exits; Ctrl-C stops
    the stack, a second Ctrl-C kills it."""
    from stackd.stack.backend import records
    from stackd.stack.engine_adapter import RealStackEngine
    from stackd.stack.usecases import parallel_each

    wanted = set(services)
    recs = [r for r in records(b, project.name) if r.config.labels.get("io.stackd.service") in wanted
            and r.config.labels.get("io.stackd.oneoff") != "True"]
    if not recs:
        return 0
    adapter = RealStackEngine(b)
    stop = threading.Event()
    printer = Printer([r.name for r in recs])
    threads = stream(b, recs, printer, follow=True, tail=None, stop=stop, since_ns=since_ns)
    interrupts = [0]

    def on_sigint(_sig: int, _frame: Any) -> None:
        interrupts[0] += 1
        if interrupts[0] == 1:
            click.echo("Gracefully stopping... (press Ctrl+C again to force)", err=True)
        else:
            for r in recs:
                try:
                    b.containers.kill(r.id)
                except Exception:
                    pass

    old = signal.signal(signal.SIGINT, on_sigint)
    exited: dict[str, int] = {}
    try:
        while True:
            alive = [t for t in threads if t.is_alive()]
            if interrupts[0] or not alive:
                break
            if abort:
                for r in recs:
                    cur = b.containers.store.get(r.id)
                    if cur.status == "exited":
                        exited[r.config.labels.get("io.stackd.service", "")] = cur.exit_code or 0
                if exited:
                    click.echo("Aborting on container exit...", err=True)
                    break
            time.sleep(0.1)

        def stop_one(r: Any) -> None:
            adapter.stop_sync(r.id, timeout)
            report("Container", r.name, "Stopped")

        if interrupts[0] or abort:
            parallel_each(stop_one, recs)
        stop.set()
        for t in threads:
            t.join(timeout=2)
    finally:
        signal.signal(signal.SIGINT, old)
    if exit_code_from:
        mine = [b.containers.get(r.id) for r in recs if r.config.labels.get("io.stackd.service") == exit_code_from]
        return int(mine[0].exit_code or 0) if mine else 0
    return 130 if interrupts[0] else 0
