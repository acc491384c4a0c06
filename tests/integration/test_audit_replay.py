"""`campaign-fsm replay` and `campaign-fsm audit` against the real broker, run in-process through the CLI.

The log is what the orchestrator would publish: events out of `CampaignMachine`, chained with
`event_hash`, keyed by campaign id with the ce_type/ce_id headers, spread over three partitions.
"""

from __future__ import annotations

import asyncio
import copy
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.cli import main
from adapters.devtools.brokers import BrokerHandle
from adapters.kafka import (
    EVENT_CONTENT_TYPE,
    STATE_TYPE,
    KafkaSettings,
    OutgoingRecord,
    Producer,
    TopicSpec,
    ensure_topics,
    open_admin,
    read_topic,
)
from fsm.audit_history import HistoryGenerator
from schemas.events import STATE_CHANGED_TYPE

pytestmark = pytest.mark.integration

CAMPAIGNS = 12
EVENTS = 480


def _outgoing(topic: str, event: dict[str, Any] | bytes, key: str | None = None) -> OutgoingRecord:
    if isinstance(event, bytes):
        return OutgoingRecord(topic, key, event)
    return OutgoingRecord(topic, event["data"]["campaignId"], orjson.dumps(event),
                          ce_type=STATE_CHANGED_TYPE, ce_id=event["id"],
                          content_type=EVENT_CONTENT_TYPE)


def _produce(config: KafkaSettings, topic: str, records: list[OutgoingRecord]) -> None:
    async def run() -> None:
        async with open_admin(config) as admin:
            await ensure_topics(admin, [TopicSpec(topic, config.partitions)])
        async with Producer(config) as producer:
            await producer.send_many(records)

    asyncio.run(run())


def _index(events: list[dict[str, Any]], campaign_id: str, sequence: int) -> int:
    return next(i for i, e in enumerate(events)
                if e["data"]["campaignId"] == campaign_id and e["data"]["sequence"] == sequence)


def _base(config: KafkaSettings, broker: BrokerHandle) -> list[str]:
    args = ["--bootstrap", config.bootstrap]
    if not broker.supports_idempotence:
        args.append("--no-idempotence")
    return args


@pytest.fixture
def history() -> tuple[HistoryGenerator, list[dict[str, Any]]]:
    generator = HistoryGenerator(CAMPAIGNS, seed=42)
    return generator, list(generator.events(EVENTS))


def test_a_clean_log_audits_clean_and_replays_in_order(
    kafka_config: KafkaSettings, broker: BrokerHandle, history: tuple[HistoryGenerator, list[dict[str, Any]]],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    generator, events = history
    topic = kafka_config.topics.events
    records = [_outgoing(topic, e) for e in events]
    # An outbox re-sending what it was not sure about: identical re-deliveries, later in the log.
    records += [_outgoing(topic, events[i]) for i in (5, 50, 300)]
    _produce(kafka_config, topic, records)

    json_out, html_out = tmp_path / "audit.json", tmp_path / "audit.html"
    code = main(["audit", *_base(kafka_config, broker), "--topic", topic, "--state-topic", kafka_config.topics.state,
                 "--json-out", str(json_out), "--html-out", str(html_out)])
    out = capsys.readouterr().out
    assert code == 0, out[-2000:]
    assert out.rstrip().endswith("CLEAN")
    report = orjson.loads(json_out.read_bytes())
    assert report["clean"]
    assert report["summary"]["events"] == EVENTS
    assert report["summary"]["duplicatesDropped"] == 3
    assert report["summary"]["stateChecked"] is None  # no state topic yet
    assert {c["campaignId"] for c in report["campaigns"]} == set(generator.ids)
    page = html_out.read_text()
    assert page.count("<svg ") == CAMPAIGNS and "<script" not in page

    assert main(["replay", *_base(kafka_config, broker), "--topic", topic, "--json"]) == 0
    document = orjson.loads(capsys.readouterr().out)
    assert document["events"] == EVENTS and document["duplicatesDropped"] == 3
    for campaign in document["campaigns"]:
        mine = [e["data"] for e in events if e["data"]["campaignId"] == campaign["campaignId"]]
        assert [(e["sequence"], e["from"], e["to"], e["observedAt"]) for e in campaign["events"]] == \
            [(d["sequence"], d["from"], d["to"], d["observedAt"]) for d in mine]

    one = generator.ids[3]
    assert main(["replay", *_base(kafka_config, broker), "--topic", topic, "--campaign", one]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{one}  ")
    assert sum(1 for line in lines if line.startswith("camp-")) == 1
    assert len([line for line in lines if line.startswith("  ")]) == generator.campaigns[one].sequence

    middle = sorted(e["data"]["observedAt"] for e in events)[EVENTS // 2]
    assert main(["replay", *_base(kafka_config, broker), "--topic", topic, "--since", middle, "--json"]) == 0
    since = orjson.loads(capsys.readouterr().out)
    kept = [e["observedAt"] for c in since["campaigns"] for e in c["events"]]
    assert len(kept) == sum(1 for e in events if e["data"]["observedAt"] >= middle)


def test_tampering_is_named_by_campaign_and_sequence(
    kafka_config: KafkaSettings, broker: BrokerHandle, history: tuple[HistoryGenerator, list[dict[str, Any]]],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    generator, events = history
    topic = kafka_config.topics.events
    dropped, edited, reordered, copied = generator.ids[1], generator.ids[2], generator.ids[3], generator.ids[4]
    events = copy.deepcopy(events)
    del events[_index(events, dropped, 4)]
    data = events[_index(events, edited, 5)]["data"]
    data["cause"] = "poll" if data["cause"] != "poll" else "timeout"
    a, b = _index(events, reordered, 6), _index(events, reordered, 7)
    events[a], events[b] = events[b], events[a]
    forged = copy.deepcopy(events[_index(events, copied, 3)])
    forged["data"]["to"] = "FAILED"
    records = [_outgoing(topic, e) for e in events]
    records.append(_outgoing(topic, forged))  # an edited copy, produced later
    records.append(_outgoing(topic, b"\x00not json", key=generator.ids[5]))
    _produce(kafka_config, topic, records)

    json_out = tmp_path / "findings.json"
    code = main(["audit", *_base(kafka_config, broker), "--topic", topic, "--brief", "--no-state-check",
                 "--json-out", str(json_out)])
    out = capsys.readouterr().out
    assert code == 1
    report = orjson.loads(json_out.read_bytes())
    findings = {(f["kind"], f["campaignId"], f["sequence"]) for c in report["campaigns"] for f in c["findings"]}
    findings |= {(f["kind"], f["campaignId"], f["sequence"]) for f in report["findings"]}
    assert findings == {
        ("MISSING", dropped, 4),
        ("HASH_MISMATCH", edited, 6),
        ("OUT_OF_ORDER", reordered, 6),
        ("CONFLICTING_DUPLICATE", copied, 3),
        ("MALFORMED", generator.ids[5], None),
    }
    assert "FINDING  sequence 4 missing" in out
    assert "FINDING  sequence 6 prevHash does not match sequence 5 (sequence 5 edited, or 6 forged?)" in out
    assert "FINDING  sequence 6 appears after sequence 7 in the log (reordered)" in out
    assert "FINDING  record is not a valid event: (message): not JSON" in out
    assert out.rstrip().endswith("5 FINDINGS in 5 campaigns")

    # Replay keeps going and says which ids conflict and which records do not parse.
    assert main(["replay", *_base(kafka_config, broker), "--topic", topic]) == 1
    replayed = capsys.readouterr().out
    assert f"ANOMALY {copied}: sequence 3 delivered twice with different bytes" in replayed


def test_rebuild_state_is_the_orchestrators_record_and_deterministic(
    kafka_config: KafkaSettings, broker: BrokerHandle, history: tuple[HistoryGenerator, list[dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    generator, events = history
    topics = kafka_config.topics
    _produce(kafka_config, topics.events, [_outgoing(topics.events, e) for e in events])
    argv = ["replay", *_base(kafka_config, broker), "--topic", topics.events, "--rebuild-state",
            "--state-topic", topics.state, "--json"]
    assert main(argv) == 0
    assert main(argv) == 0
    assert f"rebuilt {CAMPAIGNS} campaign.state records on {topics.state}" in capsys.readouterr().err

    written = asyncio.run(read_topic(kafka_config, topics.state))
    assert len(written) == 2 * CAMPAIGNS
    assert {r.header("ce_type") for r in written} == {STATE_TYPE}
    by_run: dict[str, list[bytes]] = {}
    for record in written:
        by_run.setdefault(record.key or "", []).append(record.value or b"")
    assert set(by_run) == set(generator.ids)
    for campaign_id, values in by_run.items():
        assert len(values) == 2 and values[0] == values[1], campaign_id  # byte-identical runs
        expected = {**generator.campaigns[campaign_id].snapshot(), "heldCommand": None, "scheduledCommands": None}
        assert orjson.loads(values[0]) == expected, campaign_id

    # The rebuilt state now backs the audit's last-event check: clean, and it was really compared.
    assert main(["audit", *_base(kafka_config, broker), "--topic", topics.events, "--brief",
                 "--state-topic", topics.state]) == 0
    assert f"checked against {topics.state}" in capsys.readouterr().out


def test_connection_and_topic_errors_exit_2_with_one_line(
    kafka_config: KafkaSettings, broker: BrokerHandle, unique_name: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    assert main(["audit", "--bootstrap", f"127.0.0.1:{closed}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"campaign-fsm audit: error: cannot read from Kafka at 127.0.0.1:{closed}")
    assert err.count("\n") == 1 and "Traceback" not in err

    missing = unique_name("absent")
    assert main(["replay", *_base(kafka_config, broker), "--topic", missing]) == 2
    err = capsys.readouterr().err
    assert err == f"campaign-fsm replay: error: topic {missing} does not exist on {kafka_config.bootstrap}\n"
