"""The durable local outbox: an `EventSink` that makes every output durable on local disk first.

A state change the service observed must reach ``campaign.events`` even if the broker is away for
a while or the process is killed right after the observation. So the sink does not talk to Kafka
at all: `state_changed`, `state_saved` and `command_result` append rows to an embedded SQLite
database and return once the transaction holding them is committed. A background task, the
*drainer* (``outbox-drain``), publishes the rows in insertion order through a `Publisher` (the
acks=all `adapters.kafka.Producer`) and deletes them only after the broker acknowledged them.

Order. Rows carry an AUTOINCREMENT sequence number, assigned in the order the calls reach the
store; the drainer sends a batch (the oldest rows, by sequence) with one `send_many` and deletes
``seq <= last`` only after every record of the batch was acknowledged. A failed batch is retried
from its first row, so nothing is ever sent ahead of an earlier row. The orchestrator awaits each
call of one campaign before the next, and a key always maps to one partition, so the order of one
campaign's events on the topic is the order of its calls. AUTOINCREMENT (not a plain rowid)
because a rowid may be reused once the highest row is gone, and ``seq <= last`` would then delete
a row that was never sent.

At least once, never lost. A crash between the broker's acknowledgement and the local delete, a
batch that failed half way, or a send cut short by `stop()` re-sends rows on the next attempt or
the next start. Event and result records carry an idempotent ``ce_id`` header (events: the event
id ``<campaignId>:<sequence>``, which is also the CloudEvents ``id`` in the value; results:
``<commandId>:<outcome>:<digest of the value>``), so consumers drop a re-delivery by id. After
dropping repeats (keeping the first occurrence), every campaign's events are in sequence order.
State records need no id: the topic is compacted by key and a repeat only restates the latest.

Coalescing. ``campaign.state`` is compacted: only the latest record per campaign matters. A new
snapshot row therefore replaces a snapshot row of the same campaign still waiting in the outbox
(events and results are never coalesced). During a long outage the outbox holds one snapshot per
campaign, not one per change.

Durability trade-off. The database runs in WAL mode with ``synchronous=FULL`` by default: the WAL
is fsynced at every commit, so a row whose call returned survives a power loss or an OS crash,
not only a killed process. Each fsync costs a few milliseconds, which the *group commit* hides:
a single writer thread takes every call waiting in its queue and commits them in one transaction
(one fsync), then answers each caller. ``synchronous="NORMAL"`` skips that fsync: still safe when
the process is killed (SIGKILL), but the last commits may be lost when the machine itself goes
down. The event loop never waits on the disk; only the writer thread touches the database.

One process per file. The database is opened with an exclusive lock: a second outbox (another
instance pointed at the same file) gets `OutboxUnavailable` rather than racing the first one's
drainer and reordering its rows. The lock dies with the process, so a restart after SIGKILL
reopens the file and delivers what was left, first and in order.

A record that can never be produced. The broker (or the producer, before sending) may refuse a
record for what it is: too large, corrupt. Retrying it would wedge the outbox for good, since
nothing behind it may overtake it. Such a row (`ProduceFailed.refused` names it) is set aside
instead: the rows ahead of it are delivered first, then a small stand-in record goes to the
dead-letter topic (headers ``error``, ``original-topic``, ``original-key``, ``original-size``,
``original-ce-type``, ``original-ce-id``, ``outbox-seq``; the value is at most the first
`STAND_IN_VALUE_BYTES` of the original), the row moves to the ``undeliverable`` table of the same
database (kept, never deleted by the service: nothing is lost; a newer set-aside snapshot of a
campaign replaces an older one, as on the compacted topic), and the drainer goes on with the rows
behind it, in order. If the stand-in cannot be produced either, the row is set aside all the
same (``dead_lettered = 0``). `undeliverable` counts the rows set aside (the alarm). The rest of
the row's change (its event, snapshot or results) is still delivered: holding those back would
repeat the wedge for the results a producer waits for. Failures that are not one record's (broker
away, timeouts, authorization) are retried in order, as above.

Errors::

    OutboxError               any failure of the outbox
    ├── OutboxUnavailable     the database file cannot be used (path, permissions, lock, not ours)
    ├── OutboxClosed          used before `open()`/`start()` or after `stop()`
    └── OutboxWriteFailed     a row could not be made durable (the call did not take effect)

While the broker is unreachable the drainer retries with capped, jittered exponential backoff and
the outbox keeps accepting rows; `depth`, `oldest_age` and `last_error` say how far behind it is.
Nothing here logs record values or client credentials: log lines name the row counts, the path and
the publisher's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
import queue
import random
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from fsm.ports import Clock
from schemas.base import encode, truncate_text
from schemas.commands import CommandResult

from ..clock import SystemClock
from ..kafka import Delivery, OutgoingRecord, ProduceFailed, TopicNames

__all__ = [
    "EVENT_CONTENT_TYPE",
    "RESULT_TYPE",
    "STAND_IN_CONTENT_TYPE",
    "STAND_IN_VALUE_BYTES",
    "STATE_TYPE",
    "Outbox",
    "OutboxClosed",
    "OutboxError",
    "OutboxUnavailable",
    "OutboxWriteFailed",
    "Publisher",
    "dead_letter_stand_in",
    "result_id",
]

_log = logging.getLogger(__name__)

RESULT_TYPE = "com.campaign-fsm.command.result.v1"
STATE_TYPE = "com.campaign-fsm.campaign.state.v1"
EVENT_CONTENT_TYPE = "application/cloudevents+json"


def result_id(result: CommandResult, value: bytes) -> str:
    """A result's record id: stable across re-deliveries, distinct for each result of one command
    (several DEFERRED results of one command differ in content, hence the digest)."""
    return f"{result.command_id}:{result.outcome.value}:{hashlib.blake2b(value, digest_size=6).hexdigest()}"
_JSON = "application/json"

# A stand-in is small whatever it stands for: enough of the value to recognise it, never the
# size that got the original refused.
STAND_IN_VALUE_BYTES = 1024
STAND_IN_CONTENT_TYPE = "application/octet-stream"  # the head of a value, cut at any byte
_STAND_IN_ERROR_CHARS = 500


def dead_letter_stand_in(record: OutgoingRecord, value: bytes, error: str, dead_letters: str,
                         extra: Mapping[str, str] | None = None) -> OutgoingRecord:
    """What goes to the dead-letter topic for `record` (whose encoded value is `value`) when the
    broker refuses it for good: the same key, the head of the value, and headers saying what it was."""
    headers: dict[str, str] = {
        "error": truncate_text(error, _STAND_IN_ERROR_CHARS),
        "original-topic": record.topic,
        "original-size": str(len(value)),
    }
    if record.key is not None:
        headers["original-key"] = truncate_text(record.key, 200)
    if record.ce_type is not None:
        headers["original-ce-type"] = record.ce_type
    if record.ce_id is not None:
        headers["original-ce-id"] = record.ce_id
    headers.update(extra or {})
    return OutgoingRecord(dead_letters, record.key, value[:STAND_IN_VALUE_BYTES], headers=headers,
                          content_type=STAND_IN_CONTENT_TYPE)


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


# --- errors --------------------------------------------------------------------------------------


class OutboxError(Exception):
    """Any failure of the outbox."""


class OutboxUnavailable(OutboxError):
    """The database file cannot be used: bad path, no permission, locked by another process, not ours."""


class OutboxClosed(OutboxError):
    """The outbox was used before `open()`/`start()` or after `stop()`."""


class OutboxWriteFailed(OutboxError):
    """A row could not be committed; the call had no effect and may be retried."""


# --- the publisher port --------------------------------------------------------------------------


class Publisher(Protocol):
    """What the drainer publishes through: `adapters.kafka.Producer` (acks=all) in the service.

    `send_many` returns only once every record is acknowledged, or raises; records of one key
    are stored in the order given.
    """

    async def send_many(self, records: Sequence[OutgoingRecord]) -> list[Delivery]: ...


# --- rows and store operations -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _NewRow:
    kind: str
    key: str | None
    value: bytes
    ce_type: str | None
    ce_id: str | None
    content_type: str
    created: float


@dataclass(frozen=True, slots=True)
class _Row:
    seq: int
    kind: str
    key: str | None
    value: bytes
    ce_type: str | None
    ce_id: str | None
    content_type: str
    created: float


@dataclass(slots=True)
class _Op:
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Append(_Op):
    rows: list[_NewRow] = field(default_factory=list)


@dataclass(slots=True)
class _Fetch(_Op):
    limit: int = 0


@dataclass(slots=True)
class _Delete(_Op):
    upto: int = 0


@dataclass(slots=True)
class _SetAside(_Op):
    seq: int = 0
    error: str = ""
    dead_lettered: bool = False
    at: float = 0.0


@dataclass(slots=True)
class _Close(_Op):
    pass


@dataclass(frozen=True, slots=True)
class _Stats:
    depth: int
    oldest: float | None


# An operation's outcome, handed back to the event loop: (operation, value, error).
_Outcome = tuple[_Op, Any, BaseException | None]


class _Store:
    """The SQLite side. Every method runs on the writer thread (or before it starts)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.depth, self.oldest = self._measure()
        (kept,) = conn.execute("SELECT count(*) FROM undeliverable").fetchone()
        self.kept = int(kept)

    @classmethod
    def open(cls, path: Path, synchronous: str) -> _Store:
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

    def stats(self) -> _Stats:
        return _Stats(self.depth, self.oldest)

    def commit_appends(self, ops: list[_Append]) -> list[_Outcome]:
        """All `ops` in one transaction (one fsync); each op is all-or-nothing via its savepoint."""
        if not ops:
            return []
        conn = self._conn
        outcomes: list[_Outcome] = []
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
            lost: list[_Outcome] = [(op, None, error or failed) for op, _, error in outcomes]
            return lost + [(op, None, failed) for op in ops[len(outcomes):]]
        self.depth += delta
        # Coalescing may have removed the oldest row: ask again (one primary-key lookup).
        self.oldest = self._oldest()
        return outcomes

    def _insert(self, rows: list[_NewRow]) -> int:
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

    def fetch(self, limit: int) -> list[_Row]:
        cursor = self._conn.execute(
            "SELECT seq, kind, key, value, ce_type, ce_id, content_type, created "
            "FROM outbox ORDER BY seq LIMIT ?", (limit,)
        )
        return [_Row(int(s), k, key, bytes(v), t, i, c, float(at)) for s, k, key, v, t, i, c, at in cursor]

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


class _Writer:
    """The one thread that owns the connection. Calls waiting together are committed together."""

    def __init__(self, store: _Store, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[list[_Outcome], _Stats], None], max_group: int) -> None:
        self._store = store
        self._loop = loop
        self._deliver = deliver
        self._max_group = max_group
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: _Op) -> None:
        with self._lock:
            if self._finished:
                raise OutboxClosed(f"outbox {self._store.path} is closed (its writer has ended)")
            self._queue.put(op)

    def _run(self) -> None:
        closing: _Close | None = None
        why = "the outbox was stopped"
        try:
            while closing is None:
                group = [self._queue.get()]
                while len(group) < self._max_group:
                    try:
                        group.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                try:
                    outcomes, closing = self._process(group)
                except Exception:
                    # A bug, not a disk error (those are answered per call): answer everyone, then end,
                    # since the store's bookkeeping can no longer be trusted.
                    _log.exception("outbox %s: the writer failed; the outbox is closed", self._store.path)
                    failed = OutboxWriteFailed(f"outbox {self._store.path}: internal error, see the log")
                    self._post([(op, None, failed) for op in group])
                    why = f"outbox {self._store.path} is closed (its writer has ended)"
                    return
                self._post(outcomes)
        finally:
            with self._lock:
                self._finished = True
            self._store.close()
            leftovers: list[_Outcome] = []
            while True:
                try:
                    leftovers.append((self._queue.get_nowait(), None, OutboxClosed(why)))
                except queue.Empty:
                    break
            if closing is not None:
                leftovers.append((closing, None, None))
            self._post(leftovers)

    def _process(self, group: list[_Op]) -> tuple[list[_Outcome], _Close | None]:
        """Consecutive appends share one commit; a read or delete first commits what precedes it."""
        closing: _Close | None = None
        outcomes: list[_Outcome] = []
        appends: list[_Append] = []
        for op in group:
            if closing is not None:
                outcomes.append((op, None, OutboxClosed("the outbox was stopped")))
            elif isinstance(op, _Append):
                appends.append(op)
            else:
                outcomes += self._store.commit_appends(appends)
                appends = []
                if isinstance(op, _Close):
                    closing = op
                else:
                    outcomes.append(self._other(op))
        outcomes += self._store.commit_appends(appends)
        return outcomes, closing

    def _other(self, op: _Op) -> _Outcome:
        try:
            if isinstance(op, _Fetch):
                return (op, self._store.fetch(op.limit), None)
            if isinstance(op, _Delete):
                return (op, self._store.delete(op.upto), None)
            if isinstance(op, _SetAside):
                return (op, self._store.set_aside(op.seq, op.error, op.dead_lettered, op.at), None)
            raise AssertionError(f"unknown outbox operation {op!r}")
        except sqlite3.Error as exc:
            return (op, None, OutboxWriteFailed(f"outbox {self._store.path}: {exc}"))

    def _post(self, outcomes: list[_Outcome]) -> None:
        if not outcomes:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._deliver, outcomes, self._store.stats())


# --- the outbox ----------------------------------------------------------------------------------


class _Lifecycle(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class Outbox:
    """`EventSink` over a local SQLite outbox, drained to Kafka in order by the ``outbox-drain`` task.

    ``await open()`` makes the outbox accept rows; ``await start()`` also starts the drainer (both
    idempotent); ``await stop(flush_timeout=...)`` tries to deliver what is left, then cancels the
    drainer and closes the file (rows not delivered stay for the next start). ``async with`` runs
    start and stop. The publisher is the caller's: start it before and stop it after the outbox.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        publisher: Publisher,
        *,
        topics: TopicNames | None = None,
        clock: Clock | None = None,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        batch_size: int = 500,
        max_group: int = 1000,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        seed: int | None = None,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if batch_size < 1 or max_group < 1:
            raise ValueError("batch_size and max_group must be at least 1")
        if not 0 < retry_initial <= retry_max:
            raise ValueError(f"need 0 < retry_initial <= retry_max, got {retry_initial} and {retry_max}")
        self._path = Path(path)
        self._publisher = publisher
        topics = topics or TopicNames()
        self._topic = {"events": topics.events, "state": topics.state, "results": topics.results}
        self._dead_letters = topics.dead_letters
        self._clock: Clock = clock or SystemClock()
        self._synchronous = synchronous
        self._batch_size = batch_size
        self._max_group = max_group
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._rng = random.Random(seed)
        self._state = _Lifecycle.UNOPENED
        self._opening: asyncio.Lock | None = None
        self._writer: _Writer | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._depth = 0
        self._oldest: float | None = None
        self._unsettled_appends = 0
        # The row the publisher refused for good (seq, why), set aside once the rows ahead of it
        # are delivered. One at a time: nothing behind it is sent before it is handled.
        self._refused: tuple[int, str] | None = None
        self.delivered = 0
        self.failed_attempts = 0
        self.last_error: str | None = None
        self.undeliverable = 0
        """Rows set aside as undeliverable: those kept in the file at open, plus each one since.

        Only ever grows while the outbox runs; the service's alarm metric."""

    def __repr__(self) -> str:
        return f"Outbox({str(self._path)!r}, {self._state.value}, depth={self._depth})"

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def depth(self) -> int:
        """Rows waiting for the broker's acknowledgement (in flight included)."""
        return self._depth

    @property
    def oldest_age(self) -> float:
        """Seconds the oldest waiting row has waited (0.0 when none waits), by the injected clock."""
        if self._oldest is None:
            return 0.0
        return max(0.0, self._clock.now() - self._oldest)

    @property
    def draining(self) -> bool:
        return self._drainer is not None and not self._drainer.done()

    async def open(self) -> None:
        """Open (or create) the database; undelivered rows from an earlier run are kept, first in line."""
        if self._state is _Lifecycle.CLOSED:
            raise OutboxClosed("this outbox was stopped; make a new one")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._state is _Lifecycle.OPENED:
                return
            store = await asyncio.to_thread(_Store.open, self._path, self._synchronous)
            self._depth, self._oldest = store.depth, store.oldest
            # Counted from what the file keeps, so a restart does not silence the alarm.
            self.undeliverable = store.kept
            self._writer = _Writer(store, asyncio.get_running_loop(), self._deliver, self._max_group)
            self._writer.start()
            self._state = _Lifecycle.OPENED
            if self._depth:
                _log.info("outbox %s: %d rows from an earlier run wait for delivery", self._path, self._depth)
            if store.kept:
                _log.warning("outbox %s: %d undeliverable rows are kept in its table undeliverable",
                             self._path, store.kept)

    async def start(self) -> None:
        """Open, then start the drainer. Idempotent."""
        await self.open()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="outbox-drain")
            self._drainer.add_done_callback(self._drainer_done)

    async def stop(self, flush_timeout: float = 10.0) -> None:
        """Deliver what waits (for up to `flush_timeout` s), stop the drainer, close. Idempotent."""
        if self._state is not _Lifecycle.OPENED:
            self._state = _Lifecycle.CLOSED
            return
        if self.draining and flush_timeout > 0 and not await self.wait_drained(flush_timeout):
            _log.warning("outbox %s: %d rows not delivered within %g s stay for the next start",
                         self._path, self._depth, flush_timeout)
        self._state = _Lifecycle.CLOSED
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer
        closing = _Close(self._new_future())
        try:
            self._send(closing, force=True)
        except OutboxClosed:
            pass  # the writer already ended (and logged why)
        else:
            await closing.future
        self._pulse()

    async def __aenter__(self) -> Outbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # A bool rather than TimeoutError: shutdown code logs what is left and goes on.
    async def wait_drained(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """True once every row accepted so far was delivered; False if `timeout` (real s) ran out first."""
        try:
            async with asyncio.timeout(timeout):
                while self._unsettled_appends or self._depth:
                    if self._state is _Lifecycle.CLOSED:
                        return False
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    # --- the EventSink -------------------------------------------------------------------------

    async def state_changed(self, event: dict[str, object], snapshot: dict[str, object],
                            results: Sequence[CommandResult] = ()) -> None:
        """The event (``events``), the snapshot (``state``) and the results it decides, in one
        transaction and that order; returns once durable."""
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise ValueError("a state-changed event needs string 'id' and 'type' fields")
        key = _event_campaign(event)
        now = self._clock.now()
        await self._append([
            _NewRow("events", key, orjson.dumps(event), event_type, event_id, EVENT_CONTENT_TYPE, now),
            self._state_row(snapshot, now),
            *(self._result_row(result, now) for result in results),
        ])

    async def state_saved(self, snapshot: dict[str, object], results: Sequence[CommandResult] = ()) -> None:
        """The snapshot (``state``), then the results it decides, in one transaction; returns once durable."""
        now = self._clock.now()
        await self._append([self._state_row(snapshot, now), *(self._result_row(result, now) for result in results)])

    async def command_result(self, result: CommandResult) -> None:
        """The result (``results``); returns once durable, so its command's offset may be committed."""
        await self._append([self._result_row(result, self._clock.now())])

    @staticmethod
    def _result_row(result: CommandResult, now: float) -> _NewRow:
        value = encode(result)
        return _NewRow("results", result.campaign_id, value, RESULT_TYPE, result_id(result, value), _JSON, now)

    @staticmethod
    def _state_row(snapshot: dict[str, object], now: float) -> _NewRow:
        key = snapshot.get("campaignId")
        if not isinstance(key, str) or not key:
            raise ValueError("a campaign snapshot needs a non-empty string 'campaignId'")
        return _NewRow("state", key, orjson.dumps(snapshot), STATE_TYPE, None, _JSON, now)

    # --- talking to the writer -----------------------------------------------------------------

    def _new_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _append(self, rows: list[_NewRow]) -> None:
        op = _Append(self._new_future(), rows)
        self._send(op)
        # Counted until the writer answers (even if the caller is cancelled meanwhile: the row
        # may still commit), so wait_drained never reports drained while a row is on its way.
        self._unsettled_appends += 1
        self._wake.set()
        await op.future

    async def _submit(self, op: _Op) -> Any:
        self._send(op)
        return await op.future

    def _send(self, op: _Op, *, force: bool = False) -> None:
        if self._writer is None or (self._state is not _Lifecycle.OPENED and not force):
            if self._state is _Lifecycle.UNOPENED:
                raise OutboxClosed(f"outbox {self._path} is not open: call open() or start() first")
            raise OutboxClosed(f"outbox {self._path} was stopped")
        self._writer.submit(op)

    def _deliver(self, outcomes: list[_Outcome], stats: _Stats) -> None:
        """On the loop: take the writer's stats, then answer each waiting call."""
        self._depth, self._oldest = stats.depth, stats.oldest
        for op, value, error in outcomes:
            if isinstance(op, _Append):
                self._unsettled_appends -= 1
            if op.future.done():
                continue
            if error is not None:
                op.future.set_exception(error)
            else:
                op.future.set_result(value)
        self._pulse()

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the drainer ---------------------------------------------------------------------------

    async def _drain(self) -> None:
        failing_since: float | None = None
        warned_at = 0.0
        while True:
            self._wake.clear()
            try:
                rows: list[_Row] = await self._submit(_Fetch(self._new_future(), self._batch_size))
                if not rows:
                    await self._wake.wait()
                    continue
                if self._refused is not None and self._refused[0] < rows[0].seq:
                    self._refused = None  # a newer snapshot of its campaign superseded it meanwhile
                if self._refused is not None and self._refused[0] == rows[0].seq:
                    await self._set_aside(rows[0], self._refused[1])
                    self._refused = None
                    sent = 0
                else:
                    sent = await self._publish(rows)
            except asyncio.CancelledError:
                raise
            except OutboxClosed:
                return
            except Exception as exc:
                self.failed_attempts += 1
                self.last_error = truncate_text(f"{type(exc).__name__}: {exc}", 2000)
                now = self._clock.monotonic()
                if failing_since is None or now - warned_at >= 60.0:
                    # Not retriable yet not one record's fault (a producer never started, a timeout):
                    # the outbox still retries, since skipping a row would break the order, but says so louder.
                    level = logging.WARNING if getattr(exc, "retriable", True) else logging.ERROR
                    _log.log(level, "outbox %s: delivery failed (%s); %d rows wait, retrying with backoff",
                             self._path, self.last_error, self._depth)
                    warned_at = now
                    if failing_since is None:
                        failing_since = now
                await self._clock.sleep(self._backoff())
                continue
            self.delivered += sent
            if failing_since is not None:
                _log.info("outbox %s: delivering again after %.1f s and %d failed attempts",
                             self._path, self._clock.monotonic() - failing_since, self.failed_attempts)
                failing_since = None
            self.failed_attempts = 0
            self.last_error = None

    async def _publish(self, rows: list[_Row]) -> int:
        """Publish `rows` (up to a refused one), delete what the broker acknowledged; how many went."""
        if self._refused is not None:
            # Only the rows ahead of the refused one: it must not ride along, nor anything behind it.
            rows = [row for row in rows if row.seq < self._refused[0]]
        records = [self._record(row) for row in rows]
        try:
            await self._publisher.send_many(records)
        except ProduceFailed as exc:
            if exc.refused is None or not 0 <= exc.refused < len(rows):
                raise
            bad = rows[exc.refused]
            self._refused = (bad.seq, f"{type(exc).__name__}: {exc}")
            _log.warning("outbox %s: row %d (%s, key %s, %d bytes) refused for good; delivering the "
                         "%d rows ahead of it, then setting it aside", self._path, bad.seq, bad.kind,
                         truncate_text(bad.key or "", 100), len(bad.value), exc.refused)
            # The ones before it that the broker already took need not go again.
            done = min(exc.acknowledged, exc.refused)
            if done:
                await self._submit(_Delete(self._new_future(), rows[done - 1].seq))
            return done
        # Only now may the rows go: the broker acknowledged every one of them.
        await self._submit(_Delete(self._new_future(), rows[-1].seq))
        return len(rows)

    async def _set_aside(self, row: _Row, error: str) -> None:
        """Dead-letter a stand-in for `row`, then move it to the undeliverable table."""
        stand_in = dead_letter_stand_in(self._record(row), row.value, error, self._dead_letters,
                                        {"outbox-seq": str(row.seq)})
        dead_lettered, why = True, ""
        try:
            await self._publisher.send_many([stand_in])
        except ProduceFailed as exc:
            if exc.retriable:
                raise  # the broker is away: back off and try again, like any delivery
            dead_lettered, why = False, f"; its stand-in was refused too ({type(exc).__name__}: {exc})"
        moved = await self._submit(_SetAside(self._new_future(), row.seq, truncate_text(error + why, 2000),
                                             dead_lettered, self._clock.now()))
        if not moved:
            _log.warning("outbox %s: row %d was superseded by a newer snapshot before it was set aside",
                         self._path, row.seq)
            return
        self.undeliverable += 1
        where = f"a stand-in went to {self._dead_letters}" if dead_lettered else "no stand-in could be sent"
        _log.error("outbox %s: row %d (%s for %s, key %s, %d bytes) can never be delivered (%s): %s; "
                   "the row is kept in table undeliverable and delivery goes on behind it",
                   self._path, row.seq, row.kind, self._topic[row.kind], truncate_text(row.key or "", 100),
                   len(row.value), truncate_text(error + why, 500), where)

    def _record(self, row: _Row) -> OutgoingRecord:
        return OutgoingRecord(self._topic[row.kind], row.key, row.value, row.ce_type, row.ce_id, {},
                              row.content_type)

    def _backoff(self) -> float:
        exponent = min(self.failed_attempts - 1, 32)
        delay = min(self._retry_max, self._retry_initial * 2.0 ** exponent)
        return delay * self._rng.uniform(0.5, 1.0)

    def _drainer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _log.error("outbox %s: the drainer died; rows stay on disk until the next start",
                       self._path, exc_info=task.exception())


def _event_campaign(event: dict[str, object]) -> str:
    subject = event.get("subject")
    if isinstance(subject, str) and subject:
        return subject
    data = event.get("data")
    if isinstance(data, dict) and isinstance(data.get("campaignId"), str) and data["campaignId"]:
        return str(data["campaignId"])
    raise ValueError("a state-changed event needs its campaign id in 'subject' or 'data.campaignId'")

