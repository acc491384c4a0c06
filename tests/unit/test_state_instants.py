"""The instants of a `campaign.state` record: RFC 3339 UTC milliseconds on the wire, floats in the core.

A float stored and restored comes back within a millisecond, on the side that cannot flip a decision
(deadlines and the replay horizon never earlier), and a time already on a millisecond comes back
exactly, however many restores it goes through. Records written before the format was fixed (epoch
seconds) are still restored, with their held and scheduled commands and their replay memory.
"""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from fsm.machine import Campaign
from fsm.orchestrator import OrchestratorConfig
from schemas.base import TIMESTAMP_PATTERN
from schemas.commands import Command
from schemas.events import rfc3339
from schemas.instants import epoch_of, epoch_stamp
from schemas.state import CampaignStateRecord
from schemas.types import Action, CampaignState, DialerType, ReasonCode
from tests.fakes import FakeCampaign
from tests.unit.test_hostile_core import World, restart, signed, world

S = CampaignState
T = 1_767_225_600  # 2026-01-01T00:00:00Z
_SCHEMA = Draft202012Validator(
    orjson.loads((Path(__file__).parents[2] / "docs" / "schemas" / "campaign-state.json").read_bytes()),
    format_checker=FormatChecker(),
)
_INSTANTS = ("enteredAt", "deadline", "replayHorizon")


def _campaign(entered: float, deadline: float | None, recent: dict[str, float], horizon: float | None) -> Campaign:
    campaign = Campaign("c-1", S.PAUSING, DialerType.PREDICTIVE, sequence=3, entered_at=entered, deadline=deadline,
                        last_stable=S.RUNNING)
    campaign.recent = {i: (at, f"commands:0@{n}") for n, (i, at) in enumerate(recent.items())}
    campaign.replay_horizon = horizon
    return campaign


def _stored(campaign: Campaign) -> dict[str, Any]:
    return {**campaign.snapshot(), "heldCommand": None}


def test_every_millisecond_text_survives_parse_and_format_both_ways() -> None:
    for millis in range(1000):
        text = f"2026-01-01T00:00:07.{millis:03d}Z"
        at = epoch_of(text)
        assert at == datetime.fromisoformat(text).timestamp(), "the nearest float, as datetime gives it"
        assert epoch_stamp(at) == epoch_stamp(at, up=True) == text
        # Events are stamped the same way: a time on a millisecond is not written a millisecond early.
        assert rfc3339(at) == text


def _written(ts: float) -> str:
    """What `epoch_stamp` must write for `ts`, worked out through datetime: its microsecond cut to the
    millisecond, one millisecond earlier if that text would read back after `ts`."""
    stamp = datetime.fromtimestamp(ts, UTC)
    cut = stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)
    if cut.timestamp() > ts:
        cut -= timedelta(milliseconds=1)
    return f"{cut:%Y-%m-%dT%H:%M:%S}.{cut.microsecond // 1000:03d}Z"


def test_the_stamp_of_an_event_is_the_cut_whatever_second_minute_or_fraction_it_falls_on() -> None:
    # Seconds are formatted once and milliseconds looked up; the check against reading back late is
    # made only on a millisecond. Each path and each boundary, against datetime's own arithmetic.
    rng = random.Random(5)
    seconds = [T, T + 59, T + 60, T + 3599, T + 86_399, T + 86_400, 4_102_444_799, 253_402_300_798]
    fractions = [0.0, 0.001, 0.122, 0.123, 0.5, 0.9995, 0.999, 0.9994995, 0.9999994, 0.9999995, 0.99999999]
    times = [s + f for s in seconds for f in fractions] + [T + rng.uniform(0, 86_400) for _ in range(3000)]
    times += [epoch_of(f"2026-01-01T00:00:59.{m:03d}Z") for m in range(1000)]
    for ts in list(times):  # either side of each, by the smallest step a float has there
        times += [math.nextafter(ts, 0.0), math.nextafter(ts, math.inf)]
    for ts in times:
        assert epoch_stamp(ts) == rfc3339(ts) == _written(ts), repr(ts)
        assert epoch_of(epoch_stamp(ts)) <= ts <= epoch_of(epoch_stamp(ts, up=True))
    # The cut never carries into the next second (or minute, or day); raised to a limit, it does.
    assert epoch_stamp(T + 59.9995) == epoch_stamp(T + 59.9999996) == "2026-01-01T00:00:59.999Z"
    assert epoch_stamp(T + 59.9995, up=True) == "2026-01-01T00:01:00.000Z"
    assert epoch_stamp(T - 0.0000004) == "2025-12-31T23:59:59.999Z"
    assert epoch_stamp(T - 0.0000004, up=True) == "2026-01-01T00:00:00.000Z"


def test_a_float_goes_to_a_record_and_back_on_the_safe_side_of_a_millisecond() -> None:
    rng = random.Random(13)
    for _ in range(2000):
        entered, deadline, issued, horizon = (T + rng.uniform(0, 86_400) for _ in range(4))
        record = _stored(_campaign(entered, deadline, {"a": issued}, horizon))
        assert all(isinstance(record[k], str) for k in _INSTANTS) and isinstance(record["recentCommands"][0][1], str)
        assert not list(_SCHEMA.iter_errors(record)), "what the published schema says, formats checked"
        back = Campaign.restore(orjson.loads(orjson.dumps(record)))  # as it comes off the topic
        assert back.deadline is not None and back.replay_horizon is not None
        # When it happened: cut, like every event's time. What the core compares against: never earlier.
        assert entered - 0.001 <= back.entered_at <= entered
        assert deadline <= back.deadline <= deadline + 0.001
        assert horizon <= back.replay_horizon <= horizon + 0.001
        assert issued <= back.recent["a"][0] <= issued + 0.001
        assert back.recent["a"][1] == "commands:0@0"
        # No drift: a restored campaign stored again writes the same record, restore after restore.
        again = back
        for _ in range(3):
            again = Campaign.restore(_stored(again))
        assert _stored(again) == record


def test_a_time_on_a_millisecond_comes_back_exactly() -> None:
    at = epoch_of("2026-01-01T00:03:00.123Z")
    back = Campaign.restore(_stored(_campaign(at, at + 180, {"a": at}, at)))
    assert (back.entered_at, back.deadline, back.recent["a"][0], back.replay_horizon) == (at, at + 180, at, at)


@pytest.mark.parametrize("issued", ["2026-01-01T00:00:00.123Z", "2026-01-01T00:00:00.123001Z",
                                    "2026-01-01T00:00:00.122999Z", "2026-01-01T00:00:00.999999Z",
                                    "2026-01-01T00:00:00.000001+00:00"])
def test_the_replay_horizon_refuses_after_a_restore_what_it_refused_before(issued: str) -> None:
    # The core's comparison: `command.issued_at.timestamp() <= horizon`. A horizon cut to the
    # millisecond would let a command issued within it through after a restore.
    command = Command(id=uuid.uuid4(), campaign_id="c-1", action=Action.STOP, requested_by="ops",
                      issued_at=datetime.fromisoformat(issued.replace("Z", "+00:00")))
    at = command.issued_at.timestamp()
    back = Campaign.restore(_stored(_campaign(T, None, {"a": at}, at)))
    assert back.replay_horizon is not None and at <= back.replay_horizon
    # A remembered command pushed out after the restore moves the horizon to at least its issuedAt too.
    assert at <= back.recent["a"][0]


def _legacy(record: dict[str, Any]) -> dict[str, Any]:
    """`record` as the version before the one timestamp format wrote it: instants as epoch seconds."""
    old = dict(record)
    for key in _INSTANTS:
        if old.get(key) is not None:
            old[key] = epoch_of(old[key])
    old["recentCommands"] = [[i, epoch_of(at), origin] for i, at, origin in old.get("recentCommands") or ()]
    return old


def test_a_record_with_epoch_seconds_restores_to_the_same_campaign() -> None:
    record = _stored(_campaign(T + 0.25, T + 180.5, {"a": T + 0.125}, T + 0.0625))
    old = _legacy(record)
    assert old["enteredAt"] == T + 0.25 and old["recentCommands"] == [["a", T + 0.125, "commands:0@0"]]
    CampaignStateRecord.model_validate_json(orjson.dumps(old))  # still valid on restore
    assert list(_SCHEMA.iter_errors(old)), "but no longer what is published, nor written"
    assert _stored(Campaign.restore(old)) == record
    # A number that could not be written again (a planted record) is refused on restore, not at the
    # campaign's next snapshot.
    for bad in ("yesterday", "2026-01-01T00:00:00", True, [T], 1e12, -1.0, float("nan")):
        with pytest.raises((ValueError, TypeError)):
            Campaign.restore({**old, "enteredAt": bad})


def _pause(w: World, campaign_id: str, micros: int) -> Command:
    """A signed pause issued a second ago, `micros` into that second."""
    issued = datetime.fromtimestamp(int(w.clock.now()) - 1, UTC) + timedelta(microseconds=micros)
    return signed(Command(id=uuid.uuid4(), campaign_id=campaign_id, action=Action.PAUSE, requested_by="test",
                          issued_at=issued))


async def test_an_upgrade_keeps_scheduled_commands_and_replay_memory_from_epoch_second_records() -> None:
    w = await world([FakeCampaign("c1", S.RUNNING), FakeCampaign("c2", S.STOPPED)],
                    config=OrchestratorConfig(seed=5, replay_memory=2))
    # c2: three refused pauses (a stopped campaign cannot pause), each remembered; the first pushed
    # out of the memory of two, so it sets the horizon. issuedAt inside a millisecond, on purpose.
    pauses = [_pause(w, "c2", 123_456 + n) for n in range(3)]
    for n, pause in enumerate(pauses):
        assert (await w.orch.submit(pause, f"commands:0@{n}")).reason is not None
    stop = signed(w.command("c1", Action.STOP, not_before=datetime.fromtimestamp(w.clock.now() + 30, UTC)))
    assert (await w.orch.submit(stop, "commands:0@9")).reason is ReasonCode.SCHEDULED
    records = w.sink.durable_records()
    assert all(not list(_SCHEMA.iter_errors(r)) for r in records)
    w2 = await restart(w, [_legacy(r) for r in records])
    try:
        assert w2.orch.quarantined == {}, "an old record is not a broken one"
        stale = await w2.orch.submit(pauses[0], "commands:0@20")
        assert stale.reason is ReasonCode.STALE_COMMAND, "the horizon survived the upgrade"
        replay = await w2.orch.submit(pauses[2], "commands:0@21")
        assert replay.reason is ReasonCode.REPLAYED, "and the replay memory"
        await w2.clock.sleep(40)
        assert w2.posts() == ["POST stop c1"], "the scheduled stop survived the upgrade and ran"
        saved = [r for r in w2.sink.durable_records() if r["campaignId"] == "c1"]
        assert saved and isinstance(saved[-1]["enteredAt"], str), "written again in the new format"
    finally:
        await w2.orch.close()


def test_the_published_schema_says_the_one_timestamp_format_for_every_instant() -> None:
    schema = CampaignStateRecord.model_json_schema(by_alias=True)
    props = schema["properties"]
    for key in ("enteredAt", "deadline", "replayHorizon"):
        branches = props[key].get("anyOf", [props[key]])
        assert {"type": "string", "format": "date-time"}.items() <= branches[0].items()
        assert branches[0]["pattern"] == TIMESTAMP_PATTERN
    issued = props["recentCommands"]["anyOf"][0]["items"]["prefixItems"][1]
    assert issued["pattern"] == TIMESTAMP_PATTERN


async def test_a_planted_instant_that_cannot_be_written_again_quarantines_its_record() -> None:
    w = await world([FakeCampaign("c1", S.RUNNING), FakeCampaign("c2", S.RUNNING)])
    records = {r["campaignId"]: r for r in w.sink.durable_records()}
    records["c1"]["enteredAt"] = 1e12  # year 33658: no timestamp can say it
    w2 = await restart(w, list(records.values()))
    try:
        assert w2.orch.ready and w2.orch.quarantined == {"record": 1}
        assert w2.orch.campaigns["c1"].current is S.RUNNING, "read from the platform instead"
        stop = signed(w2.command("c1", Action.STOP))
        assert (await w2.orch.submit(stop)).outcome.value == "ACCEPTED", "and its next snapshot is written"
        assert isinstance(w2.sink.durable_records()[-1]["enteredAt"], str)
    finally:
        await w2.orch.close()
