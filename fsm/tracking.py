"""Tracking: observations, and the transitions in flight they settle (guide sections 1, 3 and 4).

Observations are facts: a state reported by a notification or a read is always adopted, even when
it skips states, and the event names the anomaly; an unmappable status is recorded, never guessed
at. A transition in flight is followed by notifications first, polls with backoff and jitter while
they are down (a sparse safety poll while they are up), and at its tolerance deadline the platform's
errors and the contact list decide: a lock delays, anything else fails. A transitional state ends
only by observation or that verdict, never by a 202 or a timer alone.
"""

from __future__ import annotations

import logging

from schemas.commands import CommandResult
from schemas.types import Action, CampaignState, Cause, Outcome, Priority, ReasonCode

from .core import Core
from .held import SlotLease, Stage
from .intent import interpret
from .machine import StateChange
from .ports import CampaignSnapshot, ContactListSnapshot
from .preflight import judge_expiry
from .record import CampaignRecord, Tracking
from .table import NO_OPS

__all__ = ["Tracker"]

# The state each action aims for (reaching it completes the command) is the one in which asking
# for that action is a no-op: the table's NO_OPS pairs. A reset is never tracked: it adopts what the
# platform reports at once.
_TARGET: dict[Action, CampaignState] = {action: state for action, state in NO_OPS if action is not Action.RESET}

_log = logging.getLogger("fsm.orchestrator")


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
        held = record.held
        if (held is not None and held.stage is Stage.SENT
                and interpret(campaign.intent, snapshot.state, intent_decides=snapshot.intent_decides)
                is not campaign.current):
            # The POST whose outcome was unknown was executed: follow it from here, never send it again.
            await self._fire(record, held, None)
        errors = [dict(e) for e in snapshot.errors] if snapshot.state is CampaignState.FAILED else None
        change = self.machine.observe(campaign, snapshot.state, cause=cause, at=self.clock.now(),
                                      platform_status=snapshot.platform_status, errors=errors or None,
                                      intent_decides=snapshot.intent_decides, halt=snapshot.halt)
        if change is None:
            return None
        if not campaign.in_flight and record.tracking is not None:
            await self._emit(record, change, self._settle(record, record.tracking, change))
            return change
        await self._emit(record, change)
        if campaign.in_flight and record.tracking is None:
            self._track(record, change.command_id, change.action, self.clock.now())
        return change

    async def _apply_latest(self, record: CampaignRecord) -> None:
        latest, record.latest = record.latest, None
        if latest is None or record.campaign is None:
            return
        change = await self._observe(record, latest, Cause.NOTIFICATION)
        if change is not None and change.anomaly is not None:
            # A notification that skips states or contradicts the table is confirmed by a read
            # before the model rests on it: a dropped, reordered or forged message must not stick
            # on a campaign nothing else would read again. One read per `fresh_for` at most per
            # campaign, however many such notifications come: the read budget is the tenant's.
            earliest = (record.confirmed_at or float("-inf")) + self.config.fresh_for
            record.confirm_at = max(self.clock.now(), earliest)

    async def _confirm(self, record: CampaignRecord) -> None:
        if record.confirm_at is None or self.clock.now() < record.confirm_at or record.campaign is None:
            return
        record.confirm_at, record.confirmed_at = None, self.clock.now()
        await self._observe(record, await self.platform.get_campaign(record.id), Cause.RECONCILE)

    def _settle(self, record: CampaignRecord, tracking: Tracking, change: StateChange) -> tuple[CommandResult, ...]:
        """A transition reached a terminal state: free its dialer slot; the command's result, if any,
        goes out with the event that settles it (never one without the other)."""
        record.tracking = None
        record.give_back_slot()
        if tracking.command_id is None:
            return ()
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
        return (self._result_for(tracking.command_id, record.id, outcome, reason, message, reached),)

    def _track(self, record: CampaignRecord, command_id: str | None, action: Action | None, now: float) -> None:
        backoff = self._schedule.backoff(self.clock.monotonic())
        delay = self._safety_delay() if self._pushed(record.id) else (backoff.next_delay() or 0.0)
        record.tracking = Tracking(command_id, action, backoff, now + delay)
        if record.lease is None:
            # A transition we did not start here (restart, takeover, someone else's command) still
            # occupies its dialer: claim a slot for it, ahead of anything queued.
            assert record.campaign is not None
            record.lease = SlotLease(self._gate, record.campaign.dialer_id or record.id, record.id, Priority.HIGH)

    async def _follow(self, record: CampaignRecord) -> None:
        tracking, campaign = record.tracking, record.campaign
        if tracking is None or campaign is None:
            return
        now = self.clock.now()
        deadline_due = campaign.deadline is not None and now >= campaign.deadline
        if now < tracking.next_poll and not deadline_due:
            return
        await self._observe(record, await self.platform.get_campaign(record.id), Cause.POLL)
        if record.tracking is not tracking:
            return  # it settled
        delay = self._safety_delay() if self._pushed(record.id) else tracking.backoff.next_delay()
        if delay is None:  # the guide's 60 tries are spent: judge it now rather than poll forever
            deadline_due = True
            tracking.backoff = self._schedule.backoff(self.clock.monotonic())
            delay = tracking.backoff.next_delay() or self.config.poll.cap
        tracking.next_poll = self.clock.now() + delay
        if deadline_due:
            await self._judge(record, tracking)

    async def _judge(self, record: CampaignRecord, tracking: Tracking) -> None:
        """The tolerance window ran out: a lock or compliance block delays, anything else fails."""
        campaign = record.campaign
        assert campaign is not None
        errors = await self.platform.get_errors(record.id)
        contact_list: ContactListSnapshot | None = None
        if campaign.contact_list_id:
            contact_list = await self.platform.get_contact_list(campaign.contact_list_id)
        verdict = judge_expiry(errors, contact_list, self.config.preflight)
        now = self.clock.now()
        if verdict.delayed:
            await self._emit(record, self.machine.delay(campaign, at=now, detail=verdict.detail))
            return
        change = self.machine.expire(campaign, at=now, errors=verdict.errors)
        await self._emit(record, change, self._settle(record, tracking, change))

    def _pushed(self, campaign_id: str) -> bool:
        """Its changes reach us as notifications: the channels are up and its topic is live."""
        return self._notifications_up and (self.notifications is None or self.notifications.live(campaign_id))

    def _safety_delay(self) -> float:
        # Jittered like every other interval: safety polls of a batch must not line up either.
        return self.config.poll.jittered(self.config.safety_poll, self._rng)

    async def on_notifications_state(self, up: bool) -> None:
        """The channel went down (every tracked campaign polls on backoff) or came back up."""
        if up == self._notifications_up:
            return
        self._notifications_up = up
        now = self.clock.now()
        for record in self._records.values():
            tracking = record.tracking
            if tracking is None:
                continue
            if up and self._pushed(record.id):
                tracking.next_poll = now + self._safety_delay()
            elif up:
                continue  # not pushed either way (rejected or unplaced): keeps its backoff
            else:
                tracking.backoff = self._schedule.backoff(self.clock.monotonic())
                tracking.next_poll = now + (tracking.backoff.next_delay() or 0.0)
            self._queue.hint(record.id)


def _error_text(error: dict[str, str]) -> str:
    return error.get("code") or error.get("error") or error.get("message") or "error"
