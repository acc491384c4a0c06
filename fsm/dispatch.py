"""Dispatch: a held command from acceptance to its one POST (guide, edge cases 1 and 2).

Pre-flight (the contact list ready; for STANDARD, the dialer under 80 % of capacity; for a start or
resume, a place under the organisation's active-campaign cap, fsm/campaign_cap.py), then the
dialer's priority queue (a `SlotLease`: two in flight per dialer, HIGH at once, STANDARD 15 s apart
as sent), then the POST. Right before the POST the campaign is read if its view is stale and the
pre-flight is judged again on facts at most `preflight_fresh_for` old; the machine's decision taken
at arrival stands unless the campaign moved since. When the slot is free at once, pre-flight, slot
and POST happen in the look that took the command, with one durable write before the POST (the
ACCEPTED together with "the POST may have left"); a command that waits has its ACCEPTED durable
first. A POST is sent once: after any failure the campaign is read before anything is decided, and
a request the platform executed is never sent again. A 429 means nothing was done: the same POST
goes again after Retry-After.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from schemas.commands import CommandResult
from schemas.events import rfc3339
from schemas.types import CampaignState, Cause, Outcome, Priority, ReasonCode

from .campaign_cap import ACTIVE_STATES, OPENING_ACTIONS, LocalView, OrgRead, count_active, share
from .core import Core
from .held import HeldCommand, SlotLease, Stage
from .ports import (
    CampaignSnapshot,
    ContactListSnapshot,
    DialerLoad,
    PlatformCapReached,
    PlatformConflict,
    PlatformError,
    PlatformRateLimited,
)
from .preflight import CapCheck, GateVerdict, WaitFor, check_active_cap, preflight
from .record import CampaignRecord

__all__ = ["Dispatch"]

_log = logging.getLogger("fsm.orchestrator")
# How many times a command met by a stale version (409) is judged again and sent once more, within
# one look, before it is reported FAILED with PLATFORM_CONFLICT. Bounded: a campaign someone edits
# in a loop must not hold a dialer slot forever.
_CONFLICT_DECISIONS = 2


class Dispatch(Core):
    async def _advance(self, record: CampaignRecord) -> None:
        held = record.held
        if held is None or not held.due(self.clock.now()):
            return
        if held.stage is Stage.PREFLIGHT:
            record.held = held.looked()
            if await self._preflight(record, fresh_for=0.0) and self._queue_for_slot(record):
                await self._send(record)  # the slot was free: pre-flight, slot and POST in one look
            return
        if held.stage in (Stage.GRANTED, Stage.SENT):
            await self._send(record)

    def _queue_for_slot(self, record: CampaignRecord) -> bool:
        """Ask the dialer for a slot. True: granted at once (the POST may go now); else it waits."""
        assert record.held is not None and record.campaign is not None
        record.held = record.held.proceed()
        command_id = record.held.command_id

        def granted() -> None:
            if record.held is not None and record.held.command_id == command_id and record.held.stage is Stage.QUEUED:
                record.held = record.held.granted()
                self._queue.hint(record.id)

        # Bound to the dialer the campaign is on now: the slot goes back there whatever changes.
        record.lease = SlotLease(self._gate, record.campaign.dialer_id or record.id, record.id,
                                 record.held.command.priority, granted)
        if record.lease.granted:
            record.held = record.held.granted()
        return record.lease.granted

    async def _preflight(self, record: CampaignRecord, *, fresh_for: float) -> bool:
        """Judge the contact list and the dialer's load on facts at most `fresh_for` old (0: read now;
        the dialer's load may be shared for `load_ttl` among campaigns on one dialer). True: go on.
        Otherwise the command is deferred (its DEFERRED published when the reason changes) or let go."""
        held, campaign = record.held, record.campaign
        assert held is not None and campaign is not None
        command = held.command
        now = self.clock.now()
        if not await self._answered_before_a_wait(record):
            return False
        # A start already waiting for a place under the cap is asked the cap first: while no place
        # is free, nothing the list or the lines say can let it go, so they are not read (on
        # Genesys every read spends from the client's 300 a minute, and rechecks come every few s).
        cap = await self._cap_check(record, held) if held.deferral is ReasonCode.ACTIVE_CAMPAIGN_CAP else None
        still_capped = cap is not None and not check_active_cap(
            cap, now, self.config.preflight, deferred_at=held.deferred_at).proceed
        contact_list = None
        load = None
        if not still_capped:
            if campaign.contact_list_id:
                contact_list = await self._contact_list(campaign.contact_list_id, fresh_for)
            if not await self._answered_before_a_wait(record):
                return False
            if command.priority is Priority.STANDARD and campaign.dialer_id:
                load = await self._dialer_load(campaign.dialer_id, record.id, min(fresh_for, self.config.load_ttl)
                                               if fresh_for else self.config.load_ttl)
            if cap is None:
                if not await self._answered_before_a_wait(record):
                    return False
                cap = await self._cap_check(record, held)
        decision = preflight(contact_list=contact_list, load=load, priority=command.priority, now=now,
                             deferred_at=held.deferred_at, policy=self.config.preflight, cap=cap)
        if decision.reason is ReasonCode.ACTIVE_CAMPAIGN_CAP:
            self._cap_line.join(held.command_id, record.id, command.priority)
        else:
            self._cap_line.leave(held.command_id)
            if cap is not None and not cap.reserved and decision.proceed and self._cap_read is not None:
                self._cap_read.admitted += 1  # one place of this instance's share taken
        if decision.verdict is GateVerdict.PROCEED:
            return True
        if not await self._pay(record):  # its ACCEPTED first, then why it waits or is let go
            return False
        if decision.verdict is GateVerdict.REFUSE:
            await self._drop_held(record, self._result(command, Outcome.REFUSED, decision.reason, decision.detail,
                                                       campaign.current))
            return False
        record.held = held.deferred(decision.reason, now, decision.retry_at)
        if decision.wait_for is WaitFor.CONTACT_LIST and decision.wait_id:
            self._list_waiters.setdefault(decision.wait_id, set()).add(record.id)
        if decision.reason is not held.deferral:
            await self._publish(self._result(command, Outcome.DEFERRED, decision.reason, decision.detail,
                                             campaign.current, next_attempt=decision.retry_at))
        return False

    async def _answered_before_a_wait(self, record: CampaignRecord) -> bool:
        """An owed ACCEPTED goes with the one write before the POST, unless the next read would wait
        its turn in the request budget (a storm: up to a minute at 10 reads a second): then it is
        made durable now. False: it could not be, and the held command was let go (`_pay`)."""
        if record.owed is None or not self.platform.reads_wait():
            return True
        return await self._pay(record)

    async def _contact_list(self, contact_list_id: str, max_age: float) -> ContactListSnapshot:
        cached = self._lists.get(contact_list_id)
        if cached is not None and max_age > 0 and self.clock.monotonic() - cached[0] <= max_age:
            return cached[1]
        snapshot = await self.platform.get_contact_list(contact_list_id)
        self._lists[contact_list_id] = (self.clock.monotonic(), snapshot)
        return snapshot

    async def _dialer_load(self, dialer_id: str, campaign_id: str, max_age: float) -> DialerLoad:
        cached = self._loads.get(dialer_id)
        if cached is not None and self.clock.monotonic() - cached[0] <= max_age:
            return cached[1]
        load = await self.platform.get_dialer_load(dialer_id, campaign_id)
        self._loads[dialer_id] = (self.clock.monotonic(), load)
        return load

    # --- the organisation's active-campaign cap (fsm/campaign_cap.py) ------------------------------

    async def _cap_check(self, record: CampaignRecord, held: HeldCommand) -> CapCheck | None:
        """The cap's facts for an opening, None if there is no cap or this is not an opening."""
        limit = self.config.cap.limit
        if limit is None or held.command.action not in OPENING_ACTIONS:
            return None
        read = await self._org_active()
        self._cap_line.retain(self._holds)
        return CapCheck(record.id, count_active(read.active, read.read_at, self._local_views()), limit,
                        ahead=self._cap_line.ahead(held.command_id, held.command.priority),
                        reserved=held.stage is not Stage.PREFLIGHT, recheck=self.config.cap.recheck,
                        quota_left=read.quota_left)

    async def _org_active(self) -> OrgRead:
        """The organisation's active campaigns, one list read shared for `cap.ttl` (one GET per page)."""
        policy = self.config.cap
        cached = self._cap_read
        if cached is not None and self.clock.monotonic() - cached.read_at <= policy.ttl:
            return cached
        async with self._cap_lock:  # a storm of starts makes one read, not one each
            cached = self._cap_read
            if cached is not None and self.clock.monotonic() - cached.read_at <= policy.ttl:
                return cached
            read_at = self.clock.monotonic()  # local observations after this are fresher than the read
            snapshots = await self.platform.list_campaigns()
            active = frozenset(s.id for s in snapshots if s.state in ACTIVE_STATES)
            free = (policy.limit or 0) - len(count_active(active, read_at, self._local_views()))
            # Alone, the count is the whole rule; with others, a share of what this read left free
            # (places freed later come back with the next read, at most `ttl` away).
            quota = share(free, policy.instances) if policy.instances > 1 else None
            self._cap_read = cached = OrgRead(read_at, active, quota)
        self._poke_cap_line()
        return cached

    def _local_views(self) -> Iterator[LocalView]:
        for record in self._records.values():
            campaign, held = record.campaign, record.held
            if campaign is None or not self._owns(record.id):
                continue
            reserved = campaign.current is CampaignState.STARTING or (
                held is not None and held.command.action in OPENING_ACTIONS and held.stage is not Stage.PREFLIGHT)
            yield LocalView(record.id, campaign.current in ACTIVE_STATES, record.observed_at, reserved)

    def _holds(self, command_id: str, campaign_id: str) -> bool:
        record = self._records.get(campaign_id)
        return record is not None and record.held is not None and record.held.command_id == command_id

    def _poke_cap_line(self) -> None:
        """Places are free: the openings first in line look again now, not at their recheck."""
        limit, cached = self.config.cap.limit, self._cap_read
        if limit is None or not self._cap_line:
            return
        if cached is None:
            free = limit - len(count_active((), None, self._local_views()))
        else:
            free = limit - len(count_active(cached.active, cached.read_at, self._local_views()))
            if cached.quota_left is not None:
                free = min(free, cached.quota_left)
        for campaign_id in self._cap_line.first(free):
            record = self._records.get(campaign_id)
            if record is not None and record.held is not None:
                record.held = record.held.poke()
                self._queue.hint(campaign_id)

    async def _send(self, record: CampaignRecord) -> None:
        """One POST, or (after an unknown outcome) only reads until the truth is known."""
        held, campaign = record.held, record.campaign
        assert held is not None and campaign is not None
        command = held.command
        if held.stage is Stage.SENT:
            await self._resolve(record, held, await self.platform.get_campaign(record.id), None)
            return
        if self._fenced(record):
            return  # this instance may no longer own the campaign
        if record.observed_at is None or self.clock.monotonic() - record.observed_at > self.config.fresh_for:
            await self._observe(record, await self.platform.get_campaign(record.id), Cause.RECONCILE)
            if record.held is not held:
                return
        if held.decision is None or held.decision.judged_at != campaign.sequence:
            # An observation moved the campaign while the command waited (or a restart lost the
            # decision): judge it again. Unmoved, the decision taken at arrival still stands.
            check = self.machine.judge(campaign, command.action, command_id=held.command_id)
            if not check.accepted:
                await self._drop_held(record, self._result(command, Outcome.REFUSED, check.reason, check.message,
                                                           check.state, legal=check.legal))
                return
            record.held = held = held.judged(check)
        # On facts at most `preflight_fresh_for` old: on the one-look path the ones just read.
        if not await self._preflight(record, fresh_for=self.config.preflight_fresh_for):
            if record.held is not None and record.held.command_id == held.command_id:
                record.give_back_slot()  # deferred again: back to pre-flight, the slot to the next command
            return
        record.held = sending = held.sending()
        # Durable before the request leaves: a process killed after the POST must find, on restart,
        # that it may have gone out, and only read, never send it again or refuse what was executed.
        # An ACCEPTED still owed rides with it: one durable write before the POST. If that write
        # fails the command was never accepted (nothing left): let go, its intake answers the record.
        if record.owed is not None:
            if not await self._pay(record):
                return
        else:
            await self._store(record)
        lease = record.lease
        try:
            receipt = await self.platform.send_action(record.id, command.action, source=campaign.current,
                                                      recycle=bool(command.recycle))
        except PlatformRateLimited as exc:
            await self._rate_limited(record, sending, exc)
            return
        except PlatformConflict as exc:
            if lease is not None:
                lease.sent()
            # Refused, so not executed: decide again on the campaign as it is now.
            for _ in range(_CONFLICT_DECISIONS):
                if not await self._decide_again(record, sending, exc):
                    return
                try:
                    # A recycle asked for went out before the refused turn: not sent twice.
                    receipt = await self.platform.send_action(record.id, command.action, source=campaign.current)
                    break
                except PlatformConflict as again:
                    exc = again
                except PlatformError as failed:
                    await self._resolve(record, sending, await self.platform.get_campaign(record.id), failed)
                    return
            else:
                await self._resolve(record, sending, exc.current or await self.platform.get_campaign(record.id), exc)
                return
        except PlatformError as exc:
            if isinstance(exc, PlatformCapReached):
                self._cap_read = None  # our count was short (another instance, a campaign we cannot see)
            if lease is not None:
                lease.sent()
            _log.warning("campaign %s: %s request failed (%s); reading the campaign before deciding",
                         record.id, command.action, type(exc).__name__)
            await self._resolve(record, sending, await self.platform.get_campaign(record.id), exc)
            return
        if lease is not None:
            lease.sent()
        request = None if receipt.method is None else {
            "method": receipt.method, "path": receipt.path or f"campaigns/{record.id}/{command.action.value}",
            "status": receipt.status, "sentAt": rfc3339(receipt.sent_at),
            "answeredAt": rfc3339(receipt.answered_at),
        }
        await self._fire(record, sending, request)
        if receipt.method is None:
            # Nothing was sent (Genesys: a stop of a paused campaign, off already): only our intent
            # moved, so the platform's word can settle it now instead of at the next poll.
            await self._observe(record, await self.platform.get_campaign(record.id), Cause.POLL)

    async def _decide_again(self, record: CampaignRecord, held: HeldCommand, conflict: PlatformConflict) -> bool:
        """After a conflict (nothing changed): whether the same command is still right, judged on a
        fresh read. A stale version (409) with the command still legal: send once more with the new
        version. A refused transition (400), or a campaign that moved: resolved, never re-sent."""
        snapshot = conflict.current or await self.platform.get_campaign(record.id)
        if not conflict.stale:
            await self._resolve(record, held, snapshot, conflict)
            return False
        await self._observe(record, snapshot, Cause.RECONCILE)
        if record.held is not held or record.campaign is None or self._fenced(record):
            return False
        check = self.machine.judge(record.campaign, held.command.action, command_id=held.command_id)
        if not check.accepted:
            await self._drop_held(record, self._result(held.command, Outcome.REFUSED, check.reason, check.message,
                                                       check.state, legal=check.legal))
            return False
        _log.info("campaign %s: %s met a stale version; decided again on the fresh campaign, sending once more",
                  record.id, held.command.action)
        return True

    async def _rate_limited(self, record: CampaignRecord, held: HeldCommand, exc: PlatformRateLimited) -> None:
        """A 429 means the platform did nothing: the same POST goes again after its Retry-After,
        keeping the command's slot, up to `rate_limited_retries` times."""
        if held.rate_limited >= self.config.rate_limited_retries:
            await self._resolve(record, held, await self.platform.get_campaign(record.id), exc)
            return
        delay = self.config.poll.jittered(max(exc.retry_after or 0.0, self.config.poll.initial), self._rng)
        record.held = held.rate_limited_until(self.clock.now() + delay)
        _log.warning("campaign %s: %s request answered 429 (not executed); sent again in %.1f s (%d of %d)",
                     record.id, held.command.action, delay, held.rate_limited + 1, self.config.rate_limited_retries)
        await self._store(record)

    async def _resolve(self, record: CampaignRecord, held: HeldCommand, snapshot: CampaignSnapshot,
                       failure: PlatformError | None) -> None:
        """The outcome of a POST is unknown (it failed, or the process died before the answer): the
        platform's state decides. Moved: it was executed, and `_observe` follows it. Not moved: FAILED."""
        await self._observe(record, snapshot, Cause.RECONCILE)
        if record.held is None or record.held.command_id != held.command_id:
            return
        assert record.campaign is not None
        command = held.command
        reason = ReasonCode.PLATFORM_CONFLICT if isinstance(failure, PlatformConflict) else ReasonCode.PLATFORM_ERROR
        message = (f"the platform did not take the {command.action} request "
                   f"({type(failure).__name__ if failure else 'no answer'}); campaign still {record.campaign.current}")
        if isinstance(failure, PlatformCapReached):
            # Not sent again: a count that missed a place once can miss it again, and a loop of
            # refused starts helps no one. The producer decides whether to send the command again.
            reason = ReasonCode.ACTIVE_CAMPAIGN_CAP
            message = (f"the platform refused the {command.action}: the organisation already runs its maximum of "
                       f"active campaigns (another instance, or a campaign this service does not see, took the "
                       f"last place); campaign still {record.campaign.current}; not retried")
        await self._drop_held(record, self._result(command, Outcome.FAILED, reason, message,
                                                   record.campaign.current))

    async def _fire(self, record: CampaignRecord, held: HeldCommand, request: dict[str, Any] | None) -> None:
        """The POST was executed: the model enters the transitional state; the lease goes with it.

        The move is the decision the POST was sent on, applied: judged again only if the campaign
        moved since (or the decision was lost to a restart)."""
        campaign = record.campaign
        assert campaign is not None
        command = held.command
        judged = held.decision
        if judged is None or judged.judged_at != campaign.sequence:
            judged = self.machine.judge(campaign, command.action, command_id=held.command_id)
        decision = self.machine.apply(campaign, command.action, judged, at=self.clock.now(),
                                      command_id=held.command_id, request=request)
        record.held = None
        assert decision.accepted and decision.change is not None, decision
        await self._emit(record, decision.change)
        self._track(record, held.command_id, command.action, self.clock.now())

    async def _drop_held(self, record: CampaignRecord, result: CommandResult) -> None:
        """Let go of a held command; the record without it and the command's result are durable together."""
        held = record.held
        assert held is not None and record.campaign is not None
        record.held = None
        self.machine.unhold(record.campaign, held.command_id)
        record.give_back_slot()
        self._cap_line.leave(held.command_id)
        if held.stage is not Stage.PREFLIGHT and held.command.action in OPENING_ACTIONS:
            self._poke_cap_line()  # the place it held is free again
        await self._save(record, result)
