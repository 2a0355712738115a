"""The SQLite state database (`<state_root>/stackd.db`, WAL) with versioned schema migrations.

Later issues add their tables by appending `Migration`s to `MIGRATIONS` (ids only grow; an
applied migration is never edited). Each process/thread gets its own connection; transactions
are short and `BEGIN IMMEDIATE` so writers queue instead of failing mid-way.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stackd.errors import EngineError


class StoreError(EngineError):
    """The state database could not be opened or migrated."""


@dataclass(frozen=True, slots=True)
class Migration:
    id: int
    name: str
    sql: str


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "images",
        """
        CREATE TABLE images (
            id TEXT PRIMARY KEY,            -- config digest (Docker's image ID)
            manifest_digest TEXT NOT NULL,
            manifest_media_type TEXT NOT NULL,
            index_digest TEXT,              -- the manifest list/index it was chosen from
            config_digest TEXT NOT NULL,
            layers TEXT NOT NULL,           -- JSON [{digest, media_type, size, diff_id}]
            chain_id TEXT,
            size INTEGER NOT NULL,
            created TEXT,
            platform TEXT NOT NULL,
            added_at REAL NOT NULL
        );
        CREATE TABLE image_names (
            name TEXT PRIMARY KEY,          -- normalized repository:tag
            image_id TEXT NOT NULL REFERENCES images(id),
            repo_digest TEXT                -- repository@digest it was pulled by
        );
        CREATE INDEX image_names_by_image ON image_names(image_id);
        """,
    ),
]


_WRITER_LOCKS: dict[str, threading.RLock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


def _writer_lock(path: Path) -> threading.RLock:
    """The lock this process's writers of database `path` take turns on."""
    key = str(path)
    with _WRITER_LOCKS_GUARD:
        lock = _WRITER_LOCKS.get(key)
        if lock is None:
            lock = _WRITER_LOCKS[key] = threading.RLock()
        return lock


class Store:
    """One state database; `conn()` is this thread's connection, `tx()` a write transaction."""

    def __init__(self, state_root: Path, migrations: list[Migration] | None = None) -> None:
        self.path = Path(state_root) / "stackd.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrations = sorted(migrations if migrations is not None else MIGRATIONS, key=lambda m: m.id)
        self._migrate()

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot open the state database: {exc}")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction (BEGIN IMMEDIATE … COMMIT, rolled back on error).

        Threads of one process take turns on a lock first: SQLite's own busy handler, which
        other processes still meet, waits by sleeping (up to 100 ms a round), a lock wakes the
        next writer at once."""
        conn = self.conn()
        with _writer_lock(self.path):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def schema_version(self) -> int:
        row = self.conn().execute("SELECT COALESCE(MAX(id), 0) FROM schema_migrations").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        conn = self.conn()
        try:  # the usual case, read-only: every migration is in (no write lock taken)
            done = {row[0] for row in conn.execute("SELECT id FROM schema_migrations")}
            if all(m.id in done for m in self._migrations):
                return
        except sqlite3.OperationalError:
            pass  # a new database
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        with self.tx() as c:
            done = {row[0] for row in c.execute("SELECT id FROM schema_migrations")}
            for m in self._migrations:
                if m.id in done:
                    continue
                for statement in m.sql.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute("INSERT INTO schema_migrations (id, name) VALUES (?, ?)", (m.id, m.name))
