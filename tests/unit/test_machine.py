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


def _private_names_of_transitions() -> set[str]:
    import transitions.core as core

    names: set[str] = set()
    for cls in (core.Machine, core.Event, core.Transition, core.EventData, core.State, core.Condition):
        names |= {n for n in dir(cls) if n.startswith("_") and not n.startswith("__")}
    built = core.Machine(model=None, states=["A"], initial=None)
    return names | {n for n in vars(built) if n.startswith("_") and not n.startswith("__")}


def test_the_core_uses_transitions_through_its_public_api_only() -> None:
    import ast
    from pathlib import Path

    private = _private_names_of_transitions()
    assert "_create_event" in private and "_can_trigger" in private  # the scan sees what it must forbid
    offending: list[str] = []
    for path in sorted((Path(__file__).parents[2] / "fsm").glob("**/*.py")):
        tree = ast.parse(path.read_text(), str(path))
        # A module's own private names (a `_queued` dict, a `_process` method) are not transitions'.
        own = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
        own |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
        own |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load)}
        offending += [f"{path.name}: {name}" for name in sorted((used & private) - own)]
    assert offending == []


def test_an_action_the_platform_lacks_needs_no_event_of_its_own() -> None:
    genesys = CampaignMachine(frozenset({A.START, A.STOP}))
    assert "pause" not in genesys.machine.events and "resume" not in genesys.machine.events
    campaign, _ = genesys.adopt("c-1", S.RUNNING, DialerType.POWER, at=0.0)
    for dry_run in (True, False):
        refused = genesys.command(campaign, A.PAUSE, at=1.0, command_id="p", dry_run=dry_run)
        assert refused.reason is ReasonCode.UNSUPPORTED_BY_PLATFORM and campaign.current is S.RUNNING


def _every_question() -> list[tuple[CampaignState, Action, CampaignState | None, CampaignState | None]]:
    return [(state, action, expected, reported)
            for state in CampaignState for action in Action
            for expected in (None, state, S.PAUSED if state is not S.PAUSED else S.RUNNING)
            for reported in ((None, *CampaignState) if action is A.RESET else (None,))]


@pytest.mark.parametrize("supported", [frozenset(Action), frozenset({A.START, A.STOP})], ids=["guide", "genesys"])
def test_a_dry_run_answers_what_the_command_would_without_firing_or_copying(
    supported: frozenset[Action], monkeypatch: pytest.MonkeyPatch
) -> None:
    import copy

    import transitions

    machine = CampaignMachine(supported)
    real: dict[object, tuple[bool, ReasonCode | None]] = {}
    for state, action, expected, reported in _every_question():
        campaign = Campaign("c-1", state, DialerType.PREDICTIVE, sequence=1, last_stable=S.RUNNING)
        decision = machine.command(campaign, action, at=5.0, command_id="x", expected_state=expected,
                                   reported=reported)
        real[(state, action, expected, reported)] = (decision.accepted, decision.reason)

    def forbidden(*_: object, **__: object) -> bool:
        raise AssertionError("a dry run fired a trigger or copied the campaign")

    monkeypatch.setattr(transitions.Event, "trigger", forbidden)
    monkeypatch.setattr(copy, "copy", forbidden)
    for state, action, expected, reported in _every_question():
        campaign = Campaign("c-1", state, DialerType.PREDICTIVE, sequence=1, last_stable=S.RUNNING)
        before = campaign.snapshot()
        dry = machine.command(campaign, action, at=5.0, command_id="x", expected_state=expected,
                              reported=reported, dry_run=True)
        assert (dry.accepted, dry.reason) == real[(state, action, expected, reported)], (state, action)
        assert dry.state is state and dry.change is None and set(dry.legal) == set(machine.legal(campaign))
        assert campaign.snapshot() == before, "a dry run leaves the campaign as it was"


def test_expected_state_refuses_before_the_reset_report_is_looked_at(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.FAILED)
    for reported in (None, S.STOPPED):
        refused = machine.command(campaign, A.RESET, at=1.0, command_id="r", expected_state=S.RUNNING,
                                  reported=reported)
        assert refused.reason is ReasonCode.EXPECTED_STATE_MISMATCH and campaign.current is S.FAILED
    # No report: the edge exists but none of its destinations was reported, so the table answers.
    assert machine.command(campaign, A.RESET, at=1.0, command_id="r").reason is ReasonCode.ILLEGAL_TRANSITION
    assert machine.command(campaign, A.RESET, at=1.0, command_id="r", reported=S.FAILED).reason is (
        ReasonCode.ILLEGAL_TRANSITION), "FAILED is where a reset leaves from, never where it goes"


def test_the_step_after_a_move_is_the_same_for_every_kind_of_move(machine: CampaignMachine) -> None:
    campaign = _adopt(machine, S.RUNNING)  # predictive: stopping 180 s, starting 300 s
    assert campaign.entered_at == 100.0 and campaign.last_stable is S.RUNNING
    stop = machine.command(campaign, A.STOP, at=110.0, command_id="s")
    assert stop.change is not None and stop.change.sequence == 2
    assert (campaign.entered_at, campaign.deadline, campaign.last_stable) == (110.0, 290.0, S.RUNNING)
    delayed = machine.delay(campaign, at=290.0, detail="locked")
    assert delayed.sequence == 3 and delayed.command_id == "s" and delayed.action is A.STOP
    assert (campaign.entered_at, campaign.deadline) == (110.0, 470.0), "a delay keeps the time in state"
    failed = machine.expire(campaign, at=470.0, errors=[])
    assert failed.sequence == 4 and failed.command_id == "s" and campaign.command_id is None
    assert (campaign.entered_at, campaign.deadline, campaign.last_stable) == (470.0, None, S.RUNNING), (
        "FAILED is not stable: the last stable state is still the one the stop left")
    reset = machine.command(campaign, A.RESET, at=480.0, command_id="r", reported=S.STOPPED)
    assert reset.change is not None and reset.change.sequence == 5 and reset.change.command_id == "r"
    assert (campaign.entered_at, campaign.deadline, campaign.last_stable) == (480.0, None, S.STOPPED)
    assert campaign.command_id is None and campaign.action is None
    start = machine.command(campaign, A.START, at=490.0, command_id="go")
    assert start.change is not None and campaign.deadline == 790.0
    observed = machine.observe(campaign, S.FAILED, cause=Cause.POLL, at=500.0, platform_status="error")
    assert observed is not None and observed.reason is ReasonCode.TRANSITION_FAILED
    assert observed.platform_status == "error" and observed.command_id == "go" and campaign.command_id is None
    assert campaign.sequence == 7 and campaign.entered_at == 500.0
