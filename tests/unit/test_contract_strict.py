"""The published contract as third-party tools read it (issue 13, items 4-6 and 8): the AsyncAPI
document through the official parser and with the partitioning rule in its bindings, every JSON
Schema valid against its meta-schema and as strict as the docs, one timestamp format everywhere."""

from __future__ import annotations

import copy
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

from fsm import CampaignMachine
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.testing import FakeClock
from schemas import ContractError, decode, encode
from schemas.base import TIMESTAMP_PATTERN
from schemas.commands import Command, CommandResult
from schemas.events import CampaignStateChangedEvent, state_changed_event
from schemas.types import Action, CampaignState, Outcome, ReasonCode
from tests.fakes import FakeCampaign, FakePlatform, MemorySink

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PARSER = ROOT / ".ci" / "node" / "node_modules" / "@asyncapi" / "parser"
SCRIPT = ROOT / ".ci" / "validate-asyncapi.mjs"
FORMATS = FormatChecker()


def _schema(stem: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((DOCS / "schemas" / f"{stem}.json").read_bytes())
    return data


def _errors(stem: str, instance: Any) -> list[str]:
    validator = Draft202012Validator(_schema(stem), format_checker=FORMATS)
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


def _event(**data: Any) -> dict[str, Any]:
    event = state_changed_event(campaign_id="c-1", sequence=2, from_state="RUNNING", to_state="PAUSING",
                                cause="command", at=1_714_555_812.25, dialer_type="PREDICTIVE", action="pause",
                                command_id=str(uuid.uuid4()))
    event["data"].update(data)
    return event


# --- item 5: the official parser, the meta-schemas -----------------------------------------------


@pytest.mark.skipif(shutil.which("node") is None or not PARSER.is_dir(),
                    reason="@asyncapi/parser not installed: `npm ci --prefix .ci/node` (.ci/run does it)")
def test_the_official_asyncapi_parser_accepts_the_document_without_errors() -> None:
    run = subprocess.run(["node", str(SCRIPT), str(DOCS / "asyncapi.json")], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "AsyncAPI 3.1.0 parsed" in run.stdout


def test_the_document_needs_no_relative_uri_and_is_at_3_1() -> None:
    document = orjson.loads((DOCS / "asyncapi.json").read_bytes())
    assert document["asyncapi"] == "3.1.0"
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("externalDocs"), dict):
                found.append(node["externalDocs"]["url"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert all(FORMATS.conforms(url, "uri") for url in found), found


@pytest.mark.parametrize("path", sorted((DOCS / "schemas").glob("*.json")), ids=lambda p: p.name)
def test_every_published_json_schema_is_valid_against_its_meta_schema(path: Path) -> None:
    schema = orjson.loads(path.read_bytes())
    validators.validator_for(schema).check_schema(schema, format_checker=FORMATS)


# --- item 4: the partitioning rule in the bindings ------------------------------------------------


def test_the_kafka_bindings_state_the_murmur2_partitioning_rule() -> None:
    document = orjson.loads((DOCS / "asyncapi.json").read_bytes())
    for name in ("commands", "commandResults", "campaignEvents", "campaignState"):
        assert document["channels"][name]["bindings"]["kafka"]["x-partitioner"] == "murmur2", name
    for name in ("Command", "CommandResult", "CampaignStateChanged", "CampaignStateRecord"):
        key = document["components"]["messages"][name]["bindings"]["kafka"]["key"]
        assert key["type"] == "string" and key["pattern"]
        text = key["description"]
        assert "murmur2" in text and "murmur2_random" in text and "consistent_random" in text, name
        assert "WRONG_PARTITION" in text
    assert "WRONG_PARTITION" in document["channels"]["commands"]["description"]


# --- item 6: as strict as the docs --------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["specversion", "type", "id", "source"])
def test_an_event_without_a_cloudevents_required_attribute_is_refused(attribute: str) -> None:
    event = _event()
    assert _errors("campaign-state-changed", event) == []
    del event[attribute]
    assert any("required" in e for e in _errors("campaign-state-changed", event)), attribute
    with pytest.raises(ContractError, match=attribute):
        decode(CampaignStateChangedEvent, orjson.dumps(event))


@pytest.mark.parametrize("field", ["action", "commandId", "dialerId", "anomaly", "reason", "errors",
                                   "platformStatus", "request", "prevHash"])
def test_an_optional_event_field_that_is_null_is_refused(field: str) -> None:
    event = _event(**{field: None})
    assert _errors("campaign-state-changed", event), f"data.{field}: null accepted by the schema"
    with pytest.raises(ContractError, match=field):
        decode(CampaignStateChangedEvent, orjson.dumps(event))


def test_from_stays_nullable_on_a_first_event() -> None:
    event = _event(**{"from": None})
    assert _errors("campaign-state-changed", event) == []
    decode(CampaignStateChangedEvent, orjson.dumps(event))


@pytest.mark.parametrize("field", ["reason", "state", "legalActions", "nextAttemptAt"])
def test_an_optional_result_field_that_is_null_is_refused(field: str) -> None:
    result = orjson.loads(encode(CommandResult(command_id=uuid.uuid4(), campaign_id="c-1", outcome=Outcome.ACCEPTED,
                                               message="ok", at=datetime.now(UTC))))
    assert _errors("command-result", result) == []
    result[field] = None
    assert _errors("command-result", result), f"{field}: null accepted by the schema"
    with pytest.raises(ContractError, match=field):
        decode(CommandResult, orjson.dumps(result))


def test_the_state_record_keeps_its_documented_nulls() -> None:
    """docs/events.md: in `campaign.state` "no value" is null (every key present), unlike events."""
    required = set(_schema("campaign-state")["required"])
    assert {"dialerId", "deadline", "commandId", "held", "heldCommand"} <= required


# --- item 8: one timestamp format -----------------------------------------------------------------


def test_every_timestamp_we_write_is_rfc3339_utc_milliseconds() -> None:
    at = datetime(2024, 5, 1, 9, 30, 12, 123456, tzinfo=UTC)
    result = orjson.loads(encode(CommandResult(command_id=uuid.uuid4(), campaign_id="c-1", outcome=Outcome.DEFERRED,
                                               reason=ReasonCode.CONTACT_LIST_NOT_READY, message="wait",
                                               next_attempt_at=at, at=at)))
    assert result["at"] == result["nextAttemptAt"] == "2024-05-01T09:30:12.123Z"
    assert _errors("command-result", result) == []
    event = _event()
    assert event["time"] == event["data"]["observedAt"] == "2024-05-01T09:30:12.250Z"
    micro = copy.deepcopy(result)
    micro["at"] = "2024-05-01T09:30:12.123456Z"
    offset = copy.deepcopy(result)
    offset["at"] = "2024-05-01T09:30:12.123+00:00"
    for bad in (micro, offset):
        assert any(TIMESTAMP_PATTERN in e or "does not match" in e for e in _errors("command-result", bad)), bad
    # Parsing stays tolerant: results written before the format was fixed still read.
    assert decode(CommandResult, orjson.dumps(micro)).at.microsecond == 123456


async def test_on_a_scaled_clock_results_and_events_carry_wall_time_and_platform_time_apart() -> None:
    wall = 1_800_000_000.0  # the real "now"; the service's scaled clock is hours ahead of it
    clock = FakeClock(auto_advance=True, wall_start=wall + 8 * 3600)
    sink = MemorySink()
    platform = FakePlatform(clock, [FakeCampaign("c1", CampaignState.RUNNING)])
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                        config=OrchestratorConfig(seed=1), stamp_clock=lambda: wall)
    await orch.start()
    try:
        await orch.submit(Command(id=uuid.uuid4(), campaign_id="c1", action=Action.PAUSE, requested_by="t",
                                  issued_at=datetime.now(UTC)))
        await clock.sleep(5)
    finally:
        await orch.close()
    assert sink.results and sink.events
    wall_text = datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    for result in sink.results:
        wire = orjson.loads(encode(result))
        assert wire["at"].startswith(wall_text) and wire["platformTime"] > wire["at"], wire
        assert _errors("command-result", wire) == []
    for event in sink.events:
        assert event["time"] == event["data"]["observedAt"] and event["time"].startswith(wall_text)
        assert event["data"]["platformTime"] > event["time"]
        assert _errors("campaign-state-changed", event) == []


def test_without_a_scaled_clock_there_is_no_platform_time() -> None:
    event = _event()
    assert "platformTime" not in event["data"]
    with pytest.raises(ValidationError):
        Draft202012Validator(_schema("command-result"), format_checker=FORMATS).validate({"at": "x"})
