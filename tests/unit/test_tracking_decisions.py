"""Tracking decides, then the look acts: the decisions of `fsm/tracking.py` called directly, on a
record alone (no platform, no orchestrator, no clock), and changing nothing."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

from fsm import CampaignMachine
from fsm.backoff import Backoff
from fsm.held import HeldCommand
from fsm.machine import Campaign, StateChange
from fsm.ports import CampaignSnapshot
from fsm.record import CampaignRecord, Tracking
from fsm.tracking import (
    ConfirmAt,
    Emit,
    Finished,
    Fire,
    Interval,
    Judge,
    Poll,
    PollIn,
    Settle,
    Track,
    Wake,
    after_poll,
    confirm_due,
    confirmation,
    fired,
    first_poll,
    follow,
    observed,
    retuned,
)
from schemas.commands import Command
from schemas.types import Action, CampaignState, Cause, DialerType, Outcome, ReasonCode

S = CampaignState
_MACHINE = CampaignMachine()
_T0 = 1_000.0


def _record(state: CampaignState, *, contact_list_id: str | None = "list-1") -> CampaignRecord:
    campaign, _ = _MACHINE.adopt("c1", state, DialerType.PROGRESSIVE, at=_T0, dialer_id="dialer-1",
                                 contact_list_id=contact_list_id)
    return CampaignRecord("c1", campaign=campaign)


def _tracking(command_id: str | None = "cmd-1", action: Action | None = Action.START, *,
              next_poll: float = _T0 + 2, max_tries: int | None = 60) -> Tracking:
    return Tracking(command_id, action, Backoff(max_tries=max_tries).backoff(random.Random(1)), next_poll)


def _spent(tracking: Tracking) -> Tracking:
    while tracking.backoff.next_delay() is not None:
        pass
    return tracking


def _campaign(record: CampaignRecord) -> Campaign:
    assert record.campaign is not None
    return record.campaign


def _seen(record: CampaignRecord, state: CampaignState, **extra: object) -> StateChange:
    change = _MACHINE.observe(_campaign(record), state, cause=Cause.POLL, at=_T0 + 5, **extra)  # type: ignore[arg-type]
    assert change is not None
    return change


def _looked_at(record: CampaignRecord) -> tuple[object, ...]:
    tracking = record.tracking
    return (record.store(), record.confirm_at, record.confirmed_at, record.lease, record.held,
            None if tracking is None else (tracking.next_poll, tracking.backoff.tries, tracking.backoff))


def test_notifications_down_polls_every_followed_campaign_on_a_fresh_backoff_now() -> None:
    for pushed in (True, False):
        assert retuned(False, pushed) == (PollIn(Interval.FRESH), Wake())
    # Back up: the campaigns it carries wait for a safety poll; the others keep their backoff, unwoken.
    assert retuned(True, True) == (PollIn(Interval.SAFETY), Wake())
    assert retuned(True, False) == ()


def test_a_new_transition_is_polled_on_backoff_unless_notifications_carry_it() -> None:
    assert first_poll(pushed=True) is Interval.SAFETY
    assert first_poll(pushed=False) is Interval.BACKOFF


def test_a_poll_comes_at_its_time_or_at_the_tolerance_deadline() -> None:
    record = _record(S.STARTING)
    deadline = _campaign(record).deadline
    assert deadline is not None
    assert follow(record, _T0) is None, "nothing followed, nothing to poll"
    record.tracking = _tracking(next_poll=_T0 + 2)
    before = _looked_at(record)
    assert follow(record, _T0 + 1) is None
    assert follow(record, _T0 + 2) == Poll(deadline_due=False)
    assert _looked_at(record) == before
    record.tracking = _tracking(next_poll=deadline + 50)
    assert follow(record, deadline) == Poll(deadline_due=True), "the deadline does not wait for the next poll"


def test_a_deadline_due_is_judged_after_the_poll() -> None:
    record = _record(S.STARTING)
    record.tracking = tracking = _tracking()
    before = _looked_at(record)
    assert after_poll(record, tracking, deadline_due=True, pushed=False) == (PollIn(Interval.BACKOFF), Judge("list-1"))
    assert after_poll(record, tracking, deadline_due=True, pushed=True) == (PollIn(Interval.SAFETY), Judge("list-1"))
    assert after_poll(record, tracking, deadline_due=False, pushed=False) == (PollIn(Interval.BACKOFF),)
    assert after_poll(record, tracking, deadline_due=False, pushed=True) == (PollIn(Interval.SAFETY),)
    assert _looked_at(record) == before, "deciding draws no delay and spends no try"
    no_list = _record(S.STARTING, contact_list_id=None)
    assert after_poll(no_list, tracking, deadline_due=True, pushed=False)[1] == Judge(None), "no list to read"


def test_sixty_tries_spent_judge_now_and_a_fresh_backoff() -> None:
    record = _record(S.STARTING)
    record.tracking = tracking = _spent(_tracking())
    assert tracking.backoff.tries == 60
    before = _looked_at(record)
    assert after_poll(record, tracking, deadline_due=False, pushed=False) == (PollIn(Interval.FRESH), Judge("list-1"))
    assert after_poll(record, tracking, deadline_due=True, pushed=False) == (PollIn(Interval.FRESH), Judge("list-1"))
    # Safety polls spend no tries: a campaign notifications carry is not judged for its backoff.
    assert after_poll(record, tracking, deadline_due=False, pushed=True) == (PollIn(Interval.SAFETY),)
    assert _looked_at(record) == before


def test_an_anomalous_notification_is_confirmed_by_a_read_no_sooner_than_fresh_for() -> None:
    record = _record(S.STOPPED)
    skipped = _seen(record, S.RUNNING)  # STOPPED -> RUNNING skips STARTING
    assert skipped.anomaly is not None
    before = _looked_at(record)
    assert confirmation(record, skipped, now=_T0 + 5, fresh_for=2.0) == ConfirmAt(_T0 + 5), "never confirmed: now"
    record.confirmed_at = _T0 + 4.5
    assert confirmation(record, skipped, now=_T0 + 5, fresh_for=2.0) == ConfirmAt(_T0 + 6.5), "one read per fresh_for"
    record.confirmed_at = _T0
    assert confirmation(record, skipped, now=_T0 + 5, fresh_for=2.0) == ConfirmAt(_T0 + 5)
    record.confirmed_at = None
    assert _looked_at(record) == before
    plain = _seen(record, S.STOPPING)  # RUNNING -> STOPPING: an edge of the table
    assert plain.anomaly is None
    assert confirmation(record, plain, now=_T0 + 5, fresh_for=2.0) is None
    assert confirmation(record, None, now=_T0 + 5, fresh_for=2.0) is None, "nothing moved, nothing to confirm"


def test_a_confirmation_read_is_due_at_its_time() -> None:
    record = _record(S.RUNNING)
    assert not confirm_due(record, _T0)
    record.confirm_at = _T0 + 2
    assert not confirm_due(record, _T0 + 1)
    assert confirm_due(record, _T0 + 2)
    assert not confirm_due(CampaignRecord("unread", confirm_at=_T0), _T0 + 2), "no campaign read yet"


def test_reaching_the_target_settles_the_transition_with_its_command_completed() -> None:
    record = _record(S.STARTING)
    record.tracking = tracking = _tracking()
    change = _seen(record, S.RUNNING)
    assert observed(record, change) == (
        Settle(tracking), Emit(change, Finished("cmd-1", Outcome.COMPLETED, None, "c1 is RUNNING", S.RUNNING)))
    assert record.tracking is tracking, "deciding settles nothing"


def test_ending_elsewhere_fails_the_command_naming_the_platforms_errors() -> None:
    record = _record(S.STARTING)
    record.tracking = tracking = _tracking()
    change = _seen(record, S.FAILED, errors=[{"code": "contact.list.empty"}, {"message": "no agents"}])
    settle, emit = observed(record, change)
    assert settle == Settle(tracking) and emit.change is change and emit.finished == Finished(
        "cmd-1", Outcome.FAILED, ReasonCode.TRANSITION_FAILED,
        "transition ended in FAILED, not RUNNING: contact.list.empty; no agents", S.FAILED)
    # A transition we only observed settles with its event alone: no command to answer.
    record = _record(S.STARTING)
    record.tracking = observed_only = _tracking(None, None)
    change = _seen(record, S.RUNNING)
    assert observed(record, change) == (Settle(observed_only), Emit(change))


def test_a_transition_nothing_follows_is_followed_and_one_followed_only_emits() -> None:
    record = _record(S.RUNNING)
    change = _seen(record, S.STOPPING)
    assert observed(record, change) == (Emit(change), Track(change.command_id, change.action))
    record.tracking = _tracking(None, None)
    assert observed(record, None) == (), "nothing moved"
    stable = _record(S.STOPPED)
    change = _seen(stable, S.RUNNING)
    assert observed(stable, change) == (Emit(change),), "stable to stable: nothing to follow or settle"


def test_a_sent_command_is_fired_when_the_platform_shows_it_executed() -> None:
    record = _record(S.STOPPED)
    command = Command(id=uuid.uuid4(), campaign_id="c1", action=Action.START, requested_by="ops",
                      issued_at=datetime.now(UTC))
    snapshot = CampaignSnapshot("c1", S.STARTING, "STARTING", DialerType.PROGRESSIVE, "dialer-1", "list-1")
    record.held = held = HeldCommand(command)
    assert fired(record, snapshot) is None, "not sent: an observation fires nothing"
    record.held = sent = held.sending()
    assert fired(record, snapshot) == Fire(sent)
    unmoved = CampaignSnapshot("c1", S.STOPPED, "STOPPED", DialerType.PROGRESSIVE, "dialer-1", "list-1")
    assert fired(record, unmoved) is None, "unmoved: the outcome is still unknown"
    assert record.held is sent
