"""The CloudEvents SDK reads our records from a real broker through its documented Kafka entry points,
automatic mode detection included (issue 13, item 7): events are structured mode, so no header of
theirs may start with `ce_` (the SDK's marker of binary mode); results are complete binary-mode
CloudEvents."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import orjson
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.v1 import kafka as ce_kafka_v1

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.kafka import EVENT_CONTENT_TYPE, RECORD_SOURCE, RESULT_TYPE, read_topic
from schemas.events import STATE_CHANGED_TYPE
from schemas.types import CampaignState
from tests.integration.harness import e2e

pytestmark = pytest.mark.integration


async def test_the_cloudevents_sdk_reads_every_event_with_auto_detection(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    tenant = generate_tenant(2, 1, state=CampaignState.STOPPED)
    async with e2e(broker, unique_name, tenant=tenant) as run:
        command = await run.send("campaign-0001", "start")
        await run.until(lambda: run.outcomes(command)[-1:] == ["COMPLETED"], timeout=60, what="the start completed")
        config = broker.kafka_config(topics=run.topics)
        records = await read_topic(config, run.topics.events)
        results = await read_topic(config, run.topics.results)
    assert len(records) >= 3  # the reconcile's first event, STARTING, RUNNING
    for record in records:
        assert record.value is not None
        headers = dict(record.headers)
        assert headers["content-type"] == EVENT_CONTENT_TYPE.encode()  # what existing readers rely on
        wire = orjson.loads(record.value)
        message = ce_kafka.KafkaMessage(headers=headers, key=record.raw_key, value=record.value)
        for read in (ce_kafka.from_kafka_event, ce_kafka.from_structured_event):
            event = read(message)
            attributes = event.get_attributes()
            assert (attributes["id"], attributes["source"], attributes["type"], attributes["subject"]) == (
                wire["id"], wire["source"], STATE_CHANGED_TYPE, wire["subject"]), read.__name__
            assert attributes["specversion"] == "1.0" and attributes["partitionkey"] == record.key
            assert attributes["time"] == datetime.fromisoformat(wire["time"])
            assert event.get_data() == wire["data"]
        # The harness runs the service 50 times faster than real time: `time` is the wall clock
        # all the same (it ran minutes ahead before issue 13), the scaled instant is `platformTime`.
        assert abs(datetime.fromisoformat(wire["time"]).timestamp() - time.time()) < 60
        assert wire["data"]["platformTime"] >= wire["time"]
        # The SDK's legacy API (cloudevents.v1): structured mode only, it has no auto-detection.
        legacy = ce_kafka_v1.from_structured(ce_kafka_v1.KafkaMessage(headers, record.raw_key, record.value))
        assert (legacy["id"], legacy["type"], legacy.data) == (wire["id"], STATE_CHANGED_TYPE, wire["data"])
    # Results are binary-mode CloudEvents (their `ce_` headers complete): the SDK takes them whole too.
    assert len(results) >= 2  # ACCEPTED, COMPLETED
    for record in results:
        assert record.value is not None
        headers = dict(record.headers)
        event = ce_kafka.from_kafka_event(ce_kafka.KafkaMessage(headers=headers, key=record.raw_key,
                                                                value=record.value))
        attributes = event.get_attributes()
        assert (attributes["type"], attributes["source"], attributes["id"]) == (
            RESULT_TYPE, RECORD_SOURCE, record.header("ce_id"))
        assert attributes["datacontenttype"] == "application/json"
        assert event.get_data() == orjson.loads(record.value)
        result = orjson.loads(record.value)
        assert abs(datetime.fromisoformat(result["at"]).timestamp() - time.time()) < 60
        assert "platformTime" in result
