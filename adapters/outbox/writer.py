"""The outbox's writer: the one thread that owns the database connection. Calls waiting together
are committed together (group commit: one transaction, one fsync, for every append in its queue)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable

from .errors import OutboxClosed, OutboxWriteFailed
from .store import Append, Close, Delete, Fetch, Op, OpOutcome, SetAside, Stats, Store

__all__ = ["Writer"]

_log = logging.getLogger(__name__)


class Writer:
    """The one thread that owns the connection. Calls waiting together are committed together."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[list[OpOutcome], Stats], None], max_group: int) -> None:
        self._store = store
        self._loop = loop
        self._deliver = deliver
        self._max_group = max_group
        self._queue: queue.SimpleQueue[Op] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return not self._finished

    def submit(self, op: Op) -> None:
        with self._lock:
            if self._finished:
                raise OutboxClosed(f"outbox {self._store.path} is closed (its writer has ended)")
            self._queue.put(op)

    def _run(self) -> None:
        closing: Close | None = None
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
                    with self._lock:
                        # Ended before anyone hears of the failure: a caller that looks at once (the
                        # readiness check) must not find it still running.
                        self._finished = True
                    self._post([(op, None, failed) for op in group])
                    why = f"outbox {self._store.path} is closed (its writer has ended)"
                    return
                self._post(outcomes)
        finally:
            with self._lock:
                self._finished = True
            self._store.close()
            leftovers: list[OpOutcome] = []
            while True:
                try:
                    leftovers.append((self._queue.get_nowait(), None, OutboxClosed(why)))
                except queue.Empty:
                    break
            if closing is not None:
                leftovers.append((closing, None, None))
            self._post(leftovers)

    def _process(self, group: list[Op]) -> tuple[list[OpOutcome], Close | None]:
        """Consecutive appends share one commit; a read or delete first commits what precedes it."""
        closing: Close | None = None
        outcomes: list[OpOutcome] = []
        appends: list[Append] = []
        for op in group:
            if closing is not None:
                outcomes.append((op, None, OutboxClosed("the outbox was stopped")))
            elif isinstance(op, Append):
                appends.append(op)
            else:
                outcomes += self._store.commit_appends(appends)
                appends = []
                if isinstance(op, Close):
                    closing = op
                else:
                    outcomes.append(self._other(op))
        outcomes += self._store.commit_appends(appends)
        return outcomes, closing

    def _other(self, op: Op) -> OpOutcome:
        try:
            if isinstance(op, Fetch):
                return (op, self._store.fetch(op.limit), None)
            if isinstance(op, Delete):
                return (op, self._store.delete(op.upto), None)
            if isinstance(op, SetAside):
                return (op, self._store.set_aside(op.seq, op.error, op.dead_lettered, op.at), None)
            raise AssertionError(f"unknown outbox operation {op!r}")
        except sqlite3.Error as exc:
            return (op, None, OutboxWriteFailed(f"outbox {self._store.path}: {exc}"))

    def _post(self, outcomes: list[OpOutcome]) -> None:
        if not outcomes:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._deliver, outcomes, self._store.stats())
