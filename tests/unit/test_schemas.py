"""The contract: strict parsing with errors that name the field, and events that fit their schema."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from adapters.cli import main
from fsm import CampaignMachine
from schemas import ContractError, decode, encode
from schemas.commands import Command, CommandResult
from schemas.events import CampaignStateChangedEvent, rfc3339
from schemas.platform import (
    DialerStats,
    GenesysCampaign,
    GenesysContactList,
    GuideCampaign,
    GuideContactList,
    NotificationEnvelope,
    OAuthToken,
)
from schemas.types import Action, CampaignState, Cause, DialerType, Outcome, Priority

GOOD_COMMAND: dict[str, Any] = {
    "id": "8c0f5a55-1f43-4d7e-9a57-1f8b7f0f8d6e",
    "campaignId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
    "action": "start",
    "priority": "HIGH",
    "requestedBy": "wfm-scheduler",
    "issuedAt": "2026-11-27T08:00:00Z",
}


def _with(base: dict[str, Any], **changes: Any) -> bytes:
    data = dict(base)
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return orjson.dumps(data)


def test_a_good_command_parses_and_round_trips() -> None:
    command = decode(Command, orjson.dumps(GOOD_COMMAND))
    assert command.action is Action.START and command.priority is Priority.HIGH
    assert decode(Command, encode(command)) == command


def test_priority_defaults_to_standard() -> None:
    assert decode(Command, _with(GOOD_COMMAND, priority=...)).priority is Priority.STANDARD


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        (_with(GOOD_COMMAND, action="restart"), "action", "start"),
        (_with(GOOD_COMMAND, action=1), "action", ""),
        (_with(GOOD_COMMAND, campaignId="../../admin"), "campaignId", "pattern"),
        (_with(GOOD_COMMAND, campaignId=""), "campaignId", "pattern"),
        (_with(GOOD_COMMAND, campaignId="x" * 65), "campaignId", "pattern"),
        (_with(GOOD_COMMAND, campaignId=42), "campaignId", "string"),
        (_with(GOOD_COMMAND, id="not-a-uuid"), "id", "UUID"),
        (_with(GOOD_COMMAND, priority="URGENT"), "priority", "HIGH"),
        (_with(GOOD_COMMAND, priority=5), "priority", ""),
        (_with(GOOD_COMMAND, requestedBy=""), "requestedBy", "at least 1"),
        (_with(GOOD_COMMAND, requestedBy=...), "requestedBy", "required"),
        (_with(GOOD_COMMAND, issuedAt="2026-11-27T08:00:00"), "issuedAt", "timezone"),
        (_with(GOOD_COMMAND, issuedAt="yesterday"), "issuedAt", "datetime"),
        (_with(GOOD_COMMAND, expectedState="RESUMING"), "expectedState", "STOPPED"),
        (_with(GOOD_COMMAND, colour="blue"), "colour", "Extra inputs"),
        (b'{"id": ', "(message)", "not JSON"),
        (b"[1, 2]", "(message)", "JSON object"),
        (b"\xff\xfe", "(message)", "not JSON"),
    ],
)
def test_malformed_commands_name_the_field(raw: bytes, field: str, fragment: str) -> None:
    with pytest.raises(ContractError) as caught:
        decode(Command, raw)
    fields = [e["field"] for e in caught.value.errors]
    assert field in fields
    assert fragment in str(caught.value)
    assert caught.value.model == "Command"


GOOD_RESULT: dict[str, Any] = {
    "commandId": GOOD_COMMAND["id"], "campaignId": GOOD_COMMAND["campaignId"], "outcome": "REFUSED",
    "reason": "TRANSITION_IN_FLIGHT", "message": "wait", "at": "2026-11-27T08:00:01Z",
}


def test_command_result_parses() -> None:
    result = decode(CommandResult, orjson.dumps(GOOD_RESULT))
    assert result.outcome is Outcome.REFUSED


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (_with(GOOD_RESULT, outcome="MAYBE"), "outcome"),
        (_with(GOOD_RESULT, reason="BECAUSE"), "reason"),
        (_with(GOOD_RESULT, commandId="x"), "commandId"),
        (_with(GOOD_RESULT, message=...), "message"),
        (_with(GOOD_RESULT, legalActions=["fly"]), "legalActions.0"),
        (_with(GOOD_RESULT, at=3), "at"),
    ],
)
def test_malformed_results_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(ContractError) as caught:
        decode(CommandResult, raw)
    assert field in [e["field"] for e in caught.value.errors]


def _event() -> dict[str, Any]:
    machine = CampaignMachine()
    campaign, _ = machine.adopt("c-1", CampaignState.RUNNING, DialerType.PREDICTIVE, at=1.7e9, dialer_id="d")
    decision = machine.command(campaign, Action.STOP, at=1.7e9 + 1, command_id=GOOD_COMMAND["id"])
    assert decision.change is not None
    change = machine.observe(campaign, CampaignState.FAILED, cause=Cause.POLL, at=1.7e9 + 2,
                             errors=[{"code": "x", "message": "y"}])
    assert change is not None
    return change.event()


def test_events_built_on_the_hot_path_fit_the_published_model() -> None:
    event = _event()
    parsed = decode(CampaignStateChangedEvent, orjson.dumps(event))
    assert parsed.subject == "c-1" and parsed.data.from_ is CampaignState.STOPPING
    assert parsed.data.to is CampaignState.FAILED and parsed.id == "c-1:3"
    # What the model writes and what the hot path writes parse to the same event.
    assert decode(CampaignStateChangedEvent, encode(parsed)) == decode(CampaignStateChangedEvent,
                                                                      orjson.dumps(event))


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("specversion",), "0.3", "specversion"),
        (("data", "sequence"), 0, "data.sequence"),
        (("data", "to"), "RESUMING", "data.to"),
        (("data", "cause"), "magic", "data.cause"),
        (("data", "dialerType"), "AGENTLESS", "data.dialerType"),
        (("subject",), "a/b", "subject"),
        (("time",), "2026-11-27T08:00:00", "time"),
    ],
)
def test_malformed_events_name_the_field(path: tuple[str, ...], value: Any, field: str) -> None:
    event = _event()
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ContractError) as caught:
        decode(CampaignStateChangedEvent, orjson.dumps(event))
    assert field in [e["field"] for e in caught.value.errors]


PLATFORM_CASES: list[tuple[type[BaseModel], dict[str, Any], str]] = [
    (GuideCampaign, {"id": "c", "state": "WARMING", "dialerType": "PREDICTIVE", "contactListId": "l"}, "state"),
    (GuideCampaign, {"id": "c", "state": "RUNNING", "dialerType": "PREDICTIVE"}, "contactListId"),
    (GuideContactList, {"id": "l", "state": "ACTIVE"}, "importStatus"),
    (DialerStats, {"id": "d", "activeCalls": -1, "licensedCapacity": 10}, "activeCalls"),
    (GenesysCampaign, {"id": "c"}, "campaignStatus"),
    (GenesysContactList, {"id": "l", "importStatus": {"state": 7}}, "importStatus.state"),
    (NotificationEnvelope, {"eventBody": {}}, "topicName"),
    (OAuthToken, {"access_token": "t", "expires_in": 0}, "expires_in"),
]


@pytest.mark.parametrize(("model", "payload", "field"), PLATFORM_CASES)
def test_malformed_platform_payloads_name_the_field(model: type[BaseModel], payload: dict[str, Any],
                                                    field: str) -> None:
    with pytest.raises(ContractError) as caught:
        decode(model, orjson.dumps(payload))
    assert field in [e["field"] for e in caught.value.errors]


def test_platform_payloads_tolerate_unknown_fields_and_statuses() -> None:
    campaign = decode(GenesysCampaign, orjson.dumps({
        "id": "c", "campaignStatus": "hibernating", "dialingMode": "predictive", "brandNewField": {"a": 1},
    }))
    assert campaign.campaign_status == "hibernating"
    guide = decode(GuideCampaign, orjson.dumps({
        "id": "c", "state": "RUNNING", "dialerType": "POWER", "contactListId": "l", "rules": {"x": 1},
        "futureField": True,
    }))
    assert guide.state is CampaignState.RUNNING


def test_rfc3339_keeps_milliseconds_across_the_second_cache() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1700000000.25) == "2023-11-14T22:13:20.250Z"
    assert rfc3339(1700000001.5) == "2023-11-14T22:13:21.500Z"
    assert rfc3339(1700000000.999) == "2023-11-14T22:13:20.999Z"


def test_recycle_is_an_option_of_start_only() -> None:
    """Issue 14: `recycle` begins a start at record one; with any other action the command is malformed,
    and a command without it is sent as before (no `recycle` in its value, so what producers sign is unchanged)."""
    base = {"id": uuid.uuid4(), "campaign_id": "c1", "requested_by": "ops", "issued_at": datetime.now(UTC)}
    assert Command(**base, action=Action.START, recycle=True).recycle is True
    for action in (Action.STOP, Action.PAUSE, Action.RESUME, Action.RESET):
        with pytest.raises(ValidationError, match="recycle is an option of start only"):
            Command(**base, action=action, recycle=True)
    assert b"recycle" not in encode(Command(**base, action=Action.START))


def test_send_cli_refuses_recycle_with_stop_without_a_traceback(capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGN_FSM_SIGNING_KEY", "hex:" + "ab" * 32)
    code = main(["send", "stop", "c1", "--recycle", "--key-id", "k1", "--bootstrap", "127.0.0.1:9"])
    assert code == 2
    err = capsys.readouterr().err
    assert "recycle is an option of start only" in err and "Traceback" not in err
