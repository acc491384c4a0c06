"""Synthetic, realistic `campaign.events` histories for the audit tests and the replay bench.

A history is what the orchestrator would have published: every event comes out of the real
`CampaignMachine` (commands, observations with their anomalies, tolerance expiries and delays,
resets) and is chained exactly like `Orchestrator._emit` does it (`chain`), so the audit can be
checked against logs it has never seen, and `--rebuild-state` against the machine's own
`Campaign.snapshot()` records.

Times are multiples of 1/8 s: `rfc3339` keeps milliseconds, and a binary fraction survives the
round trip through `observedAt` exactly, so a rebuilt `enteredAt` can be compared with `==`.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

from schemas.events import rfc3339
from schemas.types import Action, CampaignState, Cause, DialerType

from .machine import Campaign, CampaignMachine, StateChange

__all__ = ["HistoryGenerator"]

S = CampaignState
_DIALERS = (DialerType.PREDICTIVE, DialerType.PROGRESSIVE, DialerType.POWER)
_PLATFORM_STATUS = {
    S.STOPPED: "off", S.STARTING: "starting", S.RUNNING: "on", S.PAUSING: "stopping",
    S.PAUSED: "paused", S.STOPPING: "stopping", S.FAILED: "invalid",
}


class HistoryGenerator:
    """Campaigns living through starts, pauses, stops, failures and resets, interleaved in time.

    `events(n)` yields `n` events spread evenly over the campaigns (each campaign's own events in
    sequence order, campaigns interleaved at random, time only moving forward). `campaigns` maps id
    to the live `Campaign`, whose `snapshot()` is the record the orchestrator would have stored.
    Deterministic for a given seed.
    """

    def __init__(self, campaigns: int, *, seed: int = 1, start: float = 1_700_000_000.0,
                 machine: CampaignMachine | None = None) -> None:
        if campaigns < 1:
            raise ValueError("campaigns must be at least 1")
        self.machine = machine or CampaignMachine()
        self._rng = random.Random(seed)
        self._now = float(start)
        self.ids = [f"camp-{i:06d}" for i in range(campaigns)]
        self.campaigns: dict[str, Campaign] = {}

    def events(self, count: int) -> Iterator[dict[str, Any]]:
        rng = self._rng
        ids = self.ids
        order: list[str] = []
        per, extra = divmod(count, len(ids))
        for index, campaign_id in enumerate(ids):
            order.extend([campaign_id] * (per + (1 if index < extra else 0)))
        rng.shuffle(order)
        for campaign_id in order:
            self._now += rng.randrange(0, 9) / 8
            yield self._next(campaign_id)

    def _next(self, campaign_id: str) -> dict[str, Any]:
        campaign = self.campaigns.get(campaign_id)
        if campaign is None:
            dialer = _DIALERS[len(self.campaigns) % len(_DIALERS)]
            campaign, change = self.machine.adopt(
                campaign_id, S.STOPPED, dialer, at=self._now, dialer_id=f"dialer-{len(self.campaigns) % 7}",
                contact_list_id=None, platform_status=_PLATFORM_STATUS[S.STOPPED],
            )
            self.campaigns[campaign_id] = campaign
            return campaign.chain(change)
        return campaign.chain(self._move(campaign))

    def _move(self, campaign: Campaign) -> StateChange:
        roll = self._rng.random()
        state = campaign.current
        if state is S.STOPPED:
            return self._command(campaign, Action.START)
        if state is S.RUNNING:
            if roll < 0.05:  # the platform paused it without a PAUSING we saw: SKIPPED_STATES
                return self._observe(campaign, S.PAUSED, Cause.POLL)
            return self._command(campaign, Action.PAUSE if roll < 0.55 else Action.STOP)
        if state is S.PAUSED:
            return self._command(campaign, Action.RESUME if roll < 0.5 else Action.STOP)
        if state is S.FAILED:
            return self._command(campaign, Action.RESET)
        # A transition in flight: mostly it lands, sometimes it is late, fails or times out.
        if roll < 0.04:
            return self.machine.delay(campaign, at=self._now, detail="contact list locked by a running import")
        if roll < 0.07:
            return self.machine.expire(campaign, at=self._now,
                                       errors=[{"code": "dialer.unreachable", "message": "no answer from the dialer"}])
        if roll < 0.10:
            errors = [{"code": "contact.list.invalid", "message": "contact list has no callable contacts"}]
            return self._observe(campaign, S.FAILED, Cause.NOTIFICATION, errors)
        target = {S.STARTING: S.RUNNING, S.PAUSING: S.PAUSED, S.STOPPING: S.STOPPED}[state]
        return self._observe(campaign, target, Cause.NOTIFICATION if roll < 0.8 else Cause.POLL)

    def _observe(self, campaign: Campaign, state: CampaignState, cause: Cause,
                 errors: list[dict[str, str]] | None = None) -> StateChange:
        change = self.machine.observe(campaign, state, cause=cause, at=self._now,
                                      platform_status=_PLATFORM_STATUS[state], errors=errors)
        assert change is not None, f"{campaign.id} is already {state}"
        return change

    def _command(self, campaign: Campaign, action: Action) -> StateChange:
        command_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        request = None
        if action is not Action.RESET:
            stamp = rfc3339(self._now)
            request = {"method": "POST", "path": f"/api/v2/outbound/campaigns/{campaign.id}/{action.value}",
                       "status": 202, "sentAt": stamp, "answeredAt": stamp}
        # A reset adopts what the platform reports once the failure is fixed: here, the last stable state.
        reported = campaign.last_stable if action is Action.RESET else None
        decision = self.machine.command(campaign, action, at=self._now, command_id=command_id, request=request,
                                        reported=reported)
        if decision.change is None:
            raise AssertionError(f"{campaign.id}: {action} refused in {campaign.state}: {decision.reason}")
        return decision.change
