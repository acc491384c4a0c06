"""Shift plans: parsing, recurrence, daylight-saving rules, and publishing on an injected clock."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapters.cli import main
from adapters.cli.schedule import (
    DEFAULT_PRINCIPAL,
    Occurrence,
    Plan,
    PlanError,
    Scheduler,
    load_plan,
    occurrences,
    parse_plan,
    resolve_local,
)
from adapters.signing import Signer
from fsm.authorization import CommandAuthority
from fsm.testing import FakeClock
from schemas.commands import Command
from schemas.types import Action, Priority

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
KEY = b"s" * 32


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def plan(*entries: dict[str, Any], **top: Any) -> Plan:
    return parse_plan({**top, "entries": list(entries)})


def entry(**fields: Any) -> dict[str, Any]:
    return {"campaign": "c-1", "action": "start", "time": "08:00", "recurrence": "daily",
            "timezone": "Europe/London", **fields}


# --- daylight saving -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "at", "zone", "instant", "local", "note"),
    [
        # New York springs forward at 02:00 -> 03:00 EDT: 02:30 does not exist, fires at 03:30 EDT.
        (date(2025, 3, 9), time(2, 30), NEW_YORK, utc(2025, 3, 9, 7, 30), "03:30 EDT", "does not exist"),
        # New York falls back at 02:00 EDT -> 01:00 EST: 01:30 happens twice, fires at the first (EDT).
        (date(2025, 11, 2), time(1, 30), NEW_YORK, utc(2025, 11, 2, 5, 30), "01:30 EDT", "occurs twice"),
        # London springs forward at 01:00 GMT -> 02:00 BST: 01:30 does not exist, fires at 02:30 BST.
        (date(2025, 3, 30), time(1, 30), LONDON, utc(2025, 3, 30, 1, 30), "02:30 BST", "does not exist"),
        # London falls back at 02:00 BST -> 01:00 GMT: 01:30 happens twice, fires at 01:30 BST.
        (date(2025, 10, 26), time(1, 30), LONDON, utc(2025, 10, 26, 0, 30), "01:30 BST", "occurs twice"),
        # Around the changes, ordinary times are untouched.
        (date(2025, 3, 30), time(2, 30), LONDON, utc(2025, 3, 30, 1, 30), "02:30 BST", None),
        (date(2025, 3, 9), time(3, 0), NEW_YORK, utc(2025, 3, 9, 7, 0), "03:00 EDT", None),
        (date(2025, 11, 2), time(2, 0), NEW_YORK, utc(2025, 11, 2, 7, 0), "02:00 EST", None),
        (date(2025, 10, 26), time(0, 59), LONDON, utc(2025, 10, 25, 23, 59), "00:59 BST", None),
    ],
)
def test_resolve_local_shifts_gaps_forward_and_takes_the_first_of_an_overlap(
    day: date, at: time, zone: ZoneInfo, instant: datetime, local: str, note: str | None
) -> None:
    got, got_note = resolve_local(day, at, zone)
    assert got == instant
    assert f"{got.astimezone(zone):%H:%M %Z}" == local
    if note is None:
        assert got_note is None
    else:
        assert got_note is not None and note in got_note and local in got_note


def test_a_daily_time_keeps_its_local_wall_time_across_both_changes_in_london() -> None:
    p = plan(entry(time="08:00"))
    spring = occurrences(p, utc(2025, 3, 29), utc(2025, 4, 1))
    assert [o.at for o in spring] == [utc(2025, 3, 29, 8), utc(2025, 3, 30, 7), utc(2025, 3, 31, 7)]
    autumn = occurrences(p, utc(2025, 10, 25), utc(2025, 10, 28))
    assert [o.at for o in autumn] == [utc(2025, 10, 25, 7), utc(2025, 10, 26, 8), utc(2025, 10, 27, 8)]
    assert {f"{o.local:%H:%M}" for o in spring + autumn} == {"08:00"}
    # The gap between consecutive firings is 23 h on spring-forward day, 25 h on fall-back day.
    assert spring[1].at - spring[0].at == timedelta(hours=23)
    assert autumn[1].at - autumn[0].at == timedelta(hours=25)


def test_new_york_gap_time_fires_once_that_day_and_overlap_time_fires_once() -> None:
    p = plan(entry(campaign="gap", time="02:30", timezone="America/New_York"),
             entry(campaign="overlap", time="01:30", timezone="America/New_York"))
    march = [o for o in occurrences(p, utc(2025, 3, 9, 4), utc(2025, 3, 10, 4)) if o.entry.campaign == "gap"]
    assert [(o.at, f"{o.local:%H:%M %Z}") for o in march] == [(utc(2025, 3, 9, 7, 30), "03:30 EDT")]
    november = [o for o in occurrences(p, utc(2025, 11, 2, 4), utc(2025, 11, 3, 5))
                if o.entry.campaign == "overlap"]
    assert [(o.at, f"{o.local:%H:%M %Z}") for o in november] == [(utc(2025, 11, 2, 5, 30), "01:30 EDT")]
    assert november[0].note is not None and "fires once" in november[0].note


def test_occurrences_near_midnight_on_change_days_keep_their_local_dates() -> None:
    # 23:30 in New York is already the next day in UTC; the local date decides the recurrence.
    p = plan(entry(time="23:30", timezone="America/New_York"))
    found = occurrences(p, utc(2025, 11, 1, 12), utc(2025, 11, 4, 12))
    assert [o.day for o in found] == [date(2025, 11, 1), date(2025, 11, 2), date(2025, 11, 3)]
    assert [o.at for o in found] == [utc(2025, 11, 2, 3, 30), utc(2025, 11, 3, 4, 30), utc(2025, 11, 4, 4, 30)]


# --- recurrence --------------------------------------------------------------------------------------


def test_weekdays_skip_the_weekend_in_local_time() -> None:
    p = plan(entry(recurrence="weekdays"))
    found = occurrences(p, utc(2025, 6, 6), utc(2025, 6, 14))  # Fri 6 June .. Fri 13 June
    assert [o.day.strftime("%a %d") for o in found] == ["Fri 06", "Mon 09", "Tue 10", "Wed 11", "Thu 12", "Fri 13"]


def test_weekly_days_are_the_local_weekdays_even_when_utc_is_on_another_day() -> None:
    # 06:00 Monday in Auckland is Sunday evening in UTC.
    p = plan(entry(time="06:00", timezone="Pacific/Auckland", recurrence="weekly", days=["MON", "thu"]))
    found = occurrences(p, utc(2025, 6, 1), utc(2025, 6, 15))
    assert [o.local.strftime("%a %d %H:%M") for o in found] == ["Mon 02 06:00", "Thu 05 06:00",
                                                                "Mon 09 06:00", "Thu 12 06:00"]
    assert found[0].at == utc(2025, 6, 1, 18)


def test_once_fires_on_its_date_only() -> None:
    p = plan(entry(recurrence="once", date="2025-03-09", time="02:30", timezone="America/New_York"))
    assert [o.at for o in occurrences(p, utc(2025, 1, 1), utc(2026, 1, 1))] == [utc(2025, 3, 9, 7, 30)]
    assert occurrences(p, utc(2025, 3, 10), utc(2030, 1, 1)) == []


def test_window_is_start_inclusive_end_exclusive_and_sorted_across_entries() -> None:
    p = plan(entry(campaign="b", time="09:00"), entry(campaign="a", time="08:00", timezone="UTC"))
    found = occurrences(p, utc(2025, 1, 6, 8), utc(2025, 1, 7, 8))
    assert [(o.entry.campaign, o.at) for o in found] == [("a", utc(2025, 1, 6, 8)), ("b", utc(2025, 1, 6, 9))]
    with pytest.raises(ValueError, match="timezone-aware"):
        occurrences(p, datetime(2025, 1, 1), utc(2025, 1, 2))


def test_command_ids_are_stable_per_occurrence_and_distinct_between_them() -> None:
    first = occurrences(plan(entry()), utc(2025, 1, 6), utc(2025, 1, 8))
    again = occurrences(plan(entry()), utc(2025, 1, 6), utc(2025, 1, 8))
    assert [o.command_id for o in first] == [o.command_id for o in again]
    assert len({o.command_id for o in first}) == 2
    named = occurrences(plan(entry(name="morning")), utc(2025, 1, 6), utc(2025, 1, 7))
    assert named[0].command_id != first[0].command_id


def test_the_command_carries_not_before_and_the_entry_fields() -> None:
    (occ,) = occurrences(plan(entry(priority="HIGH", action="stop", expected_state="RUNNING")),
                         utc(2025, 1, 6), utc(2025, 1, 7))
    command = occ.command(requested_by="planner", issued_at=utc(2025, 1, 6, 7, 59))
    assert (command.action, command.priority, command.expected_state) == (Action.STOP, Priority.HIGH, "RUNNING")
    assert command.not_before == utc(2025, 1, 6, 8) and command.id == occ.command_id


# --- the plan file -------------------------------------------------------------------------------------


TOML_PLAN = """
requested_by = "night-shift"
timezone = "Europe/London"

[[entries]]
campaign = "uk-sales-1"
action = "start"
time = 08:00:00
recurrence = "weekdays"
priority = "HIGH"

[[entries]]
campaign = "us-1"
action = "stop"
time = "17:30"
timezone = "America/New_York"
recurrence = "once"
date = 2025-11-03
"""


def test_toml_and_json_plans_load_the_same(tmp_path: Path) -> None:
    toml_file = tmp_path / "plan.toml"
    toml_file.write_text(TOML_PLAN)
    json_file = tmp_path / "plan.json"
    json_file.write_text(json.dumps({
        "requested_by": "night-shift", "timezone": "Europe/London",
        "entries": [
            {"campaign": "uk-sales-1", "action": "start", "time": "08:00", "recurrence": "weekdays",
             "priority": "HIGH"},
            {"campaign": "us-1", "action": "stop", "time": "17:30", "timezone": "America/New_York",
             "recurrence": "once", "date": "2025-11-03"},
        ],
    }))
    from_toml, from_json = load_plan(toml_file), load_plan(json_file)
    assert from_toml == from_json
    assert from_toml.requested_by == "night-shift"
    assert [e.zone.key for e in from_toml.entries] == ["Europe/London", "America/New_York"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"entries": []}, "entries: List should have at least 1 item"),
        ({"entries": [entry(colour="red")]}, "entries.0.colour: Extra inputs are not permitted"),
        ({"entries": [entry(time="8am")]}, "time must be HH:MM"),
        ({"entries": [entry(time="25:00")]}, "time must be HH:MM"),
        ({"entries": [entry(action="launch")]}, "entries.0.action"),
        ({"entries": [entry(campaign="../etc")]}, "entries.0.campaign"),
        ({"entries": [entry(recurrence="weekly")]}, "needs days"),
        ({"entries": [entry(recurrence="weekly", days=["funday"])]}, "unknown day"),
        ({"entries": [entry(days=["mon"])]}, "days only go with recurrence 'weekly'"),
        ({"entries": [entry(recurrence="once")]}, "needs date"),
        ({"entries": [entry(date="2025-01-01")]}, "date only goes with recurrence 'once'"),
        ({"entries": [entry(timezone="Mars/Olympus")]}, "unknown time zone 'Mars/Olympus'"),
        ({"entries": [entry(timezone=None)]}, "entries.0: no timezone"),
        ({"entries": [entry(), entry()]}, "duplicate entries"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_plan_errors_name_the_field(data: Any, message: str) -> None:
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_plan(data, source="plan.json")


def test_plan_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"\.json or \.toml"):
        load_plan(tmp_path / "plan.yaml")
    with pytest.raises(PlanError, match="cannot read shift plan"):
        load_plan(tmp_path / "missing.json")
    bad = tmp_path / "bad.toml"
    bad.write_text("entries = [")
    with pytest.raises(PlanError, match="is not valid TOML"):
        load_plan(bad)


def test_dry_run_prints_utc_and_local_times_with_dst_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "plan.json"
    file.write_text(json.dumps({"entries": [entry(time="02:30", timezone="America/New_York")]}))
    code = main(["schedule", str(file), "--dry-run", "--from", "2025-03-08T12:00Z", "--until", "2025-03-10T12:00Z"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].startswith("# 2 occurrence(s) from 2025-03-08T12:00:00Z until 2025-03-10T12:00:00Z")
    assert out[1].startswith("2025-03-09T07:30:00Z  2025-03-09 Sun 03:30 EDT (America/New_York)  start")
    assert "NOTE: 02:30 does not exist on 2025-03-09" in out[1]
    assert out[2].startswith("2025-03-10T06:30:00Z  2025-03-10 Mon 02:30 EDT")


def test_schedule_cli_reports_a_bad_plan_without_a_traceback(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "plan.json"
    file.write_text(json.dumps({"entries": [entry(time="8")]}))
    assert main(["schedule", str(file), "--dry-run"]) == 2
    assert "error: invalid shift plan" in capsys.readouterr().err
    assert main(["schedule", str(file), "--from", "2025-01-01T00:00Z"]) == 2


# --- publishing on a clock -------------------------------------------------------------------------


class Recorder:
    """A publish function that records (clock time, command) and can fail the first `failures` calls."""

    def __init__(self, clock: FakeClock, failures: int = 0) -> None:
        self.clock = clock
        self.failures = failures
        self.sent: list[tuple[datetime, Command]] = []

    async def __call__(self, command: Command) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        self.sent.append((datetime.fromtimestamp(self.clock.now(), UTC), command))


def clock_at(moment: datetime) -> FakeClock:
    return FakeClock(start=0.0, wall_start=moment.timestamp())


async def test_scheduler_publishes_ahead_with_not_before_across_spring_forward() -> None:
    clock = clock_at(utc(2025, 3, 29, 6))
    publish = Recorder(clock)
    scheduler = Scheduler(plan(entry(time="08:00")), publish=publish, signer=Signer("planner-1", KEY),
                          clock=clock, lead_s=60, max_sleep_s=3600)
    task = asyncio.create_task(scheduler.run())
    await clock.advance((utc(2025, 3, 31, 8) - utc(2025, 3, 29, 6)).total_seconds())
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # 08:00 GMT, then 08:00 BST (07:00Z) on spring-forward day and after; each published 60 s ahead.
    assert [(at, c.not_before) for at, c in publish.sent] == [
        (utc(2025, 3, 29, 7, 59), utc(2025, 3, 29, 8)),
        (utc(2025, 3, 30, 6, 59), utc(2025, 3, 30, 7)),
        (utc(2025, 3, 31, 6, 59), utc(2025, 3, 31, 7)),
    ]
    authority = CommandAuthority({"planner-1": KEY})
    for at, command in publish.sent:
        assert command.issued_at == at and command.requested_by == DEFAULT_PRINCIPAL
        assert authority.check(command, at.timestamp()).allowed  # signed, fresh and new


async def test_scheduler_skips_past_occurrences_and_publishes_one_already_inside_the_lead_at_once() -> None:
    clock = clock_at(utc(2025, 1, 6, 8, 0, 30))  # 30 s before 08:01; 08:00 already past
    publish = Recorder(clock)
    p = plan(entry(campaign="past", time="08:00"), entry(campaign="soon", time="08:01"))
    scheduler = Scheduler(p, publish=publish, signer=Signer("k", KEY), clock=clock, lead_s=60,
                          requested_by="night-shift")
    count = await clock.run_until(asyncio.ensure_future(scheduler.run(once=True)))
    assert count == 1
    ((at, command),) = publish.sent
    assert (command.campaign_id, at, command.not_before) == ("soon", utc(2025, 1, 6, 8, 0, 30), utc(2025, 1, 6, 8, 1))
    assert command.requested_by == "night-shift"


async def test_once_publishes_every_entry_sharing_the_next_instant() -> None:
    clock = clock_at(utc(2025, 1, 6, 7))
    publish = Recorder(clock)
    p = plan(entry(campaign="a"), entry(campaign="b"), entry(campaign="c", time="09:00"))
    count = await clock.run_until(asyncio.ensure_future(
        Scheduler(p, publish=publish, signer=Signer("k", KEY), clock=clock).run(once=True)))
    assert count == 2
    assert sorted(c.campaign_id for _, c in publish.sent) == ["a", "b"]


async def test_a_failed_publish_is_retried_with_the_same_command_id() -> None:
    clock = clock_at(utc(2025, 1, 6, 7, 50))
    publish = Recorder(clock, failures=2)
    scheduler = Scheduler(plan(entry()), publish=publish, signer=Signer("k", KEY), clock=clock, lead_s=60,
                          retry_s=5)
    count = await clock.run_until(asyncio.ensure_future(scheduler.run(once=True)))
    assert count == 1
    ((at, command),) = publish.sent
    assert at == utc(2025, 1, 6, 7, 59, 10)
    (occ,) = occurrences(plan(entry()), utc(2025, 1, 6), utc(2025, 1, 7))
    assert command.id == occ.command_id


async def test_a_publish_that_keeps_failing_is_given_up_after_its_instant_and_the_next_is_planned() -> None:
    clock = clock_at(utc(2025, 1, 6, 7, 50))
    publish = Recorder(clock, failures=10_000)
    scheduler = Scheduler(plan(entry()), publish=publish, signer=Signer("k", KEY), clock=clock, lead_s=60,
                          retry_s=5)
    task = asyncio.create_task(scheduler.run())
    await clock.advance(3600)
    assert [o.at for o in scheduler.given_up] == [utc(2025, 1, 6, 8)]
    assert clock.now() < utc(2025, 1, 7, 7, 59).timestamp() and not task.done()  # waiting for tomorrow's
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_wall_clock_jump_is_noticed_within_one_sleep_slice() -> None:
    clock = clock_at(utc(2025, 1, 6, 0))
    publish = Recorder(clock)
    scheduler = Scheduler(plan(entry()), publish=publish, signer=Signer("k", KEY), clock=clock, lead_s=0,
                          max_sleep_s=60)
    task = asyncio.create_task(scheduler.run(once=True))
    await clock.settle()
    clock._wall_offset += 8 * 3600 - 30  # the machine woke up 30 s before 08:00
    await clock.advance(60)
    assert task.done() and task.result() == 1
    assert publish.sent[0][0] <= utc(2025, 1, 6, 8, 1)


def test_scheduler_rejects_bad_settings() -> None:
    clock = clock_at(utc(2025, 1, 1))
    with pytest.raises(ValueError, match="lead_s"):
        Scheduler(plan(entry()), publish=Recorder(clock), signer=Signer("k", KEY), clock=clock, lead_s=-1)


def test_occurrence_line_mentions_the_rule() -> None:
    p = plan(entry(recurrence="weekly", days=["fri", "mon"]))
    occ: Occurrence = occurrences(p, utc(2025, 1, 6), utc(2025, 1, 7))[0]
    assert "[weekly on mon,fri]" in occ.line()
