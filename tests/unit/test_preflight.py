"""Pre-flight gates (contact list, dialer capacity, deferral expiry) and the tolerance-window verdict."""

from __future__ import annotations

import math

import pytest

from fsm.machine import CampaignMachine
from fsm.ports import ContactListSnapshot, DialerLoad
from fsm.preflight import (
    ExpiryVerdict,
    GateVerdict,
    PreflightPolicy,
    WaitFor,
    check_capacity,
    check_contact_list,
    check_deferral,
    judge_expiry,
    preflight,
)
from schemas.types import Action, Anomaly, CampaignState, DialerType, Priority, ReasonCode

READY = ContactListSnapshot("list-1", ready=True, locked=False, detail="ACTIVE/COMPLETED")
IMPORTING = ContactListSnapshot("list-1", ready=False, locked=True, detail="IMPORTING/IN_PROGRESS")
IMPORT_FAILED = ContactListSnapshot("list-1", ready=False, locked=False, detail="import FAILED")


# --- contact list --------------------------------------------------------------------------------


def test_ready_list_or_no_list_proceeds() -> None:
    assert check_contact_list(READY, now=0).proceed
    assert check_contact_list(None, now=0).proceed


@pytest.mark.parametrize("snapshot, word", [(IMPORTING, "locked"), (IMPORT_FAILED, "not ready")])
def test_list_not_ready_defers_waiting_for_that_list(snapshot: ContactListSnapshot, word: str) -> None:
    decision = check_contact_list(snapshot, now=100.0)
    assert decision.verdict is GateVerdict.DEFER and not decision.proceed
    assert decision.reason is ReasonCode.CONTACT_LIST_NOT_READY
    assert decision.wait_for is WaitFor.CONTACT_LIST and decision.wait_id == "list-1"
    assert word in decision.detail and snapshot.detail in decision.detail
    assert decision.retry_at == 110.0  # the default recheck, in case no notification comes
    assert decision.expires_at == 700.0


# --- dialer capacity -----------------------------------------------------------------------------


@pytest.mark.parametrize("active, verdict", [(0, GateVerdict.PROCEED), (80, GateVerdict.PROCEED),
                                             (81, GateVerdict.DEFER), (100, GateVerdict.DEFER),
                                             (250, GateVerdict.DEFER)])
def test_standard_defers_above_eighty_percent(active: int, verdict: GateVerdict) -> None:
    decision = check_capacity(DialerLoad("d1", active, 100), Priority.STANDARD, now=0)
    assert decision.verdict is verdict
    if verdict is GateVerdict.DEFER:
        assert decision.reason is ReasonCode.DIALER_OVER_CAPACITY
        assert decision.wait_for is WaitFor.DIALER_CAPACITY and decision.wait_id == "d1"
        assert f"{active} active calls" in decision.detail and "80%" in decision.detail
        assert decision.retry_at == 15.0


def test_high_proceeds_over_capacity() -> None:
    assert check_capacity(DialerLoad("d1", 100, 100), Priority.HIGH, now=0).proceed


def test_unknown_capacity_never_defers() -> None:
    assert check_capacity(DialerLoad("d1", 10_000, None), Priority.STANDARD, now=0).proceed
    assert check_capacity(None, Priority.STANDARD, now=0).proceed


def test_ratio_is_configurable_and_exact() -> None:
    policy = PreflightPolicy(capacity_ratio=0.7)
    # 7 of 10 is exactly 70 %: not over it (a float 0.7 * 10 would say 6.999...).
    assert check_capacity(DialerLoad("d1", 7, 10), Priority.STANDARD, now=0, policy=policy).proceed
    assert not check_capacity(DialerLoad("d1", 8, 10), Priority.STANDARD, now=0, policy=policy).proceed


# --- deferral expiry -----------------------------------------------------------------------------


def test_deferral_expires_after_the_configured_time() -> None:
    policy = PreflightPolicy(deferral_ttl=300.0)
    assert check_deferral(None, now=1e9, policy=policy).proceed
    assert check_deferral(1000.0, now=1299.9, policy=policy).proceed
    expired = check_deferral(1000.0, now=1300.0, policy=policy)
    assert expired.verdict is GateVerdict.REFUSE
    assert expired.reason is ReasonCode.DEFERRAL_EXPIRED
    assert "300" in expired.detail


def test_expiry_is_checked_before_the_other_gates() -> None:
    decision = preflight(contact_list=READY, load=DialerLoad("d1", 0, 100), priority=Priority.HIGH,
                         now=700.0, deferred_at=100.0)
    assert decision.reason is ReasonCode.DEFERRAL_EXPIRED  # a stale command never runs late


def test_gates_run_in_order_contact_list_then_capacity() -> None:
    busy = DialerLoad("d1", 99, 100)
    assert preflight(contact_list=IMPORTING, load=busy, priority=Priority.STANDARD, now=0).reason \
        is ReasonCode.CONTACT_LIST_NOT_READY
    assert preflight(contact_list=READY, load=busy, priority=Priority.STANDARD, now=0).reason \
        is ReasonCode.DIALER_OVER_CAPACITY
    assert preflight(contact_list=READY, load=busy, priority=Priority.HIGH, now=0).proceed


def test_a_redeferred_command_keeps_its_first_expiry() -> None:
    policy = PreflightPolicy(deferral_ttl=60.0, contact_list_recheck=25.0)
    first = preflight(contact_list=IMPORTING, load=None, priority=Priority.STANDARD, now=0, policy=policy)
    assert (first.retry_at, first.expires_at) == (25.0, 60.0)
    again = preflight(contact_list=IMPORTING, load=None, priority=Priority.STANDARD, now=50.0,
                      deferred_at=0.0, policy=policy)
    assert again.verdict is GateVerdict.DEFER
    assert (again.retry_at, again.expires_at) == (60.0, 60.0)  # never recheck past the expiry
    last = preflight(contact_list=IMPORTING, load=None, priority=Priority.STANDARD, now=60.0,
                     deferred_at=0.0, policy=policy)
    assert last.reason is ReasonCode.DEFERRAL_EXPIRED


def test_a_locked_list_defers_then_proceeds_when_ready() -> None:
    deferred = preflight(contact_list=IMPORTING, load=None, priority=Priority.STANDARD, now=0)
    assert deferred.verdict is GateVerdict.DEFER
    later = preflight(contact_list=READY, load=None, priority=Priority.STANDARD, now=40, deferred_at=0)
    assert later.proceed


@pytest.mark.parametrize("kwargs", [{"capacity_ratio": 0}, {"capacity_ratio": 1.5},
                                    {"capacity_ratio": math.nan}, {"deferral_ttl": 0},
                                    {"capacity_recheck": -1}, {"blocking_code_words": ()},
                                    {"error_code_keys": ()}])
def test_policy_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="PreflightPolicy"):
        PreflightPolicy(**kwargs)  # type: ignore[arg-type]


# --- tolerance-window expiry ---------------------------------------------------------------------


def test_empty_errors_with_a_locked_list_is_delayed() -> None:
    """The guide's edge case 1: stuck, errors empty, the contact list is locked by an import."""
    decision = judge_expiry([], IMPORTING)
    assert decision.verdict is ExpiryVerdict.DELAYED and decision.delayed
    assert "list-1" in decision.detail and "IMPORTING" in decision.detail
    assert decision.errors == [] and decision.reason is None


@pytest.mark.parametrize("error", [
    {"code": "CONTACT_LIST_LOCKED", "message": "held by import job 7"},
    {"code": "contactListLocked"},
    {"code": "COMPLIANCE_RULE_BLOCK"},
    {"code": "compliance.callable-time"},
    {"code": "DIALER_THROTTLED"},
    {"code": "RATE_THROTTLING_ACTIVE"},
    {"code": "LOCK_HELD"},
    {"error": "contact.list.locked", "details": "genesys diagnostics style"},
])
def test_an_error_naming_a_lock_or_compliance_block_is_delayed(error: dict[str, str]) -> None:
    decision = judge_expiry([{"code": "SOMETHING_ELSE"}, error], READY)
    assert decision.verdict is ExpiryVerdict.DELAYED
    code = error.get("code") or error["error"]
    assert code in decision.detail


@pytest.mark.parametrize("errors", [
    [],
    [{"code": "DIALER_CRASHED", "message": "edge offline"}],
    [{"code": "UNLOCKED_BUT_FAILED"}],  # UNLOCKED is not a lock
    [{"message": "no code at all"}],
])
def test_otherwise_failed_with_the_errors_attached(errors: list[dict[str, str]]) -> None:
    decision = judge_expiry(errors, READY)
    assert decision.verdict is ExpiryVerdict.FAILED and not decision.delayed
    assert decision.reason is ReasonCode.TOLERANCE_EXCEEDED
    assert decision.errors == errors
    assert decision.errors is not errors  # a copy: the caller's list can change without harm


def test_failed_detail_names_the_codes_and_an_unreadable_list_does_not_block() -> None:
    decision = judge_expiry([{"code": "A"}, {"error": "B"}], None)
    assert decision.verdict is ExpiryVerdict.FAILED
    assert "A, B" in decision.detail


def test_blocking_words_are_configurable() -> None:
    policy = PreflightPolicy(blocking_code_words=("QUOTA",))
    assert judge_expiry([{"code": "QUOTA_EXCEEDED"}], READY, policy).delayed
    assert not judge_expiry([{"code": "CONTACT_LIST_LOCKED"}], READY, policy).delayed


def test_verdicts_feed_the_machine() -> None:
    """DELAYED keeps the campaign STOPPING with a TRANSITION_DELAYED anomaly; FAILED fails it."""
    machine = CampaignMachine()
    campaign, _ = machine.adopt("c1", CampaignState.RUNNING, DialerType.PREDICTIVE, at=0.0)
    assert machine.command(campaign, Action.STOP, at=0.0).accepted
    delayed = judge_expiry([], IMPORTING)
    change = machine.delay(campaign, at=181.0, detail=delayed.detail)
    assert change.to_state is CampaignState.STOPPING
    assert change.anomaly is not None and change.anomaly["kind"] == Anomaly.TRANSITION_DELAYED.value
    failed = judge_expiry([{"code": "DIALER_CRASHED"}], READY)
    change = machine.expire(campaign, at=400.0, errors=failed.errors)
    assert change.to_state is CampaignState.FAILED
    assert change.reason is ReasonCode.TOLERANCE_EXCEEDED and change.errors == [{"code": "DIALER_CRASHED"}]
