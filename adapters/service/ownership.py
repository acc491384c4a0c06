"""Which campaigns this instance drives: those whose id hashes (murmur2) to one of the partitions of
the commands topic the consumer group gives it (`Ownership`, the consumer's rebalance hooks)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from fsm.orchestrator import Orchestrator
from fsm.ports import ManagedSink

from ..kafka import CommandConsumer, KafkaSettings, Partition, partition_of, restore_latest

__all__ = ["Ownership", "drained", "owns_nothing"]

_log = logging.getLogger(__name__)


class Ownership:
    """The consumer group decides which campaigns this instance drives: those whose campaign id
    hashes (murmur2) to one of its partitions of the commands topic.

    The protocol is eager: every member gives up everything (`on_revoked`), then receives its new
    share (`on_assigned`). So on revoke the orchestrator suspends (running looks finish, nothing
    new is sent or published) and the outbox drains; on assign it lets go of what moved away,
    restores and reconciles what arrived, and resumes. aiokafka awaits both hooks before the
    group moves on, which is what keeps two instances from driving one campaign.
    """

    def __init__(self, kafka: KafkaSettings, orchestrator: Orchestrator, sink: ManagedSink, *,
                 on_share: Callable[[int, int], None] | None = None) -> None:
        self.kafka = kafka
        self.on_share = on_share  # (partitions owned, partitions in all) on each assignment
        self.orchestrator = orchestrator
        self.sink = sink
        self.consumer: CommandConsumer | None = None
        self.owned: frozenset[int] = frozenset()
        self.generation: int | None = None
        self.first_assignment = asyncio.Event()  # set once the first assignment was taken, or failed
        self.failed: Exception | None = None  # why the last assignment could not be taken
        self.rebalances = 0
        self._owns: Callable[[str], bool] = owns_nothing

    def owns(self, campaign_id: str) -> bool:
        """Whether this instance drives `campaign_id` under the assignment it holds or is taking."""
        return self._owns(campaign_id)

    def _predicate(self, owned: frozenset[int], count: int) -> Callable[[str], bool]:
        return lambda campaign_id: partition_of(campaign_id, count) in owned

    async def on_revoked(self, partitions: frozenset[Partition], generation: int | None) -> None:
        await self.orchestrator.suspend()
        await drained(self.sink, 10.0)

    @property
    def healthy(self) -> bool:
        """False while the last assignment could not be taken: its campaigns are not driven."""
        return self.failed is None

    async def on_assigned(self, partitions: frozenset[Partition], generation: int | None) -> None:
        try:
            await self._take(partitions, generation)
        except Exception as exc:
            # aiokafka would log and swallow it, leaving the core suspended behind a green /readyz.
            self.failed = exc
            _log.exception("taking assignment generation %s failed: not ready until an assignment is taken",
                           generation)
        else:
            self.failed = None
        self.first_assignment.set()

    async def _take(self, partitions: frozenset[Partition], generation: int | None) -> None:
        assert self.consumer is not None
        # Suspended until the new share is acquired, the first assignment included (no revoke comes
        # before it): a command fetched meanwhile must not adopt a campaign whose record is still
        # being restored (it would start a second sequence at 1).
        await self.orchestrator.suspend()
        self.rebalances += 1
        self.generation = generation
        self.owned = frozenset(p.partition for p in partitions if p.topic == self.kafka.topics.commands)
        count = self.consumer.partition_count()
        owns = self._predicate(self.owned, count)
        if self.on_share is not None:
            self.on_share(len(self.owned), count)
        # At once, not after the acquisition: a command fetched meanwhile waits in the core (which is
        # suspended) rather than being refused as not owned.
        self._owns = owns
        gone = await self.orchestrator.release(owns)
        restored = await restore_latest(self.kafka, self.kafka.topics.state)
        await self.orchestrator.acquire(records_of(r.value for r in restored.values()), owns)
        self.orchestrator.resume()
        self.orchestrator.mark_ready()
        _log.info("assignment generation %s: partitions %s, %d campaigns (%d handed over)", generation,
                  sorted(self.owned), len(self.orchestrator.campaigns), len(gone))


def owns_nothing(_: str) -> bool:
    """The ownership before any assignment: no campaign is this instance's."""
    return False


async def drained(sink: ManagedSink, seconds: float) -> None:
    """Wait up to `seconds` for the sink to have delivered what it holds."""
    if not await sink.wait_drained(seconds):
        _log.warning("the outbox did not drain within %.0f s (is the broker reachable?)", seconds)


def records_of(values: Iterable[bytes | None]) -> list[dict[str, Any]]:
    records = []
    for value in values:
        if value is None:
            continue
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            _log.warning("unreadable record on the state topic skipped")
            continue
        if isinstance(record, dict) and "campaignId" in record:
            records.append(record)
    return records
