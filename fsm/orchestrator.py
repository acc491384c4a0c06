"""The orchestrator: commands in, platform driven, state changes out. Level-triggered, per campaign.

Everything that happens to a campaign is a *hint* that it needs a look: a command arriving, a
notification, a poll coming due, a tolerance window running out, a dialer slot freeing up, its
contact list becoming ready. Hints go into a keyed work queue (one worker per campaign at a time);
the worker (`_reconcile`) then looks at the whole campaign and does what its situation calls for:

1. apply the newest notification payload (an observation: the platform is the truth);
2. gate new commands through the machine (refused, a no-op, or accepted and *held*);
3. move a held command on: pre-flight (contact list ready, dialer under 80 % for STANDARD), then the
   dialer's priority queue (two in flight, HIGH at once, STANDARD 15 s apart), then one POST;
4. track a transition in flight: notifications first; polls with backoff and jitter while they are
   down (a sparse safety poll while they are up); at the tolerance deadline, read the errors and the
   contact list: a lock delays, anything else fails;
5. schedule its next look.

A POST is sent once. If it fails in any way the campaign is read before anything else is decided,
and a request the platform executed is never sent again. The model enters a transitional state only
once the platform accepted the request (202), and leaves it only on an observation or a timeout
verdict: never on a 202, never on a timer alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from pydantic import ValidationError

from schemas.commands import Command, CommandResult
from schemas.events import rfc3339
from schemas.state import CampaignStateRecord
from schemas.types import (
    Action,
    CampaignState,
    Cause,
    Outcome,
    Priority,
    ReasonCode,
)

from .authorization import CommandAuthority, held_until
from .backoff import PollBackoff, PollPolicy, PollSchedule
from .dialer_queue import DialerGate, DialerPolicy, GateClosed
from .machine import Campaign, CampaignMachine, StateChange
from .ports import (
    CampaignSnapshot,
    Clock,
    ContactListSnapshot,
    DialerLoad,
    EventSink,
    Notification,
    Notifications,
    Platform,
    PlatformConflict,
    PlatformError,
    PlatformNotFound,
    PlatformRateLimited,
)
from .preflight import GateVerdict, PreflightPolicy, WaitFor, judge_expiry, preflight
from .table import NO_OPS
from .work_queue import WorkQueue

__all__ = ["Orchestrator", "OrchestratorConfig", "OrchestratorStats"]

_log = logging.getLogger(__name__)

# The state each action aims for (reaching it completes the command) is the one in which asking
# for that action is a no-op: the table's NO_OPS pairs. A reset is never tracked: it adopts what the
# platform reports at once.
_TARGET: dict[Action, CampaignState] = {action: state for action, state in NO_OPS if action is not Action.RESET}
# A restored held command may have waited in the dialer queue after its pre-flight: this much on top
# of its schedule horizon and deferral limit before it counts as long dead.
_QUEUE_SLACK = 3600.0


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    poll: PollPolicy = field(default_factory=PollPolicy)
    preflight: PreflightPolicy = field(default_factory=PreflightPolicy)
    dialer: DialerPolicy = field(default_factory=DialerPolicy)
    # While notifications are up a tracked campaign is still read now and then: a dropped
    # notification must not leave it unseen until its tolerance deadline.
    safety_poll: float = 60.0
    # How long a dialer's load reading is reused by other campaigns on the same dialer: one STANDARD
    # stagger, since no more than one STANDARD transition starts per dialer in that time anyway.
    load_ttl: float = 15.0
    # A POST goes out only on a fresh view of the campaign: older than this, it is read first (a
    # queued command, a restart, a takeover or a paused zombie instance all act on fresh truth).
    fresh_for: float = 2.0
    # Looks that wait on the tenant read limiter hold a slot while they wait; the cap must be well
    # above the campaigns that can queue for reads at once (a shift-change storm), or a notification
    # for a campaign already in flight waits behind them. Waiting coroutines cost next to nothing.
    concurrency: int = 4096
    remembered_commands: int = 100_000
    # How long a revoked campaign's running look may take to finish before it is let go anyway.
    release_grace: float = 30.0
    # Limits on what one producer can make a campaign hold (each refusal names its reason): how far
    # ahead `notBefore` may be (NOT_BEFORE_TOO_FAR), how many commands may wait for it (TOO_MANY_WAITING).
    not_before_horizon: float = 86_400.0
    max_scheduled: int = 16
    # The replay memory stored with each campaign: ids within the freshness window (the authority's
    # max_age_s, or `replay_window` without one), at most `replay_memory` of them per campaign.
    replay_window: float = 300.0
    replay_memory: int = 256
    # At its POST a command's pre-flight facts (contact list, dialer load) are at most this old:
    # read again if older (guide, edge cases 1 and 2 are judged before the transition, not before the queue).
    preflight_fresh_for: float = 5.0
    # A POST answered 429 was not executed: it is sent again after the platform's Retry-After, this often.
    rate_limited_retries: int = 10
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class OrchestratorStats:
    campaigns: int
    tracking: int
    pending: int
    notifications_up: bool
    ready: bool


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A command that passed authentication (signature, freshness, replay) when it was submitted, or
    was re-verified when restored. `_intake` takes nothing else, so no path reaches a campaign without it."""

    command: Command
    origin: str | None


@dataclass(slots=True)
class _Pending:
    """A command the machine accepted, not yet sent. `stage` moves preflight -> queued -> granted."""

    command: Command
    stage: str = "preflight"
    deferred_at: float | None = None
    deferral: ReasonCode | None = None
    next_check: float | None = None
    poked: bool = True
    gate_task: asyncio.Task[None] | None = None
    sent: bool = False  # a POST went out and its outcome is unknown: only re-reading is allowed
    slot: str | None = None  # the dialer key its slot was taken on (given back there, whatever changes)
    rate_limited: int = 0  # POSTs answered 429 (not executed) so far


@dataclass(slots=True)
class _Tracking:
    """A transition in flight, ours (`command_id`) or one we only observed."""

    command_id: str | None
    action: Action | None
    backoff: PollBackoff
    next_poll: float
    holds_slot: bool = False
    slot_task: asyncio.Task[None] | None = None
    slot: str | None = None  # the dialer key its slot is (or is being) taken on


class Orchestrator:
    """The product's main loop over the ports. Construct, `await start(...)`, feed, `await close()`."""

    def __init__(
        self,
        *,
        machine: CampaignMachine,
        platform: Platform,
        sink: EventSink,
        clock: Clock,
        notifications: Notifications | None = None,
        config: OrchestratorConfig | None = None,
        authority: CommandAuthority | None = None,
        auth_clock: Callable[[], float] | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.machine = machine
        self.platform = platform
        self.sink = sink
        self.clock = clock
        self.notifications = notifications
        self.config = config or OrchestratorConfig()
        # Signatures are judged on real time (issuedAt is a real instant), even when the clock is scaled.
        self.authority = authority
        self._auth_now = auth_clock or clock.now
        self._rng = random.Random(self.config.seed)
        self._schedule = PollSchedule(self.config.poll, self._rng)
        self._gate: DialerGate[str] = DialerGate(clock, self.config.dialer)
        self._queue = WorkQueue(self._reconcile, clock=clock, concurrency=self.config.concurrency)
        self._book: dict[str, Campaign] = {}
        # Per campaign, in arrival order: admitted commands, or the refusal decided at submission.
        self._inbox: dict[str, deque[tuple[_Admitted | CommandResult, asyncio.Future[CommandResult]]]] = {}
        self._pending: dict[str, _Pending] = {}
        self._tracking: dict[str, _Tracking] = {}
        self._latest: dict[str, CampaignSnapshot] = {}
        self._list_waiters: dict[str, set[str]] = {}
        self._loads: dict[str, tuple[float, DialerLoad]] = {}
        self._lists: dict[str, tuple[float, ContactListSnapshot]] = {}
        # Events not yet taken by the sink, each with the results it decides, per campaign in order.
        self._unsent: dict[str, deque[tuple[dict[str, Any], tuple[CommandResult, ...]]]] = {}
        # Command id -> the record that carried it and, while it is being handled, its future.
        self._seen: OrderedDict[str, tuple[str | None, asyncio.Future[CommandResult] | None]] = OrderedDict()
        # Refusals of authentication, replay and policy (metrics); restored records set aside.
        self.auth_refusals: Counter[ReasonCode] = Counter()
        self.quarantined: Counter[str] = Counter()
        # Commands held until their `notBefore`, per campaign, authenticated on arrival.
        self._scheduled: dict[str, list[Command]] = {}
        # Scale-out: this instance drives only the campaigns it owns (its partitions of the commands
        # topic). Checked before every look, every POST and every publish (fencing a stale owner).
        self._owns: Callable[[str], bool] = owns or _everything
        self._observed_at: dict[str, float] = {}
        self._leaving: set[str] = set()
        self._suspended = False
        self._notifications_up = bool(notifications and notifications.up)
        self._ready = False
        self._closing = False

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once startup reconciliation is done: commands may flow."""
        return self._ready

    @property
    def campaigns(self) -> dict[str, Campaign]:
        return self._book

    @property
    def gate(self) -> DialerGate[str]:
        return self._gate

    def stats(self) -> OrchestratorStats:
        return OrchestratorStats(len(self._book), len(self._tracking), len(self._pending),
                                 self._notifications_up, self._ready)

    async def start(self, restored: Iterable[dict[str, Any]] = ()) -> None:
        """Single-owner start: acquire every campaign, then take commands."""
        await self.acquire(restored)
        self._ready = True

    def mark_ready(self) -> None:
        """Scale-out start: the first assignment has been acquired; commands may flow."""
        self._ready = True

    async def acquire(self, restored: Iterable[dict[str, Any]] = (), owns: Callable[[str], bool] | None = None) -> None:
        """Take ownership: restore the stored records, then read the platform's truth, before commands.

        Drift between what was stored and what the platform says becomes a `reconcile` event. A
        transition that was in flight is tracked again, never re-issued; a held command resumes its
        pre-flight. Campaigns already owned are left as they are.
        """
        if owns is not None:
            self._owns = owns
        fresh: list[str] = []
        for record in restored:
            campaign_id = record.get("campaignId")
            if not isinstance(campaign_id, str) or not self._owns(campaign_id) or campaign_id in self._book:
                continue
            campaign = self._restore(record)
            if campaign is not None:
                fresh.append(campaign.id)
        now = self.clock.now()
        for campaign_id in fresh:
            # Track a restored transition *before* reading the platform: if it finished while no one
            # was looking, that read settles it and its command is reported COMPLETED (or FAILED).
            campaign = self._book[campaign_id]
            if campaign.in_flight:
                self._track(campaign, campaign.command_id, campaign.action, now)
        snapshots = await self.platform.list_campaigns()
        for snapshot in snapshots:
            if not self._owns(snapshot.id):
                continue
            known = self._book.get(snapshot.id)
            if known is None:
                await self._discover(snapshot, Cause.RECONCILE)
                fresh.append(snapshot.id)
            elif snapshot.id in fresh:
                await self._observe(known, snapshot, Cause.RECONCILE)
        for campaign_id in fresh:  # in flight, each is tracked by now (restored, discovered or observed)
            self._queue.hint(campaign_id)
        if self.notifications is not None and fresh:
            await self.notifications.subscribe_campaigns(fresh)
            lists = sorted({c for c in (self._book[i].contact_list_id for i in fresh) if c})
            await self.notifications.subscribe_contact_lists(lists)

    def _restore(self, record: dict[str, Any]) -> Campaign | None:
        """One `campaign.state` record back into the book, checked as untrusted input.

        The state topic is writable by more than this service, so a record is validated against its
        schema, and a held or scheduled command in it is verified again (its signature, and an age
        bound) before it may act. What fails is set aside (quarantined: logged and counted), never
        the whole assignment: an unreadable record leaves its campaign to be read from the platform.
        """
        campaign_id = record["campaignId"]
        try:
            CampaignStateRecord.model_validate_json(orjson.dumps(record))  # as it came: JSON
            campaign = Campaign.restore(record)
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            self._quarantine("record", campaign_id, _short(exc))
            return None
        for command_id, (issued, origin) in campaign.recent.items():
            # A redelivered record (its offset not committed when the process died) is recognised
            # as one; a re-sent command id is refused as a replay, here and by the authority.
            self._remember(command_id, origin)
            if self.authority is not None:
                self.authority.remember(command_id, issued)
        self._book[campaign.id] = campaign
        for raw in record.get("scheduledCommands") or ():
            command = self._verified(campaign_id, "scheduled", raw)
            if command is not None:
                self._scheduled.setdefault(campaign.id, []).append(command)
                self._remember(str(command.id), campaign.recent.get(str(command.id), (0.0, None))[1])
        held = record.get("heldCommand")
        command = self._verified(campaign_id, "held", held) if held else None
        if command is None or campaign.held != str(command.id):
            if held and command is not None:
                self._quarantine("held", campaign_id, "heldCommand does not match the record's held id")
            campaign.held = None
        else:
            self._remember(campaign.held, campaign.recent.get(campaign.held, (0.0, None))[1])
            # Its POST may have gone out before the process died: then only reading is allowed
            # (the platform read below, or the next look, finds out whether it was executed).
            sent = record.get("heldCommandSent") is True
            self._pending[campaign.id] = _Pending(command, stage="granted" if sent else "preflight", sent=sent)
        return campaign

    def _verified(self, campaign_id: str, what: str, raw: object) -> Command | None:
        """A stored command that may act again: it parses, names this campaign, and (with keys
        configured) carries a valid signature and is young enough to still be waiting."""
        try:
            command = Command.model_validate_json(raw if isinstance(raw, str | bytes) else orjson.dumps(raw))
        except (ValidationError, ValueError, TypeError) as exc:
            self._quarantine(what, campaign_id, _short(exc))
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
        for campaign_id in {*self._book, *self._inbox}:  # commands may name campaigns not known yet
            self._queue.hint(campaign_id)

    async def release(self, owns: Callable[[str], bool]) -> list[str]:
        """Give up every campaign `owns` no longer covers (a rebalance moved its partition away).

        Their running looks finish first, so a POST in progress is followed by its event before
        the new owner reads `campaign.state`; nothing is published for them afterwards. Returns the
        campaign ids let go.
        """
        gone = [campaign_id for campaign_id in self._book if not owns(campaign_id)]
        self._leaving.update(gone)  # no new look starts for them; a running one finishes
        deadline = self.clock.monotonic() + self.config.release_grace
        for campaign_id in gone:
            while self._queue.is_running(campaign_id) and self.clock.monotonic() < deadline:
                await self.clock.sleep(0.05)
        for campaign_id in gone:
            campaign = self._book[campaign_id]
            try:
                await self._flush(campaign_id)
            except Exception:
                _log.exception("campaign %s: events not flushed before hand-over", campaign_id)
            pending = self._pending.pop(campaign_id, None)
            if pending is not None:
                self._give_back(campaign, pending)
            tracking = self._tracking.pop(campaign_id, None)
            if tracking is not None:
                self._free_slot(campaign, tracking)
            for _command, future in self._inbox.pop(campaign_id, ()):
                if not future.done():
                    future.cancel()  # not committed: the new owner consumes it again
            for table in (self._scheduled, self._latest, self._unsent, self._observed_at):
                table.pop(campaign_id, None)
            self._queue.unschedule(campaign_id)
            del self._book[campaign_id]
        self._owns = owns
        self._leaving.difference_update(gone)
        return gone

    async def close(self, *, grace: float = 10.0) -> None:
        """Stop intake, let running looks finish, then stop waiting on the dialers."""
        self._closing = True
        self._ready = False
        await self._queue.close(grace=grace)
        await self._gate.close()
        tasks = [t for t in (*(p.gate_task for p in self._pending.values()),
                             *(t.slot_task for t in self._tracking.values())) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until no campaign has a look running or due now (tests, shutdown)."""
        await self._queue.drain()

    def snapshot(self, campaign: Campaign) -> dict[str, Any]:
        """The `campaign.state` record: the campaign plus a held command, so a restart loses neither."""
        record = campaign.snapshot()
        pending = self._pending.get(campaign.id)
        record["heldCommand"] = pending.command.model_dump_json(by_alias=True) if pending else None
        record["heldCommandSent"] = pending.sent if pending else None
        scheduled = self._scheduled.get(campaign.id)
        record["scheduledCommands"] = [c.model_dump_json(by_alias=True) for c in scheduled] if scheduled else None
        return record

    # --- intake --------------------------------------------------------------------------------

    def submit(self, command: Command, origin: str | None = None) -> asyncio.Future[CommandResult]:
        """Take a command. The future resolves with its first result once that result is durable.

        Authentication happens here, as the command arrives: what is queued for a campaign is
        either admitted or already refused, so no later path (a look busy with other work, a
        command arriving meanwhile) can skip it, and nothing unauthenticated costs a platform read.
        `origin` names the record that carried the command (`topic:partition@offset`): the same
        record delivered again is a redelivery, acknowledged without acting; the same id in any
        other record is a replay, refused REPLAYED. The future fails with the exception if handling
        the command failed before any result was durable; the command is then forgotten, so the
        same record delivered again is judged anew.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CommandResult] = loop.create_future()
        if self._closing:
            future.cancel()
            return future
        command_id = str(command.id)
        seen = self._seen.get(command_id)
        if seen is not None and seen[0] == origin:
            if seen[1] is not None and not seen[1].done():
                return seen[1]  # its first delivery is still being handled: one answer serves both
            _log.info("command %s for %s: a redelivery of a record already taken; nothing to do",
                      command_id, command.campaign_id)
            _answer(future, self._result(command, Outcome.REFUSED, ReasonCode.REPLAYED,
                                         "redelivery of a record already taken: nothing to do", None))
            return future
        refusal = self._authenticate(command, reused=seen is not None)
        inbox = self._inbox.setdefault(command.campaign_id, deque())
        if refusal is not None:
            inbox.append((refusal, future))
        else:
            self._remember(command_id, origin, future)
            future.add_done_callback(functools.partial(self._unless_taken, command_id, command.campaign_id))
            inbox.append((_Admitted(command, origin), future))
        self._queue.hint(command.campaign_id)
        return future

    def _authenticate(self, command: Command, *, reused: bool) -> CommandResult | None:
        """Signature, freshness and replay: the refusal, or None when the command is admitted."""
        if self.authority is not None:
            decision = self.authority.authenticate(command, self._auth_now())
            if not decision.allowed:
                assert decision.reason is not None
                return self._refusal(command, decision.reason, decision.detail)
        if reused:
            return self._refusal(command, ReasonCode.REPLAYED,
                                 f"command id {command.id} was already taken from another record")
        campaign = self._book.get(command.campaign_id)
        horizon = campaign.replay_horizon if campaign is not None else None
        if horizon is not None and command.issued_at.timestamp() <= horizon:
            return self._refusal(command, ReasonCode.STALE_COMMAND,
                                 "issued before this campaign's replay memory horizon (too many recent commands "
                                 "to prove this one new); send it again with a new id and a fresh issuedAt")
        return None

    def _refusal(self, command: Command, reason: ReasonCode, detail: str) -> CommandResult:
        self.auth_refusals[reason] += 1
        return self._result(command, Outcome.REFUSED, reason, detail, None)

    def _unless_taken(self, command_id: str, campaign_id: str, future: asyncio.Future[CommandResult]) -> None:
        """Its first result is durable: keep the id, drop the future. Failed or cancelled (handed over
        to another owner) before that: forget it, so the same record delivered again is new."""
        seen = self._seen.get(command_id)
        if seen is None or seen[1] is not future:
            return
        if not future.cancelled() and future.exception() is None:
            self._seen[command_id] = (seen[0], None)
            return
        del self._seen[command_id]
        if self.authority is not None:
            self.authority.forget(command_id)
        campaign = self._book.get(campaign_id)
        if campaign is not None:
            campaign.recent.pop(command_id, None)

    async def refuse_malformed(self, command_id: UUID, campaign_id: str, detail: str) -> CommandResult:
        """A record on the commands topic that names its command and campaign but does not parse."""
        return await self.refuse_record(command_id, campaign_id, ReasonCode.MALFORMED_COMMAND, detail)

    async def refuse_record(self, command_id: UUID, campaign_id: str, reason: ReasonCode,
                            detail: str) -> CommandResult:
        """Answer a record the intake cannot hand to a campaign (malformed, mis-keyed, mis-routed).

        Nothing about the campaign is read or changed: the result alone is published.
        """
        result = self._result_for(str(command_id), campaign_id, Outcome.REFUSED, reason, detail, None)
        await self.sink.command_result(result)
        return result

    async def on_notification(self, note: Notification) -> None:
        """A hint from the notification channel. Campaign bodies are kept: they are observations."""
        if note.campaign is not None:
            if note.campaign.id in self._book or note.campaign.id in self._inbox:
                self._latest[note.campaign.id] = note.campaign
                self._queue.hint(note.campaign.id)
        elif note.contact_list_id is not None:
            self._lists.pop(note.contact_list_id, None)  # what we read of it is stale now
            for campaign_id in self._list_waiters.pop(note.contact_list_id, set()):
                pending = self._pending.get(campaign_id)
                if pending is not None:
                    pending.poked = True
                self._queue.hint(campaign_id)

    async def on_notifications_state(self, up: bool) -> None:
        """The channel went down (every tracked campaign polls on backoff) or came back up."""
        if up == self._notifications_up:
            return
        self._notifications_up = up
        now = self.clock.now()
        for campaign_id, tracking in self._tracking.items():
            if up:
                tracking.next_poll = now + self._safety_delay()
            else:
                tracking.backoff = self._schedule.backoff(self.clock.monotonic())
                tracking.next_poll = now + (tracking.backoff.next_delay() or 0.0)
            self._queue.hint(campaign_id)

    # --- the look at one campaign --------------------------------------------------------------

    async def _reconcile(self, campaign_id: str) -> None:
        if self._suspended or not self._owns(campaign_id) or campaign_id in self._leaving:
            return  # suspended for a rebalance, or handed over: the new owner looks after it
        await self._flush(campaign_id)
        campaign = self._book.get(campaign_id)
        if campaign is not None:
            await self._apply_latest(campaign)
        inbox = self._inbox.get(campaign_id)
        while inbox:
            item, future = inbox[0]
            if isinstance(item, CommandResult):
                inbox.popleft()
                await self._publish(item, future)  # refused on arrival: nothing read, nothing touched
                continue
            if campaign is None:
                # A platform error here leaves the command queued: the look is retried with backoff.
                campaign = await self._discover_for_command(campaign_id)
                if campaign is None:
                    await self._refuse_unknown(campaign_id, inbox)
                    return
                await self._apply_latest(campaign)
            inbox.popleft()
            try:
                await self._intake(campaign, item, future)
            except Exception as exc:
                # This command alone fails: its future carries the error to the intake, which
                # answers (or redelivers) that record; the commands behind it go on.
                _log.exception("campaign %s: command %s could not be handled", campaign_id, item.command.id)
                if not future.done():
                    future.set_exception(exc)
        if campaign is None:
            return
        await self._release_scheduled(campaign)
        pending = self._pending.get(campaign_id)
        if pending is not None:
            await self._advance(campaign, pending)
        tracking = self._tracking.get(campaign_id)
        if tracking is not None:
            await self._follow(campaign, tracking)
        self._plan(campaign)

    async def _apply_latest(self, campaign: Campaign) -> None:
        latest = self._latest.pop(campaign.id, None)
        if latest is None:
            return
        change = await self._observe(campaign, latest, Cause.NOTIFICATION)
        if change is not None and change.anomaly is not None:
            # A notification that skips states or contradicts the table is confirmed by one read
            # before the model rests on it: a dropped, reordered or forged message must not stick
            # on a campaign nothing else would read again.
            await self._observe(campaign, await self.platform.get_campaign(campaign.id), Cause.RECONCILE)

    async def _release_scheduled(self, campaign: Campaign) -> None:
        """Commands whose `notBefore` has come go through intake now: the state gate applies *now*."""
        waiting = self._scheduled.get(campaign.id)
        if not waiting:
            return
        now = self.clock.now()
        due = [c for c in waiting if held_until(c, now) is None]
        if not due:
            return
        self._scheduled[campaign.id] = [c for c in waiting if c not in due]
        for command in due:
            await self._intake(campaign, _Admitted(command, None), None, released=True)
        if not self._scheduled[campaign.id]:
            del self._scheduled[campaign.id]
            await self.sink.state_saved(self.snapshot(campaign))

    async def _refuse_unknown(self, campaign_id: str,
                              inbox: deque[tuple[_Admitted | CommandResult, asyncio.Future[CommandResult]]]) -> None:
        while inbox:
            item, future = inbox.popleft()
            if isinstance(item, CommandResult):
                await self._publish(item, future)
            else:
                await self._publish(self._result(item.command, Outcome.REFUSED, ReasonCode.UNKNOWN_CAMPAIGN,
                                                 "the platform has no such campaign", None), future)
        self._inbox.pop(campaign_id, None)

    async def _discover_for_command(self, campaign_id: str) -> Campaign | None:
        try:
            snapshot = await self.platform.get_campaign(campaign_id)
        except PlatformNotFound:
            return None
        campaign = await self._discover(snapshot, Cause.RECONCILE)
        if self.notifications is not None:
            await self.notifications.subscribe_campaigns([campaign.id])
            if campaign.contact_list_id:
                await self.notifications.subscribe_contact_lists([campaign.contact_list_id])
        return campaign

    async def _discover(self, snapshot: CampaignSnapshot, cause: Cause) -> Campaign:
        state = snapshot.state or CampaignState.STOPPED
        campaign, change = self.machine.adopt(
            snapshot.id, state, snapshot.dialer_type, at=self.clock.now(), cause=cause,
            dialer_id=snapshot.dialer_id, contact_list_id=snapshot.contact_list_id,
            platform_status=snapshot.platform_status,
        )
        self._book[campaign.id] = campaign
        await self._emit(campaign, change)
        if campaign.in_flight:
            self._track(campaign, None, None, self.clock.now())
        return campaign

    # --- observations --------------------------------------------------------------------------

    async def _observe(self, campaign: Campaign, snapshot: CampaignSnapshot, cause: Cause) -> StateChange | None:
        """Adopt what the platform says. An unmappable status is recorded, never guessed at.

        Which dialer and contact list a campaign uses is taken from the platform's own record (a
        read), never from a notification body: the policy's dialer grants and the dialer queue rest
        on it.
        """
        self._observed_at[campaign.id] = self.clock.monotonic()
        if cause is not Cause.NOTIFICATION:
            campaign.dialer_id = snapshot.dialer_id or campaign.dialer_id
            campaign.contact_list_id = snapshot.contact_list_id or campaign.contact_list_id
        if snapshot.state is None:
            campaign.platform_status = snapshot.platform_status
            _log.warning("campaign %s: unknown platform status %r recorded, state kept",
                         campaign.id, snapshot.platform_status)
            return None
        pending = self._pending.get(campaign.id)
        if pending is not None and pending.sent and snapshot.state is not campaign.current:
            # The POST whose outcome was unknown was executed: follow it from here, never send it again.
            await self._fire(campaign, pending, None)
        errors = [dict(e) for e in snapshot.errors] if snapshot.state is CampaignState.FAILED else None
        change = self.machine.observe(campaign, snapshot.state, cause=cause, at=self.clock.now(),
                                      platform_status=snapshot.platform_status, errors=errors or None)
        if change is None:
            return None
        tracking = self._tracking.get(campaign.id)
        if not campaign.in_flight and tracking is not None:
            await self._emit(campaign, change, self._settle(campaign, tracking, change))
            return change
        await self._emit(campaign, change)
        if campaign.in_flight and tracking is None:
            self._track(campaign, change.command_id, change.action, self.clock.now())
        return change

    def _settle(self, campaign: Campaign, tracking: _Tracking, change: StateChange) -> tuple[CommandResult, ...]:
        """A transition reached a terminal state: free its dialer slot; the command's result, if any,
        goes out with the event that settles it (never one without the other)."""
        del self._tracking[campaign.id]
        self._free_slot(campaign, tracking)
        if tracking.command_id is None:
            return ()
        reached = change.to_state
        target = _TARGET.get(tracking.action) if tracking.action else None
        if reached is target:
            outcome, reason, message = Outcome.COMPLETED, None, f"{campaign.id} is {reached}"
        else:
            outcome = Outcome.FAILED
            reason = change.reason or ReasonCode.TRANSITION_FAILED
            message = f"transition ended in {reached}, not {target}"
            if change.errors:
                message += ": " + "; ".join(_error_text(e) for e in change.errors)
        return (self._result_for(tracking.command_id, campaign.id, outcome, reason, message, reached),)

    # --- commands ------------------------------------------------------------------------------

    async def _intake(self, campaign: Campaign, admitted: _Admitted,
                      future: asyncio.Future[CommandResult] | None, *, released: bool = False) -> None:
        """Gate an admitted command. Every answer is durable together with the campaign's record, whose
        replay memory then holds the command's id (a restart or a new owner refuses it again)."""
        command = admitted.command
        command_id = str(command.id)
        if not released:
            self._note_taken(campaign, command, admitted.origin)
            if self.authority is not None:
                verdict = self.authority.authorise(command, dialer_id=campaign.dialer_id)
                if not verdict.allowed:
                    assert verdict.reason is not None
                    self.auth_refusals[verdict.reason] += 1
                    await self._save(campaign, self._result(command, Outcome.REFUSED, verdict.reason, verdict.detail,
                                                            campaign.current), future)
                    return
            now = self.clock.now()
            not_before = held_until(command, now)
            if not_before is not None:
                await self._schedule_command(campaign, command, not_before, now, future)
                return
        now = self.clock.now()
        if command.action is Action.RESET:
            await self._reset(campaign, command, future)
            return
        decision = self.machine.command(campaign, command.action, at=now, command_id=command_id,
                                        expected_state=command.expected_state, dry_run=True)
        if not decision.accepted:
            outcome = Outcome.COMPLETED if decision.reason is ReasonCode.ALREADY_IN_STATE else Outcome.REFUSED
            await self._save(campaign, self._result(command, outcome, decision.reason, decision.message,
                                                    decision.state, legal=decision.legal), future)
            return
        self.machine.hold(campaign, command_id)
        self._pending[campaign.id] = _Pending(command)
        try:
            # A restart must find the held command: it is durable before (and with) its ACCEPTED.
            await self._save(campaign, self._result(command, Outcome.ACCEPTED, None,
                                                    f"{command.action} accepted; pre-flight next", campaign.current),
                             future)
        except BaseException:
            # Not durable, so not accepted: nothing may act on it (the intake answers the record).
            self._pending.pop(campaign.id, None)
            self.machine.unhold(campaign, command_id)
            raise

    async def _schedule_command(self, campaign: Campaign, command: Command, not_before: float, now: float,
                                future: asyncio.Future[CommandResult] | None) -> None:
        waiting = self._scheduled.setdefault(campaign.id, [])
        if not_before - now > self.config.not_before_horizon:
            result = self._result(command, Outcome.REFUSED, ReasonCode.NOT_BEFORE_TOO_FAR,
                                  f"notBefore {rfc3339(not_before)} is more than "
                                  f"{self.config.not_before_horizon:g} s ahead", campaign.current)
        elif len(waiting) >= self.config.max_scheduled:
            result = self._result(command, Outcome.REFUSED, ReasonCode.TOO_MANY_WAITING,
                                  f"{len(waiting)} commands already wait for their notBefore on this campaign "
                                  f"(at most {self.config.max_scheduled})", campaign.current)
        else:
            waiting.append(command)
            result = self._result(command, Outcome.DEFERRED, ReasonCode.SCHEDULED, f"held until {rfc3339(not_before)}",
                                  campaign.current, next_attempt=not_before)
        if not waiting:
            del self._scheduled[campaign.id]
        try:
            await self._save(campaign, result, future)
        except BaseException:
            if command in waiting:
                waiting.remove(command)
            raise

    def _note_taken(self, campaign: Campaign, command: Command, origin: str | None) -> None:
        """Put the command's id into the campaign's replay memory (durable with its first answer),
        dropping ids past the freshness window; beyond the per-campaign bound the oldest goes and
        its issuedAt becomes the horizon at or before which nothing can be proven new (fail closed)."""
        recent = campaign.recent
        recent[str(command.id)] = (command.issued_at.timestamp(), origin)
        cutoff = self._auth_now() - self._replay_window()
        for expired in [i for i, (issued, _) in recent.items() if issued < cutoff]:
            del recent[expired]
        while len(recent) > self.config.replay_memory:
            oldest = min(recent, key=lambda i: recent[i][0])
            issued = recent.pop(oldest)[0]
            campaign.replay_horizon = max(campaign.replay_horizon or issued, issued)

    def _replay_window(self) -> float:
        return self.authority.max_age_s if self.authority is not None else self.config.replay_window

    async def _reset(self, campaign: Campaign, command: Command,
                     future: asyncio.Future[CommandResult] | None) -> None:
        """Leave FAILED for the state the platform reports, read now: never for one it has not reported.

        A campaign no longer FAILED (an observation cleared it, as when the runbook's "fix it on the
        platform, then reset" is followed) makes the reset an idempotent success.
        """
        command_id = str(command.id)
        check = self.machine.command(campaign, Action.RESET, at=self.clock.now(), command_id=command_id,
                                     expected_state=command.expected_state, dry_run=True)
        if not check.accepted and check.reason is not ReasonCode.ILLEGAL_TRANSITION:
            outcome = Outcome.COMPLETED if check.reason is ReasonCode.ALREADY_IN_STATE else Outcome.REFUSED
            message = (f"campaign is {check.state}, not FAILED: nothing to reset"
                       if check.reason is ReasonCode.ALREADY_IN_STATE else check.message)
            await self._save(campaign, self._result(command, outcome, check.reason, message, check.state,
                                                    legal=check.legal), future)
            return
        # The platform's word first: the reset's result then rides with its event (a kill between
        # the two would otherwise leave a reset done and, redelivered, refused as illegal).
        try:
            snapshot = await self.platform.get_campaign(campaign.id)
        except PlatformError as exc:
            await self._save(campaign, self._result(command, Outcome.FAILED, ReasonCode.PLATFORM_ERROR,
                                                    f"the campaign could not be read ({type(exc).__name__}); "
                                                    "nothing reset", campaign.current), future)
            return
        reported = snapshot.state
        if reported is None or reported is CampaignState.FAILED:
            said = snapshot.platform_status if reported is None else "FAILED"
            await self._observe(campaign, snapshot, Cause.RECONCILE)
            await self._save(campaign, self._result(
                command, Outcome.FAILED, ReasonCode.TRANSITION_FAILED,
                f"the platform still reports {said}: fix the campaign on the platform, then reset (runbook)",
                campaign.current), future)
            return
        campaign.dialer_id = snapshot.dialer_id or campaign.dialer_id
        campaign.contact_list_id = snapshot.contact_list_id or campaign.contact_list_id
        self._observed_at[campaign.id] = self.clock.monotonic()
        decision = self.machine.command(campaign, Action.RESET, at=self.clock.now(), command_id=command_id,
                                        expected_state=command.expected_state, reported=reported)
        assert decision.accepted and decision.change is not None, decision
        decision.change.platform_status = snapshot.platform_status
        campaign.platform_status = snapshot.platform_status
        result = self._result(command, Outcome.COMPLETED, None, f"reset: the platform reports {reported}", reported)
        await self._emit(campaign, decision.change, (result,))
        _answer(future, result)
        if campaign.in_flight:  # the platform is itself in a transition: followed like any observed one
            self._track(campaign, None, None, self.clock.now())

    async def _advance(self, campaign: Campaign, pending: _Pending) -> None:
        now = self.clock.now()
        if pending.stage == "preflight":
            if not pending.poked and pending.next_check is not None and now < pending.next_check:
                return
            pending.poked = False
            if await self._preflight(campaign, pending, now, fresh_for=0.0):
                pending.stage, pending.next_check = "queued", None
                pending.slot = campaign.dialer_id or campaign.id  # the slot is given back where it was taken
                pending.gate_task = asyncio.create_task(
                    self._wait_for_slot(campaign, pending), name=f"dialer-slot:{campaign.id}")
            return
        if pending.stage == "granted":
            if not pending.sent and pending.next_check is not None and now < pending.next_check:
                return  # a POST answered 429 waits for the platform's Retry-After
            await self._send(campaign, pending)

    async def _preflight(self, campaign: Campaign, pending: _Pending, now: float, *, fresh_for: float) -> bool:
        """Judge the contact list and the dialer's load on facts at most `fresh_for` old (0: read now;
        the dialer's load may be shared for `load_ttl` among campaigns on one dialer). True: go on.
        Otherwise the command is deferred (its DEFERRED published when the reason changes) or let go."""
        command = pending.command
        contact_list = None
        if campaign.contact_list_id:
            contact_list = await self._contact_list(campaign.contact_list_id, fresh_for)
        load = None
        if command.priority is Priority.STANDARD and campaign.dialer_id:
            load = await self._dialer_load(campaign, min(fresh_for, self.config.load_ttl) if fresh_for
                                           else self.config.load_ttl)
        decision = preflight(contact_list=contact_list, load=load, priority=command.priority, now=now,
                             deferred_at=pending.deferred_at, policy=self.config.preflight)
        if decision.verdict is GateVerdict.PROCEED:
            return True
        if decision.verdict is GateVerdict.REFUSE:
            await self._drop_pending(campaign, pending, self._result(command, Outcome.REFUSED, decision.reason,
                                                                     decision.detail, campaign.current))
            return False
        if pending.deferred_at is None:
            pending.deferred_at = now
        pending.next_check = decision.retry_at
        if decision.wait_for is WaitFor.CONTACT_LIST and decision.wait_id:
            self._list_waiters.setdefault(decision.wait_id, set()).add(campaign.id)
        if decision.reason is not pending.deferral:
            pending.deferral = decision.reason
            await self._publish(self._result(command, Outcome.DEFERRED, decision.reason, decision.detail,
                                             campaign.current, next_attempt=decision.retry_at))
        return False

    async def _contact_list(self, contact_list_id: str, max_age: float) -> ContactListSnapshot:
        cached = self._lists.get(contact_list_id)
        now = self.clock.monotonic()
        if cached is not None and max_age > 0 and now - cached[0] <= max_age:
            return cached[1]
        snapshot = await self.platform.get_contact_list(contact_list_id)
        self._lists[contact_list_id] = (self.clock.monotonic(), snapshot)
        return snapshot

    async def _dialer_load(self, campaign: Campaign, max_age: float) -> DialerLoad:
        assert campaign.dialer_id is not None
        cached = self._loads.get(campaign.dialer_id)
        now = self.clock.monotonic()
        if cached is not None and now - cached[0] <= max_age:
            return cached[1]
        load = await self.platform.get_dialer_load(campaign.dialer_id, campaign.id)
        self._loads[campaign.dialer_id] = (self.clock.monotonic(), load)
        return load

    async def _wait_for_slot(self, campaign: Campaign, pending: _Pending) -> None:
        assert pending.slot is not None
        try:
            await self._gate.acquire(pending.slot, campaign.id, pending.command.priority)
        except GateClosed:
            return
        pending.stage = "granted"
        self._queue.hint(campaign.id)

    def _give_back(self, campaign: Campaign, pending: _Pending) -> None:
        """The held command's dialer slot (or its place in the queue) goes back to where it was taken."""
        if pending.gate_task is not None and not pending.gate_task.done():
            pending.gate_task.cancel()
        elif pending.slot is not None and pending.stage == "granted":
            self._gate.release(pending.slot, campaign.id)

    async def _send(self, campaign: Campaign, pending: _Pending) -> None:
        """One POST, or (after an unknown outcome) only reads until the truth is known.

        Right before the POST the campaign is read if its view is older than `fresh_for`, and its
        pre-flight is judged again on facts at most `preflight_fresh_for` old: a list that locked or
        a dialer that filled up while the command queued defers it again, its slot given back.
        """
        command = pending.command
        if pending.sent:
            await self._resolve(campaign, pending, await self.platform.get_campaign(campaign.id), None)
            return
        if self._suspended or not self._owns(campaign.id) or campaign.id in self._leaving:
            return  # fenced: this instance may no longer own the campaign
        seen = self._observed_at.get(campaign.id)
        if seen is None or self.clock.monotonic() - seen > self.config.fresh_for:
            await self._observe(campaign, await self.platform.get_campaign(campaign.id), Cause.RECONCILE)
            if self._pending.get(campaign.id) is not pending:
                return
        check = self.machine.command(campaign, command.action, at=self.clock.now(), command_id=str(command.id),
                                     dry_run=True)
        if not check.accepted:  # an observation moved the campaign while the command queued
            await self._drop_pending(campaign, pending, self._result(command, Outcome.REFUSED, check.reason,
                                                                     check.message, check.state, legal=check.legal))
            return
        if not await self._preflight(campaign, pending, self.clock.now(), fresh_for=self.config.preflight_fresh_for):
            if self._pending.get(campaign.id) is pending:  # deferred again: back to pre-flight, slot given back
                self._give_back(campaign, pending)
                pending.stage, pending.gate_task, pending.slot = "preflight", None, None
            return
        pending.sent = True
        # Durable before the request leaves: a process killed after the POST must find, on restart,
        # that it may have gone out, and only read, never send it again or refuse what was executed.
        await self.sink.state_saved(self.snapshot(campaign))
        assert pending.slot is not None
        try:
            receipt = await self.platform.send_action(campaign.id, command.action)
        except PlatformRateLimited as exc:
            await self._rate_limited(campaign, pending, exc)
            return
        except PlatformError as exc:
            self._gate.sent(pending.slot, campaign.id)
            _log.warning("campaign %s: %s request failed (%s); reading the campaign before deciding",
                         campaign.id, command.action, type(exc).__name__)
            await self._resolve(campaign, pending, await self.platform.get_campaign(campaign.id), exc)
            return
        self._gate.sent(pending.slot, campaign.id)
        request = {
            "method": "POST", "path": f"campaigns/{campaign.id}/{command.action.value}",
            "status": receipt.status, "sentAt": rfc3339(receipt.sent_at),
            "answeredAt": rfc3339(receipt.answered_at),
        }
        await self._fire(campaign, pending, request)

    async def _rate_limited(self, campaign: Campaign, pending: _Pending, exc: PlatformRateLimited) -> None:
        """A 429 means the platform did nothing: the same POST goes again after its Retry-After,
        keeping the command's slot, up to `rate_limited_retries` times."""
        pending.rate_limited += 1
        if pending.rate_limited > self.config.rate_limited_retries:
            await self._resolve(campaign, pending, await self.platform.get_campaign(campaign.id), exc)
            return
        pending.sent = False
        delay = max(exc.retry_after or 0.0, self.config.poll.initial)
        pending.next_check = self.clock.now() + self.config.poll.jittered(delay, self._rng)
        _log.warning("campaign %s: %s request answered 429 (not executed); sent again in %.1f s (%d of %d)",
                     campaign.id, pending.command.action, pending.next_check - self.clock.now(),
                     pending.rate_limited, self.config.rate_limited_retries)
        await self.sink.state_saved(self.snapshot(campaign))

    async def _resolve(self, campaign: Campaign, pending: _Pending, snapshot: CampaignSnapshot,
                       failure: PlatformError | None) -> None:
        """The outcome of a POST is unknown (it failed, or the process died before the answer): the
        platform's state decides. Moved: it was executed, and `_observe` follows it. Not moved: FAILED."""
        await self._observe(campaign, snapshot, Cause.RECONCILE)
        if self._pending.get(campaign.id) is not pending:
            return
        command = pending.command
        reason = ReasonCode.PLATFORM_CONFLICT if isinstance(failure, PlatformConflict) else ReasonCode.PLATFORM_ERROR
        await self._drop_pending(campaign, pending, self._result(
            command, Outcome.FAILED, reason,
            f"the platform did not take the {command.action} request "
            f"({type(failure).__name__ if failure else 'no answer'}); campaign still {campaign.current}",
            campaign.current))

    async def _fire(self, campaign: Campaign, pending: _Pending, request: dict[str, Any] | None) -> None:
        command = pending.command
        decision = self.machine.command(campaign, command.action, at=self.clock.now(),
                                        command_id=str(command.id), request=request)
        del self._pending[campaign.id]
        assert decision.accepted and decision.change is not None, decision
        await self._emit(campaign, decision.change)
        # A command restored after a restart was granted its dialer slot by the dead process: its
        # transition claims one now, ahead of anything queued.
        self._track(campaign, str(command.id), command.action, self.clock.now(),
                    holds_slot=pending.gate_task is not None, slot=pending.slot)

    async def _drop_pending(self, campaign: Campaign, pending: _Pending, result: CommandResult) -> None:
        """Let go of a held command; the record without it and the command's result are durable together."""
        self._pending.pop(campaign.id, None)
        self.machine.unhold(campaign, str(pending.command.id))
        self._give_back(campaign, pending)
        await self._save(campaign, result)

    async def _save(self, campaign: Campaign, result: CommandResult,
                    future: asyncio.Future[CommandResult] | None = None) -> None:
        """The campaign's record and the result it decides, durable together; then the waiting intake."""
        await self.sink.state_saved(self.snapshot(campaign), (result,))
        _answer(future, result)

    # --- tracking ------------------------------------------------------------------------------

    def _track(self, campaign: Campaign, command_id: str | None, action: Action | None, now: float, *,
               holds_slot: bool = False, slot: str | None = None) -> None:
        backoff = self._schedule.backoff(self.clock.monotonic())
        delay = self._safety_delay() if self._notifications_up else (backoff.next_delay() or 0.0)
        tracking = _Tracking(command_id, action, backoff, now + delay, holds_slot=holds_slot, slot=slot)
        self._tracking[campaign.id] = tracking
        if not holds_slot:
            # A transition we did not start here (restart, takeover, someone else's command) still
            # occupies its dialer: claim a slot for it, ahead of anything queued.
            tracking.slot_task = asyncio.create_task(self._claim_slot(campaign, tracking),
                                                     name=f"dialer-claim:{campaign.id}")

    async def _claim_slot(self, campaign: Campaign, tracking: _Tracking) -> None:
        # Bound to the dialer the campaign is on now: given back there even if a read moves it.
        tracking.slot = campaign.dialer_id or campaign.id
        try:
            await self._gate.acquire(tracking.slot, campaign.id, Priority.HIGH)
        except GateClosed:
            return
        if self._tracking.get(campaign.id) is tracking:
            tracking.holds_slot = True
        else:
            self._gate.release(tracking.slot, campaign.id)

    def _free_slot(self, campaign: Campaign, tracking: _Tracking) -> None:
        if tracking.slot_task is not None and not tracking.slot_task.done():
            tracking.slot_task.cancel()
        if tracking.holds_slot and tracking.slot is not None:
            self._gate.release(tracking.slot, campaign.id)

    async def _follow(self, campaign: Campaign, tracking: _Tracking) -> None:
        now = self.clock.now()
        deadline_due = campaign.deadline is not None and now >= campaign.deadline
        if now < tracking.next_poll and not deadline_due:
            return
        snapshot = await self.platform.get_campaign(campaign.id)
        await self._observe(campaign, snapshot, Cause.POLL)
        if self._tracking.get(campaign.id) is not tracking:
            return  # it settled
        delay = self._safety_delay() if self._notifications_up else tracking.backoff.next_delay()
        if delay is None:  # the guide's 60 tries are spent: judge it now rather than poll forever
            deadline_due = True
            tracking.backoff = self._schedule.backoff(self.clock.monotonic())
            delay = tracking.backoff.next_delay() or self.config.poll.cap
        tracking.next_poll = self.clock.now() + delay
        if deadline_due:
            await self._judge(campaign, tracking)

    async def _judge(self, campaign: Campaign, tracking: _Tracking) -> None:
        """The tolerance window ran out: a lock or compliance block delays, anything else fails."""
        errors = await self.platform.get_errors(campaign.id)
        contact_list: ContactListSnapshot | None = None
        if campaign.contact_list_id:
            contact_list = await self.platform.get_contact_list(campaign.contact_list_id)
        verdict = judge_expiry(errors, contact_list, self.config.preflight)
        now = self.clock.now()
        if verdict.delayed:
            await self._emit(campaign, self.machine.delay(campaign, at=now, detail=verdict.detail))
            return
        change = self.machine.expire(campaign, at=now, errors=verdict.errors)
        await self._emit(campaign, change, self._settle(campaign, tracking, change))

    def _safety_delay(self) -> float:
        # Jittered like every other interval: safety polls of a batch must not line up either.
        return self.config.poll.jittered(self.config.safety_poll, self._rng)

    def _plan(self, campaign: Campaign) -> None:
        """Ask for the next look at the earliest moment this campaign needs one."""
        wake: list[float] = []
        pending = self._pending.get(campaign.id)
        if pending is not None and pending.stage in ("preflight", "granted") and pending.next_check is not None:
            wake.append(pending.next_check)
        tracking = self._tracking.get(campaign.id)
        if tracking is not None:
            wake.append(tracking.next_poll)
            if campaign.deadline is not None:
                wake.append(campaign.deadline)
        for command in self._scheduled.get(campaign.id, ()):
            if command.not_before is not None:
                wake.append(command.not_before.timestamp())
        if wake:
            self._queue.schedule(campaign.id, delay=max(0.0, min(wake) - self.clock.now()))

    # --- output --------------------------------------------------------------------------------

    async def _emit(self, campaign: Campaign, change: StateChange, results: tuple[CommandResult, ...] = ()) -> None:
        """Chain the event to the campaign's previous one, then publish in sequence order.

        The event is final (hash included) before the first attempt, so an event the sink could
        not take is retried on the next look byte for byte, never rebuilt.
        """
        event = campaign.chain(change)
        self._unsent.setdefault(campaign.id, deque()).append((event, results))
        await self._flush(campaign.id)

    async def _flush(self, campaign_id: str) -> None:
        queue = self._unsent.get(campaign_id)
        campaign = self._book.get(campaign_id)
        if queue and campaign is not None and not self._owns(campaign_id):
            _log.warning("campaign %s: %d event(s) held back: no longer the owner", campaign_id, len(queue))
            return
        while queue and campaign is not None:
            event, results = queue[0]
            await self.sink.state_changed(event, self.snapshot(campaign), results)
            queue.popleft()

    async def _publish(self, result: CommandResult, future: asyncio.Future[CommandResult] | None = None) -> None:
        await self.sink.command_result(result)
        _answer(future, result)

    def _remember(self, command_id: str, origin: str | None,
                  future: asyncio.Future[CommandResult] | None = None) -> None:
        self._seen[command_id] = (origin, future)
        self._seen.move_to_end(command_id)
        while len(self._seen) > self.config.remembered_commands:
            self._seen.popitem(last=False)

    def _result(self, command: Command, outcome: Outcome, reason: ReasonCode | None, message: str,
                state: CampaignState | None, *, legal: tuple[Action, ...] = (),
                next_attempt: float | None = None) -> CommandResult:
        return self._result_for(str(command.id), command.campaign_id, outcome, reason, message, state,
                                legal=legal, next_attempt=next_attempt)

    def _result_for(self, command_id: str, campaign_id: str, outcome: Outcome, reason: ReasonCode | None,
                    message: str, state: CampaignState | None, *, legal: tuple[Action, ...] = (),
                    next_attempt: float | None = None) -> CommandResult:
        return CommandResult(
            command_id=UUID(command_id), campaign_id=campaign_id, outcome=outcome, reason=reason,
            message=message, state=state,
            legal_actions=list(legal) if reason is ReasonCode.ILLEGAL_TRANSITION else None,
            next_attempt_at=datetime.fromtimestamp(next_attempt, UTC) if next_attempt is not None else None,
            at=datetime.fromtimestamp(self.clock.now(), UTC),
        )


def _everything(_: str) -> bool:
    return True


def _answer(future: asyncio.Future[CommandResult] | None, result: CommandResult) -> None:
    """Hand a waiting intake its command's first result: the command's offset may then be committed."""
    if future is not None and not future.done():
        future.set_result(result)


def _error_text(error: dict[str, str]) -> str:
    return error.get("code") or error.get("error") or error.get("message") or "error"



def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception as one bounded line: a hostile record's validation error can run to megabytes."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text)} characters in all]"
