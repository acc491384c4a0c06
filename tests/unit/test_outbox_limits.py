"""Issue 10, finding 2: one record the broker can never take must not stop every output behind it.

The producer under test is the real `adapters.kafka.Producer` over a stand-in for aiokafka's
client that refuses what aiokafka and a broker refuse: a record over the 1 MiB max request size
before anything is sent (as aiokafka's send() does), and a record over the broker's own limit
in its acknowledgement (as a broker's produce response does). Outgoing texts are bounded too: a
result message and a contract error stay small however large the record they speak of.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from adapters.kafka import KafkaSettings, KafkaSink, OutgoingRecord, ProduceFailed, Producer, TopicNames
from adapters.kafka import producer as producer_module
from adapters.outbox import Outbox
from schemas import ContractError, decode, encode
from schemas.commands import Command, CommandResult
from schemas.events import state_changed_event
from schemas.types import Outcome, ReasonCode

TOPICS = TopicNames.with_prefix("u.")
FAST = {"retry_initial": 0.001, "retry_max": 0.005}
MIB = 1_048_576
MARKER = "… [truncated, 2000000 characters in all]"


@dataclass(frozen=True)
class Sent:
    topic: str
    key: str | None
    value: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class _Metadata:
    partition: int
    offset: int


class FakeClient:
    """What `Producer` drives in place of AIOKafkaProducer: acknowledges at once, refuses like Kafka."""

    def __init__(self, *, broker_limit: int | None = None) -> None:
        self.log: list[Sent] = []
        self.broker_limit = broker_limit
        self.refuse_topic: str | None = None  # every record for it fails: authorization, not the record
        self.down = False  # every record times out (aiokafka marks KafkaTimeoutError non-retriable)
        self.attempts = 0
        self.attempted = asyncio.Event()

    async def start(self) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[_Metadata]:
        self.attempts += 1
        self.attempted.set()
        headers = headers or []
        if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) > MIB:
            raise MessageSizeTooLargeError("The message is too large when serialized")  # aiokafka's own check
        future: asyncio.Future[_Metadata] = asyncio.get_running_loop().create_future()
        error: KafkaError | None = None
        if self.down:
            error = KafkaTimeoutError()
        elif topic == self.refuse_topic:
            error = TopicAuthorizationFailedError(topic)
        elif self.broker_limit is not None and len(value or b"") > self.broker_limit:
            error = MessageSizeTooLargeError()  # the broker's answer for this record's batch
        if error is not None:
            future.set_exception(error)
            return future
        self.log.append(Sent(topic, None if key is None else key.decode(), value or b"",
                             {name: raw.decode() for name, raw in headers}))
        future.set_result(_Metadata(0, len(self.log) - 1))
        return future

    def on(self, topic: str) -> list[Sent]:
        return [sent for sent in self.log if sent.topic == topic]


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClient]:
    fake = FakeClient()
    monkeypatch.setattr(producer_module, "AIOKafkaProducer", lambda **_: fake)
    yield fake


def event(campaign: str, seq: int, **extra: Any) -> dict[str, Any]:
    body = state_changed_event(campaign_id=campaign, sequence=seq, from_state="STOPPED", to_state="STARTING",
                               cause="command", at=1_700_000_000.0 + seq, dialer_type="PREDICTIVE")
    body["data"].update(extra)
    return body


def snapshot(campaign: str, seq: int, **extra: Any) -> dict[str, Any]:
    return {"campaignId": campaign, "state": "STARTING", "sequence": seq, **extra}


def result(campaign: str, message: str = "ok") -> CommandResult:
    return CommandResult(command_id=uuid.uuid4(), campaign_id=campaign, outcome=Outcome.COMPLETED,
                         message=message, at=datetime(2024, 1, 1, tzinfo=UTC))


def sequences(sent: list[Sent], campaign: str) -> list[int]:
    return [orjson.loads(s.value)["data"]["sequence"] for s in sent if s.topic == TOPICS.events and s.key == campaign]


def kept_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT seq, kind, key, length(value), dead_lettered, error FROM undeliverable "
                            "ORDER BY seq").fetchall()
    conn.close()
    return rows


async def test_a_record_over_the_request_limit_is_set_aside_and_the_rows_behind_it_go(
        tmp_path: Path, client: FakeClient) -> None:
    # Before: the outbox retried the oversized row forever and delivered nothing behind it.
    path = tmp_path / "outbox.db"
    huge = "x" * (MIB + 200_000)
    done = result("c-1")
    producer = Producer(KafkaSettings(bootstrap="127.0.0.1:9", topics=TOPICS))
    await producer.start()
    box = Outbox(path, producer, topics=TOPICS, **FAST)
    await box.open()
    await box.state_changed(event("c-1", 1), snapshot("c-1", 1))
    await box.state_changed(event("c-1", 2, blob=huge), snapshot("c-1", 2), [done])  # an event never produced
    await box.state_changed(event("c-2", 2), snapshot("c-2", 2))
    await box.state_changed(event("c-1", 3), snapshot("c-1", 3))
    await box.state_changed(event("c-2", 3), snapshot("c-2", 3))
    client.down = True
    await box.start()
    while client.attempts < 6:
        client.attempted.clear()
        await asyncio.wait_for(client.attempted.wait(), 5)
    # A timeout is no record's fault (though aiokafka calls it non-retriable): nothing is set aside.
    assert box.undeliverable == 0 and box.depth == 8  # 5 events, 1 result, the latest snapshot of each
    client.down = False
    assert await box.wait_drained(5), f"{box.depth} rows stuck: {box.last_error}"
    await box.stop()

    assert sequences(client.log, "c-1") == [1, 3]
    assert sequences(client.log, "c-2") == [2, 3]
    assert {s.key: orjson.loads(s.value)["sequence"] for s in client.on(TOPICS.state)} == {"c-1": 3, "c-2": 3}
    assert [s.value for s in client.on(TOPICS.results)] == [encode(done)]  # its change's result still went
    (stand_in,) = client.on(TOPICS.dead_letters)
    original = orjson.dumps(event("c-1", 2, blob=huge))
    assert stand_in.key == "c-1" and len(stand_in.value) <= 1024
    assert stand_in.value == original[:len(stand_in.value)]
    headers = stand_in.headers
    assert headers["original-topic"] == TOPICS.events and headers["original-key"] == "c-1"
    assert headers["original-ce-id"] == "c-1:2" and headers["original-size"] == str(len(original))
    assert headers["outbox-seq"].isdigit()
    assert "max_request_size" in headers["error"] and len(headers["error"]) <= 500
    assert box.undeliverable == 1
    ((seq, kind, key, size, dead_lettered, error),) = kept_rows(path)
    assert (kind, key, dead_lettered, str(seq)) == ("events", "c-1", 1, headers["outbox-seq"])
    assert size == len(original)  # kept whole: nothing is lost
    assert "ProduceFailed" in error

    reopened = Outbox(path, producer, topics=TOPICS, **FAST)
    await reopened.open()
    assert reopened.undeliverable == 1 and reopened.depth == 0  # the alarm survives a restart
    await reopened.stop()
    await producer.stop()


async def test_a_record_the_broker_refuses_is_named_and_only_it_is_set_aside(
        tmp_path: Path, client: FakeClient) -> None:
    client.broker_limit = 10_000  # under the client's 1 MiB: only the broker's answer tells
    producer = Producer(KafkaSettings(bootstrap="127.0.0.1:9", topics=TOPICS))
    await producer.start()
    async with Outbox(tmp_path / "outbox.db", producer, topics=TOPICS, **FAST) as box:
        for seq in range(1, 4):
            await box.state_changed(event("c-1", seq), snapshot("c-1", seq))
        await box.state_changed(event("c-1", 4, note="y" * 20_000), snapshot("c-1", 4))
        for seq in range(5, 8):
            await box.state_changed(event("c-1", seq), snapshot("c-1", seq))
        assert await box.wait_drained(5), f"{box.depth} rows stuck: {box.last_error}"
        assert box.undeliverable == 1
    await producer.stop()
    # Records behind the refused one may have landed with it and go again (consumers drop repeats
    # by event id, header `event-id`); the ones the broker took ahead of it are not sent twice.
    seen: set[str] = set()
    first = [s for s in client.on(TOPICS.events)
             if not (s.headers["event-id"] in seen or seen.add(s.headers["event-id"]))]
    assert sequences(first, "c-1") == [1, 2, 3, 5, 6, 7]
    assert [sequences(client.log, "c-1").count(n) for n in (1, 2, 3)] == [1, 1, 1]
    (stand_in,) = client.on(TOPICS.dead_letters)
    assert stand_in.headers["original-ce-id"] == "c-1:4" and stand_in.headers["original-topic"] == TOPICS.events
    assert "MessageSizeTooLargeError" in stand_in.headers["error"]


async def test_when_the_stand_in_is_refused_too_the_row_is_kept_and_delivery_goes_on(
        tmp_path: Path, client: FakeClient) -> None:
    client.refuse_topic = TOPICS.dead_letters
    path = tmp_path / "outbox.db"
    producer = Producer(KafkaSettings(bootstrap="127.0.0.1:9", topics=TOPICS))
    await producer.start()
    async with Outbox(path, producer, topics=TOPICS, **FAST) as box:
        await box.state_changed(event("c-1", 1, note="z" * (MIB + 10)), snapshot("c-1", 1))
        await box.state_changed(event("c-1", 2), snapshot("c-1", 2))
        assert await box.wait_drained(5), f"{box.depth} rows stuck: {box.last_error}"
        assert box.undeliverable == 1
    await producer.stop()
    assert sequences(client.log, "c-1") == [2]
    assert client.on(TOPICS.dead_letters) == []
    ((_, kind, key, size, dead_lettered, error),) = kept_rows(path)
    assert (kind, key, dead_lettered) == ("events", "c-1", 0) and size > MIB
    assert "stand-in was refused too" in error and "TopicAuthorizationFailed" in error


async def test_the_producer_names_the_record_over_its_limit_and_sends_nothing(client: FakeClient) -> None:
    producer = Producer(KafkaSettings(bootstrap="127.0.0.1:9", topics=TOPICS))
    await producer.start()
    records = [OutgoingRecord(TOPICS.events, "c-1", b"{}"), OutgoingRecord(TOPICS.events, "c-1", b"x" * (MIB + 1)),
               OutgoingRecord(TOPICS.events, "c-1", b"{}")]
    with pytest.raises(ProduceFailed) as caught:
        await producer.send_many(records)
    assert (caught.value.refused, caught.value.retriable) == (1, False)
    assert client.log == []  # checked before anything of the batch was on its way
    await producer.stop()


async def test_the_direct_kafka_sink_dead_letters_a_refused_record_and_sends_the_rest(client: FakeClient) -> None:
    producer = Producer(KafkaSettings(bootstrap="127.0.0.1:9", topics=TOPICS))
    await producer.start()
    sink = KafkaSink(producer, TOPICS)
    done = result("c-1")
    await sink.state_changed(event("c-1", 1), snapshot("c-1", 1, blob="x" * (MIB + 1)), [done])
    await producer.stop()
    assert sequences(client.log, "c-1") == [1]
    assert [s.value for s in client.on(TOPICS.results)] == [encode(done)]
    (stand_in,) = client.on(TOPICS.dead_letters)
    assert stand_in.headers["original-topic"] == TOPICS.state and len(stand_in.value) <= 1024
    assert sink.undeliverable == 1


async def test_a_result_with_a_2_mb_message_serialises_small_with_the_marker(
        tmp_path: Path, client: FakeClient) -> None:
    # Before: the message was kept whole and the record came to 2 MB, over the producer's limit.
    big = CommandResult(command_id=uuid.uuid4(), campaign_id="c-1", outcome=Outcome.REFUSED,
                        reason=ReasonCode.MALFORMED_COMMAND, message="x" * 2_000_000,
                        at=datetime(2024, 1, 1, tzinfo=UTC))
    wire = encode(big)
    assert len(wire) < 4_000
    body = orjson.loads(wire)
    assert len(body["message"]) == 2000 and body["message"].endswith(MARKER)
    assert decode(CommandResult, wire) == big  # what was published still parses
    # No caller gets around it: copies skip validation but not serialisation.
    copied = big.model_copy(update={"message": "y" * 2_000_000})
    assert orjson.loads(encode(copied))["message"].endswith(MARKER)
    assert CommandResult.model_json_schema()["properties"]["message"]["maxLength"] == 2000

    producer = Producer(KafkaSettings(bootstrap="127.0.0.1:9", topics=TOPICS))
    await producer.start()
    async with Outbox(tmp_path / "outbox.db", producer, topics=TOPICS, **FAST) as box:
        await box.command_result(big)
        assert await box.wait_drained(5)
        assert box.undeliverable == 0
    await producer.stop()
    assert [s.value for s in client.on(TOPICS.results)] == [wire]


def test_a_contract_error_over_a_huge_record_renders_short() -> None:
    # Before: every one of the 40,000 errors was in the text, 1.59 MB of it.
    fields = {f"unknownField{n:05d}": n for n in range(40_000)}
    raw = orjson.dumps({"id": str(uuid.uuid4()), "campaignId": "campaign-0001", **fields})
    with pytest.raises(ContractError) as caught:
        decode(Command, raw)
    text = str(caught.value)
    assert len(text) < 2000
    assert text.startswith("invalid Command: ") and text.endswith(f"and {40_003 - 5} more")
    assert len(caught.value.errors) == 40_003  # every error is still there for code that wants them
    # One field whose name alone is a megabyte.
    with pytest.raises(ContractError) as one:
        decode(Command, orjson.dumps({"id": str(uuid.uuid4()), "campaignId": "campaign-0001", "action": "stop",
                                      "requestedBy": "ops", "issuedAt": "2026-01-01T00:00:00Z", "n" * MIB: 1}))
    assert len(str(one.value)) < 2000 and "characters in all]" in str(one.value)
    assert max(len(e["field"]) for e in one.value.errors) <= 100
