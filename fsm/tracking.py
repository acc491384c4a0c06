"""Tracking: observations, and the transitions in flight they settle (guide sections 1, 3 and 4).

Observations are facts: a state reported by a notification or a read is always adopted, even when
it skips states, and the event names the anomaly; an unmappable status is recorded, never guessed
at. A transition in flight is followed by notifications first, polls with backoff and jitter while
they are down (a sparse safety poll while they are up), and at its tolerance deadline the platform's
errors and the contact list decide: a lock delays, anything else fails. A transitional state ends
only by observation or that verdict, never by a 202 or a timer alone.

Decisions, then effects: what an observation, a poll coming due, the tolerance verdict or the
notification channel going up or down calls for is decided by the functions below, on the record
(and the change the machine made of an observation), changing nothing: `fired`, `observed`,
`settled`, `confirmation`, `confirm_due`, `follow`, `after_poll`, `first_poll`, `retuned`. They return
values (`Fire`, `Emit`, `Settle`, `Track`, `Poll`, `PollIn`, `Judge`, `Wake`, `ConfirmAt`);
`Tracker._act` does them in order. The machine's own move of the model (`observe`, `expire`,
`delay`) stays where the platform's answer is; the verdict itself is `preflight.judge_expiry`. A
choice that comes after an await (a read, an emit) is taken after it, on the record as it is then.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from schemas.types import Action, CampaignState, Cause, Outcome, Priority, ReasonCode

from .core import Core
from .held import HeldCommand, SlotLease, Stage
from .intent import interpret
from .machine import StateChange
from .ports import CampaignSnapshot, ContactListSnapshot
from .preflight import judge_expiry
from .record import CampaignRecord, Tracking
from .table import NO_OPS

__all__ = [
    "ConfirmAt", "Effect", "Emit", "Finished", "Fire", "Interval", "Judge", "Poll", "PollIn", "Settle", "Track",
    "Tracker", "Wake", "after_poll", "confirm_due", "confirmation", "fired", "first_poll", "follow", "observed",
    "retuned", "settled",
]

# The state each action aims for (reaching it completes the command) is the one in which asking
# for that action is a no-op: the table's NO_OPS pairs. A reset is never tracked: it adopts what the
# platform reports at once.
_TARGET: dict[Action, CampaignState] = {action: state for action, state in NO_OPS if action is not Action.RESET}

_log = logging.getLogger("fsm.orchestrator")


class Interval(Enum):
    """How long a tracked campaign waits for its next poll."""

    SAFETY = "safety"  # notifications carry it: a sparse, jittered safety poll
    BACKOFF = "backoff"  # the next step of its backoff
    FRESH = "fresh"  # the first step of a new backoff


@dataclass(frozen=True, slots=True)
class Finished:
    """The tracked command's result, carried by the event that settles it (stamped when it goes out)."""

    command_id: str
    outcome: Outcome
    reason: ReasonCode | None
    message: str
    state: CampaignState


@dataclass(frozen=True, slots=True)
class Emit:
    """The change goes out as the campaign's next event, with the command result it decides, if any."""

    change: StateChange
    finished: Finished | None = None


@dataclass(frozen=True, slots=True)
class Settle:
    """The transition in flight ended: it is no longer followed, and its dialer slot is given back."""

    tracking: Tracking


@dataclass(frozen=True, slots=True)
class Track:
    """A transition in flight that nothing follows yet: follow it (a dialer slot claimed if it holds none)."""

    command_id: str | None
    action: Action | None


@dataclass(frozen=True, slots=True)
class Fire:
    """The held command whose POST had an unknown outcome was executed: it moves the model and is
    followed from here, never sent again."""

    held: HeldCommand


@dataclass(frozen=True, slots=True)
class Poll:
    """Read the campaign now; `deadline_due`: its tolerance window ran out (judged after the read)."""

    deadline_due: bool


@dataclass(frozen=True, slots=True)
class PollIn:
    """The followed transition's next poll, `interval` from now."""

    interval: Interval


@dataclass(frozen=True, slots=True)
class Judge:
    """The tolerance verdict now: on the platform's errors, and the contact list if the campaign has one."""

    contact_list_id: str | None


@dataclass(frozen=True, slots=True)
class Wake:
    """The campaign needs a look (its next poll moved)."""


@dataclass(frozen=True, slots=True)
class ConfirmAt:
    """Read the campaign at `at` to confirm what a notification said."""

    at: float


Effect = Emit | Settle | Track | Fire | PollIn | Judge | Wake


# --- decisions: they look, and change nothing ---------------------------------------------------


def fired(record: CampaignRecord, snapshot: CampaignSnapshot) -> Fire | None:
    """A held command sent with an unknown outcome, shown executed by what the platform reports."""
    held, campaign = record.held, record.campaign
    assert campaign is not None and snapshot.state is not None
    if (held is not None and held.stage is Stage.SENT
            and interpret(campaign.intent, snapshot.state, intent_decides=snapshot.intent_decides)
            is not campaign.current):
        return Fire(held)
    return None


def observed(record: CampaignRecord, change: StateChange | None) -> tuple[Effect, ...]:
    """What the machine's move on an observation calls for: settle the transition it ends, follow
    one it starts (or one we did not start), and in every case its event."""
    campaign = record.campaign
    assert campaign is not None
    if change is None:
        return ()
    tracking = record.tracking
    if not campaign.in_flight and tracking is not None:
        return settled(record, tracking, change)
    if campaign.in_flight and tracking is None:
        return Emit(change), Track(change.command_id, change.action)
    return (Emit(change),)


def settled(record: CampaignRecord, tracking: Tracking, change: StateChange) -> tuple[Settle, Emit]:
    """A transition reached a terminal state: the command's result, if any, goes out with the event
    that settles it (never one without the other). Its target reached: COMPLETED; else FAILED."""
    if tracking.command_id is None:
        return Settle(tracking), Emit(change)
    reached = change.to_state
    target = _TARGET.get(tracking.action) if tracking.action else None
    if reached is target:
        outcome, reason, message = Outcome.COMPLETED, None, f"{record.id} is {reached}"
    else:
        outcome = Outcome.FAILED
        reason = change.reason or ReasonCode.TRANSITION_FAILED
        message = f"transition ended in {reached}, not {target}"
        if change.errors:
            message += ": " + "; ".join(_error_text(e) for e in change.errors)
    return Settle(tracking), Emit(change, Finished(tracking.command_id, outcome, reason, message, reached))


def confirmation(record: CampaignRecord, change: StateChange | None, now: float, fresh_for: float) -> ConfirmAt | None:
    """A notification that skips states or contradicts the table is confirmed by a read before the
    model rests on it: a dropped, reordered or forged message must not stick on a campaign nothing
    else would read again. One read per `fresh_for` at most per campaign, however many such
    notifications come: the read budget is the tenant's."""
    if change is None or change.anomaly is None:
        return None
    earliest = (record.confirmed_at or float("-inf")) + fresh_for
    return ConfirmAt(max(now, earliest))


def confirm_due(record: CampaignRecord, now: float) -> bool:
    """Whether the confirmation read an anomalous notification asked for is due now."""
    return record.confirm_at is not None and now >= record.confirm_at and record.campaign is not None


def follow(record: CampaignRecord, now: float) -> Poll | None:
    """A followed transition is read when its next poll comes, or its tolerance deadline."""
    tracking, campaign = record.tracking, record.campaign
    if tracking is None or campaign is None:
        return None
    deadline_due = campaign.deadline is not None and now >= campaign.deadline
    if now < tracking.next_poll and not deadline_due:
        return None
    return Poll(deadline_due)


def after_poll(record: CampaignRecord, tracking: Tracking, *, deadline_due: bool,
               pushed: bool) -> tuple[PollIn] | tuple[PollIn, Judge]:
    """After a poll that did not settle it: when to poll next, and whether to judge it now."""
    assert record.campaign is not None
    judge = Judge(record.campaign.contact_list_id or None)
    if pushed:
        interval = Interval.SAFETY
    elif tracking.backoff.exhausted:  # the guide's 60 tries are spent: judge it now rather than poll forever
        return PollIn(Interval.FRESH), judge
    else:
        interval = Interval.BACKOFF
    return (PollIn(interval), judge) if deadline_due else (PollIn(interval),)


def first_poll(pushed: bool) -> Interval:
    """A transition followed from now: a safety poll if notifications carry it, else a new backoff's first step."""
    return Interval.SAFETY if pushed else Interval.BACKOFF


def retuned(up: bool, pushed: bool) -> tuple[PollIn, Wake] | tuple[()]:
    """The channel went down (a followed campaign polls on a fresh backoff, from now) or came back up
    (one it carries waits for a safety poll; one it does not, rejected or unplaced, keeps its backoff)."""
    if not up:
        return PollIn(Interval.FRESH), Wake()
    if pushed:
        return PollIn(Interval.SAFETY), Wake()
    return ()


# --- effects --------------------------------------------------------------------------------------


class Tracker(Core):
    async def _discover(self, snapshot: CampaignSnapshot, cause: Cause) -> CampaignRecord:
        state = snapshot.state or CampaignState.STOPPED
        campaign, change = self.machine.adopt(
            snapshot.id, state, snapshot.dialer_type, at=self.clock.now(), cause=cause,
            dialer_id=snapshot.dialer_id, contact_list_id=snapshot.contact_list_id,
            platform_status=snapshot.platform_status, halt=snapshot.halt,
        )
        record = self._record(campaign.id)
        record.campaign = campaign
        await self._emit(record, change)
        if campaign.in_flight:
            self._track(record, None, None, self.clock.now())
        return record

    async def _observe(self, record: CampaignRecord, snapshot: CampaignSnapshot,
                       cause: Cause) -> StateChange | None:
        """Adopt what the platform says.

        Which dialer and contact list a campaign uses is taken from the platform's own record (a
        read), never from a notification body: the policy's dialer grants and the dialer queue rest
        on it.
        """
        campaign = record.campaign
        assert campaign is not None
        record.observed_at = self.clock.monotonic()
        if cause is not Cause.NOTIFICATION:
            campaign.dialer_id = snapshot.dialer_id or campaign.dialer_id
            campaign.contact_list_id = snapshot.contact_list_id or campaign.contact_list_id
        if snapshot.state is None:
            campaign.platform_status = snapshot.platform_status
            _log.warning("campaign %s: unknown platform status %r recorded, state kept",
                         campaign.id, snapshot.platform_status)
            return None
        fire = fired(record, snapshot)
        if fire is not None:
            await self._act(record, (fire,))
        errors = [dict(e) for e in snapshot.errors] if snapshot.state is CampaignState.FAILED else None
        change = self.machine.observe(campaign, snapshot.state, cause=cause, at=self.clock.now(),
                                      platform_status=snapshot.platform_status, errors=errors or None,
                                      intent_decides=snapshot.intent_decides, halt=snapshot.halt)
        if change is not None:  # most polls see nothing new: nothing to decide
            await self._act(record, observed(record, change))
        return change

    async def _apply_latest(self, record: CampaignRecord) -> None:
        latest, record.latest = record.latest, None
        if latest is None or record.campaign is None:
            return
        change = await self._observe(record, latest, Cause.NOTIFICATION)
        confirm = confirmation(record, change, self.clock.now(), self.config.fresh_for)
        if confirm is not None:
            record.confirm_at = confirm.at

    async def _confirm(self, record: CampaignRecord) -> None:
        now = self.clock.now()
        if not confirm_due(record, now):
            return
        record.confirm_at, record.confirmed_at = None, now
        await self._observe(record, await self.platform.get_campaign(record.id), Cause.RECONCILE)

    def _track(self, record: CampaignRecord, command_id: str | None, action: Action | None, now: float) -> None:
        record.tracking = tracking = Tracking(command_id, action, self._schedule.backoff(self.clock.monotonic()), now)
        tracking.next_poll = now + self._poll_delay(tracking, first_poll(self._pushed(record.id)))
        if record.lease is None:
            # A transition we did not start here (restart, takeover, someone else's command) still
            # occupies its dialer: claim a slot for it, ahead of anything queued.
            assert record.campaign is not None
            record.lease = SlotLease(self._gate, record.campaign.dialer_id or record.id, record.id, Priority.HIGH)

    async def _follow(self, record: CampaignRecord) -> None:
        poll = follow(record, self.clock.now())
        if poll is None:
            return
        tracking = record.tracking
        assert tracking is not None
        await self._observe(record, await self.platform.get_campaign(record.id), Cause.POLL)
        if record.tracking is not tracking:
            return  # it settled
        await self._act(record, after_poll(record, tracking, deadline_due=poll.deadline_due,
                                             pushed=self._pushed(record.id)))

    async def _judge(self, record: CampaignRecord, tracking: Tracking, judge: Judge) -> None:
        """The tolerance window ran out: a lock or compliance block delays, anything else fails."""
        campaign = record.campaign
        assert campaign is not None
        errors = await self.platform.get_errors(record.id)
        contact_list: ContactListSnapshot | None = None
        if judge.contact_list_id is not None:
            contact_list = await self.platform.get_contact_list(judge.contact_list_id)
        verdict = judge_expiry(errors, contact_list, self.config.preflight)
        now = self.clock.now()
        if verdict.delayed:
            await self._act(record, (Emit(self.machine.delay(campaign, at=now, detail=verdict.detail)),))
            return
        await self._act(record, settled(record, tracking, self.machine.expire(campaign, at=now,
                                                                                errors=verdict.errors)))

    async def on_notifications_state(self, up: bool) -> None:
        """The channel went down (every tracked campaign polls on backoff) or came back up."""
        if up == self._notifications_up:
            return
        self._notifications_up = up
        now = self.clock.now()
        for record in self._records.values():
            if record.tracking is not None:
                await self._act(record, retuned(up, self._pushed(record.id)), now)

    async def _act(self, record: CampaignRecord, effects: Iterable[Effect], now: float | None = None) -> None:
        """Do what was decided, in order. `now`: when the next poll counts from (default: the clock)."""
        for effect in effects:
            if isinstance(effect, Emit):
                finished = effect.finished
                results = () if finished is None else (self._result_for(
                    finished.command_id, record.id, finished.outcome, finished.reason, finished.message,
                    finished.state),)
                await self._emit(record, effect.change, results)
            elif isinstance(effect, Settle):
                record.tracking = None
                record.give_back_slot()
            elif isinstance(effect, Track):
                self._track(record, effect.command_id, effect.action, self.clock.now())
            elif isinstance(effect, Fire):
                await self._fire(record, effect.held, None)
            elif isinstance(effect, PollIn):
                tracking = record.tracking
                assert tracking is not None
                delay = self._poll_delay(tracking, effect.interval)
                tracking.next_poll = (self.clock.now() if now is None else now) + delay
            elif isinstance(effect, Judge):
                assert record.tracking is not None
                await self._judge(record, record.tracking, effect)
            else:
                self._queue.hint(record.id)

    def _poll_delay(self, tracking: Tracking, interval: Interval) -> float:
        """Seconds until the next poll, drawn now (the jitter and the backoff's steps are spent here)."""
        if interval is Interval.SAFETY:
            # Jittered like every other interval: safety polls of a batch must not line up either.
            return self.config.poll.jittered(self.config.safety_poll, self._rng)
        if interval is Interval.FRESH:
            tracking.backoff = self._schedule.backoff(self.clock.monotonic())
        # Never None: a fresh backoff has its first step, and a spent one is renewed (`after_poll`).
        return tracking.backoff.next_delay() or 0.0

    def _pushed(self, campaign_id: str) -> bool:
        """Its changes reach us as notifications: the channels are up and its topic is live."""
        return self._notifications_up and (self.notifications is None or self.notifications.live(campaign_id))


def _error_text(error: dict[str, str]) -> str:
    return error.get("code") or error.get("error") or error.get("message") or "error"
