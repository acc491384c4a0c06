"""The Kafka edge against a real Kafka-protocol broker (CAMPAIGN_FSM_BROKER: noida, tansu or an address)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson
import pytest

from adapters.kafka import (
    CommandConsumer,
    CommitRejected,
    KafkaSettings,
    NotStarted,
    OutgoingRecord,
    Partition,
    Producer,
    Record,
    TopicNames,
    TopicReader,
    TopicSetupError,
    TopicSpec,
    ensure_topics,
    open_admin,
    read_topic,
    restore_latest,
)

pytestmark = pytest.mark.integration


async def _consume(consumer: CommandConsumer, count: int, timeout_s: float = 20.0) -> list[Record]:
    records: list[Record] = []
    async with asyncio.timeout(timeout_s):
        while len(records) < count:
            records.extend(await consumer.fetch(timeout_s=0.2))
    return records


async def _topics(config: KafkaSettings) -> list[str]:
    async with open_admin(config) as admin:
        return await ensure_topics(admin, config.topics, config.partitions)


async def test_ensure_topics_creates_missing_ones_and_is_idempotent(kafka_config: KafkaSettings) -> None:
    names = kafka_config.topics
    async with open_admin(kafka_config) as admin:
        # One topic exists beforehand, as if another instance had raced us to it.
        first = await ensure_topics(admin, [TopicSpec(names.events, 2)])
        created = await ensure_topics(admin, names, 3)
        again = await ensure_topics(admin, names, 3)
        listed = set(await admin.list_topics())
    assert first == [names.events]
    assert sorted(created) == sorted(set(names.all()) - {names.events})
    assert again == []
    assert set(names.all()) <= listed


async def test_round_trip_keeps_keys_headers_and_per_key_order(kafka_config: KafkaSettings) -> None:
    await _topics(kafka_config)
    topic = kafka_config.topics.commands
    keys = ["camp-a", "camp-b", "camp-c", "camp-d"]
    sent: list[tuple[str, int]] = [(keys[i % len(keys)], i) for i in range(40)]
    async with Producer(kafka_config) as producer:
        # Half one by one, half batched in one round trip: both must keep per-key order.
        deliveries = [
            await producer.send(topic, key, {"seq": seq}, ce_type="cmd.start", ce_id=f"id-{seq}",
                                headers={"trace": b"\x00\x01"})
            for key, seq in sent[:20]
        ]
        deliveries += await producer.send_many(
            OutgoingRecord(topic, key, {"seq": seq}, ce_type="cmd.start", ce_id=f"id-{seq}",
                           headers={"trace": b"\x00\x01"})
            for key, seq in sent[20:]
        )
    async with CommandConsumer(kafka_config) as consumer:
        records = await _consume(consumer, len(sent))
    assert len(records) == len(sent)
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in records:
        assert record.key is not None
        body = orjson.loads(record.value or b"")
        by_key[record.key].append(body["seq"])
        assert record.header("ce_type") == "cmd.start"
        assert record.header("ce_id") == f"id-{body['seq']}"
        assert record.header("content-type") == "application/json"
        assert dict(record.headers)["trace"] == b"\x00\x01"
        # The broker's answer to send() names exactly where the record is.
        assert deliveries[body["seq"]] == (record.partition, record.offset)
    for key in keys:
        assert by_key[key] == [seq for k, seq in sent if k == key]
    # One key, one partition.
    partitions = {k: {r.partition for r in records if r.key == k} for k in keys}
    assert all(len(p) == 1 for p in partitions.values())


async def test_uncommitted_records_are_redelivered_to_the_next_member(kafka_config: KafkaSettings) -> None:
    await _topics(kafka_config)
    topic = kafka_config.topics.commands
    async with Producer(kafka_config) as producer:
        await producer.send_many(OutgoingRecord(topic, "camp-1", {"n": n}) for n in range(10))
    async with CommandConsumer(kafka_config) as first:
        records = await _consume(first, 10)
        assert [orjson.loads(r.value or b"")["n"] for r in records] == list(range(10))
        # Only the first four results became durable.
        await first.commit_records(records[:4])
        assert await first.committed(records[0].tp) == records[3].offset + 1
    async with CommandConsumer(kafka_config) as second:
        again = await _consume(second, 6)
        await asyncio.sleep(0.3)
        again += await second.fetch(timeout_s=0.3)
    assert [orjson.loads(r.value or b"")["n"] for r in again] == list(range(4, 10))
    assert [r.offset for r in again] == [r.offset for r in records[4:]]


async def test_a_stopped_member_leaves_its_group_at_once(kafka_config: KafkaSettings) -> None:
    # tansu numbers generations from 0, where aiokafka skips its LeaveGroup: the wrapper sends it.
    await _topics(kafka_config)
    async with CommandConsumer(kafka_config) as consumer:
        await consumer.wait_for_assignment(timeout_s=20)
        async with open_admin(kafka_config) as admin:
            (during,) = (await admin.describe_consumer_groups([kafka_config.group_id]))[0].groups
    async with open_admin(kafka_config) as admin:
        (after,) = (await admin.describe_consumer_groups([kafka_config.group_id]))[0].groups
    assert len(during[5]) == 1  # members
    assert after[5] == []


async def test_committing_a_partition_not_owned_is_rejected(kafka_config: KafkaSettings) -> None:
    await _topics(kafka_config)
    async with CommandConsumer(kafka_config) as consumer:
        await consumer.wait_for_assignment(timeout_s=20)
        with pytest.raises(CommitRejected, match="group moved on"):
            await consumer.commit({Partition(kafka_config.topics.commands, 99): 1})


class _Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, frozenset[Partition], int | None]] = []

    async def on_assigned(self, partitions: frozenset[Partition], generation: int | None) -> None:
        self.calls.append(("assigned", partitions, generation))

    async def on_revoked(self, partitions: frozenset[Partition], generation: int | None) -> None:
        self.calls.append(("revoked", partitions, generation))


async def test_rebalance_hooks_see_partitions_and_generation(kafka_config: KafkaSettings) -> None:
    await _topics(kafka_config)
    hooks = _Hooks()
    topic = kafka_config.topics.commands
    everything = frozenset(Partition(topic, n) for n in range(kafka_config.partitions))
    consumer = CommandConsumer(kafka_config, hooks=hooks)
    await consumer.start()
    try:
        assigned = await consumer.wait_for_assignment(timeout_s=20)
        generation = consumer.generation
        assert consumer.member_id
    finally:
        await consumer.stop()
    assert assigned == everything
    assert isinstance(generation, int)
    assert hooks.calls[0] == ("assigned", everything, generation)
    assert hooks.calls[-1] == ("revoked", everything, generation)


async def test_state_reader_restores_the_latest_value_per_key(kafka_config: KafkaSettings) -> None:
    await _topics(kafka_config)
    topic = kafka_config.topics.state
    async with Producer(kafka_config) as producer:
        # Batched sends: several records per batch is what makes tansu's listed end offset short.
        for version in range(5):
            await producer.send_many(
                OutgoingRecord(topic, f"camp-{c}", {"campaign": c, "version": version}) for c in range(12)
            )
        await producer.send(topic, "camp-3", None)  # tombstone: campaign deleted
        await producer.send(topic, "camp-7", {"campaign": 7, "version": 99})
    latest = await restore_latest(kafka_config, topic)
    assert set(latest) == {f"camp-{c}" for c in range(12)} - {"camp-3"}
    for key, record in latest.items():
        body = orjson.loads(record.value or b"")
        assert body["version"] == (99 if key == "camp-7" else 4)
    everything = await read_topic(kafka_config, topic)
    assert len(everything) == 5 * 12 + 2


async def test_reader_ends_on_an_empty_topic_and_refuses_a_missing_one(kafka_config: KafkaSettings) -> None:
    await _topics(kafka_config)
    assert await read_topic(kafka_config, kafka_config.topics.events) == []
    with pytest.raises(TopicSetupError, match="does not exist"):
        await read_topic(kafka_config, kafka_config.topics.events + ".missing")


async def test_reader_reads_to_the_end_as_of_its_start(kafka_config: KafkaSettings) -> None:
    await _topics(kafka_config)
    topic = kafka_config.topics.events
    async with Producer(kafka_config) as producer:
        await producer.send_many(OutgoingRecord(topic, f"c{n % 5}", {"n": n}) for n in range(50))
        seen: list[Record] = []
        async with TopicReader(kafka_config, topic) as reader:
            async for batch in reader:
                seen.extend(batch)
                # Written after the reader started: it must still finish, without these.
                await producer.send(topic, "late", {"n": -1})
    assert sorted(orjson.loads(r.value or b"")["n"] for r in seen) == list(range(50))
    assert sum(reader.end_offsets.values()) == 50


async def test_reader_reads_a_time_window(kafka_config: KafkaSettings) -> None:
    await _topics(kafka_config)
    topic = kafka_config.topics.events
    async with Producer(kafka_config) as producer:
        await producer.send_many(OutgoingRecord(topic, f"c{n % 3}", {"n": n}) for n in range(10))
        await asyncio.sleep(0.01)  # record timestamps are the producer's clock in ms: make them differ
        await producer.send_many(OutgoingRecord(topic, f"c{n % 3}", {"n": n}) for n in range(10, 20))

    def numbers(records: list[Record]) -> list[int]:
        return sorted(orjson.loads(r.value or b"")["n"] for r in records)

    everything = await read_topic(kafka_config, topic)
    first_end = max(r.timestamp_ms for r in everything if orjson.loads(r.value or b"")["n"] < 10)
    second_start = min(r.timestamp_ms for r in everything if orjson.loads(r.value or b"")["n"] >= 10)
    assert first_end < second_start
    assert numbers(await read_topic(kafka_config, topic, since_ms=second_start)) == list(range(10, 20))
    assert numbers(await read_topic(kafka_config, topic, until_ms=first_end)) == list(range(10))
    # A time after the last record: nothing (tansu's time index answers an early offset here).
    assert await read_topic(kafka_config, topic, since_ms=second_start + 3_600_000) == []


async def test_clients_refuse_use_outside_their_lifetime(kafka_config: KafkaSettings) -> None:
    producer = Producer(kafka_config)
    with pytest.raises(NotStarted):
        await producer.send("x", "k", {})
    await producer.start()
    await producer.stop()
    with pytest.raises(NotStarted):
        await producer.send("x", "k", {})
    consumer = CommandConsumer(kafka_config)
    with pytest.raises(NotStarted):
        await consumer.fetch()


def test_config_refuses_bad_values_and_hides_the_password() -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        KafkaSettings(bootstrap="no-port")
    with pytest.raises(ValueError, match="invalid Kafka topic name"):
        TopicNames(commands="bad name")
    with pytest.raises(ValueError, match="distinct"):
        TopicNames(events="campaign.commands")
    with pytest.raises(ValueError, match="username and a password"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="svc")
    config = KafkaSettings(bootstrap="k1:9092,k2:9092", security_protocol="SASL_PLAINTEXT",
                           sasl_mechanism="SCRAM-SHA-512", sasl_username="svc", sasl_password="s3cr3t!")
    assert "s3cr3t!" not in repr(config)
    assert "s3cr3t!" not in str(config)
    kwargs = config.client_kwargs()
    assert kwargs["sasl_plain_password"] == "s3cr3t!"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert TopicNames.with_prefix("dev.").state == "dev.campaign.state"
    assert [s.configs for s in TopicNames().specs(3) if s.name == "campaign.state"] == [
        {"cleanup.policy": "compact"}
    ]
