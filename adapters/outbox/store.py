"""The SQLite side of the outbox: the schema, the rows, the operations the writer thread carries
out (`Append`, `Fetch`, `Delete`, `SetAside`, `Close`) and `Store`, which runs them on one
connection. Every method of `Store` runs on the writer thread (or before it starts)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OutboxUnavailable, OutboxWriteFailed

__all__ = [
    "Append",
    "Close",
    "Delete",
    "Fetch",
    "NewRow",
    "Op",
    "OpOutcome",
    "Row",
    "SetAside",
    "Stats",
    "Store",
]

_SCHEMA_VERSION = 1
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('events', 'state', 'results')),
    key TEXT,
    value BLOB NOT NULL,
    ce_type TEXT,
    ce_id TEXT,
    content_type TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_state_key ON outbox (key) WHERE kind = 'state';
CREATE TABLE IF NOT EXISTS undeliverable (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT,
    value BLOB NOT NULL,
    ce_type TEXT,
    ce_id TEXT,
    content_type TEXT NOT NULL,
    created REAL NOT NULL,
    set_aside REAL NOT NULL,
    error TEXT NOT NULL,
    dead_lettered INTEGER NOT NULL
);
PRAGMA user_version = {_SCHEMA_VERSION};
COMMIT;
"""
_COLUMNS = ("seq", "kind", "key", "value", "ce_type", "ce_id", "content_type", "created")
_KEPT_COLUMNS = (*_COLUMNS, "set_aside", "error", "dead_lettered")
# The undeliverable table is an addition older builds simply ignore, so the version stays 1 and
# a rollback can still open the file.
_OUR_TABLES = frozenset({"outbox", "sqlite_sequence", "undeliverable"})


@dataclass(frozen=True, slots=True)
class NewRow:
    kind: str
    key: str | None
    value: bytes
    ce_type: str | None
    ce_id: str | None
    content_type: str
    created: float


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    kind: str
    key: str | None
    value: bytes
    ce_type: str | None
    ce_id: str | None
    content_type: str
    created: float


@dataclass(slots=True)
class Op:
    future: asyncio.Future[Any]


@dataclass(slots=True)
class Append(Op):
    rows: list[NewRow] = field(default_factory=list)


@dataclass(slots=True)
class Fetch(Op):
    limit: int = 0


@dataclass(slots=True)
class Delete(Op):
    upto: int = 0


@dataclass(slots=True)
class SetAside(Op):
    seq: int = 0
    error: str = ""
    dead_lettered: bool = False
    at: float = 0.0


@dataclass(slots=True)
class Close(Op):
    pass


@dataclass(frozen=True, slots=True)
class Stats:
    depth: int
    oldest: float | None


# An operation's outcome, handed back to the event loop: (operation, value, error).
OpOutcome = tuple[Op, Any, BaseException | None]


class Store:
    """The SQLite side. Every method runs on the writer thread (or before it starts)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.depth, self.oldest = self._measure()
        (kept,) = conn.execute("SELECT count(*) FROM undeliverable").fetchone()
        self.kept = int(kept)

    @classmethod
    def open(cls, path: Path, synchronous: str) -> Store:
        _check_path(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0.2)
        except sqlite3.Error as exc:
            raise OutboxUnavailable(f"cannot open the outbox database {path}: {exc}") from None
        try:
            # Exclusive: one outbox per file (see the module docstring). Set before the first read.
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxUnavailable(f"the outbox database {path} cannot use WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise OutboxUnavailable(
                    f"{path} holds outbox schema version {version}; this build reads {_SCHEMA_VERSION}"
                )
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and tables - _OUR_TABLES:
                raise OutboxUnavailable(
                    f"{path} is a SQLite database of something else (tables {sorted(tables)}): "
                    "give the outbox its own file"
                )
            conn.executescript(_SCHEMA)
            columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(outbox)"))
            if columns != _COLUMNS:
                raise OutboxUnavailable(f"{path}: table outbox has columns {columns}, expected {_COLUMNS}")
            kept = tuple(row[1] for row in conn.execute("PRAGMA table_info(undeliverable)"))
            if kept != _KEPT_COLUMNS:
                raise OutboxUnavailable(f"{path}: table undeliverable has columns {kept}, expected {_KEPT_COLUMNS}")
            return cls(conn, path)
        except OutboxUnavailable:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise OutboxUnavailable(_explain(path, exc)) from None

    def close(self) -> None:
        self._conn.close()

    def _measure(self) -> tuple[int, float | None]:
        (depth,) = self._conn.execute("SELECT count(*) FROM outbox").fetchone()
        return int(depth), self._oldest()

    def _oldest(self) -> float | None:
        row = self._conn.execute("SELECT created FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def stats(self) -> Stats:
        return Stats(self.depth, self.oldest)

    def commit_appends(self, ops: list[Append]) -> list[OpOutcome]:
        """All `ops` in one transaction (one fsync); each op is all-or-nothing via its savepoint."""
        if not ops:
            return []
        conn = self._conn
        outcomes: list[OpOutcome] = []
        delta = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                conn.execute("SAVEPOINT one_call")
                try:
                    added = self._insert(op.rows)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO one_call")
                    conn.execute("RELEASE one_call")
                    outcomes.append((op, None, OutboxWriteFailed(f"outbox {self.path}: {exc}")))
                else:
                    conn.execute("RELEASE one_call")
                    delta += added
                    outcomes.append((op, None, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            failed = OutboxWriteFailed(f"outbox {self.path}: commit failed: {exc}")
            lost: list[OpOutcome] = [(op, None, error or failed) for op, _, error in outcomes]
            return lost + [(op, None, failed) for op in ops[len(outcomes):]]
        self.depth += delta
        # Coalescing may have removed the oldest row: ask again (one primary-key lookup).
        self.oldest = self._oldest()
        return outcomes

    def _insert(self, rows: list[NewRow]) -> int:
        added = 0
        for row in rows:
            if row.kind == "state":
                # The state topic is compacted: a waiting snapshot of this campaign is superseded.
                added -= self._conn.execute(
                    "DELETE FROM outbox WHERE kind = 'state' AND key = ?", (row.key,)
                ).rowcount
            self._conn.execute(
                "INSERT INTO outbox (kind, key, value, ce_type, ce_id, content_type, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.kind, row.key, row.value, row.ce_type, row.ce_id, row.content_type, row.created),
            )
            added += 1
        return added

    def fetch(self, limit: int) -> list[Row]:
        cursor = self._conn.execute(
            "SELECT seq, kind, key, value, ce_type, ce_id, content_type, created "
            "FROM outbox ORDER BY seq LIMIT ?", (limit,)
        )
        return [Row(int(s), k, key, bytes(v), t, i, c, float(at)) for s, k, key, v, t, i, c, at in cursor]

    def delete(self, upto: int) -> int:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            deleted = conn.execute("DELETE FROM outbox WHERE seq <= ?", (upto,)).rowcount
            conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        self.depth -= deleted
        self.oldest = self._oldest() if self.depth else None
        return int(deleted)

    def set_aside(self, seq: int, error: str, dead_lettered: bool, at: float) -> bool:
        """Move row `seq` to the undeliverable table in one transaction; False if it is gone already."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            found = conn.execute("SELECT kind, key FROM outbox WHERE seq = ?", (seq,)).fetchone()
            if found is None:
                conn.execute("COMMIT")
                return False
            replaced = 0
            if found[0] == "state":
                # As on the compacted topic, only a campaign's latest snapshot is worth keeping.
                replaced = conn.execute("DELETE FROM undeliverable WHERE kind = 'state' AND key = ?",
                                        (found[1],)).rowcount
            conn.execute(
                "INSERT INTO undeliverable (seq, kind, key, value, ce_type, ce_id, content_type, created, "
                "set_aside, error, dead_lettered) SELECT seq, kind, key, value, ce_type, ce_id, content_type, "
                "created, ?, ?, ? FROM outbox WHERE seq = ?", (at, error, int(dead_lettered), seq))
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        self.kept += 1 - replaced
        self.depth -= 1
        self.oldest = self._oldest() if self.depth else None
        return True


def _check_path(path: Path) -> None:
    if str(path) in ("", ":memory:") or str(path).startswith("file:"):
        raise OutboxUnavailable(f"the outbox needs a file on disk, got {str(path)!r}")
    if path.is_dir():
        raise OutboxUnavailable(f"the outbox path {path} is a directory; name a file inside it")
    parent = path.parent
    if not parent.is_dir():
        raise OutboxUnavailable(f"the outbox directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutboxUnavailable(f"the outbox directory {parent} is not writable by this process")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise OutboxUnavailable(f"the outbox database {path} is not readable and writable by this process")


def _explain(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (f"the outbox database {path} is in use by another process: each instance needs its "
                f"own outbox file ({text})")
    if "not a database" in text:
        return f"{path} is not a SQLite database ({text}): point the outbox at its own file"
    if "readonly" in text or "read-only" in text:
        return f"the outbox database {path} is read-only ({text})"
    return f"cannot use the outbox database {path}: {text}"
