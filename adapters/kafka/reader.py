"""Reading a topic back: `TopicReader`, `read_topic` and `restore_latest` read a topic from the
beginning (or a time) to its end as of the start, for restoring ``campaign.state`` and for replay.

Why the reader does not trust one end-offset snapshot: tansu answers ListOffsets(latest) with
"base offset of the last batch + 1", so after a batched produce it reports too small an end; a
reader that stopped there would silently drop the tail of the last batch. The high watermark in a
fetch response is right on every broker, so a partition is finished only once the reader has seen
a fetch answer for it and its position has reached max(ListOffsets end, first fetched high
watermark). On real Kafka the two agree; the extra fetch costs one round trip per partition.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as _AioTopicPartition
from aiokafka.errors import KafkaError

from .config import KafkaSettings
from .errors import KafkaEdgeError, Lifecycle, NotStarted, ReaderStalled, TopicSetupError
from .records import Partition, Record, to_record

__all__ = ["TopicReader", "read_topic", "restore_latest"]


class TopicReader:
    """Read one topic from the beginning (or from `since_ms`) to its end as of the start.

    `since_ms` / `until_ms` bound record timestamps (inclusive). The start offset comes from
    the broker's time index, but records outside the window are also filtered here: tansu answers
    a time past its last record with an early offset instead of the end.

    Use as ``async with TopicReader(config, topic) as reader: async for batch in reader: ...``.
    Batches are lists of records in offset order per partition. No consumer group is involved
    and nothing is committed. See the module docstring for how the end is found.
    """

    def __init__(
        self,
        config: KafkaSettings,
        topic: str,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        partitions: Iterable[int] | None = None,
        stall_timeout_s: float = 30.0,
        max_batch: int = 10_000,
        fetch_max_wait_ms: int = 50,
    ) -> None:
        self._config = config
        self._topic = topic
        self._since_ms = since_ms
        self._until_ms = until_ms
        self._only = None if partitions is None else frozenset(partitions)
        self._stall_timeout_s = stall_timeout_s
        self._max_batch = max_batch
        # A short wait matters for partitions already at their end: their confirming fetch
        # returns only when this wait expires.
        self._fetch_max_wait_ms = min(fetch_max_wait_ms, config.fetch_max_wait_ms or fetch_max_wait_ms)
        self._consumer: AIOKafkaConsumer | None = None
        self._targets: dict[_AioTopicPartition, int] = {}
        self._listed_end: dict[_AioTopicPartition, int] = {}
        self._pending: set[_AioTopicPartition] = set()
        self._state = Lifecycle.UNOPENED

    @property
    def end_offsets(self) -> dict[Partition, int]:
        """The end each partition was read to (known once iteration has finished)."""
        return {Partition(tp.topic, tp.partition): offset for tp, offset in self._targets.items()}

    async def __aenter__(self) -> TopicReader:
        if self._state is not Lifecycle.UNOPENED:
            raise NotStarted("a TopicReader reads once; make a new one")
        self._state = Lifecycle.OPENED
        kwargs = self._config.client_kwargs()
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            **kwargs,
        )
        self._consumer = consumer
        try:
            await consumer.start()
            await self._position_at_start(consumer)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _close(self) -> None:
        self._state = Lifecycle.CLOSED
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _position_at_start(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await consumer.topics()  # refreshes cluster metadata
            numbers = consumer.partitions_for_topic(self._topic)
        except KafkaError as exc:
            raise KafkaEdgeError(f"cannot read metadata of {self._topic}: {exc!r}") from exc
        if not numbers:
            raise TopicSetupError(f"topic {self._topic} does not exist on {self._config.bootstrap}")
        if self._only is not None:
            unknown = self._only - set(numbers)
            if unknown:
                raise TopicSetupError(f"topic {self._topic} has no partitions {sorted(unknown)}")
            numbers = self._only
        tps = [_AioTopicPartition(self._topic, n) for n in sorted(numbers)]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        self._listed_end = dict(end)
        starts = dict(begin)
        if self._since_ms is not None:
            found = await consumer.offsets_for_times({tp: self._since_ms for tp in tps})
            for tp in tps:
                hit = found.get(tp)
                starts[tp] = hit.offset if hit is not None else end[tp]
        for tp in tps:
            consumer.seek(tp, starts[tp])
            if end[tp] <= begin[tp]:
                # Empty on every broker we know (tansu's low end is still >= 1 once anything was written).
                self._targets[tp] = end[tp]
                consumer.pause(tp)
            else:
                self._pending.add(tp)

    def __aiter__(self) -> AsyncIterator[list[Record]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[Record]]:
        consumer = self._consumer
        if consumer is None:
            raise NotStarted("use TopicReader inside 'async with'")
        last_progress = time.monotonic()
        while self._pending:
            try:
                fetched = await consumer.getmany(
                    *self._pending,
                    timeout_ms=max(self._fetch_max_wait_ms * 4, 100),
                    max_records=self._max_batch,
                )
            except KafkaError as exc:
                raise KafkaEdgeError(f"reading {self._topic} failed: {exc!r}") from exc
            out: list[Record] = []
            for tp, raws in fetched.items():
                target = self._target(consumer, tp)
                for raw in raws:
                    if target is not None and raw.offset >= target:
                        break  # written after we started: not ours to read
                    if self._outside_window(raw.timestamp):
                        continue
                    out.append(to_record(raw))
            progressed = bool(out)
            for tp in list(self._pending):
                target = self._target(consumer, tp)
                if target is not None and await consumer.position(tp) >= target:
                    self._pending.discard(tp)
                    consumer.pause(tp)
                    progressed = True
            if progressed:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self._stall_timeout_s:
                stuck = {f"{tp.topic}[{tp.partition}]": self._targets.get(tp) for tp in self._pending}
                raise ReaderStalled(
                    f"no progress reading {self._topic} for {self._stall_timeout_s:g} s; "
                    f"unfinished partitions (target end): {stuck}"
                )
            if out:
                yield out

    def _outside_window(self, timestamp_ms: int) -> bool:
        if self._since_ms is not None and timestamp_ms < self._since_ms:
            return True
        return self._until_ms is not None and timestamp_ms > self._until_ms

    def _target(self, consumer: AIOKafkaConsumer, tp: _AioTopicPartition) -> int | None:
        target = self._targets.get(tp)
        if target is None:
            highwater = consumer.highwater(tp)
            if highwater is None:
                return None  # no fetch answer yet: the listed end alone may be short (tansu)
            target = max(self._listed_end[tp], highwater)
            self._targets[tp] = target
        return target


async def read_topic(config: KafkaSettings, topic: str, **options: Any) -> list[Record]:
    """Every record of `topic` up to its end as of now (options as for TopicReader)."""
    records: list[Record] = []
    async with TopicReader(config, topic, **options) as reader:
        async for batch in reader:
            records.extend(batch)
    return records


async def restore_latest(config: KafkaSettings, topic: str, **options: Any) -> dict[str, Record]:
    """The latest record per key of a (compacted) topic; a tombstone (None value) deletes its key.

    Keyless records are skipped. Per-key order is partition order, which holds because a key
    always maps to one partition.
    """
    latest: dict[str, Record] = {}
    async with TopicReader(config, topic, **options) as reader:
        async for batch in reader:
            for record in batch:
                if record.key is None:
                    continue
                if record.value is None:
                    latest.pop(record.key, None)
                else:
                    latest[record.key] = record
    return latest
