"""`Outbox`: the `EventSink` over the local SQLite outbox, and its drainer (``outbox-drain``), which
publishes the rows in order through a `Publisher` and deletes them once acknowledged. The package
docstring (`adapters.outbox`) describes the guarantees."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from fsm.backoff import Backoff
from fsm.ports import Clock
from fsm.tasks import cancel_and_wait
from schemas.base import truncate_text
from schemas.commands import CommandResult

from ..clock import SystemClock
from ..kafka import (
    Delivery,
    OutgoingRecord,
    ProduceFailed,
    ServiceRecord,
    TopicNames,
    dead_letter_stand_in,
    result_records,
    state_changed_records,
    state_saved_records,
)
from ..kafka.mapping import topic_of
from .errors import OutboxClosed
from .store import Append, Close, Delete, Fetch, NewRow, Op, OpOutcome, Row, SetAside, Stats, Store
from .writer import Writer

__all__ = ["Outbox", "Publisher"]

_log = logging.getLogger(__name__)

class Publisher(Protocol):
    """What the drainer publishes through: `adapters.kafka.Producer` (acks=all) in the service.

    `send_many` returns only once every record is acknowledged, or raises; records of one key
    are stored in the order given.
    """

    async def send_many(self, records: Sequence[OutgoingRecord]) -> list[Delivery]: ...


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
        self._topics = topics or TopicNames()
        self._dead_letters = self._topics.dead_letters
        self._clock: Clock = clock or SystemClock()
        self._synchronous = synchronous
        self._batch_size = batch_size
        self._max_group = max_group
        # Jitter below the nominal delay only: a retry never waits longer than `retry_max`.
        self._retry = Backoff(retry_initial, 2.0, retry_max, max_tries=None, jitter=0.5, jitter_below=True)
        self._rng = random.Random(seed)
        self._state = _Lifecycle.UNOPENED
        self._opening: asyncio.Lock | None = None
        self._writer: Writer | None = None
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

    @property
    def healthy(self) -> bool:
        """Open, its writer and its drainer running: what it takes is stored and goes out."""
        return self._state is _Lifecycle.OPENED and self._writer is not None and self._writer.running and self.draining

    async def open(self) -> None:
        """Open (or create) the database; undelivered rows from an earlier run are kept, first in line."""
        if self._state is _Lifecycle.CLOSED:
            raise OutboxClosed("this outbox was stopped; make a new one")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._state is _Lifecycle.OPENED:
                return
            store = await asyncio.to_thread(Store.open, self._path, self._synchronous)
            self._depth, self._oldest = store.depth, store.oldest
            # Counted from what the file keeps, so a restart does not silence the alarm.
            self.undeliverable = store.kept
            self._writer = Writer(store, asyncio.get_running_loop(), self._deliver, self._max_group)
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
        await cancel_and_wait(drainer)
        closing = Close(self._new_future())
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
        await self._append(state_changed_records(event, snapshot, results))

    async def state_saved(self, snapshot: dict[str, object], results: Sequence[CommandResult] = ()) -> None:
        """The snapshot (``state``), then the results it decides, in one transaction; returns once durable."""
        await self._append(state_saved_records(snapshot, results))

    async def command_result(self, result: CommandResult) -> None:
        """The result (``results``); returns once durable, so its command's offset may be committed."""
        await self._append(result_records([result]))

    # --- talking to the writer -----------------------------------------------------------------

    def _new_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _append(self, records: list[ServiceRecord]) -> None:
        now = self._clock.now()
        rows = [NewRow(r.kind, r.key, r.value, r.ce_type, r.ce_id, r.content_type, now) for r in records]
        op = Append(self._new_future(), rows)
        self._send(op)
        # Counted until the writer answers (even if the caller is cancelled meanwhile: the row
        # may still commit), so wait_drained never reports drained while a row is on its way.
        self._unsettled_appends += 1
        self._wake.set()
        await op.future

    async def _submit(self, op: Op) -> Any:
        self._send(op)
        return await op.future

    def _send(self, op: Op, *, force: bool = False) -> None:
        if self._writer is None or (self._state is not _Lifecycle.OPENED and not force):
            if self._state is _Lifecycle.UNOPENED:
                raise OutboxClosed(f"outbox {self._path} is not open: call open() or start() first")
            raise OutboxClosed(f"outbox {self._path} was stopped")
        self._writer.submit(op)

    def _deliver(self, outcomes: list[OpOutcome], stats: Stats) -> None:
        """On the loop: take the writer's stats, then answer each waiting call."""
        self._depth, self._oldest = stats.depth, stats.oldest
        for op, value, error in outcomes:
            if isinstance(op, Append):
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
                rows: list[Row] = await self._submit(Fetch(self._new_future(), self._batch_size))
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

    async def _publish(self, rows: list[Row]) -> int:
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
                await self._submit(Delete(self._new_future(), rows[done - 1].seq))
            return done
        # Only now may the rows go: the broker acknowledged every one of them.
        await self._submit(Delete(self._new_future(), rows[-1].seq))
        return len(rows)

    async def _set_aside(self, row: Row, error: str) -> None:
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
        moved = await self._submit(SetAside(self._new_future(), row.seq, truncate_text(error + why, 2000),
                                             dead_lettered, self._clock.now()))
        if not moved:
            _log.warning("outbox %s: row %d was superseded by a newer snapshot before it was set aside",
                         self._path, row.seq)
            return
        self.undeliverable += 1
        where = f"a stand-in went to {self._dead_letters}" if dead_lettered else "no stand-in could be sent"
        _log.error("outbox %s: row %d (%s for %s, key %s, %d bytes) can never be delivered (%s): %s; "
                   "the row is kept in table undeliverable and delivery goes on behind it",
                   self._path, row.seq, row.kind, topic_of(row.kind, self._topics), truncate_text(row.key or "", 100),
                   len(row.value), truncate_text(error + why, 500), where)

    def _record(self, row: Row) -> OutgoingRecord:
        return OutgoingRecord(topic_of(row.kind, self._topics), row.key, row.value, row.ce_type, row.ce_id, {},
                              row.content_type)

    def _backoff(self) -> float:
        return self._retry.delay(self.failed_attempts - 1, self._rng)

    def _drainer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _log.error("outbox %s: the drainer died; rows stay on disk until the next start",
                       self._path, exc_info=task.exception())

