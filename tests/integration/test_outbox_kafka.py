"""The outbox against a real broker: records in order with headers, a frozen broker, a killed process.

CAMPAIGN_FSM_BROKER picks the broker (noida, tansu or an address). The freeze test starts a broker
of its own (the session broker is shared and must not be frozen) for the issue's 30 s; it is
skipped for an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.devtools.brokers import BROKER_ENV_VAR, BrokerHandle, parse_broker_choice, running_broker
from adapters.kafka import (
    EVENT_CONTENT_TYPE,
    RESULT_TYPE,
    STATE_TYPE,
    KafkaSettings,
    Producer,
    Record,
    TopicNames,
    ensure_topics,
    open_admin,
    read_topic,
)
from adapters.outbox import Outbox
from schemas.commands import CommandResult
from schemas.events import STATE_CHANGED_TYPE, state_changed_event
from schemas.types import Outcome

pytestmark = pytest.mark.integration

FREEZE_S = 30.0
REPO = Path(__file__).resolve().parents[2]


def event(campaign: str, seq: int) -> dict[str, Any]:
    return state_changed_event(campaign_id=campaign, sequence=seq, from_state="RUNNING", to_state="PAUSING",
                               cause="command", at=1_700_000_000.0 + seq, dialer_type="PREDICTIVE")


def snapshot(campaign: str, seq: int) -> dict[str, Any]:
    return {"campaignId": campaign, "state": "PAUSING", "sequence": seq}


async def make_topics(config: KafkaSettings) -> None:
    async with open_admin(config) as admin:
        await ensure_topics(admin, config.topics, config.partitions)


def first_of_each_id(records: list[Record]) -> list[Record]:
    """What a consumer keeps after dropping re-deliveries by event id (header `event-id`; events
    carry no `ce_` header since issue 13: that marks CloudEvents binary mode)."""
    seen: set[str | None] = set()
    kept = []
    for record in records:
        event_id = record.header("event-id")
        if event_id not in seen:
            seen.add(event_id)
            kept.append(record)
    return kept


def sequences_by_campaign(records: list[Record]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for record in records:
        body = orjson.loads(record.value or b"")
        assert record.key == body["subject"] == body["data"]["campaignId"]
        assert record.header("event-id") == body["id"]
        found[body["subject"]].append(body["data"]["sequence"])
    return found


async def test_records_reach_their_topics_in_order_with_headers(kafka_config: KafkaSettings, tmp_path: Path) -> None:
    await make_topics(kafka_config)
    topics = kafka_config.topics
    campaigns = [f"camp-{n}" for n in range(6)]
    results: list[CommandResult] = []

    async def life(box: Outbox, campaign: str) -> None:
        for seq in range(1, 21):
            await box.state_changed(event(campaign, seq), snapshot(campaign, seq))
            if seq % 5 == 0:
                result = CommandResult(command_id=uuid.uuid4(), campaign_id=campaign, outcome=Outcome.COMPLETED,
                                       message="done", at=datetime(2024, 1, 1, tzinfo=UTC))
                results.append(result)
                await box.command_result(result)

    async with Producer(kafka_config) as producer:
        async with Outbox(tmp_path / "outbox.db", producer, topics=topics) as box:
            await asyncio.gather(*(life(box, c) for c in campaigns))
            assert await box.wait_drained(30)
            assert box.depth == 0 and box.delivered > 0

    events = await read_topic(kafka_config, topics.events)
    assert len(events) == 6 * 20  # a healthy broker: no re-deliveries at all
    assert sequences_by_campaign(events) == {c: list(range(1, 21)) for c in campaigns}
    for record in events:
        assert record.header("event-type") == STATE_CHANGED_TYPE
        assert record.header("content-type") == EVENT_CONTENT_TYPE
        assert not [name for name, _ in record.headers if name.startswith("ce_")], "structured mode: no ce_ header"
        sequence = orjson.loads(record.value or b"")["data"]["sequence"]
        assert record.value == orjson.dumps(event(record.key or "", sequence))  # byte for byte
    state = await read_topic(kafka_config, topics.state)
    latest = {r.key: orjson.loads(r.value or b"") for r in state}
    assert latest == {c: snapshot(c, 20) for c in campaigns}
    assert {r.header("ce_type") for r in state} == {STATE_TYPE}
    got = await read_topic(kafka_config, topics.results)
    assert sorted(orjson.loads(r.value or b"")["commandId"] for r in got) == sorted(str(r.command_id) for r in results)
    assert {r.header("ce_type") for r in got} == {RESULT_TYPE}
    assert all((r.header("ce_id") or "").startswith(orjson.loads(r.value or b"")["commandId"] + ":COMPLETED:")
               for r in got)


async def test_an_oversized_record_does_not_stop_the_records_behind_it(kafka_config: KafkaSettings,
                                                                     tmp_path: Path) -> None:
    # Issue 10, finding 2: a record over the producer's 1 MiB limit was retried forever, and no
    # record behind it (a legitimate stop's results and events) ever reached the broker.
    await make_topics(kafka_config)
    topics = kafka_config.topics
    done = CommandResult(command_id=uuid.uuid4(), campaign_id="camp-0", outcome=Outcome.COMPLETED,
                         message="stopped", at=datetime(2024, 1, 1, tzinfo=UTC))
    oversized = event("camp-0", 2)
    oversized["data"]["blob"] = "x" * 1_200_000
    async with Producer(kafka_config) as producer:
        box = Outbox(tmp_path / "outbox.db", producer, topics=topics, retry_initial=0.05, retry_max=0.5)
        await box.open()
        await box.state_changed(event("camp-0", 1), snapshot("camp-0", 1))
        await box.state_changed(oversized, snapshot("camp-0", 2), [done])
        for seq in (3, 4):
            await box.state_changed(event("camp-0", seq), snapshot("camp-0", seq))
            await box.state_changed(event("camp-1", seq), snapshot("camp-1", seq))
        await box.start()
        try:
            assert await box.wait_drained(30), f"{box.depth} rows stuck behind: {box.last_error}"
            assert box.undeliverable == 1
        finally:
            await box.stop(flush_timeout=0)

    events = await read_topic(kafka_config, topics.events)
    assert sequences_by_campaign(first_of_each_id(events)) == {"camp-0": [1, 3, 4], "camp-1": [3, 4]}
    got = await read_topic(kafka_config, topics.results)
    assert [orjson.loads(r.value or b"")["commandId"] for r in got] == [str(done.command_id)]
    latest = {r.key: orjson.loads(r.value or b"")["sequence"] for r in await read_topic(kafka_config, topics.state)}
    assert latest == {"camp-0": 4, "camp-1": 4}
    (stand_in,) = await read_topic(kafka_config, topics.dead_letters)
    assert stand_in.key == "camp-0" and len(stand_in.value or b"") <= 1024
    assert stand_in.header("original-topic") == topics.events and stand_in.header("original-ce-id") == "camp-0:2"
    assert int(stand_in.header("original-size") or 0) > 1_200_000
    assert "max_request_size" in (stand_in.header("error") or "")


# --- the broker unreachable for a while ----------------------------------------------------------


def _own_broker_kind() -> str:
    choice = parse_broker_choice(os.environ.get(BROKER_ENV_VAR))
    if choice.kind == "external":
        pytest.skip(f"{BROKER_ENV_VAR} names an existing broker ({choice.bootstrap}): this test must freeze "
                    "a broker it started itself")
    return choice.kind


async def test_a_frozen_broker_loses_nothing_and_keeps_order(tmp_path: Path,
                                                             unique_name: Callable[[str], str]) -> None:
    kind = _own_broker_kind()
    with running_broker(kind, tmp_path / "broker") as handle:  # type: ignore[arg-type]
        await _freeze_run(handle, tmp_path, unique_name)


async def _freeze_run(handle: BrokerHandle, tmp_path: Path, unique_name: Callable[[str], str]) -> None:
    config = handle.kafka_config(topics=TopicNames.with_prefix(unique_name("o") + "."), partitions=3)
    await make_topics(config)
    campaigns = [f"camp-{n}" for n in range(5)]
    next_seq = dict.fromkeys(campaigns, 1)
    during: list[str] = []
    frozen = asyncio.Event()

    async def observe(box: Outbox, stop: asyncio.Event) -> None:
        rng = random.Random(5)
        while not stop.is_set():
            campaign = rng.choice(campaigns)
            seq = next_seq[campaign]
            await box.state_changed(event(campaign, seq), snapshot(campaign, seq))
            next_seq[campaign] = seq + 1
            if frozen.is_set():
                during.append(f"{campaign}:{seq}")
            await asyncio.sleep(0.02)

    producer = Producer(config)
    await producer.start()
    box = Outbox(tmp_path / "outbox.db", producer, topics=config.topics, retry_initial=0.2, retry_max=2.0)
    stop = asyncio.Event()
    try:
        await box.start()
        writer = asyncio.create_task(observe(box, stop), name="observe")
        await asyncio.sleep(1.5)
        handle.freeze()
        frozen.set()
        await asyncio.sleep(FREEZE_S)
        depth_while_frozen, age_while_frozen = box.depth, box.oldest_age
        handle.thaw()
        frozen.clear()
        await asyncio.sleep(1.5)
        stop.set()
        await writer
        assert await box.wait_drained(60), f"{box.depth} rows still waiting: {box.last_error}"
    finally:
        handle.thaw()
        stop.set()
        await box.stop(flush_timeout=0)
        with contextlib.suppress(Exception):
            await producer.stop()

    assert len(during) > 50  # the service kept observing, and each observation was durable at once
    # Delivery stalled while the broker was frozen (whether the producer kept retrying one request
    # or gave up and the outbox retried the batch depends on the client's timeouts).
    assert depth_while_frozen > 50 and age_while_frozen > FREEZE_S / 2
    events = await read_topic(config, config.topics.events)
    kept = first_of_each_id(events)
    assert sequences_by_campaign(kept) == {c: list(range(1, next_seq[c])) for c in campaigns}
    assert set(during) <= {r.header("event-id") for r in kept}
    state = await read_topic(config, config.topics.state)
    latest = {r.key: orjson.loads(r.value or b"")["sequence"] for r in state}
    assert latest == {c: next_seq[c] - 1 for c in campaigns}


# --- killed right after observing ----------------------------------------------------------------

_CHILD = r"""
import asyncio, sys
import orjson
from adapters.kafka import KafkaSettings, Producer, TopicNames
from adapters.outbox import Outbox
from schemas.events import state_changed_event

async def main(path, bootstrap, prefix, idempotent):
    config = KafkaSettings(bootstrap=bootstrap, topics=TopicNames.with_prefix(prefix),
                         enable_idempotence=idempotent == "1")
    producer = Producer(config)
    await producer.start()

    class Slow:  # a slow broker: rows pile up in the outbox, as they do under load
        async def send_many(self, records):
            await asyncio.sleep(0.05)
            return await producer.send_many(records)

    box = Outbox(path, Slow(), topics=config.topics)
    await box.start()
    seq = 0
    while True:
        seq += 1
        for campaign in ("camp-a", "camp-b", "camp-c"):
            event = state_changed_event(campaign_id=campaign, sequence=seq, from_state="RUNNING",
                                        to_state="PAUSING", cause="poll", at=1.7e9 + seq,
                                        dialer_type="PREVIEW")
            await box.state_changed(event, {"campaignId": campaign, "sequence": seq})
            sys.stdout.write(event["id"] + "\n")  # observed and durable
            sys.stdout.flush()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_killed_right_after_observing_loses_nothing(broker: BrokerHandle, kafka_config: KafkaSettings,
                                                          tmp_path: Path) -> None:
    await make_topics(kafka_config)
    path = tmp_path / "outbox.db"
    prefix = kafka_config.topics.events.removesuffix("campaign.events")
    argv = [sys.executable, "-c", _CHILD, str(path), kafka_config.bootstrap, prefix,
            "1" if kafka_config.enable_idempotence else "0"]
    durable: list[str] = []
    kill_after = random.Random(11).randrange(120, 240)
    child = await asyncio.create_subprocess_exec(*argv, cwd=REPO, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE)
    try:
        assert child.stdout is not None
        while len(durable) < kill_after:
            line = await asyncio.wait_for(child.stdout.readline(), 30)
            if not line:
                break
            durable.append(line.decode().strip())
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGKILL)  # killed right after it reported its last observation
        _, errors = await child.communicate()
    assert len(durable) == kill_after, f"the writer exited early: {errors.decode()[-2000:]}"
    assert child.returncode == -signal.SIGKILL

    async with Producer(kafka_config) as producer:
        box = Outbox(path, producer, topics=kafka_config.topics)
        await box.open()
        left_behind = box.depth
        await box.start()
        assert await box.wait_drained(30)
        await box.stop()
    assert left_behind > 0  # the kill really left undelivered rows behind

    kept = first_of_each_id(await read_topic(kafka_config, kafka_config.topics.events))
    ids = [r.header("event-id") for r in kept]
    assert set(durable) <= set(ids)  # nothing the writer was told is durable went missing
    found = sequences_by_campaign(kept)
    for campaign, seqs in found.items():
        assert seqs == list(range(1, len(seqs) + 1)), campaign  # in order, no gaps
