"""Every (state, command) pair, on both platform profiles, against an expectation written by hand.

The expectations below are typed out from the design guide, not derived from `fsm/table.py`, so a
change to the table that breaks the guide's rules fails here.
"""

from __future__ import annotations

import pytest

from fsm import CampaignMachine
from fsm.machine import Campaign
from schemas.types import Action, CampaignState, DialerType, ReasonCode

S, A, R = CampaignState, Action, ReasonCode

GO = "GO"
# (state, action) -> destination state, or the refusal reason.  Guide profile: all five actions.
GUIDE: dict[tuple[CampaignState, Action], CampaignState | ReasonCode] = {
    (S.STOPPED, A.START): S.STARTING,
    (S.STOPPED, A.STOP): R.ALREADY_IN_STATE,
    (S.STOPPED, A.PAUSE): R.ILLEGAL_TRANSITION,
    (S.STOPPED, A.RESUME): R.ILLEGAL_TRANSITION,
    (S.STOPPED, A.RESET): R.ALREADY_IN_STATE,  # not FAILED (an observation cleared it): nothing to reset
    (S.STARTING, A.START): R.TRANSITION_IN_FLIGHT,
    (S.STARTING, A.STOP): R.TRANSITION_IN_FLIGHT,
    (S.STARTING, A.PAUSE): R.TRANSITION_IN_FLIGHT,
    (S.STARTING, A.RESUME): R.TRANSITION_IN_FLIGHT,
    (S.STARTING, A.RESET): R.TRANSITION_IN_FLIGHT,
    (S.RUNNING, A.START): R.ALREADY_IN_STATE,
    (S.RUNNING, A.STOP): S.STOPPING,
    (S.RUNNING, A.PAUSE): S.PAUSING,
    (S.RUNNING, A.RESUME): R.ALREADY_IN_STATE,
    (S.RUNNING, A.RESET): R.ALREADY_IN_STATE,  # not FAILED (an observation cleared it): nothing to reset
    (S.PAUSING, A.START): R.TRANSITION_IN_FLIGHT,
    (S.PAUSING, A.STOP): R.TRANSITION_IN_FLIGHT,
    (S.PAUSING, A.PAUSE): R.TRANSITION_IN_FLIGHT,
    (S.PAUSING, A.RESUME): R.TRANSITION_IN_FLIGHT,
    (S.PAUSING, A.RESET): R.TRANSITION_IN_FLIGHT,
    (S.PAUSED, A.START): R.ILLEGAL_TRANSITION,
    (S.PAUSED, A.STOP): S.STOPPING,
    (S.PAUSED, A.PAUSE): R.ALREADY_IN_STATE,
    (S.PAUSED, A.RESUME): S.STARTING,
    (S.PAUSED, A.RESET): R.ALREADY_IN_STATE,  # not FAILED (an observation cleared it): nothing to reset
    (S.STOPPING, A.START): R.TRANSITION_IN_FLIGHT,  # the guide's trap: start right after stop
    (S.STOPPING, A.STOP): R.TRANSITION_IN_FLIGHT,
    (S.STOPPING, A.PAUSE): R.TRANSITION_IN_FLIGHT,
    (S.STOPPING, A.RESUME): R.TRANSITION_IN_FLIGHT,
    (S.STOPPING, A.RESET): R.TRANSITION_IN_FLIGHT,
    (S.FAILED, A.START): R.ILLEGAL_TRANSITION,
    (S.FAILED, A.STOP): R.ILLEGAL_TRANSITION,
    (S.FAILED, A.PAUSE): R.ILLEGAL_TRANSITION,
    (S.FAILED, A.RESUME): R.ILLEGAL_TRANSITION,
    (S.FAILED, A.RESET): S.RUNNING,  # the state the platform reports when read, RUNNING below
}

# Genesys has no pause or resume: those are refused as unsupported whatever the state.
GENESYS = {
    key: (R.UNSUPPORTED_BY_PLATFORM if key[1] in (A.PAUSE, A.RESUME) else value)
    for key, value in GUIDE.items()
}

LEGAL_NOW: dict[CampaignState, set[Action]] = {
    S.STOPPED: {A.START},
    S.STARTING: set(),
    S.RUNNING: {A.PAUSE, A.STOP},
    S.PAUSING: set(),
    S.PAUSED: {A.RESUME, A.STOP},
    S.STOPPING: set(),
    S.FAILED: {A.RESET},
}


def _campaign(state: CampaignState) -> Campaign:
    # A FAILED campaign whose last stable state was RUNNING (a stop that failed, say).
    return Campaign("c-1", state, DialerType.PREDICTIVE, sequence=1, last_stable=S.RUNNING)


def test_the_expectation_covers_every_pair() -> None:
    assert len(GUIDE) == len(CampaignState) * len(Action) == 35


@pytest.mark.parametrize(("profile", "expected"), [("guide", GUIDE), ("genesys", GENESYS)])
@pytest.mark.parametrize("state", list(CampaignState))
@pytest.mark.parametrize("action", list(Action))
def test_every_state_command_pair(
    profile: str, expected: dict[tuple[CampaignState, Action], object], state: CampaignState, action: Action
) -> None:
    supported = frozenset(Action) if profile == "guide" else frozenset({A.START, A.STOP})
    machine = CampaignMachine(supported)
    campaign = _campaign(state)
    # A reset goes to what the platform reports (read just before it): here RUNNING.
    reported = S.RUNNING if action is A.RESET else None
    decision = machine.command(campaign, action, at=10.0, command_id="cmd-1", reported=reported)
    want = expected[(state, action)]
    if isinstance(want, ReasonCode):
        assert not decision.accepted
        assert decision.reason is want
        assert campaign.current is state, "a refused command must not move the campaign"
        assert campaign.sequence == 1, "a refused command emits no state change"
        assert decision.change is None
        legal = LEGAL_NOW[state] if profile == "guide" else LEGAL_NOW[state] - {A.PAUSE, A.RESUME}
        assert set(decision.legal) == legal
        assert decision.message  # every refusal explains itself
    else:
        assert decision.accepted
        assert campaign.current is want
        assert decision.change is not None
        assert decision.change.from_state is state and decision.change.to_state is want
        assert decision.change.sequence == 2
        assert decision.change.command_id == "cmd-1"
        assert decision.change.action is action


def test_refusal_names_legal_actions_in_its_message() -> None:
    machine = CampaignMachine()
    decision = machine.command(_campaign(S.PAUSED), A.START, at=0.0)
    assert decision.reason is R.ILLEGAL_TRANSITION
    assert "resume" in decision.message and "stop" in decision.message


def test_resume_is_recorded_as_resume_but_enters_starting() -> None:
    machine = CampaignMachine()
    campaign = _campaign(S.PAUSED)
    decision = machine.command(campaign, A.RESUME, at=0.0, command_id="r")
    assert decision.change is not None
    event = decision.change.event()["data"]
    assert (event["from"], event["to"], event["action"]) == ("PAUSED", "STARTING", "resume")


@pytest.mark.parametrize("supported", [frozenset(Action), frozenset({A.START, A.STOP})], ids=["guide", "genesys"])
def test_the_machine_has_an_edge_exactly_where_the_table_has_a_legal_action(supported: frozenset[Action]) -> None:
    # The gate answers "no edge" from the table, so the two must never disagree about where edges are.
    machine = CampaignMachine(supported)
    for state in CampaignState:
        with_edges = {a for a in Action if machine.machine.get_transitions(a.value, state.value)}
        assert with_edges == LEGAL_NOW[state] & (supported | {A.RESET}), state
        assert set(machine.legal(_campaign(state))) == with_edges
