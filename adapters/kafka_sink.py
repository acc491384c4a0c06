"""An `EventSink` that produces straight to Kafka (acks=all), without a local outbox.

Used where a durable local outbox is not wanted (benchmarks, a broker with its own guarantees).
Each call returns once the broker acknowledged, so "published" means durable on the broker; if
the broker is unreachable the call raises and the orchestrator retries the same event later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.base import encode
from schemas.commands import CommandResult

from .kafka import OutgoingRecord, Producer, TopicNames
from .outbox import EVENT_CONTENT_TYPE, RESULT_TYPE, STATE_TYPE, result_id

__all__ = ["KafkaSink"]


class KafkaSink:
    def __init__(self, producer: Producer, topics: TopicNames) -> None:
        self._producer = producer
        self._topics = topics
        self.events = 0
        self.results = 0

    async def state_changed(self, event: dict[str, Any], snapshot: dict[str, Any],
                            results: Sequence[CommandResult] = ()) -> None:
        key = event["subject"]
        await self._producer.send_many([
            OutgoingRecord(self._topics.events, key, event, ce_type=event["type"], ce_id=event["id"],
                           content_type=EVENT_CONTENT_TYPE),
            OutgoingRecord(self._topics.state, key, snapshot, ce_type=STATE_TYPE),
            *(self._result_record(result) for result in results),
        ])
        self.events += 1
        self.results += len(results)

    async def state_saved(self, snapshot: dict[str, Any], results: Sequence[CommandResult] = ()) -> None:
        await self._producer.send_many([
            OutgoingRecord(self._topics.state, snapshot["campaignId"], snapshot, ce_type=STATE_TYPE),
            *(self._result_record(result) for result in results),
        ])
        self.results += len(results)

    async def command_result(self, result: CommandResult) -> None:
        await self._producer.send_many([self._result_record(result)])
        self.results += 1

    def _result_record(self, result: CommandResult) -> OutgoingRecord:
        value = encode(result)
        return OutgoingRecord(self._topics.results, result.campaign_id, value, ce_type=RESULT_TYPE,
                              ce_id=result_id(result, value))
