"""Random interleavings of commands and observations, checked against the machine's promises.

- no command is accepted while a transition is in flight;
- every event's `from` is the previous event's `to`, and sequences run 1, 2, 3... with no gap;
- the campaign never leaves the seven states;
- refusals never move the campaign or emit anything.
"""

from __future__ import annotations

import orjson
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fsm import CampaignMachine
from fsm.machine import Campaign, StateChange
from schemas import decode
from schemas.events import CampaignStateChangedEvent
from schemas.types import (
    TRANSITIONAL_STATES,
    Action,
    CampaignState,
    Cause,
    DialerType,
    ReasonCode,
)


class CampaignLife(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = 0.0
        self.events: list[dict[str, object]] = []
        self.machine: CampaignMachine | None = None
        self.campaign: Campaign | None = None

    def _record(self, change: StateChange | None) -> None:
        if change is not None:
            event = change.event()
            decode(CampaignStateChangedEvent, orjson.dumps(event))  # every event fits the published schema
            self.events.append(event)

    @rule(
        genesys=st.booleans(),
        state=st.sampled_from(CampaignState),
        dialer=st.sampled_from(DialerType),
    )
    @precondition(lambda self: self.campaign is None)
    def adopt(self, genesys: bool, state: CampaignState, dialer: DialerType) -> None:
        supported = frozenset({Action.START, Action.STOP}) if genesys else frozenset(Action)
        self.machine = CampaignMachine(supported)
        self.campaign, change = self.machine.adopt("c-1", state, dialer, at=self.clock)
        self._record(change)

    @rule(action=st.sampled_from(Action), expected=st.none() | st.sampled_from(CampaignState),
          dt=st.floats(0, 500))
    @precondition(lambda self: self.campaign is not None)
    def command(self, action: Action, expected: CampaignState | None, dt: float) -> None:
        assert self.machine is not None and self.campaign is not None
        self.clock += dt
        before, seq = self.campaign.current, self.campaign.sequence
        decision = self.machine.command(self.campaign, action, at=self.clock, expected_state=expected)
        if before in TRANSITIONAL_STATES:
            assert not decision.accepted, f"{action} accepted while {before}"
            assert decision.reason in (ReasonCode.TRANSITION_IN_FLIGHT, ReasonCode.UNSUPPORTED_BY_PLATFORM)
        if decision.accepted:
            assert decision.change is not None and decision.change.from_state is before
        else:
            assert self.campaign.current is before and self.campaign.sequence == seq
            assert decision.change is None
        self._record(decision.change)

    @rule(action=st.sampled_from(Action), expected=st.none() | st.sampled_from(CampaignState),
          reported=st.none() | st.sampled_from(CampaignState))
    @precondition(lambda self: self.campaign is not None)
    def dry_run_then_command(self, action: Action, expected: CampaignState | None,
                             reported: CampaignState | None) -> None:
        assert self.machine is not None and self.campaign is not None
        snapshot = self.campaign.snapshot()
        dry = self.machine.command(self.campaign, action, at=self.clock, expected_state=expected,
                                   reported=reported, dry_run=True)
        assert self.campaign.snapshot() == snapshot and dry.change is None, "a dry run moves nothing"
        real = self.machine.command(self.campaign, action, at=self.clock, expected_state=expected,
                                    reported=reported)
        assert (dry.accepted, dry.reason) == (real.accepted, real.reason), "the dry run told the truth"
        self._record(real.change)

    @rule(state=st.sampled_from(CampaignState), cause=st.sampled_from([Cause.NOTIFICATION, Cause.POLL,
                                                                        Cause.RECONCILE]),
          dt=st.floats(0, 500))
    @precondition(lambda self: self.campaign is not None)
    def observe(self, state: CampaignState, cause: Cause, dt: float) -> None:
        assert self.machine is not None and self.campaign is not None
        self.clock += dt
        self._record(self.machine.observe(self.campaign, state, cause=cause, at=self.clock))
        assert self.campaign.current is state, "an observation is always adopted"

    @rule(delayed=st.booleans())
    @precondition(lambda self: self.campaign is not None and self.campaign.in_flight)
    def window_expires(self, delayed: bool) -> None:
        assert self.machine is not None and self.campaign is not None
        self.clock += 1000
        if delayed:
            self._record(self.machine.delay(self.campaign, at=self.clock, detail="locked"))
        else:
            self._record(self.machine.expire(self.campaign, at=self.clock, errors=[]))
            assert self.campaign.current is CampaignState.FAILED

    @rule()
    @precondition(lambda self: self.campaign is not None and self.campaign.in_flight)
    def platform_refused(self) -> None:
        assert self.machine is not None and self.campaign is not None
        self._record(self.machine.abort(self.campaign, at=self.clock, reason=ReasonCode.PLATFORM_CONFLICT))
        assert self.campaign.current not in TRANSITIONAL_STATES

    @invariant()
    def event_chain_holds(self) -> None:
        for i, event in enumerate(self.events):
            data = event["data"]
            assert isinstance(data, dict)
            assert data["sequence"] == i + 1, "gap or duplicate in the sequence"
            if i == 0:
                assert data["from"] is None
            else:
                previous = self.events[i - 1]["data"]
                assert isinstance(previous, dict)
                assert data["from"] == previous["to"], "an event's from must be the previous event's to"
        if self.campaign is not None:
            assert self.campaign.state in {s.value for s in CampaignState}
            assert self.events[-1]["data"]["to"] == self.campaign.state  # type: ignore[index]
            assert self.campaign.sequence == len(self.events)
            assert (self.campaign.deadline is not None) == self.campaign.in_flight


TestCampaignLife = CampaignLife.TestCase
TestCampaignLife.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
