"""An `EventSink` that produces straight to Kafka (acks=all), without a local outbox.

Used where a durable local outbox is not wanted (benchmarks, a broker with its own guarantees).
Each call returns once the broker acknowledged, so "published" means durable on the broker; if
the broker is unreachable the call raises and the orchestrator retries the same event later.
"""

from __future__ import annotations

from typing import Any

from schemas.commands import CommandResult

from .kafka import OutgoingRecord, Producer, TopicNames

__all__ = ["RESULT_TYPE", "KafkaSink"]

RESULT_TYPE = "com.campaign-fsm.command.result.v1"
STATE_TYPE = "com.campaign-fsm.campaign.state.v1"


class KafkaSink:
    def __init__(self, producer: Producer, topics: TopicNames) -> None:
        self._producer = producer
        self._topics = topics
        self.events = 0
        self.results = 0

    async def state_changed(self, event: dict[str, Any], snapshot: dict[str, Any]) -> None:
        key = event["subject"]
        await self._producer.send_many([
            OutgoingRecord(self._topics.events, key, event, ce_type=event["type"], ce_id=event["id"],
                           content_type="application/cloudevents+json"),
            OutgoingRecord(self._topics.state, key, snapshot, ce_type=STATE_TYPE),
        ])
        self.events += 1

    async def state_saved(self, snapshot: dict[str, Any]) -> None:
        await self._producer.send(self._topics.state, snapshot["campaignId"], snapshot, ce_type=STATE_TYPE)

    async def command_result(self, result: CommandResult) -> None:
        await self._producer.send(self._topics.results, result.campaign_id, result, ce_type=RESULT_TYPE,
                                  ce_id=f"{result.command_id}:{result.outcome.value}")
        self.results += 1
