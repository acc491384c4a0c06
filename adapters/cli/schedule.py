"""`campaign-fsm schedule FILE`: publish a shift plan's commands at the right moments.

::

    campaign-fsm schedule plan.toml --dry-run --from 2025-03-08T00:00Z --until 2025-03-11T00:00Z
    campaign-fsm schedule plan.toml --bootstrap kafka:9092            # runs until stopped (Ctrl-C)
    campaign-fsm schedule plan.toml --once                            # the next occurrence, then exit

The plan format and the daylight-saving rules are below. `--dry-run` needs neither a broker nor a
key: it prints every occurrence in the window, in UTC and local time, with a note where daylight
saving moved one. Otherwise each occurrence is signed (key as for
`campaign-fsm send`: ``--key-id``/``--key-env``) and published ``--lead`` seconds ahead with
`notBefore` set to its instant. Exit status: 0 done (or stopped), 2 unusable plan, key or broker.

Shift plans: campaign actions at local times, turned into signed commands at the right moments
(`load_plan`, `occurrences`, `Scheduler`). A shift plan is a JSON (``.json``) or TOML (``.toml``) file::

    # plan.toml
    requested_by = "shift-planner"     # optional: the principal the commands carry
    timezone = "Europe/London"         # optional: default for entries without one

    [[entries]]
    campaign = "uk-sales-1"
    action = "start"                   # start | stop | pause | resume | reset
    time = "08:00"                     # local wall-clock time, HH:MM (24 h)
    recurrence = "weekdays"            # daily | weekdays | weekly | once
    priority = "HIGH"                  # optional, default STANDARD

    [[entries]]
    campaign = "uk-sales-1"
    action = "stop"
    time = "20:00"
    recurrence = "weekly"
    days = ["mon", "wed", "fri"]       # weekly: mon tue wed thu fri sat sun

    [[entries]]
    name = "us-spring-forward-test"    # optional: a stable name (it seeds the command ids)
    campaign = "us-renewals"
    action = "start"
    time = "02:30"
    timezone = "America/New_York"
    recurrence = "once"
    date = "2025-03-09"                # once: the local date

The JSON form has the same keys (``{"timezone": ..., "entries": [{...}, ...]}``). Unknown keys are
errors. An entry fires on the local dates its recurrence selects, in its own time zone
(`zoneinfo`, IANA names), so "08:00 Europe/London" is 08:00 GMT in winter and 08:00 BST in summer.

Daylight-saving rules:

- A local time that does not exist (the spring-forward gap, e.g. 02:30 on the second Sunday of
  March in New York) fires *shifted forward by the length of the gap*: 02:30 -> 03:30 EDT, the
  same UTC instant as 02:30 EST would have been.
- A local time that occurs twice (the fall-back overlap, e.g. 01:30 on the first Sunday of
  November in New York) fires *once*, at the *first* occurrence (01:30 EDT).

Each occurrence becomes one command: its id is derived from the entry and the instant (UUID v5),
so a scheduler restarted after publishing an occurrence publishes the same id again and the
service refuses it as REPLAYED rather than acting twice. `notBefore` is the occurrence's instant;
the command is published `lead_s` (default 60 s) ahead, so the service already holds it (DEFERRED,
SCHEDULED) when the moment comes. Occurrences already past when the scheduler starts are not fired.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tomllib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fsm.ports import Clock
from schemas.base import ContractError
from schemas.commands import CampaignId, Command
from schemas.types import Action, CampaignState, Priority

from ..clock import SystemClock
from ..kafka import KafkaEdgeError, Producer
from ..signing import Signer, SigningKeyError
from .arguments import non_negative
from .send import (
    EXIT_NOT_SENT,
    SendError,
    add_connection_arguments,
    aware_datetime,
    connection_from_args,
    publish_command,
)

__all__ = [
    "DEFAULT_PRINCIPAL",
    "Occurrence",
    "Plan",
    "PlanEntry",
    "PlanError",
    "Scheduler",
    "load_plan",
    "occurrences",
    "parse_plan",
    "register",
    "resolve_local",
]

_log = logging.getLogger(__name__)

DEFAULT_PRINCIPAL = "shift-planner"
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ID_NAMESPACE = uuid.UUID("5d0c3c9e-4a8f-4f7e-9c51-6a1f3b2f8e10")
# Recurring entries fire at least weekly: eight days from any instant always holds the next one.
_SEARCH_DAYS = 8


class PlanError(ValueError):
    """A shift plan that cannot be used. The message names the file, entry and field."""


# --- the plan ------------------------------------------------------------------------------------


# Field names `time` and `date` would shadow the types inside the model's namespace.
_Time = time
_Date = date


class _EntryModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    campaign: CampaignId
    action: Action
    time: str | _Time
    timezone: str | None = None
    recurrence: Literal["daily", "weekdays", "weekly", "once"]
    days: list[str] | None = None
    date: _Date | None = None
    priority: Priority = Priority.STANDARD
    expected_state: CampaignState | None = None

    @field_validator("time")
    @classmethod
    def _hh_mm(cls, value: str | _Time) -> _Time:
        if isinstance(value, _Time):
            return value.replace(microsecond=0)
        try:
            hours, minutes = value.split(":")
            if len(hours) != 2 or len(minutes) != 2:
                raise ValueError
            return _Time(int(hours), int(minutes))
        except ValueError:
            raise ValueError(f"time must be HH:MM (24 h), got {value!r}") from None

    @field_validator("days")
    @classmethod
    def _day_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = [day.lower() for day in value]
        unknown = [day for day in out if day not in _DAYS]
        if unknown:
            raise ValueError(f"unknown day(s) {unknown}; use {' '.join(_DAYS)}")
        if not out:
            raise ValueError("weekly needs at least one day")
        return out

    @model_validator(mode="after")
    def _recurrence_fields(self) -> _EntryModel:
        if self.recurrence == "weekly" and not self.days:
            raise ValueError("recurrence 'weekly' needs days = [...] (mon tue wed thu fri sat sun)")
        if self.recurrence != "weekly" and self.days is not None:
            raise ValueError(f"days only go with recurrence 'weekly', not {self.recurrence!r}")
        if self.recurrence == "once" and self.date is None:
            raise ValueError("recurrence 'once' needs date = \"YYYY-MM-DD\"")
        if self.recurrence != "once" and self.date is not None:
            raise ValueError(f"date only goes with recurrence 'once', not {self.recurrence!r}")
        return self


class _PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requested_by: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = None
    entries: list[_EntryModel] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """One line of the plan: `action` on `campaign` at local `at` in `zone`, on the dates `fires_on` selects."""

    key: str
    campaign: str
    action: Action
    at: time
    zone: ZoneInfo
    recurrence: str
    days: frozenset[int]  # weekday numbers (Monday 0) for 'weekly'
    once_on: date | None
    priority: Priority
    expected_state: CampaignState | None

    def fires_on(self, day: date) -> bool:
        if self.recurrence == "daily":
            return True
        if self.recurrence == "weekdays":
            return day.weekday() < 5
        if self.recurrence == "weekly":
            return day.weekday() in self.days
        return day == self.once_on

    def describe(self) -> str:
        if self.recurrence == "weekly":
            return "weekly on " + ",".join(_DAYS[d] for d in sorted(self.days))
        if self.recurrence == "once":
            return f"once on {self.once_on}"
        return self.recurrence

    def next_after(self, instant: datetime) -> Occurrence | None:
        """The first occurrence strictly after `instant` (aware), or None if there is none."""
        if self.once_on is not None:
            found = self.occurrence_on(self.once_on)
            return found if found.at > instant else None
        first = instant.astimezone(self.zone).date() - timedelta(days=1)
        for offset in range(_SEARCH_DAYS + 1):
            day = first + timedelta(days=offset)
            if self.fires_on(day):
                found = self.occurrence_on(day)
                if found.at > instant:
                    return found
        return None  # pragma: no cover - unreachable for recurring entries

    def occurrence_on(self, day: date) -> Occurrence:
        at, note = resolve_local(day, self.at, self.zone)
        return Occurrence(self, at, day, note)


@dataclass(frozen=True, slots=True)
class Plan:
    entries: tuple[PlanEntry, ...]
    requested_by: str | None = None


def parse_plan(data: object, *, source: str = "plan") -> Plan:
    """A Plan from already-loaded JSON/TOML data, or a PlanError saying what is wrong where."""
    try:
        model = _PlanModel.model_validate(data)
    except ValidationError as exc:
        errors = ContractError.from_validation("plan", exc).errors
        raise PlanError(f"invalid shift plan {source}: " + "; ".join(f"{e['field']}: {e['message']}"
                                                                     for e in errors)) from None
    entries = []
    for index, raw in enumerate(model.entries):
        zone_name = raw.timezone or model.timezone
        if not zone_name:
            raise PlanError(f"{source}: entries.{index}: no timezone (set it on the entry or at the top)")
        zone = _zone(zone_name, f"{source}: entries.{index}.timezone")
        assert isinstance(raw.time, time)
        days = frozenset(_DAYS.index(d) for d in raw.days or ())
        key = raw.name or "|".join((raw.campaign, raw.action.value, raw.time.strftime("%H:%M"), zone_name,
                                    raw.recurrence, ",".join(raw.days or ()), str(raw.date or "")))
        entries.append(PlanEntry(key, raw.campaign, raw.action, raw.time, zone, raw.recurrence, days,
                                 raw.date, raw.priority, raw.expected_state))
    keys = [e.key for e in entries]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise PlanError(f"{source}: duplicate entries (same name, or same campaign/action/time/recurrence): "
                        f"{duplicates}")
    return Plan(tuple(entries), model.requested_by)


def load_plan(path: str | Path) -> Plan:
    """Read a `.json` or `.toml` shift plan."""
    file = Path(path)
    if file.suffix not in (".json", ".toml"):
        raise PlanError(f"{file}: a shift plan is a .json or .toml file")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read shift plan {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PlanError(f"{file}: not UTF-8 text") from None
    try:
        data: Any = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{file} is not valid {file.suffix[1:].upper()}: {exc}") from None
    return parse_plan(data, source=str(file))


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PlanError(f"{where}: unknown time zone {name!r} (use an IANA name such as Europe/London)") from None


# --- occurrences ---------------------------------------------------------------------------------


def resolve_local(day: date, at: time, zone: ZoneInfo) -> tuple[datetime, str | None]:
    """The UTC instant of local `day` `at` in `zone`, and a note when daylight saving moved it.

    Nonexistent (spring-forward gap): shifted forward by the gap, i.e. the wall time read with
    the offset in force before the change. Ambiguous (fall-back overlap): the first of the two.
    """
    naive = datetime.combine(day, at)
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    instant = first.astimezone(UTC)
    if first.utcoffset() == second.utcoffset():
        return instant, None
    shown = instant.astimezone(zone)
    if shown.replace(tzinfo=None) != naive:
        return instant, (f"{at:%H:%M} does not exist on {day} in {zone.key} (clocks go forward): "
                         f"fires at {shown:%H:%M %Z}")
    return instant, (f"{at:%H:%M} occurs twice on {day} in {zone.key} (clocks go back): "
                     f"fires once, at the first ({shown:%H:%M %Z})")


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One firing of an entry: the UTC instant, the local date it belongs to, and any DST note."""

    entry: PlanEntry
    at: datetime
    day: date
    note: str | None = None

    @property
    def local(self) -> datetime:
        return self.at.astimezone(self.entry.zone)

    @property
    def command_id(self) -> str:
        return str(uuid.uuid5(_ID_NAMESPACE, f"{self.entry.key}|{self.at.isoformat()}"))

    def command(self, *, requested_by: str, issued_at: datetime) -> Command:
        """The (unsigned) command for this occurrence, held by the service until `at`."""
        e = self.entry
        return Command(id=self.command_id, campaign_id=e.campaign, action=e.action, priority=e.priority,
                       requested_by=requested_by, issued_at=issued_at, expected_state=e.expected_state,
                       not_before=self.at)

    def line(self) -> str:
        """One human line: UTC, local time, what, and the DST note if any."""
        e = self.entry
        text = (f"{self.at:%Y-%m-%dT%H:%M:%SZ}  {self.local:%Y-%m-%d %a %H:%M %Z} ({e.zone.key})  "
                f"{e.action.value:<6} {e.campaign}  {e.priority.value}  [{e.describe()}]")
        return f"{text}  NOTE: {self.note}" if self.note else text


def occurrences(plan: Plan, start: datetime, end: datetime) -> list[Occurrence]:
    """Every occurrence with start <= instant < end (aware datetimes), in time order."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    found = [occ for entry in plan.entries for occ in _entry_between(entry, start, end)]
    return sorted(found, key=lambda o: (o.at, o.entry.campaign, o.entry.key))


def _entry_between(entry: PlanEntry, start: datetime, end: datetime) -> Iterator[Occurrence]:
    if entry.once_on is not None:
        days: Iterator[date] = iter((entry.once_on,))
    else:
        # One day of margin each side: a local date's instant can fall on the neighbouring UTC date.
        first = start.astimezone(entry.zone).date() - timedelta(days=1)
        last = end.astimezone(entry.zone).date() + timedelta(days=1)
        days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    for day in days:
        if entry.fires_on(day):
            occ = entry.occurrence_on(day)
            if start <= occ.at < end:
                yield occ


# --- publishing at the right moments -------------------------------------------------------------


Publish = Callable[[Command], Awaitable[None]]


class Scheduler:
    """Publishes each occurrence `lead_s` before its instant, as a signed command with `notBefore`.

    Time comes from the injected `Clock` (`now()` is epoch seconds). Sleeps are cut into slices of
    at most `max_sleep_s` and the clock re-read after each, so a wall clock that jumps (NTP, a
    suspended machine) delays nothing by more than a slice. A publish that fails is retried every
    `retry_s` with the same command id until `lead_s` after the instant; then that occurrence is
    given up (logged) and the next one is planned.
    """

    def __init__(self, plan: Plan, *, publish: Publish, signer: Signer, clock: Clock,
                 requested_by: str | None = None, lead_s: float = 60.0, max_sleep_s: float = 60.0,
                 retry_s: float = 5.0, on_published: Callable[[Occurrence, Command], None] | None = None) -> None:
        if lead_s < 0:
            raise ValueError(f"lead_s must be >= 0, got {lead_s!r}")
        if max_sleep_s <= 0 or retry_s <= 0:
            raise ValueError("max_sleep_s and retry_s must be > 0")
        self._plan = plan
        self._publish = publish
        self._signer = signer
        self._clock = clock
        self._requested_by = requested_by or plan.requested_by or DEFAULT_PRINCIPAL
        self._lead = lead_s
        self._max_sleep = max_sleep_s
        self._retry = retry_s
        self._on_published = on_published
        self.published: list[Command] = []
        self.given_up: list[Occurrence] = []

    def upcoming(self, after: datetime) -> list[Occurrence]:
        """The earliest occurrence(s) strictly after `after` (several if they share the instant)."""
        found = [occ for entry in self._plan.entries if (occ := entry.next_after(after)) is not None]
        if not found:
            return []
        first = min(occ.at for occ in found)
        return sorted((occ for occ in found if occ.at == first), key=lambda o: (o.entry.campaign, o.entry.key))

    async def run(self, *, once: bool = False) -> int:
        """Publish occurrences as they come due; with `once`, only the next batch. Returns how many."""
        cursor = self._now()
        count = 0
        while True:
            batch = self.upcoming(cursor)
            if not batch:
                _log.info("shift plan has no further occurrences")
                return count
            due = batch[0].at - timedelta(seconds=self._lead)
            await self._sleep_until(due)
            for occ in batch:
                if await self._publish_one(occ):
                    count += 1
            cursor = batch[0].at
            if once:
                return count

    async def _publish_one(self, occ: Occurrence) -> bool:
        give_up = occ.at + timedelta(seconds=self._lead)
        while True:
            now = self._now()
            command = self._signer.sign(occ.command(requested_by=self._requested_by, issued_at=now))
            try:
                await self._publish(command)
            except Exception as exc:
                if self._now() + timedelta(seconds=self._retry) > give_up:
                    _log.error("gave up publishing %s %s for %s at %s: %s", occ.entry.action.value,
                               occ.entry.campaign, occ.local.isoformat(), command.id, exc)
                    self.given_up.append(occ)
                    return False
                _log.warning("publishing command %s failed (%s); retrying in %g s", command.id, exc, self._retry)
                await self._clock.sleep(self._retry)
                continue
            self.published.append(command)
            _log.info("published %s %s (command %s) for %s", occ.entry.action.value, occ.entry.campaign,
                      command.id, occ.local.isoformat())
            if self._on_published is not None:
                self._on_published(occ, command)
            return True

    async def _sleep_until(self, moment: datetime) -> None:
        while True:
            remaining = (moment - self._now()).total_seconds()
            if remaining <= 0:
                return
            await self._clock.sleep(min(remaining, self._max_sleep))

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)


# --- the command ---------------------------------------------------------------------------------


def _dry_run(args: argparse.Namespace) -> int:
    plan = load_plan(args.file)
    start: datetime = args.start or datetime.now(UTC)
    until: datetime = args.until or start + timedelta(days=7)
    if until <= start:
        print(f"error: --until ({until.isoformat()}) must be after --from ({start.isoformat()})", file=sys.stderr)
        return EXIT_NOT_SENT
    found = occurrences(plan, start, until)
    print(f"# {len(found)} occurrence(s) from {start.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} "
          f"until {until.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")
    for occ in found:
        print(occ.line())
    return 0


async def _run(args: argparse.Namespace) -> int:
    plan = load_plan(args.file)
    config, signer = connection_from_args(args, "campaign-fsm-schedule")

    def published(occ: Occurrence, command: Command) -> None:
        print(f"published {command.id}  {occ.line()}", flush=True)

    async with Producer(config) as producer:
        async def publish(command: Command) -> None:
            await publish_command(producer, config.topics, command)

        scheduler = Scheduler(plan, publish=publish, signer=signer, clock=SystemClock(),
                              requested_by=args.requested_by, lead_s=args.lead, on_published=published)
        await scheduler.run(once=args.once)
    return 0 if not scheduler.given_up else 1


def _schedule(args: argparse.Namespace) -> int:
    try:
        if args.dry_run:
            return _dry_run(args)
        if args.start or args.until:
            print("error: --from/--until go with --dry-run", file=sys.stderr)
            return EXIT_NOT_SENT
        return asyncio.run(_run(args))
    except (PlanError, SendError, SigningKeyError, KafkaEdgeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_SENT


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schedule", help="publish a shift plan (JSON or TOML) as commands at the right moments",
        description="Publish a shift plan's commands, each signed and sent --lead seconds ahead of its "
        "local time with notBefore set, across daylight-saving changes. See adapters/cli/schedule.py for "
        "the plan format.")
    parser.add_argument("file", metavar="FILE", help="the shift plan (.json or .toml)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="publish the next occurrence, then exit")
    mode.add_argument("--dry-run", action="store_true", help="print the occurrences; publish nothing")
    parser.add_argument("--from", dest="start", type=aware_datetime, default=None, metavar="ISO",
                        help="--dry-run window start (default now)")
    parser.add_argument("--until", type=aware_datetime, default=None, metavar="ISO",
                        help="--dry-run window end (default --from + 7 days)")
    parser.add_argument("--lead", type=non_negative, default=60.0, metavar="S",
                        help="publish this many seconds before each occurrence (default 60)")
    parser.add_argument("--requested-by", default=None, metavar="NAME",
                        help="the principal (default: the plan's requested_by, else 'shift-planner')")
    add_connection_arguments(parser)
    parser.set_defaults(func=_schedule)
