"""What the orchestrator's parts share: its configuration, its state, and its way out.

The orchestrator is composed of one part per concern, each in its own module: admission
(`fsm/admission.py`: authentication, redelivery, replay memory), the state gate for commands
(`fsm/intake.py`), dispatch (`fsm/dispatch.py`: pre-flight, dialer queue, the POST), tracking
(`fsm/tracking.py`: observations, polls, tolerance verdicts) and ownership (`fsm/ownership.py`:
acquire, suspend, release). `Core` declares the state they share (one `CampaignRecord` per
campaign) and the output every part uses: events chained and flushed in order, results published
with the record change that decides them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.base import truncate_text
from schemas.commands import Command, CommandResult, id_key
from schemas.types import Action, CampaignState, Cause, Outcome, ReasonCode

from .authorization import CommandAuthority
from .backoff import Backoff, PollSchedule
from .campaign_cap import CapLine, CapPolicy, OrgRead
from .dialer_queue import DialerGate, DialerPolicy
from .held import HeldCommand
from .machine import Campaign, CampaignMachine, StateChange
from .ports import CampaignSnapshot, Clock, ContactListSnapshot, DialerLoad, EventSink, Notifications, Platform
from .preflight import PreflightPolicy
from .record import CampaignRecord
from .work_queue import WorkQueue

__all__ = ["Campaigns", "Core", "OrchestratorConfig", "OrchestratorStats", "answer", "short"]

_log = logging.getLogger("fsm.orchestrator")  # the parts log as the orchestrator they make up


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    poll: Backoff = field(default_factory=Backoff)
    preflight: PreflightPolicy = field(default_factory=PreflightPolicy)
    dialer: DialerPolicy = field(default_factory=DialerPolicy)
    # The organisation's active-campaign cap (fsm/campaign_cap.py); no cap unless configured.
    cap: CapPolicy = field(default_factory=CapPolicy)
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


class Campaigns(Mapping[str, Campaign]):
    """The campaigns known so far, read through their records (no second map to keep in step)."""

    __slots__ = ("_records",)

    def __init__(self, records: dict[str, CampaignRecord]) -> None:
        self._records = records

    def __getitem__(self, campaign_id: str) -> Campaign:
        campaign = self._records[campaign_id].campaign
        if campaign is None:
            raise KeyError(campaign_id)
        return campaign

    def __iter__(self) -> Iterator[str]:
        return (i for i, r in self._records.items() if r.campaign is not None)

    def __len__(self) -> int:
        return sum(1 for r in self._records.values() if r.campaign is not None)


class Core:
    """The state the orchestrator's parts share, and their common output."""

    machine: CampaignMachine
    platform: Platform
    sink: EventSink
    clock: Clock
    notifications: Notifications | None
    config: OrchestratorConfig
    authority: CommandAuthority | None
    auth_refusals: Counter[ReasonCode]
    quarantined: Counter[str]
    _auth_now: Callable[[], float]
    _stamp_now: Callable[[], float] | None
    _rng: random.Random
    _schedule: PollSchedule
    _gate: DialerGate[str]
    _queue: WorkQueue
    _records: dict[str, CampaignRecord]
    _campaigns: Campaigns  # the models in `_records`
    # Command id (its id_key) -> the record that carried it and, while it is being handled, its future.
    _seen: OrderedDict[str, tuple[str | None, asyncio.Future[CommandResult] | None]]
    _answering: set[asyncio.Task[None]]  # refusals being published
    # origin -> (command id, the refusal's future): a refused record delivered again is answered
    # from here, not refused (and published) a second time. Bounded like `_seen`.
    _refused: OrderedDict[str, tuple[str, asyncio.Future[CommandResult]]]
    _list_waiters: dict[str, set[str]]
    _loads: dict[str, tuple[float, DialerLoad]]
    _lists: dict[str, tuple[float, ContactListSnapshot]]
    _cap_line: CapLine  # this instance's openings waiting for a place under the cap
    _cap_read: OrgRead | None  # the last read of the organisation's active campaigns
    _cap_lock: asyncio.Lock  # one organisation read at a time, shared by every waiting opening
    _owns: Callable[[str], bool]
    _suspended: bool
    _notifications_up: bool
    _ready: bool
    _closing: bool

    # --- provided by the parts ------------------------------------------------------------------

    async def _observe(self, record: CampaignRecord, snapshot: CampaignSnapshot,
                       cause: Cause) -> StateChange | None:
        raise NotImplementedError

    def _track(self, record: CampaignRecord, command_id: str | None, action: Action | None, now: float) -> None:
        raise NotImplementedError

    async def _fire(self, record: CampaignRecord, held: HeldCommand, request: dict[str, Any] | None) -> None:
        raise NotImplementedError

    async def _discover(self, snapshot: CampaignSnapshot, cause: Cause) -> CampaignRecord:
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------------

    def _remember(self, command_id: str, origin: str | None,
                  future: asyncio.Future[CommandResult] | None = None) -> None:
        """Note a taken command's id and its record's origin (redelivery memory, bounded)."""
        command_id = id_key(command_id)
        self._seen[command_id] = (origin, future)
        self._seen.move_to_end(command_id)
        while len(self._seen) > self.config.remembered_commands:
            self._seen.popitem(last=False)

    def _record(self, campaign_id: str) -> CampaignRecord:
        record = self._records.get(campaign_id)
        if record is None:
            record = self._records[campaign_id] = CampaignRecord(campaign_id)
        return record

    def _fenced(self, record: CampaignRecord) -> bool:
        """Suspended for a rebalance, or no longer the owner: act on nothing for this campaign."""
        return self._suspended or record.leaving or not self._owns(record.id)

    async def _emit(self, record: CampaignRecord, change: StateChange,
                    results: tuple[CommandResult, ...] = ()) -> None:
        """Chain the event to the campaign's previous one, then publish in sequence order.

        The event is final (hash included) before the first attempt, so an event the sink could
        not take is retried on the next look byte for byte, never rebuilt.
        """
        assert record.campaign is not None
        record.unsent.append((record.campaign.chain(change, self._wall()), results))
        await self._flush(record)

    async def _flush(self, record: CampaignRecord) -> None:
        if record.unsent and record.campaign is not None and not self._owns(record.id):
            _log.warning("campaign %s: %d event(s) held back: no longer the owner", record.id, len(record.unsent))
            return
        while record.unsent and record.campaign is not None:
            event, results = record.unsent[0]
            owed = record.owed
            await self.sink.state_changed(event, record.store(), _with(owed, results))
            record.unsent.popleft()
            _paid(record, owed)

    async def _save(self, record: CampaignRecord, result: CommandResult,
                    future: asyncio.Future[CommandResult] | None = None) -> None:
        """The campaign's record and the result it decides, durable together; then the waiting intake."""
        owed = record.owed
        await self.sink.state_saved(record.store(), _with(owed, (result,)))
        _paid(record, owed)
        answer(future, result)

    async def _store(self, record: CampaignRecord) -> None:
        """The campaign's record durable (with an ACCEPTED still owed, if any)."""
        owed = record.owed
        await self.sink.state_saved(record.store(), _with(owed, ()))
        _paid(record, owed)

    async def _pay(self, record: CampaignRecord) -> bool:
        """Make an owed ACCEPTED durable on its own (the command waits, something is published for it,
        or another command is judged next). False: not durable, so not accepted: the held command is
        let go and the exception goes to its intake, which answers (or redelivers) that record alone."""
        owed = record.owed
        if owed is None:
            return True
        try:
            await self._store(record)
            return True
        except BaseException as exc:
            record.owed = None
            held = record.held
            if held is not None and held.command_id == str(owed[0].command_id):
                record.held = None
                record.give_back_slot()
                if record.campaign is not None:
                    self.machine.unhold(record.campaign, held.command_id)
            future = owed[1]
            if not isinstance(exc, Exception):  # cancelled: not committed, the record is consumed again
                if future is not None:
                    future.cancel()
                raise
            _log.exception("campaign %s: command %s could not be handled", record.id, owed[0].command_id)
            if future is not None and not future.done():
                future.set_exception(exc)
            return False

    async def _publish(self, result: CommandResult, future: asyncio.Future[CommandResult] | None = None) -> None:
        await self.sink.command_result(result)
        answer(future, result)

    def _result(self, command: Command, outcome: Outcome, reason: ReasonCode | None, message: str,
                state: CampaignState | None, *, legal: tuple[Action, ...] = (),
                next_attempt: float | None = None) -> CommandResult:
        return self._result_for(str(command.id), command.campaign_id, outcome, reason, message, state,
                                legal=legal, next_attempt=next_attempt)

    def _result_for(self, command_id: str, campaign_id: str, outcome: Outcome, reason: ReasonCode | None,
                    message: str, state: CampaignState | None, *, legal: tuple[Action, ...] = (),
                    next_attempt: float | None = None) -> CommandResult:
        return CommandResult(
            command_id=command_id, campaign_id=campaign_id, outcome=outcome, reason=reason,
            message=message, state=state,
            legal_actions=list(legal) if reason is ReasonCode.ILLEGAL_TRANSITION else None,
            next_attempt_at=datetime.fromtimestamp(next_attempt, UTC) if next_attempt is not None else None,
            **self._stamps(),
        )

    def _wall(self) -> float | None:
        return None if self._stamp_now is None else self._stamp_now()

    def _stamps(self) -> dict[str, datetime]:
        """A result's `at` (and, on a scaled clock, its `platformTime`)."""
        now, wall = self.clock.now(), self._wall()
        if wall is None:
            return {"at": datetime.fromtimestamp(now, UTC)}
        return {"at": datetime.fromtimestamp(wall, UTC), "platform_time": datetime.fromtimestamp(now, UTC)}


def answer(future: asyncio.Future[CommandResult] | None, result: CommandResult) -> None:
    """Hand a waiting intake its command's first result: the command's offset may then be committed."""
    if future is not None and not future.done():
        future.set_result(result)


def _with(owed: tuple[CommandResult, asyncio.Future[CommandResult] | None] | None,
          results: tuple[CommandResult, ...]) -> tuple[CommandResult, ...]:
    return results if owed is None else (owed[0], *results)


def _paid(record: CampaignRecord, owed: tuple[CommandResult, asyncio.Future[CommandResult] | None] | None) -> None:
    """The owed ACCEPTED went out with a durable write: its intake may commit the command's offset."""
    if owed is not None and record.owed is owed:
        record.owed = None
        answer(owed[1], owed[0])


def short(exc: BaseException, limit: int = 300) -> str:
    """An exception as one bounded line: a hostile record's validation error can run to megabytes."""
    return truncate_text(" ".join(str(exc).split()), limit)

