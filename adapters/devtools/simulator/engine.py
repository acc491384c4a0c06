"""How the simulated platform moves campaigns: asynchronously, on its own schedule, per dialer type.

A transition request is accepted (the caller answers 202) and the campaign enters its transitional
state at once; a timer on the simulated clock finishes it later. Durations (`Timing`, simulated
seconds) follow the guide:

=================  ===========  ================  =====================================
dialer type        start        resume (PAUSED)   stop / pause
=================  ===========  ================  =====================================
PREDICTIVE         8 s          3 s               stop 30 + 1.5 s/active call, <= 120 s;
                                                  pause 10 + 1 s/call, <= 90 s
PROGRESSIVE        4 s          2 s               stop 3 + 0.25 s/call, <= 30 s; pause <= 15 s
POWER              2 s          1 s               0.5 s: dialing stops at once
=================  ===========  ================  =====================================

A predictive resume is faster than a start because the paused campaign kept its predictive model.
Platform-side moves (guide section 1): start STOPPED->STARTING->RUNNING, resume PAUSED->STARTING->
RUNNING, pause RUNNING->PAUSING->PAUSED, stop RUNNING|PAUSED->STOPPING->STOPPED; any transition may
end in FAILED. Anything else is refused (`InvalidTransition`), as is a transition on a dialer that
already has `dialer_transition_limit` campaigns in flight (`DialerOverloaded`). FAILED is left only
through the admin API (the guide's "manual reset").

A campaign in STARTING or STOPPING whose contact list is IMPORTING or LOCKED is *held* when its
timer fires, with an empty errors array, and finishes `release_delay` after the list is released.

`visible` (the genesys profile) shows a client only `campaignStatus` (profiles.py), where STARTING
and RUNNING are both `on` and PAUSED and STOPPED both `off`. So there, nothing a client can do
depends on a state it cannot see: the moves are chosen by the visible status (start or resume from
`off`; stop or pause from `on`, a start still in progress included, which is cut short), the
dialer limit counts only visibly changing campaigns (`stopping`), and `version` goes up (and
subscribers hear of it) only when the visible status changes: a start finishing behind `on`
changes nothing a client sees, so a PUT reusing the version of its own previous answer succeeds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from schemas.types import TRANSITIONAL_STATES, Action, CampaignState, DialerType

from .clock import Scheduler, Timer
from .faults import FaultInjector, TransitionOverride
from .lines import active_campaigns, cap_message
from .progress import ProgressBook
from .tenant import ListImportStatus, ListState, SimCampaign, SimContactList, Tenant

__all__ = [
    "DEFAULT_TIMING",
    "ActiveCampaignCapReached",
    "DialerOverloaded",
    "DurationSpec",
    "Engine",
    "EngineError",
    "InvalidTransition",
    "Timing",
    "Transition",
    "TransitionKind",
    "UnknownCampaign",
    "UnknownContactList",
]

_log = logging.getLogger(__name__)

S = CampaignState
TransitionKind = Literal["start", "resume", "pause", "stop"]


class EngineError(Exception):
    """A request the simulated platform refuses."""


class UnknownCampaign(EngineError):
    pass


class UnknownContactList(EngineError):
    pass


class InvalidTransition(EngineError):
    def __init__(self, campaign_id: str, state: CampaignState, action: str) -> None:
        super().__init__(f"campaign {campaign_id} cannot {action} from {state.value}")
        self.state = state
        self.action = action


class DialerOverloaded(EngineError):
    def __init__(self, dialer_id: str, in_flight: int, status: int) -> None:
        super().__init__(
            f"dialer {dialer_id} already has {in_flight} campaign state changes in progress"
            + (": internal state serialization timeout" if status >= 500 else "")
        )
        self.dialer_id = dialer_id
        self.in_flight = in_flight
        self.status = status


class ActiveCampaignCapReached(EngineError):
    """A start or resume past the organisation's active-campaign cap (simulator/lines.py)."""

    def __init__(self, active: int, cap: int) -> None:
        super().__init__(cap_message(active, cap))
        self.active = active
        self.cap = cap


@dataclass(frozen=True, slots=True)
class DurationSpec:
    """`base + per_call * activeCalls` simulated seconds, at most `cap`."""

    base: float
    per_call: float = 0.0
    cap: float | None = None

    def seconds(self, calls: int) -> float:
        value = self.base + self.per_call * calls
        return min(value, self.cap) if self.cap is not None else value


P, G, W = DialerType.PREDICTIVE, DialerType.PROGRESSIVE, DialerType.POWER

DEFAULT_TIMING: Mapping[tuple[TransitionKind, DialerType], DurationSpec] = {
    ("start", P): DurationSpec(8.0), ("start", G): DurationSpec(4.0), ("start", W): DurationSpec(2.0),
    ("resume", P): DurationSpec(3.0), ("resume", G): DurationSpec(2.0), ("resume", W): DurationSpec(1.0),
    ("pause", P): DurationSpec(10.0, 1.0, 90.0), ("pause", G): DurationSpec(2.0, 0.1, 15.0),
    ("pause", W): DurationSpec(0.5),
    ("stop", P): DurationSpec(30.0, 1.5, 120.0), ("stop", G): DurationSpec(3.0, 0.25, 30.0),
    ("stop", W): DurationSpec(0.5),
}


@dataclass(frozen=True, slots=True)
class Timing:
    specs: Mapping[tuple[TransitionKind, DialerType], DurationSpec] = field(
        default_factory=lambda: dict(DEFAULT_TIMING))
    release_delay: float = 1.0
    # genesys: how fast a campaign that is on works through its contact list (progress.py). Slow
    # by default (a 1,000-record list lasts 20,000 s): a campaign completes on its own only where
    # a test or demo asks for it with a short list or a faster rate.
    records_per_second: float = 0.05

    def duration(self, kind: TransitionKind, dialer_type: DialerType, calls: int) -> float:
        return self.specs[(kind, dialer_type)].seconds(calls)


# (action, from) -> (transitional state entered, kind, state reached when it completes)
_Edge = tuple[CampaignState, TransitionKind, CampaignState]
_EDGES: dict[tuple[Action, CampaignState], _Edge] = {
    (Action.START, S.STOPPED): (S.STARTING, "start", S.RUNNING),
    (Action.RESUME, S.PAUSED): (S.STARTING, "resume", S.RUNNING),
    (Action.PAUSE, S.RUNNING): (S.PAUSING, "pause", S.PAUSED),
    (Action.STOP, S.RUNNING): (S.STOPPING, "stop", S.STOPPED),
    (Action.STOP, S.PAUSED): (S.STOPPING, "stop", S.STOPPED),
}
_KIND_OF_STATE: dict[CampaignState, tuple[TransitionKind, CampaignState]] = {
    S.STARTING: ("start", S.RUNNING), S.PAUSING: ("pause", S.PAUSED), S.STOPPING: ("stop", S.STOPPED),
}
_HELD_BY_LISTS = frozenset({S.STARTING, S.STOPPING})

# The genesys campaignStatus of each state (profiles.GENESYS_STATUS_OF_STATE; repeated here so the
# engine does not depend on the payload module).
_VISIBLE: dict[CampaignState, str] = {
    S.STOPPED: "off", S.STARTING: "on", S.RUNNING: "on", S.STOPPING: "stopping",
    S.PAUSING: "stopping", S.PAUSED: "off", S.FAILED: "invalid",
}
# visible status, action -> whether allowed (the transitional state entered follows the real one)
_VISIBLE_EDGES: dict[tuple[str, Action], Action] = {
    ("off", Action.START): Action.START, ("off", Action.RESUME): Action.START,
    ("on", Action.STOP): Action.STOP, ("on", Action.PAUSE): Action.PAUSE,
}


@dataclass(slots=True)
class Transition:
    """A transition in progress. `timer` None while held by a contact list or stalled indefinitely."""

    campaign_id: str
    kind: TransitionKind
    target: CampaignState
    started_at: float
    due: float | None
    outcome: TransitionOverride
    timer: Timer | None = None
    held: bool = False


CampaignListener = Callable[[SimCampaign], None]
ListListener = Callable[[SimContactList], None]
InFlightListener = Callable[[SimCampaign, int], None]


def _ignore(*_: object) -> None:
    return None


class Engine:
    """The tenant's campaigns in motion. Listeners hear every change (to notify and to record)."""

    def __init__(
        self,
        tenant: Tenant,
        scheduler: Scheduler,
        *,
        timing: Timing | None = None,
        faults: FaultInjector | None = None,
        on_campaign: CampaignListener = _ignore,
        on_contact_list: ListListener = _ignore,
        on_in_flight: InFlightListener = _ignore,
        visible: bool = False,
        progress: bool = False,
    ) -> None:
        self.tenant = tenant
        self.visible = visible
        self.scheduler = scheduler
        self.timing = timing or Timing()
        self.faults = faults or FaultInjector()
        self.on_campaign = on_campaign
        self.on_contact_list = on_contact_list
        self.on_in_flight = on_in_flight
        self.transitions: dict[str, Transition] = {}
        self.active_campaign_cap: int | None = None  # the organisation's cap on active campaigns (lines.py)
        self._list_timers: dict[str, Timer] = {}
        # genesys only: progress through the contact list, `complete` at its end (progress.py).
        self.progress = (ProgressBook(scheduler, self.timing.records_per_second, self._exhaust)
                         if progress else None)
        for campaign in tenant.campaigns.values():
            if campaign.state is S.RUNNING and self.progress is not None:
                self.progress.dialing(campaign, self.list_size(campaign))
            if campaign.state in _KIND_OF_STATE:
                kind, target = _KIND_OF_STATE[campaign.state]
                self._schedule(campaign, kind, target, self.faults.take_override(campaign.id))

    # --- queries -----------------------------------------------------------------------------------

    def campaign(self, campaign_id: str) -> SimCampaign:
        try:
            return self.tenant.campaigns[campaign_id]
        except KeyError:
            raise UnknownCampaign(f"campaign {campaign_id} not found") from None

    def contact_list(self, list_id: str) -> SimContactList:
        try:
            return self.tenant.contact_lists[list_id]
        except KeyError:
            raise UnknownContactList(f"contact list {list_id} not found") from None

    def in_flight_on(self, dialer_id: str) -> int:
        return sum(1 for c in self.tenant.campaigns.values()
                   if c.dialer_id == dialer_id and c.state in TRANSITIONAL_STATES)

    def visible_status(self, campaign: SimCampaign) -> str:
        """What a genesys client sees of the campaign's state (a forced raw status included)."""
        return campaign.status_override or _VISIBLE[campaign.state]

    def _busy_on(self, dialer_id: str) -> int:
        """Campaigns counted against the dialer limit: on a visible profile, only visibly changing ones."""
        if not self.visible:
            return self.in_flight_on(dialer_id)
        return sum(1 for c in self.tenant.campaigns.values()
                   if c.dialer_id == dialer_id and self.visible_status(c) == "stopping")

    def _edge(self, campaign: SimCampaign, action: Action) -> _Edge | None:
        if not self.visible:
            return _EDGES.get((action, campaign.state))
        wanted = _VISIBLE_EDGES.get((self.visible_status(campaign), action))
        if wanted is None:
            return None
        if wanted is Action.START:
            resume = campaign.state is S.PAUSED
            return _EDGES[(Action.RESUME, S.PAUSED)] if resume else _EDGES[(Action.START, S.STOPPED)]
        return _EDGES[(wanted, S.RUNNING)]

    def dialer_calls(self, dialer_id: str) -> int:
        return sum(c.current_calls for c in self.tenant.campaigns.values() if c.dialer_id == dialer_id)

    # --- requests from the API ---------------------------------------------------------------------

    def check(self, campaign_id: str, action: Action) -> SimCampaign:
        """Raise the error `request` would raise, without changing anything."""
        campaign = self.campaign(campaign_id)
        if self._edge(campaign, action) is None:
            raise InvalidTransition(campaign_id, campaign.state, action.value)
        self._check_cap(action)
        limit = self.faults.config.dialer_transition_limit
        in_flight = self._busy_on(campaign.dialer_id)
        if limit and in_flight >= limit:
            status = 500 if self.faults.roll(self.faults.config.overload_500_probability) else 409
            raise DialerOverloaded(campaign.dialer_id, in_flight, status)
        return campaign

    def request(self, campaign_id: str, action: Action) -> Transition:
        """Accept a transition (the API answers 202) or raise why not."""
        campaign = self.check(campaign_id, action)
        edge = self._edge(campaign, action)
        assert edge is not None
        via, kind, target = edge
        cut_short = self.transitions.pop(campaign_id, None)  # a start still behind `on` (visible only)
        if cut_short is not None and cut_short.timer is not None:
            cut_short.timer.cancel()
        override = self.faults.take_override(campaign_id) or self.faults.random_outcome()
        if kind in ("start", "stop"):
            self._maybe_lock_list(campaign)
        campaign.errors = []
        transition = self._schedule(campaign, kind, target, override)
        self._set_state(campaign, via)
        return transition

    def list_size(self, campaign: SimCampaign) -> int:
        contact_list = self.tenant.contact_lists.get(campaign.contact_list_id)
        return contact_list.size if contact_list is not None else 0

    def recycle(self, campaign_id: str) -> SimCampaign:
        """genesys DELETE .../progress: back to record one (raises `RecycleTooSoon` within 5 s)."""
        campaign = self.campaign(campaign_id)
        if self.progress is None:
            raise EngineError("this profile keeps no campaign progress")
        self.progress.recycle(campaign, self.list_size(campaign))
        return campaign

    def force_off(self, campaign_id: str) -> SimCampaign:
        """The platform forces a campaign off at once (`forced_off`), whatever it was doing."""
        campaign = self.campaign(campaign_id)
        current = self.transitions.pop(campaign_id, None)
        if current is not None and current.timer is not None:
            current.timer.cancel()
        campaign.halt = "forced_off"
        self._set_state(campaign, S.STOPPED, edit=True)  # off -> forced_off is a visible change
        return campaign

    def _exhaust(self, campaign_id: str) -> None:
        campaign = self.tenant.campaigns.get(campaign_id)
        if campaign is not None and campaign.state is S.RUNNING:
            campaign.halt = "complete"
            self._set_state(campaign, S.STOPPED)

    def _check_cap(self, action: Action) -> None:
        if self.active_campaign_cap is None or action not in (Action.START, Action.RESUME):
            return
        active = len(active_campaigns(self.tenant))
        if active >= self.active_campaign_cap:
            raise ActiveCampaignCapReached(active, self.active_campaign_cap)

    # --- admin -------------------------------------------------------------------------------------

    def override(self, campaign_id: str, override: TransitionOverride) -> bool:
        """Apply to the transition in flight (restarting its clock) and return True, else arm the next one."""
        campaign = self.campaign(campaign_id)
        current = self.transitions.get(campaign_id)
        if current is None:
            self.faults.overrides[campaign_id] = override
            return False
        if current.timer is not None:
            current.timer.cancel()
        self._schedule(campaign, current.kind, current.target, override)
        return True

    def release(self, campaign_id: str) -> bool:
        """Finish a stalled (or held) transition now, as if its timer had fired. False if none is in flight."""
        campaign = self.campaign(campaign_id)
        current = self.transitions.get(campaign_id)
        if current is None:
            return False
        if current.timer is not None:
            current.timer.cancel()
        current.outcome = TransitionOverride("normal") if current.outcome.outcome == "stall" else current.outcome
        current.held = False
        self._finish(campaign.id)
        return True

    def force_state(
        self,
        campaign_id: str,
        state: CampaignState | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        active_calls: int | None = None,
        status_override: str | None = None,
    ) -> SimCampaign:
        """Set a campaign's state by hand (a manual reset out of FAILED, a test's starting point).

        A transitional state starts a normal transition towards its usual end. Always notifies.
        """
        campaign = self.campaign(campaign_id)
        if active_calls is not None:
            campaign.active_calls = active_calls
        if errors is not None:
            campaign.errors = [dict(e) for e in errors]
        if state is not None:
            current = self.transitions.pop(campaign_id, None)
            if current is not None and current.timer is not None:
                current.timer.cancel()
            if state in _KIND_OF_STATE:
                kind, target = _KIND_OF_STATE[state]
                self._schedule(campaign, kind, target, self.faults.take_override(campaign_id))
            # An edit by hand is a change someone made to the campaign: a new version even if the
            # status shown stays the same (a test's "someone else edited it").
            self._set_state(campaign, state, notify=status_override is None, edit=True)
        if status_override is not None:
            campaign.status_override = status_override
            campaign.version += 1
            self.on_campaign(campaign)
        elif state is None:
            campaign.version += 1
            self.on_campaign(campaign)
        return campaign

    def set_contact_list(
        self,
        list_id: str,
        *,
        state: ListState | None = None,
        import_status: ListImportStatus | None = None,
        release_after: float | None = None,
    ) -> SimContactList:
        """Change a contact list (notifies); `release_after` schedules its return to ACTIVE/COMPLETED."""
        contact_list = self.contact_list(list_id)
        if state is not None:
            contact_list.state = state
        if import_status is not None:
            contact_list.import_status = import_status
        contact_list.version += 1
        old = self._list_timers.pop(list_id, None)
        if old is not None:
            old.cancel()
        if release_after is not None:
            self._list_timers[list_id] = self.scheduler.call_later(
                release_after, lambda: self._release_list(list_id), name=f"release-list-{list_id}")
        self.on_contact_list(contact_list)
        if not contact_list.blocking:
            for transition in list(self.transitions.values()):
                campaign = self.tenant.campaigns[transition.campaign_id]
                if transition.held and campaign.contact_list_id == list_id:
                    transition.held = False
                    transition.due = self.scheduler.clock.monotonic() + self.timing.release_delay
                    transition.timer = self.scheduler.call_later(
                        self.timing.release_delay, functools.partial(self._finish, campaign.id),
                        name=f"finish-{campaign.id}")
        return contact_list

    def _release_list(self, list_id: str) -> None:
        self._list_timers.pop(list_id, None)
        self.set_contact_list(list_id, state="ACTIVE", import_status="COMPLETED")

    # --- internals ---------------------------------------------------------------------------------

    def _maybe_lock_list(self, campaign: SimCampaign) -> None:
        contact_list = self.tenant.contact_lists.get(campaign.contact_list_id)
        if contact_list is None or contact_list.blocking:
            return
        if self.faults.roll(self.faults.config.list_lock_probability):
            if self.faults.choice(("LOCKED", "IMPORTING")) == "LOCKED":
                self.set_contact_list(contact_list.id, state="LOCKED",
                                      release_after=self.faults.config.list_lock_seconds)
            else:
                self.set_contact_list(contact_list.id, state="IMPORTING", import_status="IN_PROGRESS",
                                      release_after=self.faults.config.list_lock_seconds)

    def _schedule(
        self, campaign: SimCampaign, kind: TransitionKind, target: CampaignState,
        override: TransitionOverride | None,
    ) -> Transition:
        outcome = override or TransitionOverride()
        now = self.scheduler.clock.monotonic()
        if outcome.duration is not None:
            duration: float | None = outcome.duration
        elif outcome.outcome == "stall":
            duration = None
        else:
            duration = self.timing.duration(kind, campaign.dialer_type, campaign.active_calls)
        transition = Transition(campaign.id, kind, target, now, None if duration is None else now + duration,
                                outcome)
        if duration is not None:
            transition.timer = self.scheduler.call_later(
                duration, lambda: self._finish(campaign.id), name=f"finish-{campaign.id}")
        self.transitions[campaign.id] = transition
        return transition

    def _finish(self, campaign_id: str) -> None:
        transition = self.transitions.get(campaign_id)
        campaign = self.tenant.campaigns.get(campaign_id)
        if transition is None or campaign is None:
            return
        transition.timer = None
        contact_list = self.tenant.contact_lists.get(campaign.contact_list_id)
        if campaign.state in _HELD_BY_LISTS and contact_list is not None and contact_list.blocking:
            transition.held = True  # the platform says nothing: errors stay empty (guide, edge case 1)
            transition.due = None
            return
        del self.transitions[campaign_id]
        if transition.outcome.outcome == "fail":
            campaign.errors = [dict(e) for e in transition.outcome.errors] or [
                {"code": "campaign.transition.failed", "message": f"The {transition.kind} did not complete."}]
            self._set_state(campaign, S.FAILED)
            return
        if (transition.kind in ("start", "resume") and contact_list is not None
                and contact_list.import_status == "FAILED"):
            campaign.errors = [{"code": "contact.list.import.failed",
                                "message": f"Contact list {contact_list.id} import failed."}]
            self._set_state(campaign, S.FAILED)
            return
        self._set_state(campaign, transition.target)

    def _set_state(self, campaign: SimCampaign, state: CampaignState, *, notify: bool = True,
                   edit: bool = False) -> None:
        was_in_flight = campaign.state in TRANSITIONAL_STATES
        shown = self.visible_status(campaign)
        if self.progress is not None and state is not campaign.state:
            if state is S.RUNNING:
                self.progress.dialing(campaign, self.list_size(campaign))
            elif campaign.state is S.RUNNING:
                self.progress.halted(campaign.id, self.list_size(campaign))
        if state is not S.STOPPED:
            campaign.halt = None
        campaign.state = state
        campaign.status_override = None
        seen = edit or not self.visible or self.visible_status(campaign) != shown
        if seen:
            campaign.version += 1
        if was_in_flight or state in TRANSITIONAL_STATES:
            self.on_in_flight(campaign, self.in_flight_on(campaign.dialer_id))
        if notify:
            self.on_campaign(campaign)  # the listener publishes only what a client can see (a new version)
