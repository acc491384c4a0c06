"""Ownership: taking campaigns on (restore, then the platform's truth), pausing, giving them away.

The state topic is writable by more than this service, so a restored record is validated against
its schema, and a held or scheduled command in it is verified again (its signature, and an age
bound) before it may act. What fails is set aside (quarantined: logged and counted), never the
whole assignment: an unreadable record leaves its campaign to be read from the platform.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.base import ContractError
from schemas.commands import Command, id_key
from schemas.state import CampaignStateRecord, StoredCommand
from schemas.types import Cause

from .core import Core, short
from .held import HeldCommand, Stage
from .machine import Campaign
from .record import CampaignRecord

__all__ = ["Ownership"]

_log = logging.getLogger("fsm.orchestrator")

# A restored held command may have waited in the dialer queue after its pre-flight: this much on top
# of its schedule horizon and deferral limit before it counts as long dead.
_QUEUE_SLACK = 3600.0


class Ownership(Core):
    async def acquire(self, restored: Iterable[dict[str, Any]] = (), owns: Callable[[str], bool] | None = None) -> None:
        """Take ownership: restore the stored records, then read the platform's truth, before commands.

        Drift between what was stored and what the platform says becomes a `reconcile` event. A
        transition that was in flight is tracked again, never re-issued; a held command resumes its
        pre-flight. Campaigns already owned are left as they are.
        """
        if owns is not None:
            self._owns = owns
        fresh: list[str] = []
        for stored in restored:
            campaign_id = stored.get("campaignId")
            if not isinstance(campaign_id, str) or not self._owns(campaign_id):
                continue
            known = self._records.get(campaign_id)
            if known is not None and known.campaign is not None:
                continue
            if self._restore(stored) is not None:
                fresh.append(campaign_id)
        now = self.clock.now()
        for campaign_id in fresh:
            # Track a restored transition *before* reading the platform: if it finished while no one
            # was looking, that read settles it and its command is reported COMPLETED (or FAILED).
            record = self._records[campaign_id]
            assert record.campaign is not None
            if record.campaign.in_flight:
                self._track(record, record.campaign.command_id, record.campaign.action, now)
        for snapshot in await self.platform.list_campaigns():
            if not self._owns(snapshot.id):
                continue
            known = self._records.get(snapshot.id)
            if known is None or known.campaign is None:
                await self._discover(snapshot, Cause.RECONCILE)
                fresh.append(snapshot.id)
            elif snapshot.id in fresh:
                await self._observe(known, snapshot, Cause.RECONCILE)
        for campaign_id in fresh:  # in flight, each is tracked by now (restored, discovered or observed)
            self._queue.hint(campaign_id)
        if self.notifications is not None and fresh:
            await self.notifications.subscribe_campaigns(fresh)
            lists = {self._records[i].campaign.contact_list_id for i in fresh  # type: ignore[union-attr]
                     if self._records[i].campaign is not None}
            await self.notifications.subscribe_contact_lists(sorted(c for c in lists if c))

    def _restore(self, stored: dict[str, Any]) -> CampaignRecord | None:
        """One `campaign.state` record back, checked as untrusted input."""
        campaign_id = stored["campaignId"]
        try:
            CampaignStateRecord.model_validate_json(orjson.dumps(stored))  # as it came: JSON
            campaign = Campaign.restore(stored)
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            self._quarantine("record", campaign_id, short(exc))
            return None
        record = self._record(campaign_id)
        record.campaign = campaign
        for command_id, (issued, origin) in campaign.recent.items():
            # A redelivered record (its offset not committed when the process died) is recognised
            # as one; a re-sent command id is refused as a replay, here and by the authority.
            self._remember(command_id, origin)
            if self.authority is not None:
                self.authority.remember(command_id, issued)
        for raw in stored.get("scheduledCommands") or ():
            command = self._verified(campaign_id, "scheduled", raw)
            if command is not None:
                record.scheduled.append(command)
                self._remember(command.id, campaign.recent.get(id_key(command.id), (0.0, None))[1])
        held = stored.get("heldCommand")
        command = self._verified(campaign_id, "held", held) if held else None
        if command is None or campaign.held != str(command.id):
            if held and command is not None:
                self._quarantine("held", campaign_id, "heldCommand does not match the record's held id")
            campaign.held = None
        else:
            self._remember(campaign.held, campaign.recent.get(id_key(campaign.held), (0.0, None))[1])
            # Its POST may have gone out before the process died: then only reading is allowed
            # (the platform read below, or the next look, finds out whether it was executed).
            sent = stored.get("heldCommandSent") is True
            record.held = HeldCommand(command, stage=Stage.SENT if sent else Stage.PREFLIGHT)
        return record

    def _verified(self, campaign_id: str, what: str, raw: object) -> Command | None:
        """A stored command that may act again: it parses, names this campaign, and (with keys
        configured) carries a valid signature over what its producer sent and is young enough to
        still be waiting."""
        try:
            stored = StoredCommand.model_validate_json(orjson.dumps(raw))
            command = stored.command(campaign_id)
        except (ValidationError, ContractError, ValueError, TypeError) as exc:
            self._quarantine(what, campaign_id, short(exc))
            return None
        if command.campaign_id != campaign_id:
            self._quarantine(what, campaign_id, f"command {command.id} names campaign {command.campaign_id}")
            return None
        if self.authority is not None:
            longest = (self.authority.max_age_s + self.config.not_before_horizon
                       + self.config.preflight.deferral_ttl + _QUEUE_SLACK)
            decision = self.authority.verify_stored(command, self._auth_now(), longest)
            if not decision.allowed:
                self._quarantine(what, campaign_id, f"command {command.id}: {decision.reason}: {decision.detail}")
                return None
        return command

    def _quarantine(self, what: str, campaign_id: str, detail: str) -> None:
        self.quarantined[what] += 1
        _log.error("campaign.state record of %s: %s set aside (quarantined): %s", campaign_id, what, detail)

    async def suspend(self) -> None:
        """A rebalance began: act on nothing (no look, no POST) until `resume`. Running looks finish."""
        self._suspended = True
        deadline = self.clock.monotonic() + self.config.release_grace
        while self._queue.stats().running and self.clock.monotonic() < deadline:
            await self.clock.sleep(0.05)

    def resume(self) -> None:
        """The new assignment is in place: look at every campaign still owned."""
        self._suspended = False
        for campaign_id in list(self._records):  # commands may name campaigns not known yet
            self._queue.hint(campaign_id)

    async def release(self, owns: Callable[[str], bool]) -> list[str]:
        """Give up every campaign `owns` no longer covers (a rebalance moved its partition away).

        Their running looks finish first, so a POST in progress is followed by its event before
        the new owner reads `campaign.state`; nothing is published for them afterwards. Returns the
        campaign ids let go.
        """
        gone = [record for record in self._records.values() if not owns(record.id)]
        for record in gone:
            record.leaving = True  # no new look starts for it; a running one finishes
        deadline = self.clock.monotonic() + self.config.release_grace
        for record in gone:
            while self._queue.is_running(record.id) and self.clock.monotonic() < deadline:
                await self.clock.sleep(0.05)
        for record in gone:
            try:
                await self._flush(record)
            except Exception:
                _log.exception("campaign %s: events not flushed before hand-over", record.id)
            record.give_back_slot()
            for _item, future in record.inbox:
                if not future.done():
                    future.cancel()  # not committed: the new owner consumes it again
            self._queue.unschedule(record.id)
            del self._records[record.id]
            for waiting in self._list_waiters.values():
                waiting.discard(record.id)
        self._owns = owns
        if self.notifications is not None and gone:
            # Not ours to hear about any more; a list still used by a campaign we keep stays.
            kept = {r.campaign.contact_list_id for r in self._records.values() if r.campaign is not None}
            lists = {r.campaign.contact_list_id for r in gone if r.campaign is not None} - kept
            try:
                await self.notifications.unsubscribe_campaigns([r.id for r in gone])
                await self.notifications.unsubscribe_contact_lists(sorted(c for c in lists if c))
            except Exception:
                _log.exception("unsubscribing %d campaigns given away failed", len(gone))
        return [record.id for record in gone if record.campaign is not None]
