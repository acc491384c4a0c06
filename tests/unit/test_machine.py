"""Observations, deadlines, reset, abort, delay and persistence of the campaign machine."""

from __future__ import annotations

import pytest

from fsm import CampaignMachine, ToleranceWindows, WindowSpec
from fsm.machine import Campaign
from schemas.types import Action, Anomaly, CampaignState, Cause, DialerType, ReasonCode

S, A = CampaignState, Action


@pytest.fixture
def machine() -> CampaignMachine:
    return CampaignMachine()


def _adopt(machine: CampaignMachine, state: CampaignState = S.STOPPED,
           dialer: DialerType = DialerType.PREDICTIVE) -> Campaign:
    campaign, change = machine.adopt("c-1", state, dialer, at=100.0, dialer_id="d-1")
    assert change.sequence == 1 and change.from_state is None and change.to_state is state
    return campaign


def test_first_event_is_sequence_one_from_nothing(machine: CampaignMachine) -> None:
    _, change = machine.adopt("c-9", S.RUNNING, DialerType.POWER, at=5.0, platform_status="on")
    data = change.event()["data"]
    assert data["sequence"] == 1 and data["from"] is None and data["to"] == "RUNNING"
    assert data["cause"] == "reconcile" and data["platformStatus"] == "on"


def test_a_202_never_completes_a_transition(machine: CampaignMachine) -> None:
    campaign = _adopt(machine)
    decision = machine.command(campaign, A.START, at=101.0, command_id="cmd")
    assert decision.accepted and campaign.current is S.STARTING
    # Only an observation of RUNNING finishes it, and the event carries the command that asked.
    change = machine.observe(campaign, S.RUNNING, cause=Cause.NOTIFICATION, at=130.0)
    assert change is not None
    assert (change.from_state, change.to_state, change.cause) == (S.STARTING, S.RUNNING, Cause.NOTIFICATION)
    assert change.command_id == "cmd" and change.action is A.START and change.anomaly is None
    assert campaign.command_id is None, "the transition is over: no command in flight"


def test_same_state_observation_changes_nothing(machine: CampaignMachine) -> None:
    campaign = _adopt(machine)
    machine.command(campaign, A.START, at=101.0)
    deadline = campaign.deadline
    assert machine.observe(campaign, S.STARTING, cause=Cause.POLL, at=150.0) is None
    assert campaign.sequence == 2 and campaign.deadline == deadline, "a re-seen state must not restart its clock"


def test_observation_that_skips_states_is_adopted_with_the_anomaly(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.STOPPED)
    change = machine.observe(campaign, S.RUNNING, cause=Cause.RECONCILE, at=200.0)
    assert change is not None and campaign.current is S.RUNNING
    assert change.anomaly == {
        "kind": Anomaly.SKIPPED_STATES.value, "expected": ["STARTING"], "observed": "RUNNING",
        "skipped": ["STARTING"],
    }


def test_observation_with_no_legal_path_is_adopted_as_unexpected(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.FAILED)
    change = machine.observe(campaign, S.RUNNING, cause=Cause.POLL, at=200.0)
    assert change is not None and campaign.current is S.RUNNING
    assert change.anomaly is not None and change.anomaly["kind"] == "UNEXPECTED_TRANSITION"
    assert change.anomaly["expected"] == [] and change.anomaly["skipped"] == []


def test_observation_is_accepted_mid_transition_even_against_the_command(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.RUNNING)
    machine.command(campaign, A.STOP, at=101.0, command_id="stop-1")
    change = machine.observe(campaign, S.RUNNING, cause=Cause.POLL, at=102.0)
    assert change is not None and change.anomaly is not None
    assert change.anomaly["expected"] == ["STOPPED", "FAILED"] and change.anomaly["observed"] == "RUNNING"


@pytest.mark.parametrize(
    ("dialer", "action", "from_state", "window"),
    [
        (DialerType.PREDICTIVE, A.STOP, S.RUNNING, 180.0),
        (DialerType.PREDICTIVE, A.PAUSE, S.RUNNING, 180.0),
        (DialerType.PROGRESSIVE, A.STOP, S.RUNNING, 60.0),
        (DialerType.PROGRESSIVE, A.PAUSE, S.RUNNING, 60.0),
        (DialerType.POWER, A.STOP, S.RUNNING, 60.0),
        (DialerType.PREDICTIVE, A.START, S.STOPPED, 300.0),
    ],
)
def test_deadline_follows_the_dialer_type(
    machine: CampaignMachine, dialer: DialerType, action: Action, from_state: CampaignState, window: float
) -> None:
    campaign = _adopt(machine, from_state, dialer)
    assert campaign.deadline is None, "stable states have no deadline"
    machine.command(campaign, action, at=1000.0)
    assert campaign.deadline == 1000.0 + window


def test_windows_are_configurable_per_dialer_type() -> None:
    windows = ToleranceWindows({
        DialerType.PREDICTIVE: WindowSpec(starting=10, pausing=20, stopping=30),
        DialerType.PROGRESSIVE: WindowSpec(starting=1, pausing=2, stopping=3),
        DialerType.POWER: WindowSpec(starting=4, pausing=5, stopping=6),
    })
    machine = CampaignMachine(windows=windows)
    campaign = _adopt(machine, S.RUNNING, DialerType.POWER)
    machine.command(campaign, A.PAUSE, at=0.0)
    assert campaign.deadline == 5


def test_registry_refuses_a_missing_dialer_type_or_a_bad_window() -> None:
    with pytest.raises(ValueError, match="POWER"):
        ToleranceWindows({DialerType.PREDICTIVE: WindowSpec(1, 1, 1), DialerType.PROGRESSIVE: WindowSpec(1, 1, 1)})
    with pytest.raises(ValueError, match=r"PREDICTIVE\.stopping"):
        ToleranceWindows({d: WindowSpec(1, 1, 0 if d is DialerType.PREDICTIVE else 1) for d in DialerType})


def test_expire_fails_the_transition_with_errors(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.RUNNING, DialerType.PROGRESSIVE)
    machine.command(campaign, A.STOP, at=0.0, command_id="s")
    change = machine.expire(campaign, at=61.0, errors=[{"code": "dialer.fault", "message": "boom"}])
    assert campaign.current is S.FAILED and change.cause is Cause.TIMEOUT
    assert change.reason is ReasonCode.TOLERANCE_EXCEEDED and change.errors == [{"code": "dialer.fault",
                                                                                   "message": "boom"}]
    assert change.command_id == "s"


def test_delay_keeps_waiting_and_opens_a_fresh_window(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.RUNNING)
    machine.command(campaign, A.STOP, at=0.0)
    change = machine.delay(campaign, at=180.0, detail="contact list LOCKED")
    assert campaign.current is S.STOPPING
    assert change.from_state is S.STOPPING and change.to_state is S.STOPPING and change.sequence == 3
    assert change.anomaly is not None and change.anomaly["kind"] == "TRANSITION_DELAYED"
    assert campaign.deadline == 360.0


def test_reset_goes_to_the_state_the_platform_reports_never_to_one_it_did_not(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.RUNNING)
    machine.command(campaign, A.PAUSE, at=0.0)
    machine.observe(campaign, S.FAILED, cause=Cause.NOTIFICATION, at=5.0)
    assert campaign.current is S.FAILED
    still_failed = machine.command(campaign, A.RESET, at=6.0, command_id="reset-0")
    assert not still_failed.accepted and campaign.current is S.FAILED, "no report, no move"
    decision = machine.command(campaign, A.RESET, at=6.0, command_id="reset-1", reported=S.STOPPED)
    assert decision.accepted and campaign.current is S.STOPPED, "where the platform is, not where we were"
    assert decision.change is not None and decision.change.cause is Cause.COMMAND
    assert decision.change.action is A.RESET and decision.change.command_id == "reset-1"
    assert machine.command(campaign, A.START, at=7.0).accepted


def test_a_reset_onto_a_platform_transition_leaves_no_command_in_flight(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.FAILED)
    decision = machine.command(campaign, A.RESET, at=1.0, command_id="reset-1", reported=S.STOPPING)
    assert decision.accepted and campaign.current is S.STOPPING
    assert campaign.command_id is None and campaign.action is None, "the platform's transition, not the reset's"


def test_a_held_command_closes_the_gate_to_no_ops_too(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.RUNNING)
    machine.hold(campaign, "stop-1")
    start = machine.command(campaign, A.START, at=1.0, command_id="start-1")
    assert not start.accepted and start.reason is ReasonCode.TRANSITION_IN_FLIGHT, "not COMPLETED ALREADY_IN_STATE"
    assert machine.command(campaign, A.STOP, at=1.0, command_id="stop-1").accepted, "the held one itself goes"


def test_abort_returns_to_where_the_command_left(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.PAUSED)
    machine.command(campaign, A.RESUME, at=0.0, command_id="r")
    change = machine.abort(campaign, at=1.0, reason=ReasonCode.PLATFORM_CONFLICT)
    assert campaign.current is S.PAUSED and change.reason is ReasonCode.PLATFORM_CONFLICT
    assert change.command_id == "r" and campaign.command_id is None


def test_expected_state_guards_a_command(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.RUNNING)
    refused = machine.command(campaign, A.STOP, at=0.0, expected_state=S.PAUSED)
    assert refused.reason is ReasonCode.EXPECTED_STATE_MISMATCH and campaign.current is S.RUNNING
    assert machine.command(campaign, A.STOP, at=0.0, expected_state=S.RUNNING).accepted


def test_snapshot_restore_round_trip(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.RUNNING)
    machine.command(campaign, A.STOP, at=50.0, command_id="s")
    restored = Campaign.restore(campaign.snapshot())
    assert restored.snapshot() == campaign.snapshot()
    # The restored campaign keeps its place in the sequence and its transition in flight.
    change = machine.observe(restored, S.STOPPED, cause=Cause.RECONCILE, at=60.0)
    assert change is not None and change.sequence == 3 and change.command_id == "s"


def test_models_are_never_added_to_the_shared_machine(machine: CampaignMachine) -> None:
    for i in range(100):
        machine.adopt(f"c-{i}", S.STOPPED, DialerType.POWER, at=0.0)
    assert machine.machine.models == []
    campaign = _adopt(machine)
    assert not hasattr(campaign, "start"), "no trigger methods bound on the light model"
    assert not hasattr(campaign, "__dict__"), "slotted: no per-instance dict"


def test_a_held_command_blocks_others_until_fired(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.STOPPED)
    assert machine.command(campaign, A.START, at=0.0, command_id="a", dry_run=True).accepted
    assert campaign.current is S.STOPPED and campaign.sequence == 1, "a dry run moves nothing"
    machine.hold(campaign, "a")
    other = machine.command(campaign, A.START, at=1.0, command_id="b")
    assert other.reason is ReasonCode.TRANSITION_IN_FLIGHT and "pending" in other.message
    assert machine.command(campaign, A.START, at=1.0, command_id="b", dry_run=True).reason is (
        ReasonCode.TRANSITION_IN_FLIGHT)
    fired = machine.command(campaign, A.START, at=2.0, command_id="a")
    assert fired.accepted and campaign.held is None


def test_unhold_frees_the_campaign(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.STOPPED)
    machine.hold(campaign, "a")
    machine.unhold(campaign, "other")
    assert campaign.held == "a"
    machine.unhold(campaign, "a")
    assert machine.command(campaign, A.START, at=1.0, command_id="b").accepted
