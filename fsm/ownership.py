"""Ownership: taking campaigns on (restore, then the platform's truth), pausing, giving them away.

The state topic is writable by more than this service, so a restored record is validated against
its schema, and a held or scheduled command in it is verified again (its signature, and an age
bound) before it may act. What fails is set aside (quarantined: logged and counted), never the
whole assignment: an unreadable record leaves its campaign to be read from the platform.

Decisions, then effects, as in `fsm/intake.py`. The decisions are functions of what they are shown
(stored records, the campaigns known, the ownership predicate, a campaign's record) and change
nothing: `restoring` says what taking campaigns on does with their stored records (`Quarantine`
what fails its checks, `Restore` the rest, `Track` a restored transition in flight, then `Read` the
platform), `taking_over` what one of the platform's campaigns then calls for (`Discover` or
`Observe` it), `leaving` which campaigns a new assignment takes away, `handing_over` what giving
one of them away does (`GiveAway`: events flushed and results answered first, waiting commands left
to the new owner), and `subscribing`/`unsubscribing` what the notification channel is told.
`Ownership` applies them. Each is decided when what it looks at is final (a look still running can
add events to a campaign being let go), and applied before anything can change it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from schemas.base import ContractError
from schemas.commands import Command, CommandResult, id_key
from schemas.state import CampaignStateRecord, StoredCommand
from schemas.types import Action, Cause

from .authorization import CommandAuthority
from .core import Core, short
from .held import HeldCommand, Stage
from .machine import Campaign
from .ports import CampaignSnapshot
from .record import CampaignRecord

__all__ = [
    "Discover", "GiveAway", "Observe", "Ownership", "Part", "Quarantine", "Read", "Restore", "Subscribe", "Track",
    "Trust", "handing_over", "leaving", "restored", "restoring", "subscribing", "taking_over", "unsubscribing",
    "verified",
]

_log = logging.getLogger("fsm.orchestrator")

# A restored held command may have waited in the dialer queue after its pre-flight: this much on top
# of its schedule horizon and deferral limit before it counts as long dead.
_QUEUE_SLACK = 3600.0

# What a quarantine sets aside: a whole record, or its held command, or one of its scheduled ones.
Part = Literal["record", "held", "scheduled"]


@dataclass(frozen=True, slots=True)
class Trust:
    """How a stored command is checked again: the authority's keys (None: none configured, so no
    signature or age is asked for), the epoch second it is judged at, and the oldest it may be."""

    authority: CommandAuthority | None
    now: float = 0.0
    longest: float = 0.0


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Set aside, logged and counted: the part of a campaign's record that failed its checks."""

    what: Part
    campaign_id: str
    detail: str


@dataclass(frozen=True, slots=True)
class Restore:
    """A stored record taken back: the campaign (its replay memory in `recent`), the commands waiting
    for their `notBefore` and the held command that passed their checks."""

    campaign: Campaign
    scheduled: tuple[Command, ...] = ()
    held: HeldCommand | None = None


@dataclass(frozen=True, slots=True)
class Track:
    """A restored transition in flight is followed again, never re-issued."""

    campaign_id: str
    command_id: str | None
    action: Action | None


@dataclass(frozen=True, slots=True)
class Read:
    """The platform's truth, read after the stored records: the campaigns `restored` are observed on
    it, the ones owned and not known yet discovered (`taking_over`)."""

    restored: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Discover:
    """A campaign owned and not known: adopted as the platform reports it."""

    snapshot: CampaignSnapshot


@dataclass(frozen=True, slots=True)
class Observe:
    """A campaign just restored: what the platform reports settles any drift (a `reconcile` event)."""

    snapshot: CampaignSnapshot


@dataclass(frozen=True, slots=True)
class Subscribe:
    """What the notification channel is asked for (or, giving campaigns away, to stop sending)."""

    campaigns: tuple[str, ...]
    contact_lists: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GiveAway:
    """A campaign handed to its new owner once its running look finished.

    Its `events` not yet taken by the sink go out first, with the results they carry (`answered`,
    an ACCEPTED still owed among them), so the new owner reads a `campaign.state` that has them
    (unless this instance was fenced already: then `_flush` holds them back).
    The commands waiting for a look (`redelivered`) are not answered: their intake commits nothing
    and the new owner consumes them again. Its dialer slot, if it holds one (`slot`), is given back.
    """

    campaign_id: str
    events: int = 0
    answered: tuple[CommandResult, ...] = ()
    redelivered: tuple[str, ...] = ()
    slot: bool = False


Taking = Quarantine | Restore | Track | Read


def restoring(stored: Iterable[dict[str, Any]], owns: Callable[[str], bool], known: Container[str],
              trust: Trust) -> tuple[Taking, ...]:
    """What taking campaigns on does with their stored records: changes nothing.

    A record of a campaign `owns` covers and not `known` yet (the first such record of it) is
    restored or quarantined, as are the held and scheduled commands in it (`restored`). A restored
    transition in flight is then tracked again *before* the platform is read, so that if it finished
    while no one was looking the read settles it and its command is reported COMPLETED (or FAILED).
    """
    decided: list[Taking] = []
    back: list[Restore] = []
    taken: set[str] = set()
    for record in stored:
        campaign_id = record.get("campaignId")
        if not isinstance(campaign_id, str) or not owns(campaign_id) or campaign_id in known or campaign_id in taken:
            continue
        effects = restored(record, trust)
        decided.extend(effects)
        last = effects[-1]
        if isinstance(last, Restore):
            back.append(last)
            taken.add(campaign_id)
    decided.extend(Track(r.campaign.id, r.campaign.command_id, r.campaign.action)
                   for r in back if r.campaign.in_flight)
    decided.append(Read(tuple(r.campaign.id for r in back)))
    return tuple(decided)


def restored(stored: dict[str, Any], trust: Trust) -> tuple[Quarantine | Restore, ...]:
    """One `campaign.state` record, checked as untrusted input: its quarantines, then its `Restore`
    (none if the record itself does not parse)."""
    campaign_id = stored["campaignId"]
    try:
        CampaignStateRecord.model_validate_json(orjson.dumps(stored))  # as it came: JSON
        campaign = Campaign.restore(stored)
    except (ValidationError, ValueError, KeyError, TypeError) as exc:
        return (Quarantine("record", campaign_id, short(exc)),)
    quarantined: list[Quarantine] = []
    scheduled: list[Command] = []
    for raw in stored.get("scheduledCommands") or ():
        waiting = verified(campaign_id, "scheduled", raw, trust)
        if isinstance(waiting, Quarantine):
            quarantined.append(waiting)
        else:
            scheduled.append(waiting)
    held: HeldCommand | None = None
    raw = stored.get("heldCommand")
    command = verified(campaign_id, "held", raw, trust) if raw else None
    if isinstance(command, Quarantine):
        quarantined.append(command)
    elif command is not None and campaign.held != str(command.id):
        quarantined.append(Quarantine("held", campaign_id, "heldCommand does not match the record's held id"))
    elif command is not None:
        # Its POST may have gone out before the process died: then only reading is allowed
        # (the platform read that follows, or the next look, finds out whether it was executed).
        sent = stored.get("heldCommandSent") is True
        held = HeldCommand(command, stage=Stage.SENT if sent else Stage.PREFLIGHT)
    if held is None:
        campaign.held = None  # a model of our own making, not installed yet: it holds nothing
    return (*quarantined, Restore(campaign, tuple(scheduled), held))


def verified(campaign_id: str, what: Part, raw: object, trust: Trust) -> Command | Quarantine:
    """A stored command that may act again: it parses, names this campaign, and (with keys
    configured) carries a valid signature over what its producer sent and is young enough to
    still be waiting. Otherwise why it is quarantined."""
    try:
        stored = StoredCommand.model_validate_json(orjson.dumps(raw))
        command = stored.command(campaign_id)
    except (ValidationError, ContractError, ValueError, TypeError) as exc:
        return Quarantine(what, campaign_id, short(exc))
    if command.campaign_id != campaign_id:
        return Quarantine(what, campaign_id, f"command {command.id} names campaign {command.campaign_id}")
    if trust.authority is not None:
        decision = trust.authority.verify_stored(command, trust.now, trust.longest)
        if not decision.allowed:
            return Quarantine(what, campaign_id, f"command {command.id}: {decision.reason}: {decision.detail}")
    return command


def taking_over(snapshot: CampaignSnapshot, owns: Callable[[str], bool], known: Container[str],
                restored: Container[str]) -> Discover | Observe | None:
    """What a campaign the platform lists calls for while campaigns are taken on: changes nothing.

    Not owned, or known from before this acquisition: nothing (its own looks follow it)."""
    if not owns(snapshot.id):
        return None
    if snapshot.id not in known:
        return Discover(snapshot)
    return Observe(snapshot) if snapshot.id in restored else None


def subscribing(records: Sequence[CampaignRecord]) -> Subscribe:
    """The notifications wanted for campaigns taken on: theirs and their contact lists'."""
    lists = {r.campaign.contact_list_id for r in records if r.campaign is not None}
    return Subscribe(tuple(r.id for r in records), tuple(sorted(c for c in lists if c)))


def leaving(records: Iterable[CampaignRecord], owns: Callable[[str], bool]) -> tuple[CampaignRecord, ...]:
    """The campaigns a new assignment (`owns`) no longer covers."""
    return tuple(record for record in records if not owns(record.id))


def handing_over(record: CampaignRecord) -> GiveAway:
    """What giving a campaign away does, decided once its running look finished: changes nothing."""
    answered: list[CommandResult] = []
    if record.unsent and record.campaign is not None:
        if record.owed is not None:
            answered.append(record.owed[0])
        for _event, results in record.unsent:
            answered.extend(results)
    return GiveAway(record.id, len(record.unsent) if record.campaign is not None else 0, tuple(answered),
                    tuple(str(item.command.id) for item, future in record.inbox if not future.done()),
                    record.lease is not None)


def unsubscribing(gone: Sequence[CampaignRecord], kept: Iterable[CampaignRecord]) -> Subscribe:
    """The notifications no longer ours to hear: of the campaigns given away, and of their contact
    lists that no campaign kept still uses."""
    still = {r.campaign.contact_list_id for r in kept if r.campaign is not None}
    lists = {r.campaign.contact_list_id for r in gone if r.campaign is not None} - still
    return Subscribe(tuple(r.id for r in gone), tuple(sorted(c for c in lists if c)))


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
        for effect in restoring(restored, self._owns, self._campaigns, self._trust()):
            if isinstance(effect, Read):
                fresh = await self._read_truth(list(effect.restored))
            else:
                self._take(effect)
        for campaign_id in fresh:  # in flight, each is tracked by now (restored, discovered or observed)
            self._queue.hint(campaign_id)
        if self.notifications is not None and fresh:
            wanted = subscribing([self._records[i] for i in fresh])
            await self.notifications.subscribe_campaigns(list(wanted.campaigns))
            await self.notifications.subscribe_contact_lists(list(wanted.contact_lists))

    def _trust(self) -> Trust:
        if self.authority is None:
            return Trust(None)
        return Trust(self.authority, self._auth_now(),
                     self.authority.max_age_s + self.config.not_before_horizon
                     + self.config.preflight.deferral_ttl + _QUEUE_SLACK)

    def _take(self, effect: Quarantine | Restore | Track) -> None:
        if isinstance(effect, Quarantine):
            self.quarantined[effect.what] += 1
            _log.error("campaign.state record of %s: %s set aside (quarantined): %s",
                       effect.campaign_id, effect.what, effect.detail)
        elif isinstance(effect, Track):
            self._track(self._records[effect.campaign_id], effect.command_id, effect.action, self.clock.now())
        else:
            self._install(effect)

    def _install(self, effect: Restore) -> None:
        campaign = effect.campaign
        record = self._record(campaign.id)
        record.campaign = campaign
        for command_id, (issued, origin) in campaign.recent.items():
            # A redelivered record (its offset not committed when the process died) is recognised
            # as one; a re-sent command id is refused as a replay, here and by the authority.
            self._remember(command_id, origin)
            if self.authority is not None:
                self.authority.remember(command_id, issued)
        for command in effect.scheduled:
            record.scheduled.append(command)
            self._remember(command.id, campaign.recent.get(id_key(command.id), (0.0, None))[1])
        if effect.held is not None:
            held_id = effect.held.command_id
            self._remember(held_id, campaign.recent.get(id_key(held_id), (0.0, None))[1])
            record.held = effect.held

    async def _read_truth(self, fresh: list[str]) -> list[str]:
        """Read every campaign on the platform; returns `fresh` with the campaigns discovered added."""
        taken = set(fresh)
        for snapshot in await self.platform.list_campaigns():
            # Decided one at a time: a command's look may discover a campaign while this one awaits.
            effect = taking_over(snapshot, self._owns, self._campaigns, taken)
            if isinstance(effect, Discover):
                await self._discover(effect.snapshot, Cause.RECONCILE)
                fresh.append(snapshot.id)
                taken.add(snapshot.id)
            elif isinstance(effect, Observe):
                await self._observe(self._records[snapshot.id], effect.snapshot, Cause.RECONCILE)
        return fresh

    async def _let_finish(self, campaign_ids: Sequence[str] | None) -> None:
        """Let the running looks (of `campaign_ids`, or all) finish, for at most `release_grace`."""
        deadline = self.clock.monotonic() + self.config.release_grace
        if campaign_ids is None:
            while self._queue.stats().running and self.clock.monotonic() < deadline:
                await self.clock.sleep(0.05)
            return
        for campaign_id in campaign_ids:
            while self._queue.is_running(campaign_id) and self.clock.monotonic() < deadline:
                await self.clock.sleep(0.05)

    async def suspend(self) -> None:
        """A rebalance began: act on nothing (no look, no POST) until `resume`. Running looks finish."""
        self._suspended = True
        await self._let_finish(None)

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
        gone = leaving(self._records.values(), owns)
        for record in gone:
            record.leaving = True  # no new look starts for it; a running one finishes
        await self._let_finish([record.id for record in gone])
        for record in gone:
            await self._give_away(record, handing_over(record))
        self._owns = owns
        if self.notifications is not None and gone:
            # Not ours to hear about any more; a list still used by a campaign we keep stays.
            dropped = unsubscribing(gone, self._records.values())
            try:
                await self.notifications.unsubscribe_campaigns(list(dropped.campaigns))
                await self.notifications.unsubscribe_contact_lists(list(dropped.contact_lists))
            except Exception:
                _log.exception("unsubscribing %d campaigns given away failed", len(gone))
        return [record.id for record in gone if record.campaign is not None]

    async def _give_away(self, record: CampaignRecord, effect: GiveAway) -> None:
        try:
            await self._flush(record)
        except Exception:
            _log.exception("campaign %s: events not flushed before hand-over", effect.campaign_id)
        record.give_back_slot()
        for _item, future in record.inbox:  # those that arrived while it flushed too
            if not future.done():
                future.cancel()  # not committed: the new owner consumes it again
        self._queue.unschedule(effect.campaign_id)
        if self._records.get(effect.campaign_id) is record:
            # Its running look may have ended it meanwhile (a campaign only refusals ever named).
            del self._records[effect.campaign_id]
        for waiting in self._list_waiters.values():
            waiting.discard(effect.campaign_id)
