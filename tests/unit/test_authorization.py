"""Who may command a campaign: signature, freshness, replay and policy decisions, and their counts."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsm.authorization import (
    AuthDecision,
    CommandAuthority,
    Policy,
    PolicyError,
    held_until,
)
from schemas.base import ContractError, encode
from schemas.commands import Command
from schemas.signed import EXAMPLE, SignedRecord, sign_record, signed_message
from schemas.types import Action, Priority, ReasonCode

DOCS = Path(__file__).resolve().parents[2] / "docs"
WORKED_EXAMPLE_HEX = "5d5ec195940b0d9180cc0e436fd3be2becf1a78768c81be2cae1218d1e5d80f0"
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


def from_record(value: bytes | str, key_id: str | None = "ops-1", key: bytes = KEY,
                record_key: bytes = b"uk-sales-1", signature: str | None = None) -> Command:
    """The command a producer sends as `value`, signed (unless `signature` is given) as the rule says."""
    raw = value.encode() if isinstance(value, str) else value
    if signature is None and key_id is not None:
        signature = sign_record(key, key_id, record_key, raw)
    return Command.from_record(SignedRecord(record_key, raw, key_id, signature))


def signed(key_id: str = "ops-1", key: bytes = KEY, **fields: Any) -> Command:
    c = command(**fields)
    return from_record(encode(c), key_id, key, c.campaign_id.encode())


def authority(**kwargs: Any) -> CommandAuthority:
    return CommandAuthority(KEYS, **kwargs)


# --- what a signature covers (docs/signing.md) -------------------------------------------------------


def test_the_worked_example_of_docs_signing_gives_its_hex() -> None:
    # Pinned literally: docs/signing.md and the AsyncAPI example quote this hex, and an `openssl dgst`
    # over the same bytes gives it (tests/integration/test_producers.py runs that command).
    message = b"ops-1\ncampaign-7\n" + EXAMPLE["value"].encode()
    assert signed_message("ops-1", b"campaign-7", EXAMPLE["value"].encode()) == message
    expected = hmac.new(b"example-key-0123456789abcdef", message, hashlib.sha256).hexdigest()
    assert expected == EXAMPLE["signature"] == WORKED_EXAMPLE_HEX
    docs = (DOCS / "signing.md").read_text()
    assert WORKED_EXAMPLE_HEX in docs and EXAMPLE["value"] in docs and EXAMPLE["key"] in docs
    c = from_record(EXAMPLE["value"], "ops-1", EXAMPLE["key"].encode(), b"campaign-7", WORKED_EXAMPLE_HEX)
    auth = CommandAuthority({"ops-1": EXAMPLE["key"].encode()})
    assert auth.check(c, c.issued_at.timestamp()).allowed


@pytest.mark.parametrize(
    "value",
    [
        # Issue 13, failure 1: each of these, signed over exactly these bytes, was refused BAD_SIGNATURE.
        '{"id":"%s","campaignId":"uk-sales-1","action":"start","requestedBy":"alice","issuedAt":"2025-03-09T12:00:00.123Z"}',
        '{"id":"%s","campaignId":"uk-sales-1","action":"start","requestedBy":"alice","issuedAt":"2025-03-09T12:00:00+00:00"}',
        '{"id":"%s","campaignId":"uk-sales-1","action":"start","requestedBy":"alice","issuedAt":"2025-03-09T12:00:00.000Z"}',
        '{"id":"%s","campaignId":"uk-sales-1","action":"start","requestedBy":"alice","issuedAt":"2025-03-09T12:00:00Z"}',
        '{ "requestedBy": "Zoë", "issuedAt": "2025-03-09T13:00:00+01:00", "action": "start",\n  "id": "%s", '
        '"campaignId": "uk-sales-1" }',
    ],
    ids=["milliseconds", "plus-zero", "dot-000", "plain", "spaced-reordered-unicode"],
)
@pytest.mark.parametrize("case", ["lower", "upper"])
def test_a_signature_over_the_bytes_sent_verifies_whatever_their_formatting(value: str, case: str) -> None:
    command_id = str(uuid.uuid4())
    raw = value % (command_id.upper() if case == "upper" else command_id)
    decision = authority().check(from_record(raw), T)
    assert decision.allowed, decision.detail


def test_a_signature_cannot_be_moved_to_another_campaign_or_key() -> None:
    c = signed()
    record = c.signed
    assert record is not None and record.signature is not None
    # The same value and signature under another record key (it would route to another owner).
    moved = Command.from_record(SignedRecord(b"uk-sales-2", record.value, "ops-1", record.signature))
    assert "does not match" in authority().check(moved, T).detail
    # Re-labelled as another configured key's signature (the policy binds principals to key ids).
    relabelled = Command.from_record(SignedRecord(record.key, record.value, "planner-1", record.signature))
    assert authority().check(relabelled, T).reason is ReasonCode.BAD_SIGNATURE
    # Signed properly, but for a record key that is not the command's campaign.
    other_key = from_record(record.value, record_key=b"uk-sales-2")
    refused = authority().check(other_key, T)
    assert refused.reason is ReasonCode.BAD_SIGNATURE and "another record key" in refused.detail


def test_a_command_changed_after_parsing_is_not_the_signed_one() -> None:
    tampered = signed().model_copy(update={"action": Action.STOP})  # keeps its record, not its bytes
    refused = authority().check(tampered, T)
    assert refused.reason is ReasonCode.BAD_SIGNATURE and "not the one in its signed record" in refused.detail


def test_the_old_rule_in_the_body_is_refused_with_a_pointer_to_the_new_one() -> None:
    body = orjson.dumps({**orjson.loads(encode(command())), "keyId": "ops-1", "signature": "0" * 64})
    with pytest.raises(ContractError, match=r"cfsm-signature \(see docs/signing.md\)") as caught:
        Command.from_record(SignedRecord(b"uk-sales-1", body))
    assert {e["field"] for e in caught.value.errors} == {"keyId", "signature"}


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
    assert auth.check(from_record(encode(command()), key_id=None), T).allowed  # a record without headers
    tampered = signed().model_copy(update={"action": Action.STOP})
    assert auth.check(tampered, T).reason is ReasonCode.BAD_SIGNATURE


def _tampered(what: str) -> Command:
    c = signed(priority=Priority.HIGH)
    record = c.signed
    assert record is not None and record.key is not None and record.signature is not None
    value, key, key_id, signature = record.value, record.key, record.key_id, record.signature
    if what == "value":
        value = value.replace(b'"start"', b'"stop"')
    elif what == "requestedBy":
        value = value.replace(b'"alice"', b'"mallory"')
    elif what == "whitespace":
        value = value.replace(b",", b", ", 1)
    elif what == "record key":
        key = b"uk-sales-2"
    elif what == "key id":
        key_id = "planner-1"
    elif what == "unknown key":
        key_id = "nobody"
    elif what == "not hex":
        signature = "zz" * 32
    elif what == "zeros":
        signature = "00" * 32
    elif what == "no signature":
        signature = None  # type: ignore[assignment]
    elif what == "no key id":
        key_id = None
    return Command.from_record(SignedRecord(key, value, key_id, signature))


@pytest.mark.parametrize(
    ("what", "detail"),
    [
        ("value", "does not match"),
        ("requestedBy", "does not match"),
        ("whitespace", "does not match"),  # the bytes are signed, not what they parse to
        ("record key", "does not match"),
        ("key id", "does not match"),
        ("unknown key", "unknown key id"),
        ("not hex", "64 hex digits"),
        ("zeros", "does not match"),
        ("no signature", "without cfsm-signature"),
        ("no key id", "cfsm-signature without cfsm-key-id"),
    ],
)
def test_any_tampering_or_key_problem_is_a_bad_signature(what: str, detail: str) -> None:
    auth = authority()
    decision = auth.check(_tampered(what), T)
    assert decision.reason is ReasonCode.BAD_SIGNATURE
    assert detail in decision.detail
    assert auth.refusals == {ReasonCode.BAD_SIGNATURE: 1}


def test_repeated_or_undecodable_signing_headers_are_a_bad_signature() -> None:
    c = signed()
    record = c.signed
    assert record is not None and record.signature is not None
    headers = [("cfsm-key-id", b"ops-1"), ("cfsm-signature", record.signature.encode())]
    twice = SignedRecord.from_headers(record.key, record.value, [*headers, ("cfsm-key-id", b"ops-1")])
    assert "appears 2 times" in authority().check(Command.from_record(twice), T).detail
    binary = SignedRecord.from_headers(record.key, record.value, [headers[0], ("cfsm-signature", b"\xff" * 64)])
    assert "not UTF-8" in authority().check(Command.from_record(binary), T).detail
    upper = SignedRecord.from_headers(record.key, record.value, [headers[0], ("cfsm-signature",
                                                                             record.signature.upper().encode())])
    assert authority().check(Command.from_record(upper), T).allowed  # hex digits in either case


def test_signed_with_the_wrong_key_for_its_id_is_refused() -> None:
    assert authority().check(signed("ops-1", OTHER_KEY), T).reason is ReasonCode.BAD_SIGNATURE


def test_keys_never_appear_in_repr_or_details() -> None:
    auth = authority()
    details = [auth.check(_tampered("zeros"), T).detail, auth.check(signed("ops-1", OTHER_KEY), T).detail]
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
    assert real.signed is not None
    forged = Command.from_record(SignedRecord(real.signed.key, real.signed.value, "ops-1", "0" * 64))
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
