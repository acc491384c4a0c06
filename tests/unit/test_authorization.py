"""Who may command a campaign: signature, freshness, replay and policy decisions, and their counts."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from fsm.authorization import (
    AuthDecision,
    CommandAuthority,
    Policy,
    PolicyError,
    canonical_body,
    held_until,
    sign_body,
)
from schemas.base import decode, encode
from schemas.commands import Command
from schemas.types import Action, CampaignState, Priority, ReasonCode

NOW = datetime(2025, 3, 9, 12, 0, tzinfo=UTC)
T = NOW.timestamp()
KEY = b"k" * 32
OTHER_KEY = b"o" * 32
KEYS = {"ops-1": KEY, "planner-1": OTHER_KEY}


def command(**fields: Any) -> Command:
    base: dict[str, Any] = {
        "id": uuid.uuid4(), "campaign_id": "uk-sales-1", "action": Action.START,
        "requested_by": "alice", "issued_at": NOW,
    }
    base.update(fields)
    return Command(**base)


def signed(key_id: str = "ops-1", key: bytes = KEY, **fields: Any) -> Command:
    unsigned = command(key_id=key_id, **fields)
    return unsigned.model_copy(update={"signature": sign_body(key, canonical_body(unsigned))})


def authority(**kwargs: Any) -> CommandAuthority:
    return CommandAuthority(KEYS, **kwargs)


# --- canonical body --------------------------------------------------------------------------------


def test_canonical_body_is_sorted_compact_wire_json_without_signature() -> None:
    c = signed(priority=Priority.HIGH, not_before=NOW + timedelta(minutes=5), requested_by="Zoë")
    body = canonical_body(c)
    data = orjson.loads(body)
    assert "signature" not in data
    assert list(data) == sorted(data)
    assert data == {
        "action": "start", "campaignId": "uk-sales-1", "id": str(c.id), "issuedAt": "2025-03-09T12:00:00Z",
        "keyId": "ops-1", "notBefore": "2025-03-09T12:05:00Z", "priority": "HIGH", "requestedBy": "Zoë",
    }
    assert b" " not in body and "Zoë".encode() in body  # compact, UTF-8 not escaped
    # An independent HMAC over those bytes is the signature: the rule is reproducible outside Python too.
    assert c.signature == hmac.new(KEY, body, hashlib.sha256).hexdigest()


def test_canonical_body_survives_the_wire_round_trip() -> None:
    c = signed(expected_state=CampaignState.STOPPED)
    again = decode(Command, encode(c))
    assert canonical_body(again) == canonical_body(c)
    assert authority().check(again, T).allowed


def test_canonical_body_fills_defaults_so_an_omitted_priority_is_signed_as_standard() -> None:
    c = command()
    assert orjson.loads(canonical_body(c))["priority"] == "STANDARD"


# --- signatures --------------------------------------------------------------------------------------


def test_a_good_signature_is_allowed_and_counted() -> None:
    auth = authority()
    decision = auth.check(signed(), T)
    assert decision == AuthDecision(True, None, "authorised (key ops-1)")
    assert auth.allowed == 1 and not auth.refusals


def test_unsigned_is_refused_when_required() -> None:
    auth = authority()
    decision = auth.check(command(), T)
    assert (decision.allowed, decision.reason) == (False, ReasonCode.UNSIGNED)
    assert auth.refusals[ReasonCode.UNSIGNED] == 1


def test_unsigned_is_allowed_when_not_required_but_a_bad_signature_still_is_not() -> None:
    auth = authority(require_signature=False)
    assert auth.check(command(), T).allowed
    tampered = signed().model_copy(update={"action": Action.STOP})
    assert auth.check(tampered, T).reason is ReasonCode.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"action": Action.STOP}, "does not match"),
        ({"campaign_id": "uk-sales-2"}, "does not match"),
        ({"requested_by": "mallory"}, "does not match"),
        ({"priority": Priority.HIGH}, "does not match"),
        ({"not_before": NOW + timedelta(hours=1)}, "does not match"),
        ({"key_id": "planner-1"}, "does not match"),  # the key id is inside the signed body
        ({"key_id": "nobody"}, "unknown key id"),
        ({"signature": "AB" * 32}, "64 lowercase hex"),
        ({"signature": "00" * 32}, "does not match"),
        ({"signature": None}, "without a signature"),
        ({"key_id": None}, "signature without keyId"),
    ],
)
def test_any_tampering_or_key_problem_is_a_bad_signature(change: dict[str, Any], detail: str) -> None:
    auth = authority()
    decision = auth.check(signed().model_copy(update=change), T)
    assert decision.reason is ReasonCode.BAD_SIGNATURE
    assert detail in decision.detail
    assert auth.refusals == {ReasonCode.BAD_SIGNATURE: 1}


def test_signed_with_the_wrong_key_for_its_id_is_refused() -> None:
    assert authority().check(signed("ops-1", OTHER_KEY), T).reason is ReasonCode.BAD_SIGNATURE


def test_keys_never_appear_in_repr_or_details() -> None:
    auth = authority()
    details = [auth.check(signed().model_copy(update={"signature": "0" * 64}), T).detail,
               auth.check(signed("ops-1", OTHER_KEY), T).detail]
    for text in [repr(auth), *details]:
        assert "kkkk" not in text and "oooo" not in text
        assert KEY.hex() not in text


def test_bad_configuration_is_refused_with_a_clear_error() -> None:
    with pytest.raises(PolicyError, match="at least 16 bytes"):
        CommandAuthority({"short": b"abc"})
    with pytest.raises(PolicyError, match="no keys are configured"):
        CommandAuthority({})
    with pytest.raises(PolicyError, match="max_age_s"):
        CommandAuthority(KEYS, max_age_s=0)
    CommandAuthority({}, require_signature=False)  # an open service (tests, demos) needs no keys


# --- freshness and replays ---------------------------------------------------------------------------


def test_issued_too_long_ago_or_too_far_ahead_is_stale() -> None:
    auth = authority(max_age_s=300, future_skew_s=30)
    assert auth.check(signed(issued_at=NOW - timedelta(seconds=300)), T).allowed  # exactly at the limit
    old = auth.check(signed(issued_at=NOW - timedelta(seconds=301)), T)
    assert old.reason is ReasonCode.STALE_COMMAND and "301 s ago" in old.detail
    assert auth.check(signed(issued_at=NOW + timedelta(seconds=30)), T).allowed
    ahead = auth.check(signed(issued_at=NOW + timedelta(seconds=31)), T)
    assert ahead.reason is ReasonCode.STALE_COMMAND and "future" in ahead.detail
    assert auth.refusals == {ReasonCode.STALE_COMMAND: 2}


def test_the_same_command_twice_is_replayed_until_it_would_be_stale_anyway() -> None:
    auth = authority(max_age_s=300)
    c = signed()
    assert auth.check(c, T).allowed
    assert auth.seen(str(c.id), T)
    assert auth.check(c, T + 1).reason is ReasonCode.REPLAYED
    assert auth.check(c, T + 300).reason is ReasonCode.REPLAYED
    # Past max_age the id is forgotten, and the command is refused as stale instead.
    assert auth.check(c, T + 301).reason is ReasonCode.STALE_COMMAND
    assert not auth.seen(str(c.id), T + 301)
    assert auth.refusals == {ReasonCode.REPLAYED: 2, ReasonCode.STALE_COMMAND: 1}


def test_a_refused_forgery_does_not_burn_the_real_commands_id() -> None:
    auth = authority()
    real = signed()
    forged = real.model_copy(update={"signature": "0" * 64})
    assert auth.check(forged, T).reason is ReasonCode.BAD_SIGNATURE
    assert auth.check(real, T).allowed


def test_replay_memory_is_bounded_and_fails_closed_past_its_horizon() -> None:
    auth = authority(seen_capacity=3)
    ids = [signed(issued_at=NOW - timedelta(seconds=10 - i)) for i in range(4)]
    for c in ids:
        assert auth.check(c, T).allowed
    # The oldest id was forgotten; its replay cannot be recognised, so it is refused as stale.
    forgotten = auth.check(ids[0], T)
    assert forgotten.reason is ReasonCode.STALE_COMMAND and "horizon" in forgotten.detail
    # Newer than the horizon: still remembered, or new and fine.
    assert auth.check(ids[3], T).reason is ReasonCode.REPLAYED
    assert auth.check(signed(), T).allowed


def test_expired_ids_free_the_memory() -> None:
    auth = authority(max_age_s=60, seen_capacity=2)
    assert auth.check(signed(), T).allowed
    assert auth.check(signed(), T).allowed
    later = NOW + timedelta(seconds=120)
    # Both earlier ids expired, so two new ones fit without pushing the horizon.
    assert auth.check(signed(issued_at=later), later.timestamp()).allowed
    assert auth.check(signed(issued_at=later), later.timestamp()).allowed
    assert auth.check(signed(issued_at=later), later.timestamp()).allowed
    assert auth.refusals == {}


# --- policy ------------------------------------------------------------------------------------------


POLICY = {
    "alice": {"campaigns": ["uk-*"], "actions": ["start", "stop"]},
    "team-eu": {"dialers": ["dialer-eu-*"]},
    "shift-planner": {"campaigns": ["*"], "keys": ["planner-*"]},
    "ops-*": {"campaigns": "*"},
}


@pytest.mark.parametrize(
    ("who", "key_id", "campaign", "action", "dialer", "allowed"),
    [
        ("alice", "ops-1", "uk-sales-1", Action.START, None, True),
        ("alice", "ops-1", "uk-sales-1", Action.PAUSE, None, False),  # action not granted
        ("alice", "ops-1", "us-sales-1", Action.START, None, False),  # campaign not granted
        ("team-eu", "ops-1", "de-1", Action.PAUSE, "dialer-eu-2", True),  # via its dialer
        ("team-eu", "ops-1", "de-1", Action.PAUSE, "dialer-us-1", False),
        ("team-eu", "ops-1", "de-1", Action.PAUSE, None, False),  # dialer unknown: no dialer grant
        ("shift-planner", "planner-1", "any-1", Action.RESET, None, True),
        ("shift-planner", "ops-1", "any-1", Action.START, None, False),  # key not bound to this principal
        ("ops-night", "ops-1", "any-1", Action.STOP, None, True),  # principal pattern
        ("mallory", "ops-1", "uk-sales-1", Action.START, None, False),  # not in the policy
    ],
)
def test_policy_decides_by_principal_campaign_dialer_action_and_key(
    who: str, key_id: str, campaign: str, action: Action, dialer: str | None, allowed: bool
) -> None:
    auth = CommandAuthority(KEYS, Policy.from_config(POLICY))
    decision = auth.check(signed(key_id, KEYS[key_id], requested_by=who, campaign_id=campaign, action=action),
                          T, dialer_id=dialer)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason is ReasonCode.NOT_AUTHORISED
        assert who in decision.detail
        assert auth.refusals == {ReasonCode.NOT_AUTHORISED: 1}


def test_policy_details_say_what_was_not_allowed() -> None:
    auth = CommandAuthority(KEYS, Policy.from_config(POLICY))
    unknown = auth.check(signed(requested_by="mallory"), T)
    assert unknown.detail == "principal 'mallory' is not in the policy"
    denied = auth.check(signed(action=Action.PAUSE), T, dialer_id="d-1")
    assert denied.detail == "principal 'alice' may not pause campaign uk-sales-1 (dialer d-1) with key 'ops-1'"


def test_signature_is_checked_before_policy() -> None:
    auth = CommandAuthority(KEYS, Policy.from_config(POLICY))
    assert auth.check(command(requested_by="mallory"), T).reason is ReasonCode.UNSIGNED


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([], "mapping of principal"),
        ({"": {"campaigns": ["*"]}}, "non-empty string"),
        ({"a": ["*"]}, "must be a mapping"),
        ({"a": {"campaign": ["*"]}}, "unknown field"),
        ({"a": {"actions": ["start"]}}, "must name campaigns or dialers"),
        ({"a": {"campaigns": [1]}}, "list of non-empty strings"),
        ({"a": {"campaigns": ["*"], "actions": ["launch"]}}, "matches no action"),
    ],
)
def test_policy_config_errors_name_the_principal_and_field(config: Any, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_config(config)


# --- notBefore -----------------------------------------------------------------------------------------


def test_held_until_is_the_not_before_instant_while_it_is_ahead() -> None:
    at = NOW + timedelta(minutes=1)
    c = command(not_before=at)
    assert held_until(c, T) == at.timestamp()
    assert held_until(c, at.timestamp()) is None
    assert held_until(command(), T) is None


# --- two stages ------------------------------------------------------------------------------------


def test_authenticate_needs_no_dialer_and_authorise_applies_the_policy_later() -> None:
    auth = CommandAuthority(KEYS, Policy.from_config({"team-eu": {"dialers": ["dialer-eu-*"]}}))
    c = signed(requested_by="team-eu")
    first = auth.authenticate(c, T)
    assert (first.allowed, first.detail) == (True, "authenticated (key ops-1)")
    assert auth.allowed == 0  # not yet through the last gate
    assert auth.authorise(c, dialer_id="dialer-us-1").reason is ReasonCode.NOT_AUTHORISED
    assert auth.authorise(c, dialer_id="dialer-eu-1").allowed
    assert auth.allowed == 1 and auth.refusals == {ReasonCode.NOT_AUTHORISED: 1}
    # Authenticated once: its id is taken, whatever the policy said.
    assert auth.authenticate(c, T).reason is ReasonCode.REPLAYED


def test_check_stops_at_the_first_failing_stage() -> None:
    auth = CommandAuthority(KEYS, Policy.from_config({"alice": {"campaigns": ["*"]}}))
    c = signed()
    assert auth.check(c, T).allowed
    replay = auth.check(c, T)
    assert replay.reason is ReasonCode.REPLAYED
    assert auth.allowed == 1 and auth.refusals == {ReasonCode.REPLAYED: 1}
