"""Rendering for `stackd container ls/inspect/top/stats`: tables, JSON lines, filters, Docker's status text."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any

import click

from stackd.errors import UsageError


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n}B"


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} second{'s' if s != 1 else ''}"
    if s < 3600:
        m = s // 60
        return "About a minute" if m == 1 else f"{m} minutes"
    if s < 86400:
        h = s // 3600
        return "About an hour" if h == 1 else f"{h} hours"
    return f"{s // 86400} days"


def _ts(text: str) -> float:
    from datetime import datetime

    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def status_text(rec: Any, now: float | None = None) -> str:
    now = now or time.time()
    s = rec.status
    if s == "running" or s == "paused":
        health = (rec.health or {}).get("Status")
        text = f"Up {ago(now - _ts(rec.started_at))}"
        if health:
            text += f" ({'health: starting' if health == 'starting' else health})"
        return text + (" (Paused)" if s == "paused" else "")
    if s == "restarting":
        return f"Restarting ({rec.exit_code or 0}) {ago(now - _ts(rec.finished_at))} ago"
    if s == "exited":
        return f"Exited ({rec.exit_code or 0}) {ago(now - _ts(rec.finished_at))} ago"
    return str(s).capitalize()


def command_text(rec: Any) -> str:
    cfg = rec.config
    img = cfg.image_config
    entry = list(cfg.entrypoint) if cfg.entrypoint is not None else list(img.entrypoint or ())
    cmd = list(cfg.command) if cfg.command is not None else ([] if cfg.entrypoint is not None else list(img.cmd or ()))
    return " ".join(entry + cmd)


def matches(rec: Any, filters: Iterable[str]) -> bool:
    by: dict[str, list[str]] = {}
    for f in filters:
        k, eq, v = f.partition("=")
        if not eq:
            raise UsageError(f"bad filter {f!r}: expected key=value")
        by.setdefault(k, []).append(v)
    for k, vals in by.items():
        if k == "name":
            ok = any(re.search(v, rec.name) for v in vals)
        elif k == "id":
            ok = any(rec.id.startswith(v) for v in vals)
        elif k == "status":
            ok = rec.status in vals
        elif k == "label":
            ok = all(_label_ok(rec.labels, v) for v in vals)
        elif k == "ancestor":
            ok = any(v in (rec.image, rec.image_id, rec.image_id.removeprefix("sha256:")[:12]) for v in vals)
        elif k == "exited":
            ok = rec.status == "exited" and str(rec.exit_code) in vals
        else:
            raise UsageError(f"invalid filter {k!r}: use name, id, status, label, ancestor or exited")
        if not ok:
            return False
    return True


def _label_ok(labels: Any, v: str) -> bool:
    key, eq, want = v.partition("=")
    return key in labels and (not eq or labels[key] == want)


def table(cols: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)]
    lines = ["   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [cols, *rows]]
    return "\n".join(lines)


def row_json(rec: Any) -> dict[str, Any]:
    return {
        "ID": rec.id[:12], "Image": rec.image, "Command": command_text(rec),
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(rec.created_at)),
        "RunningFor": ago(time.time() - rec.created_at) + " ago", "Status": status_text(rec),
        "State": rec.status, "Names": rec.name, "Ports": "",
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(rec.labels.items())),
        "ExitCode": rec.exit_code, "Health": (rec.health or {}).get("status", ""),
    }


def render_template(fmt: str, doc: dict[str, Any]) -> str:
    """A small subset of Go templates: {{.A.B}} and {{json .A}}."""
    def sub(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        as_json = expr.startswith("json ")
        path = expr.removeprefix("json ").strip().lstrip(".")
        v: Any = doc
        for part in filter(None, path.split(".")):
            v = v.get(part) if isinstance(v, dict) else None
        if as_json:
            return json.dumps(v)
        return "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
    return re.sub(r"\{\{(.*?)\}\}", sub, fmt)


def render(recs: list[Any], *, all_: bool, quiet: bool, no_trunc: bool, fmt: str | None,
           filters: tuple[str, ...]) -> None:
    recs = [r for r in recs if (all_ or r.status in ("running", "paused", "restarting")) and matches(r, filters)]
    if quiet:
        for r in recs:
            click.echo(r.id if no_trunc else r.id[:12])
        return
    if fmt == "json":
        for r in recs:
            click.echo(json.dumps(row_json(r)))
        return
    if fmt:
        for r in recs:
            click.echo(render_template(fmt, row_json(r)))
        return
    rows = []
    for r in recs:
        cmd = command_text(r)
        if not no_trunc and len(cmd) > 20:
            cmd = cmd[:19] + "…"
        rows.append([r.id if no_trunc else r.id[:12], r.image, f'"{cmd}"',
                     ago(time.time() - r.created_at) + " ago", status_text(r), "", r.name])
    click.echo(table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows))


def since_ns(text: str) -> int:
    """--since: RFC3339, a Unix timestamp, or a duration before now (10m)."""
    from stackd.cli.container_opts import parse_duration

    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+(ns|us|ms|s|m|h)([\d.]+(ns|us|ms|s|m|h))*", text):
        return int((time.time() - parse_duration(text)) * 1e9)
    t = _ts(text)
    if not t:
        raise UsageError(f"invalid --since {text!r}: expected RFC3339, a Unix time or a duration like 10m")
    return int(t * 1e9)
