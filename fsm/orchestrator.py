"""The orchestrator: commands in, platform driven, state changes out. Level-triggered, per campaign.

Everything that happens to a campaign is a *hint* that it needs a look: a command arriving, a
notification, a poll coming due, a tolerance window running out, a dialer slot freeing up, its
contact list becoming ready. Hints go into a keyed work queue (one worker per campaign at a time);
the worker (`_reconcile`) then looks at the whole campaign (its `CampaignRecord`) and does what its
situation calls for:

1. apply the newest notification payload (an observation: the platform is the truth; `tracking`);
2. gate new commands: refused at arrival (`admission`), or through the machine: a no-op, refused,
   or accepted and *held* (`intake`);
3. move a held command on: pre-flight, then the dialer's queue, then one POST (`dispatch`);
4. follow a transition in flight: notifications, polls, the tolerance verdict (`tracking`);
5. schedule its next look.

Taking campaigns on and giving them away is `ownership`; what the parts share is `core`. A POST is
sent once. If it fails in any way the campaign is read before anything else is decided, and a request
the platform executed is never sent again. The model enters a transitional state only once the
platform accepted the request (202), and leaves it only on an observation or a timeout verdict.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from schemas.commands import Command, CommandResult
from schemas.types import Outcome, ReasonCode

from . import log_context
from .authorization import CommandAuthority
from .backoff import PollSchedule
from .campaign_cap import CapLine
from .core import Campaigns, OrchestratorConfig, OrchestratorStats
from .dialer_queue import DialerGate
from .dispatch import Dispatch
from .intake import Intake
from .machine import Campaign, CampaignMachine
from .ownership import Ownership
from .ports import Clock, EventSink, Notification, Notifications, Platform
from .record import CampaignRecord
from .tracking import Tracker
from .work_queue import WorkQueue

__all__ = ["Orchestrator", "OrchestratorConfig", "OrchestratorStats"]

_log = logging.getLogger(__name__)


class Orchestrator(Ownership, Intake, Dispatch, Tracker):
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
        stamp_clock: Callable[[], float] | None = None,
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
        # Where `clock` is scaled (the simulator), events and results are stamped on the wall clock
        # and carry the scaled instant as `platformTime`; None: stamped on `clock` alone.
        self._stamp_now = stamp_clock
        self._rng = random.Random(self.config.seed)
        self._schedule = PollSchedule(self.config.poll, self._rng)
        self._gate = DialerGate(clock, self.config.dialer)
        self._queue = WorkQueue(self._reconcile, clock=clock, concurrency=self.config.concurrency)
        self._records: dict[str, CampaignRecord] = {}
        self._campaigns = Campaigns(self._records)
        self._seen = OrderedDict()
        self._answering = set()
        self._refused = OrderedDict()
        self._list_waiters = {}
        self._loads = {}
        self._lists = {}
        self._cap_line = CapLine()
        self._cap_read = None
        self._cap_lock = asyncio.Lock()
        # Refusals of authentication, replay and policy (metrics); restored records set aside.
        self.auth_refusals = Counter()
        self.quarantined = Counter()
        # Scale-out: this instance drives only the campaigns it owns (its partitions of the commands
        # topic). Checked before every look, every POST and every publish (fencing a stale owner).
        self._owns = owns or _everything
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
    def campaigns(self) -> Mapping[str, Campaign]:
        return self._campaigns

    @property
    def gate(self) -> DialerGate[str]:
        return self._gate

    def stats(self) -> OrchestratorStats:
        records = self._records.values()
        return OrchestratorStats(len(self._campaigns), sum(1 for r in records if r.tracking is not None),
                                 sum(1 for r in records if r.held is not None), self._notifications_up, self._ready)

    async def start(self, restored: Iterable[dict[str, Any]] = ()) -> None:
        """Single-owner start: acquire every campaign, then take commands."""
        await self.acquire(restored)
        self._ready = True

    def mark_ready(self) -> None:
        """Scale-out start: the first assignment has been acquired; commands may flow."""
        self._ready = True

    async def close(self, *, grace: float = 10.0) -> None:
        """Stop intake, let running looks finish, then stop waiting on the dialers."""
        self._closing = True
        self._ready = False
        await self._queue.close(grace=grace)
        await asyncio.gather(*self._answering, return_exceptions=True)
        await self._gate.close()
        await asyncio.gather(*(r.lease.wait_closed() for r in self._records.values() if r.lease is not None))

    async def __aenter__(self) -> Orchestrator:
        """Entered as built: acquiring campaigns is `start` (one owner) or the ownership hooks'."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def drain(self) -> None:
        """Wait until no campaign has a look running or due now (tests, shutdown)."""
        await self._queue.drain()

    # --- what comes in -------------------------------------------------------------------------

    def submit(self, command: Command, origin: str | None = None) -> asyncio.Future[CommandResult]:
        """Take a command. The future resolves with its first result once that result is durable.

        `origin` names the record that carried it (`topic:partition@offset`; see `fsm/admission.py`
        for redeliveries and replays). The future fails with the exception if handling the command
        failed before any result was durable; the same record delivered again is then judged anew.
        """
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        if self._closing:
            future.cancel()
            return future
        return self._admit(command, origin, future)

    async def refuse_malformed(self, command_id: str, campaign_id: str, detail: str) -> CommandResult:
        """A record on the commands topic that names its command and campaign but does not parse."""
        return await self.refuse_record(command_id, campaign_id, ReasonCode.MALFORMED_COMMAND, detail)

    async def refuse_record(self, command_id: str, campaign_id: str, reason: ReasonCode,
                            detail: str) -> CommandResult:
        """Answer a record the intake cannot hand to a campaign (malformed, mis-keyed, mis-routed).

        Nothing about the campaign is read or changed: the result alone is published.
        """
        result = self._result_for(command_id, campaign_id, Outcome.REFUSED, reason, detail, None)
        await self.sink.command_result(result)
        return result

    async def on_notification(self, note: Notification) -> None:
        """A hint from the notification channel. Campaign bodies are kept: they are observations."""
        if note.campaign is not None:
            record = self._records.get(note.campaign.id)
            if record is not None:
                record.latest = note.campaign
                self._queue.hint(record.id)
        elif note.contact_list_id is not None:
            self._lists.pop(note.contact_list_id, None)  # what we read of it is stale now
            for campaign_id in self._list_waiters.pop(note.contact_list_id, set()):
                record = self._records.get(campaign_id)
                if record is not None and record.held is not None:
                    record.held = record.held.poke()
                self._queue.hint(campaign_id)

    # --- the look at one campaign --------------------------------------------------------------

    async def _reconcile(self, campaign_id: str) -> None:
        record = self._records.get(campaign_id)
        if record is None or self._fenced(record):
            return  # suspended for a rebalance, or handed over: the new owner looks after it
        with log_context.bound(campaign_id=campaign_id):
            await self._look(record)

    async def _look(self, record: CampaignRecord) -> None:
        await self._flush(record)
        await self._apply_latest(record)
        while record.inbox:
            item, future = record.inbox[0]
            if record.campaign is None:
                # A platform error here leaves the command queued: the look is retried with backoff.
                if not await self._discover_for_command(record):
                    await self._refuse_unknown(record)
                    break
                await self._apply_latest(record)
            record.inbox.popleft()
            with log_context.bound(command_id=str(item.command.id)):
                try:
                    await self._intake(record, item, future)
                except Exception as exc:
                    # This command alone fails: its future carries the error to the intake, which
                    # answers (or redelivers) that record; the commands behind it go on.
                    _log.exception("campaign %s: command %s could not be handled", record.id, item.command.id)
                    if not future.done():
                        future.set_exception(exc)
        if record.campaign is None:
            if not record.inbox and self._records.get(record.id) is record:
                del self._records[record.id]  # only refusals ever named it: nothing to keep
            return
        try:
            await self._confirm(record)
            await self._release_scheduled(record)
            await self._advance(record)
            await self._follow(record)
        finally:
            await self._pay(record)  # an accepted command that waits has its ACCEPTED durable first
        self._plan(record)

    def _plan(self, record: CampaignRecord) -> None:
        """Ask for the next look at the earliest moment this campaign needs one."""
        wake: list[float] = []
        if record.held is not None and record.held.next_check is not None:
            wake.append(record.held.next_check)
        if record.tracking is not None:
            wake.append(record.tracking.next_poll)
            if record.campaign is not None and record.campaign.deadline is not None:
                wake.append(record.campaign.deadline)
        if record.confirm_at is not None:
            wake.append(record.confirm_at)
        wake.extend(c.not_before.timestamp() for c in record.scheduled if c.not_before is not None)
        if wake:
            self._queue.schedule(record.id, delay=max(0.0, min(wake) - self.clock.now()))


def _everything(_: str) -> bool:
    return True
