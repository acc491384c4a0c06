"""The campaign state machine: one shared `transitions.Machine` per platform profile, light models.

`transitions` decides which moves are legal. A campaign is a slotted `Campaign` value holding its
own state; it is never added to the machine (`Machine.add_model` is quadratic in the number of
models and binds a method per trigger on each, ~7 KB a campaign), so triggers are fired through the
machine's `Event` objects with the campaign as the model. One process holds 100,000 campaigns.

Commands are refused *by the machine*, asked before anything fires: the gate takes the edges the
machine has for the action from the campaign's state (`Machine.get_transitions`) and checks their
conditions, as `may_<trigger>` would on a bound model. No edge at all: the reason is read from the
same table that built the edges (`table.refusal_reason`); an edge whose condition fails (the
command's `expectedState`) refuses with the reason that condition stands for. A command is judged
once (`judge`) and the accepted decision is then applied as it stands (`apply`: the campaign enters
the destination of the edge the gate found, conditions not asked again), so the move after a POST
is the decision taken before it, not a second judgement. Observations are never refused: every
state has an `observe_<STATE>` edge from every other state, and an observation that skips states is
adopted with the anomaly named. As the gate asks the edges themselves, an observation executes its
edge itself (`Transition.execute`, with the event's data as the trigger would build it): there is
exactly one per pair of states, so the trigger's search for it from the campaign's state would find
that same edge, and this machine has no event-level callbacks for the trigger to run around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from transitions import Event, EventData, Machine, State, Transition

from schemas.types import (
    TERMINAL_STATES,
    TRANSITIONAL_STATES,
    Action,
    Anomaly,
    CampaignState,
    Cause,
    DialerType,
    Halt,
    ReasonCode,
)

from .campaign import Campaign, StateChange
from .intent import INTENT_OF, halt_of, interpret, keeps
from .table import (
    ALL_ACTIONS,
    COMMAND_EDGES,
    PLATFORM_EDGES,
    PLATFORM_STATE,
    STABLE_STATES,
    legal_actions,
    refusal_reason,
    shortest_path,
)
from .windows import ToleranceWindows

__all__ = ["Campaign", "CampaignMachine", "Decision", "StateChange"]

S = CampaignState
_STATES: list[str | Enum | State] = [s.value for s in CampaignState]
_STABLE = frozenset(s.value for s in STABLE_STATES)
# str -> member by dict lookup: several times cheaper than calling the enum on the hot path.
_STATE: dict[str, CampaignState] = {s.value: s for s in CampaignState}
_FAILED = S.FAILED  # read after every move: a member read off its enum class costs four times a name


@dataclass(frozen=True, slots=True)
class Decision:
    """The machine's answer to a command. `change` is set when the command moved the campaign."""

    accepted: bool
    state: CampaignState
    reason: ReasonCode | None = None
    legal: tuple[Action, ...] = ()
    change: StateChange | None = None
    # Accepted: the state the edge the gate let through enters, and the campaign's sequence when it
    # was judged. `CampaignMachine.apply` makes that move later without judging again.
    to: CampaignState | None = None
    judged_at: int | None = None

    @property
    def message(self) -> str:
        if self.accepted:
            assert self.change is not None
            return f"{self.change.from_state} -> {self.change.to_state}"
        if self.reason is ReasonCode.TRANSITION_IN_FLIGHT:
            if self.state not in TRANSITIONAL_STATES:
                return f"campaign is {self.state} with an earlier command still pending: wait for it"
            return f"campaign is {self.state}: wait for the transition in flight to reach a terminal state"
        if self.reason is ReasonCode.ALREADY_IN_STATE:
            return f"campaign is already {self.state}: nothing to do"
        if self.reason is ReasonCode.UNSUPPORTED_BY_PLATFORM:
            return "this platform profile has no such action"
        if self.reason is ReasonCode.EXPECTED_STATE_MISMATCH:
            return f"campaign is {self.state}, not the state the command expected"
        legal = ", ".join(a.value for a in self.legal) or "none"
        return f"not allowed from {self.state}; legal now: {legal}"


def _anomaly(source: CampaignState, dest: CampaignState) -> dict[str, Any] | None:
    expected = PLATFORM_EDGES[source]
    if dest in expected:
        return None
    skipped = shortest_path(source, dest)
    kind = Anomaly.UNEXPECTED_TRANSITION if skipped is None else Anomaly.SKIPPED_STATES
    return {
        "kind": kind.value,
        "expected": [s.value for s in expected],
        "observed": dest.value,
        "skipped": [s.value for s in skipped or ()],
    }


# Precomputed once: an observation looks its anomaly up instead of searching the graph.
_ANOMALIES: dict[tuple[str, str], dict[str, Any] | None] = {
    (a.value, b.value): _anomaly(a, b) for a in CampaignState for b in CampaignState if a != b
}


class CampaignMachine:
    """The shared machine of one platform profile, and the only code that moves a `Campaign`."""

    def __init__(
        self,
        supported: frozenset[Action] = frozenset(ALL_ACTIONS),
        windows: ToleranceWindows | None = None,
    ) -> None:
        self.supported = frozenset(supported) | {Action.RESET}  # reset is ours, not the platform's
        self.windows = windows or ToleranceWindows()
        machine = Machine(
            model=None,
            states=_STATES,
            initial=None,
            auto_transitions=False,
            send_event=True,
        )
        for edge in COMMAND_EDGES:
            if edge.action not in self.supported:
                continue
            if edge.dest == PLATFORM_STATE:
                for reported in CampaignState:
                    if reported is not edge.source:
                        machine.add_transition(
                            edge.action.value, edge.source.value, reported.value,
                            conditions=[_expected_state_ok, _reports(reported)],
                        )
            else:
                machine.add_transition(
                    edge.action.value, edge.source.value, str(edge.dest),
                    conditions=[_expected_state_ok],
                )
        for state in CampaignState:
            others: list[str | Enum | State] = [s for s in _STATES if s != state.value]
            machine.add_transition(f"observe_{state.value}", others, state.value)
        transitional: list[str | Enum | State] = [s.value for s in TRANSITIONAL_STATES]
        machine.add_transition("expire", transitional, S.FAILED.value)
        machine.add_transition("delay", transitional, None)
        for stable in STABLE_STATES:
            machine.add_transition("abort", transitional, stable.value, conditions=[_returns_to(stable)])
        self.machine = machine
        self._events = machine.events
        # Looked up once, as for the gate below: the trigger's own search (and its queue and event
        # callbacks, none here) took about 2 of the 10 us an observation cost in the core.
        self._observed: dict[tuple[str, CampaignState], tuple[Transition, Event]] = {
            (source.value, dest): (event.transitions[source.value][0], event)
            for dest in CampaignState
            for event in (machine.events[f"observe_{dest.value}"],)
            for source in CampaignState if source is not dest
        }
        self._legal = {s: legal_actions(s, self.supported) for s in CampaignState}
        self._window = {
            (d, s.value): self.windows.window(d, s) for d in DialerType for s in CampaignState
        }
        # The gate's question per (state, action), asked of the machine once: it is never changed after
        # this, and a command then costs one dict lookup. An action the platform lacks has no edge
        # (and no event) at all; the table's reason answers for it.
        self._gate: dict[tuple[str, Action], tuple[list[Transition], ReasonCode]] = {
            (s.value, a): (machine.get_transitions(a.value, s.value), refusal_reason(s, a, self.supported))
            for s in CampaignState for a in ALL_ACTIONS
        }

    # --- creation ------------------------------------------------------------------------------

    def adopt(
        self,
        campaign_id: str,
        state: CampaignState,
        dialer_type: DialerType,
        *,
        at: float,
        cause: Cause = Cause.RECONCILE,
        dialer_id: str | None = None,
        contact_list_id: str | None = None,
        platform_status: str | None = None,
        halt: Halt | None = None,
    ) -> tuple[Campaign, StateChange]:
        """A campaign seen for the first time. Its first event has `from` None and sequence 1."""
        campaign = Campaign(
            campaign_id, state, dialer_type, dialer_id=dialer_id, contact_list_id=contact_list_id,
            sequence=1, entered_at=at, platform_status=platform_status,
        )
        window = self._window[(dialer_type, campaign.state)]
        campaign.deadline = None if window is None else at + window
        change = StateChange(
            campaign_id, 1, None, state, cause, at, dialer_type, dialer_id, platform_status=platform_status,
            halt=halt_of(None, state, halt),
        )
        return campaign, change

    # --- commands ------------------------------------------------------------------------------

    def command(
        self,
        campaign: Campaign,
        action: Action,
        *,
        at: float,
        command_id: str | None = None,
        expected_state: CampaignState | None = None,
        dry_run: bool = False,
        request: dict[str, Any] | None = None,
        reported: CampaignState | None = None,
    ) -> Decision:
        """Gate a command. Accepted: the campaign enters the transitional state the command opens.

        A held command (accepted, not yet sent) is a transition in flight for the gate: every other
        command is refused TRANSITION_IN_FLIGHT, the no-op pairs included, so no command is told
        COMPLETED for a state the campaign is about to leave. A reset moves to `reported`, the state
        the platform reports (read just before); without it a reset is refused.

        `dry_run` stops after the gate's question (`judge`), leaving the campaign untouched; the
        runtime judges a command on arrival and `apply`s that decision once its POST was taken (the
        campaign is `hold`-ed in between, so nothing else gets through).
        """
        decision = self.judge(campaign, action, command_id=command_id, expected_state=expected_state,
                              reported=reported)
        if dry_run or not decision.accepted:
            return decision
        return self.apply(campaign, action, decision, at=at, command_id=command_id, request=request)

    def judge(
        self,
        campaign: Campaign,
        action: Action,
        *,
        command_id: str | None = None,
        expected_state: CampaignState | None = None,
        reported: CampaignState | None = None,
    ) -> Decision:
        """The gate's question alone: would `action` be taken now, and if not, why. Moves nothing."""
        before = campaign.current
        if campaign.held is not None and campaign.held != command_id:
            return Decision(False, before, ReasonCode.TRANSITION_IN_FLIGHT, self._legal[before])
        edges, table = self._gate[(campaign.state, action)]
        reason: ReasonCode | None = table
        edge: Transition | None = None
        if edges:
            asked = EventData(self.machine.states[campaign.state], self._events[action.value], self.machine,
                              campaign, (), {"expected": expected_state, "reported": reported})
            edge, reason = _taken(edges, asked, table)
        if reason is not None or edge is None:
            return Decision(False, before, reason, self._legal[before])
        assert edge.dest is not None, "every command edge enters a state"
        return Decision(True, before, None, self._legal[before], to=_STATE[edge.dest],
                        judged_at=campaign.sequence)

    def apply(
        self,
        campaign: Campaign,
        action: Action,
        decision: Decision,
        *,
        at: float,
        command_id: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> Decision:
        """Make the move an accepted `decision` of `judge` names, without judging again.

        The decision must still be the campaign's: judged on this very sequence (nothing moved it
        since). The machine has no callbacks, so entering the edge's destination with the public
        `Machine.set_state` is the whole of what its trigger would do, minus re-checking conditions.
        """
        before = campaign.current
        assert decision.accepted and decision.to is not None, decision
        assert decision.judged_at == campaign.sequence and decision.state is before, (decision, campaign)
        self.machine.set_state(decision.to.value, campaign)
        campaign.held = None
        campaign.command_id = command_id
        campaign.action = action
        campaign.intent = INTENT_OF.get(action, campaign.intent)
        # A reset is done once it adopted what the platform reports; a transition the platform is
        # still in is the platform's own, followed like any observed one.
        change = self._step(campaign, before, Cause.COMMAND, at, request=request, done=action is Action.RESET)
        return Decision(True, change.to_state, None, self._legal[change.to_state], change)

    def hold(self, campaign: Campaign, command_id: str) -> None:
        """Reserve the campaign for an accepted command until it is fired or given up."""
        campaign.held = command_id

    def unhold(self, campaign: Campaign, command_id: str) -> None:
        if campaign.held == command_id:
            campaign.held = None

    # --- observations --------------------------------------------------------------------------

    def observe(
        self,
        campaign: Campaign,
        state: CampaignState,
        *,
        cause: Cause,
        at: float,
        platform_status: str | None = None,
        errors: list[dict[str, str]] | None = None,
        intent_decides: bool = False,
        halt: Halt | None = None,
    ) -> StateChange | None:
        """Adopt what the platform reports. None when nothing changed; never a refusal.

        `intent_decides`: the platform's status cannot tell a pause from a stop (Genesys `off`):
        the campaign's recorded intent reads it (fsm/intent.py).
        """
        before = campaign.state
        if platform_status is not None:
            campaign.platform_status = platform_status
        if campaign.intent is not None:  # without an intent there is nothing to read or forget
            state = interpret(campaign.intent, state, intent_decides=intent_decides)
            # While our pause or stop is in flight its intent stands, whatever arrives (a stale `on`
            # notification must not turn the pause's `off` into a stop); after that the platform's word rules.
            if campaign.action not in INTENT_OF and not keeps(campaign.intent, state, intent_decides=intent_decides):
                campaign.intent = None
        if state == before:
            return None  # a re-seen state must not restart its clock, so there is nothing to fire
        edge, event = self._observed[(before, state)]
        edge.execute(EventData(self.machine.states[before], event, self.machine, campaign, (), {}))
        return self._step(campaign, _STATE[before], cause, at, anomaly=_ANOMALIES[(before, state)], errors=errors,
                          platform_status=platform_status, halt=halt)

    def expire(self, campaign: Campaign, *, at: float, errors: list[dict[str, str]]) -> StateChange:
        """The tolerance window ran out and the platform named no lock: the transition FAILED."""
        before = campaign.current
        self._events["expire"].trigger(campaign)
        return self._step(campaign, before, Cause.TIMEOUT, at, reason=ReasonCode.TOLERANCE_EXCEEDED, errors=errors)

    def delay(self, campaign: Campaign, *, at: float, detail: str) -> StateChange:
        """The window ran out but a lock or compliance block explains it: keep waiting, say so."""
        state = campaign.current
        self._events["delay"].trigger(campaign)
        anomaly = {
            "kind": Anomaly.TRANSITION_DELAYED.value,
            "expected": [s.value for s in PLATFORM_EDGES[state]],
            "observed": state.value,
            "skipped": [],
            "detail": detail,
        }
        return self._step(campaign, state, Cause.TIMEOUT, at, anomaly=anomaly)

    def abort(self, campaign: Campaign, *, at: float, reason: ReasonCode) -> StateChange:
        """The platform did not take our request: back to the stable state the command left."""
        before = campaign.current
        self._events["abort"].trigger(campaign)
        return self._step(campaign, before, Cause.COMMAND, at, reason=reason)

    # --- queries -------------------------------------------------------------------------------

    def legal(self, campaign: Campaign) -> tuple[Action, ...]:
        return self._legal[campaign.current]

    # --- internals -----------------------------------------------------------------------------

    def _step(
        self,
        campaign: Campaign,
        before: CampaignState,
        cause: Cause,
        at: float,
        *,
        anomaly: dict[str, Any] | None = None,
        reason: ReasonCode | None = None,
        errors: list[dict[str, str]] | None = None,
        platform_status: str | None = None,
        request: dict[str, Any] | None = None,
        done: bool = False,
        halt: Halt | None = None,
    ) -> StateChange:
        """The bookkeeping after every move (the campaign already in its new state), and its change.

        The change names the command the campaign carries, so a caller sets that first. `done` ends
        the command with this change even if the state is transitional.
        """
        after = _STATE[campaign.state]
        window = self._window[(campaign.dialer_type, campaign.state)]
        campaign.deadline = None if window is None else at + window
        if after is not before:
            # Only a real move restarts the time in state: a delay keeps its state and its
            # `entered_at`, with a fresh window from now (the audit rebuilds it the same way).
            campaign.entered_at = at
            if campaign.state in _STABLE:
                # The state a reset or an abort returns to is the last stable one *before* a failure.
                campaign.last_stable = after
        campaign.sequence += 1
        if after is _FAILED and reason is None:
            reason = ReasonCode.TRANSITION_FAILED
        change = StateChange(
            campaign.id, campaign.sequence, before, after, cause, at, campaign.dialer_type,
            campaign.dialer_id, campaign.action, campaign.command_id, anomaly, reason, errors,
            platform_status, request, campaign.intent, halt_of(campaign.intent, after, halt),
        )
        if done or after in TERMINAL_STATES:
            campaign.command_id = None
            campaign.action = None
        return change


def _taken(edges: list[Transition], event: EventData,
           table: ReasonCode) -> tuple[Transition | None, ReasonCode | None]:
    """The first of `edges` that would be taken for `event` (reason None), else why none would. The
    question `may_<trigger>` asks on a bound model, asked of the edges themselves: nothing fires,
    nothing is copied."""
    named: ReasonCode | None = None
    for edge in edges:
        failed = next((c for c in edge.conditions if not c.check(event)), None)
        if failed is None:
            return edge, None
        named = named or _CONDITION_REFUSALS.get(failed.func)
    return None, named or table


def _expected_state_ok(event: EventData) -> bool:
    expected: CampaignState | None = event.kwargs.get("expected")
    campaign: Campaign = event.model  # type: ignore[assignment]  # transitions types the model as object
    return expected is None or expected == campaign.state


def _returns_to(stable: CampaignState) -> Any:
    def condition(event: EventData) -> bool:
        campaign: Campaign = event.model  # type: ignore[assignment]  # transitions types the model as object
        return campaign.last_stable is stable

    condition.__name__ = f"last_stable_is_{stable.value}"
    return condition


def _reports(state: CampaignState) -> Any:
    def condition(event: EventData) -> bool:
        reported: CampaignState | None = event.kwargs.get("reported")
        return reported is state

    condition.__name__ = f"platform_reports_{state.value}"
    return condition


# The reason a command is refused when this condition of its edge fails. A condition with no entry
# here (a reset's "the platform reports X") leaves the answer to the table.
_CONDITION_REFUSALS: dict[object, ReasonCode] = {_expected_state_ok: ReasonCode.EXPECTED_STATE_MISMATCH}
