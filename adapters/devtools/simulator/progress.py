"""A genesys campaign's progress through its contact list, as one counter per campaign.

What Genesys Cloud shows (SDK `CampaignProgress`, `GET`/`DELETE /api/v2/outbound/campaigns/{id}/progress`;
help "Start or pause a campaign", "Recycle a campaign"):

* while `on`, a campaign dials its list in order, here `records_per_second` records per simulated second;
* turned `off` (a pause and a stop alike) it keeps its position: turned on again it continues at the
  next record;
* at the list's end it completes (`complete`); a completed campaign turned on starts at record one;
* a recycle (`DELETE .../progress`) moves the position back to record one without turning anything on;
  Genesys takes at most one recycle per campaign every five seconds (400 for a quicker one).

`forced_off` is the platform's own: `force_off` turns a campaign off at once, position kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .clock import Scheduler, Timer
from .tenant import SimCampaign

__all__ = ["RECYCLE_MIN_INTERVAL", "ProgressBook", "RecycleTooSoon"]

RECYCLE_MIN_INTERVAL = 5.0


class RecycleTooSoon(Exception):
    def __init__(self, campaign_id: str, wait: float) -> None:
        super().__init__(f"campaign {campaign_id} was recycled less than {RECYCLE_MIN_INTERVAL:g} s ago; "
                         f"try again in {wait:.1f} s")


@dataclass(slots=True)
class _Progress:
    called: float = 0.0  # records dialled before the current run
    since: float | None = None  # simulated time the current run began, while on
    timer: Timer | None = None  # the list's end, while on
    recycled_at: float | None = None
    complete: bool = False  # ran to the list's end: the next turn on begins at record one


class ProgressBook:
    """Every campaign's position. The engine says when a campaign starts and stops dialing."""

    def __init__(self, scheduler: Scheduler, records_per_second: float, exhausted: Callable[[str], None]) -> None:
        if not records_per_second > 0:
            raise ValueError(f"records_per_second must be > 0, got {records_per_second!r}")
        self._scheduler = scheduler
        self._rate = records_per_second
        self._exhausted = exhausted
        self._book: dict[str, _Progress] = {}

    def _of(self, campaign_id: str) -> _Progress:
        return self._book.setdefault(campaign_id, _Progress())

    def called(self, campaign_id: str, size: int) -> int:
        p = self._of(campaign_id)
        now = self._scheduler.clock.monotonic()
        running = (now - p.since) * self._rate if p.since is not None else 0.0
        return min(size, int(p.called + running))

    def dialing(self, campaign: SimCampaign, size: int) -> None:
        """The campaign turned on: it continues from its position (from record one after `complete`)."""
        p = self._of(campaign.id)
        if p.complete:
            p.called, p.complete = 0.0, False
        if p.since is not None:
            return
        p.since = self._scheduler.clock.monotonic()
        left = max(0.0, size - p.called) / self._rate
        p.timer = self._scheduler.call_later(left, lambda: self._end_of_list(campaign.id, size),
                                             name=f"exhaust-{campaign.id}")

    def _end_of_list(self, campaign_id: str, size: int) -> None:
        p = self._of(campaign_id)
        p.timer = None
        self.halted(campaign_id, size)
        p.called, p.complete = float(size), True
        self._exhausted(campaign_id)

    def halted(self, campaign_id: str, size: int) -> None:
        """The campaign stopped dialing: its position is kept."""
        p = self._of(campaign_id)
        if p.since is None:
            return
        p.called = float(self.called(campaign_id, size))
        p.since = None
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None

    def recycle(self, campaign: SimCampaign, size: int) -> None:
        """Back to record one; a campaign on keeps dialing, now from the top."""
        p = self._of(campaign.id)
        now = self._scheduler.clock.monotonic()
        if p.recycled_at is not None and now - p.recycled_at < RECYCLE_MIN_INTERVAL:
            raise RecycleTooSoon(campaign.id, RECYCLE_MIN_INTERVAL - (now - p.recycled_at))
        p.recycled_at = now
        running = p.since is not None
        self.halted(campaign.id, size)
        p.called = 0.0
        if running:
            self.dialing(campaign, size)

    def payload(self, campaign: SimCampaign, size: int, list_name: str) -> dict[str, Any]:
        """The SDK's `CampaignProgress`."""
        called = self.called(campaign.id, size)
        return {
            "campaign": {"id": campaign.id, "name": campaign.name,
                         "selfUri": f"/api/v2/outbound/campaigns/{campaign.id}"},
            "contactList": {"id": campaign.contact_list_id, "name": list_name,
                            "selfUri": f"/api/v2/outbound/contactlists/{campaign.contact_list_id}"},
            "numberOfContactsCalled": called,
            "numberOfContactsMessaged": 0,
            "totalNumberOfContacts": size,
            "percentage": (100 * called) // size if size else 0,
            "numberOfContactsSkipped": {},
        }
