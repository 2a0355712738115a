"""Container records in the state database: the schema migration, the record type, queries.

Every transition is one short `BEGIN IMMEDIATE` transaction that checks the status it leaves
(compare-and-set), so concurrent engines never record an impossible path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackd.engine import containers_state as st
from stackd.engine.store import MIGRATIONS, Migration, Store
from stackd.errors import ConflictError, ContainerStateError, NotFoundError

if TYPE_CHECKING:
    from stackd.engine.container_config import ContainerConfig

MIGRATION = Migration(
    100,
    "containers",
    """
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image TEXT NOT NULL,            -- the reference as given
        image_id TEXT NOT NULL,
        config TEXT NOT NULL,           -- ContainerConfig as JSON
        status TEXT NOT NULL,
        runtime TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at TEXT NOT NULL DEFAULT '',
        finished_at TEXT NOT NULL DEFAULT '',
        exit_code INTEGER,
        oom_killed INTEGER NOT NULL DEFAULT 0,
        pid INTEGER NOT NULL DEFAULT 0,
        restart_count INTEGER NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT '',
        health TEXT,                    -- JSON, the shim's last health report
        labels TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX containers_by_image ON containers(image_id)
    """,
)
if all(m.id != MIGRATION.id for m in MIGRATIONS):
    MIGRATIONS.append(MIGRATION)


@dataclass(frozen=True)
class ContainerRecord:
    """One container as recorded."""

    id: str
    name: str
    image: str
    image_id: str
    config: ContainerConfig
    status: str
    runtime: str
    created_at: float = field(default_factory=time.time)
    started_at: str = ""
    finished_at: str = ""
    exit_code: int | None = None
    oom_killed: bool = False
    pid: int = 0
    restart_count: int = 0
    error: str = ""
    health: dict[str, Any] | None = None

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def labels(self) -> Mapping[str, str]:
        return self.config.labels


# --- ContainerConfig <-> JSON ------------------------------------------------------------------

def config_to_json(cfg: ContainerConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


_CONVERTERS: dict[Any, Callable[[Any], Any]] = {}


def _identity(v: Any) -> Any:
    return v


def _converter(tp: Any) -> Callable[[Any], Any]:
    """JSON value → value of type `tp` (dataclasses rebuilt, lists to tuples), compiled once per type."""
    conv = _CONVERTERS.get(tp)
    if conv is None:
        conv = _CONVERTERS[tp] = _compile(tp)
    return conv


def _compile(tp: Any) -> Callable[[Any], Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _converter(args[0]) if len(args) == 1 else _identity
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = [(f.name, _converter(hints[f.name])) for f in dataclasses.fields(tp)]

        def build(v: Any) -> Any:
            return None if v is None else tp(**{n: c(v[n]) for n, c in fields if n in v})
        return build
    if origin is tuple:
        targs = typing.get_args(tp)
        item = _converter(targs[0]) if targs else _identity
        if item is _identity:
            return lambda v: None if v is None else tuple(v)
        return lambda v: None if v is None else tuple(item(x) for x in v)
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping):
        return lambda v: None if v is None else dict(v)
    return _identity


def warm_up() -> None:
    """Compile the ContainerConfig decoder now (the daemon calls this once, so its workers do not
    each resolve the type hints on their first record)."""
    from stackd.engine.container_config import ContainerConfig

    _converter(ContainerConfig)


def config_from_json(text: str) -> ContainerConfig:
    from stackd.engine.container_config import ContainerConfig

    cfg = _converter(ContainerConfig)(json.loads(text))
    assert isinstance(cfg, ContainerConfig)
    return cfg


# --- queries ------------------------------------------------------------------------------------

class ContainerStore:
    """Container rows of one state database."""

    def __init__(self, state_root: Any) -> None:
        self.db = Store(state_root)  # a Store made after this module added its migration

    def _rec(self, row: Any) -> ContainerRecord:
        return ContainerRecord(
            id=row["id"], name=row["name"], image=row["image"], image_id=row["image_id"],
            config=config_from_json(row["config"]), status=row["status"], runtime=row["runtime"],
            created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
            exit_code=row["exit_code"], oom_killed=bool(row["oom_killed"]), pid=row["pid"],
            restart_count=row["restart_count"], error=row["error"],
            health=json.loads(row["health"]) if row["health"] else None,
        )

    def insert(self, rec: ContainerRecord) -> ContainerRecord:
        try:
            with self.db.tx() as c:
                if c.execute("SELECT 1 FROM containers WHERE name=?", (rec.name,)).fetchone():
                    raise ConflictError(
                        f"the container name \"/{rec.name}\" is already in use; remove or rename that container first"
                    )
                c.execute(
                    "INSERT INTO containers (id, name, image, image_id, config, status, runtime, created_at, labels)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    (rec.id, rec.name, rec.image, rec.image_id, config_to_json(rec.config), rec.status,
                     rec.runtime, rec.created_at, json.dumps(dict(rec.config.labels))),
                )
        except Exception as exc:
            if type(exc).__name__ == "IntegrityError":
                raise ConflictError(f"the container name \"/{rec.name}\" is already in use") from None
            raise
        return rec

    def get(self, cid: str) -> ContainerRecord:
        row = self.db.conn().execute("SELECT * FROM containers WHERE id=?", (cid,)).fetchone()
        if row is None:
            raise NotFoundError(f"no such container: {cid[:12]}")
        return self._rec(row)

    def resolve(self, text: str) -> ContainerRecord:
        """By full ID, name (with or without a leading /), or unique ID prefix."""
        conn = self.db.conn()
        name = text.removeprefix("/")
        row = conn.execute("SELECT * FROM containers WHERE id=? OR name=?", (text, name)).fetchone()
        if row is not None and row["status"] != st.CREATING:
            return self._rec(row)
        if text and all(ch in "0123456789abcdef" for ch in text):
            rows = conn.execute(
                "SELECT * FROM containers WHERE id LIKE ? AND status != ?", (f"{text}%", st.CREATING)
            ).fetchall()
            if len(rows) == 1:
                return self._rec(rows[0])
            if len(rows) > 1:
                raise ConflictError(f"multiple containers match ID prefix {text!r}; give more characters")
        raise NotFoundError(f"no such container: {text}")

    def list(self, *, internal: bool = False) -> list[ContainerRecord]:
        rows = self.db.conn().execute("SELECT * FROM containers ORDER BY created_at DESC").fetchall()
        recs = [self._rec(r) for r in rows]
        return recs if internal else [r for r in recs if r.status not in st.INTERNAL]

    def names(self) -> set[str]:
        return {r[0] for r in self.db.conn().execute("SELECT name FROM containers")}

    def ids(self) -> set[str]:
        return {r[0] for r in self.db.conn().execute("SELECT id FROM containers")}

    def transition(self, cid: str, new: str, *, verb: str = "", **values: Any) -> ContainerRecord:
        """Set `status=new` and other columns atomically if the move from the current is valid."""
        cols = {"status": new, **values}
        if "health" in cols and cols["health"] is not None:
            cols["health"] = json.dumps(cols["health"])
        with self.db.tx() as c:
            row = c.execute("SELECT status, name FROM containers WHERE id=?", (cid,)).fetchone()
            if row is None:
                raise NotFoundError(f"no such container: {cid[:12]}")
            if not st.can_transition(row["status"], new):
                raise ContainerStateError(row["status"], verb or f"become {new}", row["name"])
            c.execute(
                f"UPDATE containers SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?",
                (*cols.values(), cid),
            )
        return self.get(cid)

    def update(self, cid: str, **values: Any) -> None:
        """Set columns other than status (health, restart count, pid)."""
        if "health" in values and values["health"] is not None:
            values["health"] = json.dumps(values["health"])
        with self.db.tx() as c:
            c.execute(f"UPDATE containers SET {', '.join(f'{k}=?' for k in values)} WHERE id=?",
                      (*values.values(), cid))

    def rename(self, cid: str, new_name: str) -> None:
        with self.db.tx() as c:
            if c.execute("SELECT 1 FROM containers WHERE name=? AND id!=?", (new_name, cid)).fetchone():
                raise ConflictError(f"the container name \"/{new_name}\" is already in use")
            c.execute("UPDATE containers SET name=? WHERE id=?", (new_name, cid))

    def delete(self, cid: str) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM containers WHERE id=?", (cid,))

    def image_ids(self) -> set[str]:
        return {r[0] for r in self.db.conn().execute("SELECT DISTINCT image_id FROM containers")}


# --- a cheap read-only view (the no-op `up` shortcut) ------------------------------------------

@dataclass(frozen=True, slots=True)
class QuickContainer:
    """A container row without its config, and whether its shim says it runs right now."""

    id: str
    name: str
    status: str
    exit_code: int | None
    labels: Mapping[str, str]
    live: bool  # status "running" confirmed by the shim's state file and a living shim process


def quick_view(state_root: Path, run_root: Path, refs: Iterable[str] = (), *, stack: str | None = None) -> tuple[
        list[QuickContainer], dict[str, str]] | None:
    """Every container (of `stack` if given; also those being created or removed) and the image IDs of `refs` that are in the store,
    read from one read-only SQLite connection and the shims' state files: no migration, no
    ContainerConfig decoding, no shim socket. None when there is no database yet or it cannot
    be read (callers then take the slow path)."""
    import sqlite3

    db = Path(state_root) / "stackd.db"
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        rows = conn.execute("SELECT id, name, status, exit_code, labels FROM containers").fetchall()
        images: dict[str, str] = {}
        for ref in refs:
            row = conn.execute("SELECT image_id FROM image_names WHERE name=?", (ref,)).fetchone()
            if row:
                images[ref] = str(row[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    out = []
    shims = os.path.join(run_root, "shims")
    for cid, name, status, code, text in rows:
        labels = json.loads(text or "{}")
        if stack is not None and labels.get("io.stackd.stack") != stack:
            continue
        live = status == st.RUNNING and _shim_running(os.path.join(shims, cid))
        out.append(QuickContainer(cid, name, status, code, labels, live))
    return out, images


def _shim_running(d: str) -> bool:
    """The shim's state.json says running and its process (with this directory in its argv) lives."""
    try:
        with open(os.path.join(d, "state.json"), "rb") as f:
            state = json.loads(f.read())
        with open(os.path.join(d, "shim.pid"), "rb") as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            alive = os.fsencode(d) in f.read()
    except (OSError, ValueError):
        return False
    return alive and isinstance(state, dict) and state.get("status") == "running"
