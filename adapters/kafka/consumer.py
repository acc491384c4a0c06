"""`CommandConsumer`: a consumer-group member on the commands topic with manual commits only
(commit offset + 1 once the caller's result is durable), `seek` to fetch unfinished records
again, and rebalance hooks (`RebalanceHooks`) that see the group generation."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as _AioTopicPartition
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, RebalanceInProgressError
from aiokafka.protocol.group import LeaveGroupRequest

from .config import KafkaSettings
from .errors import CommitRejected, KafkaEdgeError, Lifecycle, NotStarted
from .records import Partition, Record, to_record

__all__ = ["CommandConsumer", "RebalanceHooks"]

_log = logging.getLogger(__name__)


class RebalanceHooks(Protocol):
    """Told when this member gains or loses partitions. `generation` is the group generation.

    `on_revoked` runs before partitions move away (and when the consumer stops): stop driving
    their campaigns and make pending results durable. `on_assigned` runs once the new assignment
    is known: restore state and reconcile before acting. The generation (None if unknown) can
    fence a stale owner: compare it with the one recorded alongside any side effect.

    Both run inside aiokafka's rebalance, which waits for them; an exception is logged by aiokafka
    and otherwise swallowed, so handle failures inside the hook.
    """

    async def on_assigned(self, partitions: frozenset[Partition], generation: int | None) -> None: ...

    async def on_revoked(self, partitions: frozenset[Partition], generation: int | None) -> None: ...


class _ListenerBridge(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: CommandConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[_AioTopicPartition]) -> None:
        await self._owner._revoked(frozenset(Partition(tp.topic, tp.partition) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Iterable[_AioTopicPartition]) -> None:
        await self._owner._assigned(frozenset(Partition(tp.topic, tp.partition) for tp in assigned))


class CommandConsumer:
    """A consumer-group member on the commands topic with manual commits only.

    Auto-commit is off: an offset is committed only when the caller says the record's result is
    durable (`commit`), so a crash redelivers every command not yet acted upon. A fresh group
    starts at the earliest offset. `stop()` leaves the group, so the partitions move at once
    rather than after the session timeout.
    """

    def __init__(
        self,
        config: KafkaSettings,
        *,
        topic: str | None = None,
        group_id: str | None = None,
        hooks: RebalanceHooks | None = None,
        client_id: str | None = None,
    ) -> None:
        self._config = config
        self._topic = topic or config.topics.commands
        self._group_id = group_id or config.group_id
        self._hooks = hooks
        self._client_id = client_id or config.client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._state = Lifecycle.UNOPENED
        self._assignment: frozenset[Partition] = frozenset()

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def assignment(self) -> frozenset[Partition]:
        return self._assignment

    @property
    def generation(self) -> int | None:
        """The group generation this member last joined, if aiokafka exposes it (None otherwise)."""
        if self._consumer is None:
            return None
        coordinator = getattr(self._consumer, "_coordinator", None)
        generation = getattr(coordinator, "generation", None)
        return generation if isinstance(generation, int) and generation >= 0 else None

    def lag(self, positions: Mapping[Partition, int]) -> dict[Partition, int]:
        """Records not yet fetched per assigned partition, from the last high watermark seen and
        `positions` (the next offset the caller will handle)."""
        consumer = self._running()
        lags = {}
        for partition in self._assignment:
            high = consumer.highwater(_AioTopicPartition(partition.topic, partition.partition))
            if high is not None:
                lags[partition] = max(0, high - positions.get(partition, high))
        return lags

    def partition_count(self) -> int:
        """How many partitions the commands topic has (from the consumer's metadata)."""
        partitions = self._running().partitions_for_topic(self._topic)
        if not partitions:
            raise KafkaEdgeError(f"no metadata for topic {self._topic!r}")
        return len(partitions)

    @property
    def member_id(self) -> str | None:
        coordinator = getattr(self._consumer, "_coordinator", None)
        member = getattr(coordinator, "member_id", None)
        return member if isinstance(member, str) and member else None

    async def start(self) -> None:
        if self._state is Lifecycle.OPENED:
            return
        if self._state is Lifecycle.CLOSED:
            raise NotStarted("this consumer was stopped; make a new one")
        config = self._config
        kwargs = config.client_kwargs()
        kwargs["client_id"] = self._client_id
        consumer = AIOKafkaConsumer(
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=config.fetch_max_wait_ms,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            **kwargs,
        )
        try:
            await consumer.start()
            consumer.subscribe([self._topic], listener=_ListenerBridge(self))
        except KafkaError as exc:
            await consumer.stop()
            raise KafkaEdgeError(f"cannot start the consumer on {config.bootstrap}: {exc!r}") from exc
        self._consumer = consumer
        self._state = Lifecycle.OPENED

    async def stop(self) -> None:
        """Tell the hooks the partitions are going, then leave the group. Idempotent. Commits nothing."""
        if self._state is not Lifecycle.OPENED or self._consumer is None:
            self._state = Lifecycle.CLOSED
            return
        self._state = Lifecycle.CLOSED
        consumer = self._consumer
        coordinator = getattr(consumer, "_coordinator", None)
        try:
            # aiokafka does not call on_partitions_revoked on stop(); the hooks still need to know.
            if self._assignment:
                await self._revoked(self._assignment)
        finally:
            generation = getattr(coordinator, "generation", None)
            member_id = self.member_id
            coordinator_id = getattr(coordinator, "coordinator_id", None)
            await consumer.stop()
            if generation == 0 and member_id is not None and coordinator_id is not None:
                await self._leave_group(coordinator_id, member_id)

    async def _leave_group(self, coordinator_id: int, member_id: str) -> None:
        # aiokafka leaves the group on stop only when generation > 0, but tansu numbers generations
        # from 0 (Kafka from 1). Without a LeaveGroup the next member waits out the session
        # timeout. Best effort, like aiokafka's own attempt.
        client = AIOKafkaClient(**self._config.client_kwargs())
        try:
            await client.bootstrap()
            await client.send(coordinator_id, LeaveGroupRequest(self._group_id, member_id),
                              group=ConnectionGroup.COORDINATION)
        except KafkaError as exc:
            _log.warning("LeaveGroup for generation 0 of group %s failed: %r", self._group_id, exc)
        finally:
            await client.close()

    async def __aenter__(self) -> CommandConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def fetch(self, timeout_s: float = 1.0, max_records: int | None = None) -> list[Record]:
        """The next records (in offset order per partition); an empty list after `timeout_s`.

        Joining the group happens inside the first calls: keep calling it.
        """
        consumer = self._running()
        try:
            batches = await consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            error = KafkaEdgeError(f"fetch from {self._topic} failed: {exc!r}")
            error.retriable = bool(getattr(exc, "retriable", False))
            raise error from exc
        return [to_record(raw) for batch in batches.values() for raw in batch]

    def seek(self, partition: Partition, offset: int) -> bool:
        """Make the next `fetch` of `partition` start at `offset` (records fetched past it are dropped).

        How a caller that could not finish a batch gets its records again: the consumer's position
        is already past everything `fetch` returned, committed or not. False when the partition is
        no longer assigned (a rebalance took it; its new owner starts from the committed offset).
        """
        consumer = self._running()
        try:
            consumer.seek(_AioTopicPartition(partition.topic, partition.partition), offset)
        except IllegalStateError:
            return False
        return True

    async def wait_for_assignment(self, timeout_s: float = 30.0) -> frozenset[Partition]:
        """Fetch (and keep what arrives) until the group gives this member partitions.

        Returns the assignment; records fetched meanwhile are not lost, they stay uncommitted and
        are seeked back so the next `fetch` returns them.
        """
        consumer = self._running()
        deadline = time.monotonic() + timeout_s
        while not self._assignment:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaEdgeError(f"no partitions of {self._topic} assigned within {timeout_s:g} s")
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 0.2) * 1000))
            for tp, batch in batches.items():
                if batch:
                    consumer.seek(tp, batch[0].offset)
        return self._assignment

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit `offsets` (next offset to read, i.e. last durable offset + 1) per partition.

        Raises CommitRejected when the group rebalanced or the partition is no longer ours: the
        new owner will process those records again, so the caller must not assume they are done.
        """
        consumer = self._running()
        native = {_AioTopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()}
        try:
            await consumer.commit(native)
        except (CommitFailedError, RebalanceInProgressError, IllegalStateError) as exc:
            raise CommitRejected(f"commit of {dict(offsets)} refused (group moved on): {exc}") from exc
        except KafkaError as exc:
            error = KafkaEdgeError(f"commit of {dict(offsets)} failed: {exc!r}")
            error.retriable = bool(getattr(exc, "retriable", False))
            raise error from exc

    async def commit_records(self, records: Iterable[Record]) -> None:
        """Commit past `records`: per partition, the highest offset + 1.

        Only pass records whose results are durable, and every earlier record of the same partition.
        """
        highest: dict[Partition, int] = {}
        for record in records:
            tp = record.tp
            highest[tp] = max(highest.get(tp, -1), record.offset + 1)
        if highest:
            await self.commit(highest)

    async def committed(self, partition: Partition) -> int | None:
        """The group's committed offset for `partition` (None when nothing was committed)."""
        consumer = self._running()
        native = _AioTopicPartition(partition.topic, partition.partition)
        try:
            result: int | None = await consumer.committed(native)
        except KafkaError as exc:
            error = KafkaEdgeError(f"reading the committed offset of {partition} failed: {exc!r}")
            error.retriable = bool(getattr(exc, "retriable", False))
            raise error from exc
        return result

    async def _assigned(self, partitions: frozenset[Partition]) -> None:
        self._assignment = partitions
        if self._hooks is not None:
            await self._hooks.on_assigned(partitions, self.generation)

    async def _revoked(self, partitions: frozenset[Partition]) -> None:
        generation = self.generation
        self._assignment = frozenset()
        # aiokafka revokes an empty set before the first join; nothing to tell the hooks then.
        if self._hooks is not None and partitions:
            await self._hooks.on_revoked(partitions, generation)

    def _running(self) -> AIOKafkaConsumer:
        if self._state is not Lifecycle.OPENED or self._consumer is None:
            raise NotStarted(f"consumer is {self._state.value}: call start() first")
        return self._consumer
