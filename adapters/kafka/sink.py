"""An `EventSink` that produces straight to Kafka (acks=all), without a local outbox.

Used where a durable local outbox is not wanted (benchmarks, a broker with its own guarantees).
Each call returns once the broker acknowledged, so "published" means durable on the broker; if
the broker is unreachable the call raises and the orchestrator retries the same event later.

A record the broker refuses for good (too large, corrupt: `ProduceFailed.refused`) would make
that retry endless, so it is replaced by a small stand-in on the dead-letter topic, as the outbox
does, and the call goes on with the records behind it. With no disk of its own, this sink cannot
keep the original: if the stand-in is refused too, the record is logged by name (never its
value), counted in `undeliverable`, and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from schemas.base import truncate_text
from schemas.commands import CommandResult

from .errors import ProduceFailed
from .mapping import ServiceRecord, result_records, state_changed_records, state_saved_records
from .producer import Producer
from .records import OutgoingRecord, dead_letter_stand_in
from .topics import TopicNames

__all__ = ["KafkaSink"]

_log = logging.getLogger(__name__)


class KafkaSink:
    def __init__(self, producer: Producer, topics: TopicNames) -> None:
        self._producer = producer
        self._topics = topics
        self.events = 0
        self.results = 0
        self.undeliverable = 0

    # No store of its own: it is up once the producer is, and drained whenever a call returned.
    depth = 0
    healthy = True

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def wait_drained(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        return True

    async def state_changed(self, event: dict[str, Any], snapshot: dict[str, Any],
                            results: Sequence[CommandResult] = ()) -> None:
        await self._send(state_changed_records(event, snapshot, results))
        self.events += 1
        self.results += len(results)

    async def state_saved(self, snapshot: dict[str, Any], results: Sequence[CommandResult] = ()) -> None:
        await self._send(state_saved_records(snapshot, results))
        self.results += len(results)

    async def command_result(self, result: CommandResult) -> None:
        await self._send(result_records([result]))
        self.results += 1

    async def _send(self, rows: list[ServiceRecord]) -> None:
        records = [row.outgoing(self._topics) for row in rows]
        pending = records
        # Each pass delivers everything or takes one refused record out: at most len(records) + 1.
        for _ in range(len(records) + 1):
            try:
                await self._producer.send_many(pending)
                return
            except ProduceFailed as exc:
                if exc.refused is None or not 0 <= exc.refused < len(pending):
                    raise
                bad = pending[exc.refused]
                await self._dead_letter(bad, f"{type(exc).__name__}: {exc}")
                # In order, without the refused one and without those the broker already took.
                pending = pending[min(exc.acknowledged, exc.refused):exc.refused] + pending[exc.refused + 1:]
                if not pending:
                    return
        raise AssertionError("unreachable: every pass takes one record out")

    async def _dead_letter(self, record: OutgoingRecord, error: str) -> None:
        value = record.value if isinstance(record.value, bytes) else b""
        try:
            await self._producer.send_many([dead_letter_stand_in(record, value, error, self._topics.dead_letters)])
        except ProduceFailed as exc:
            if exc.retriable:
                raise  # the broker is away: the caller retries the whole call, as for any failure
            self.undeliverable += 1
            _log.error("record for %s (key %s, %d bytes) refused for good (%s) and so was its stand-in "
                       "(%s): dropped", record.topic, truncate_text(record.key or "", 100), len(value),
                       truncate_text(error, 500), truncate_text(str(exc), 500))
            return
        self.undeliverable += 1
        _log.error("record for %s (key %s, %d bytes) refused for good (%s): a stand-in went to %s",
                   record.topic, truncate_text(record.key or "", 100), len(value), truncate_text(error, 500),
                   self._topics.dead_letters)
