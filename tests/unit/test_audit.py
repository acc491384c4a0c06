"""The event-log verifier (`fsm.audit`) on synthetic logs made by the real machine, chained by `Campaign.chain`.

Every tampering test asserts the exact findings: which campaign, which sequence, what is wrong.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.kafka import Record
from fsm.audit import (
    EventLog,
    FindingKind,
    LogReplay,
    check_state_records,
    parse_time,
    rebuild_state,
    time_in_state,
)
from fsm.audit_history import HistoryGenerator
from fsm.machine import CampaignMachine
from schemas.events import STATE_CHANGED_TYPE, event_hash
from schemas.types import Action, CampaignState, Cause, DialerType

K = FindingKind


def _history(campaigns: int = 3, events: int = 60, seed: int = 7) -> tuple[HistoryGenerator, list[dict[str, Any]]]:
    generator = HistoryGenerator(campaigns, seed=seed)
    return generator, list(generator.events(events))


def _records(events: list[dict[str, Any]], *, partition_of: dict[str, int] | None = None) -> list[Record]:
    """One record per event, in the given order, keyed and headed like the producer does it."""
    out: list[Record] = []
    offsets: dict[int, int] = {}
    for event in events:
        campaign_id = event["data"]["campaignId"]
        partition = (partition_of or {}).get(campaign_id, 0)
        offset = offsets[partition] = offsets.get(partition, -1) + 1
        out.append(_record(event, partition, offset))
    return out


def _record(event: dict[str, Any] | bytes | None, partition: int = 0, offset: int = 0,
            key: str | None = None) -> Record:
    value = event if isinstance(event, bytes | None) else orjson.dumps(event)
    if key is None and isinstance(event, dict):
        key = event["data"]["campaignId"]
    headers = (("content-type", b"application/cloudevents+json"), ("ce_type", STATE_CHANGED_TYPE.encode()))
    if isinstance(event, dict):
        headers += (("ce_id", event["id"].encode()),)
    return Record("campaign.events", partition, offset, key, value, headers, 0)


def _replay(records: list[Record], *, strict: bool = True, **options: Any) -> LogReplay:
    log = EventLog(strict=strict, **options)
    log.add(records)
    return log.finish()


def _found(replay: LogReplay) -> set[tuple[FindingKind, str | None, int | None]]:
    return {(f.kind, f.campaign_id, f.sequence) for f in replay.findings}


def _index(events: list[dict[str, Any]], campaign_id: str, sequence: int) -> int:
    return next(i for i, e in enumerate(events)
                if e["data"]["campaignId"] == campaign_id and e["data"]["sequence"] == sequence)


CAMPAIGN = "camp-000001"


# --- a clean log ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [True, False])
def test_a_clean_log_has_no_findings_and_every_timeline_is_in_sequence_order(strict: bool) -> None:
    generator, events = _history()
    replay = _replay(_records(events), strict=strict)
    assert replay.findings == []
    assert replay.clean
    assert replay.events == len(events) == replay.records
    assert set(replay.histories) == set(generator.ids)
    for campaign_id, history in replay.histories.items():
        assert [e.sequence for e in history.entries] == list(range(1, generator.campaigns[campaign_id].sequence + 1))
        assert history.current == generator.campaigns[campaign_id].state


def test_campaigns_spread_over_partitions_interleaved_are_clean() -> None:
    generator, events = _history(campaigns=6, events=120)
    partitions = {campaign_id: index % 3 for index, campaign_id in enumerate(generator.ids)}
    records = _records(events, partition_of=partitions)
    # Partitions arrive interleaved in batches, each in offset order, as a consumer delivers them.
    by_partition = sorted(records, key=lambda r: (r.offset // 7, r.partition, r.offset))
    assert _replay(by_partition).findings == []


# --- tampering -----------------------------------------------------------------------------------


def test_a_dropped_event_is_named_by_campaign_and_sequence() -> None:
    _, events = _history()
    del events[_index(events, CAMPAIGN, 4)]
    replay = _replay(_records(events))
    assert _found(replay) == {(K.MISSING, CAMPAIGN, 4)}
    assert str(replay.findings[0]) == f"{CAMPAIGN}: sequence 4 missing"


def test_an_edited_event_breaks_the_chain_at_the_next_sequence() -> None:
    _, events = _history()
    edited = events[_index(events, CAMPAIGN, 4)]
    edited["data"]["cause"] = "reconcile" if edited["data"]["cause"] != "reconcile" else "poll"
    replay = _replay(_records(events))
    assert _found(replay) == {(K.HASH_MISMATCH, CAMPAIGN, 5)}
    assert "sequence 5 prevHash does not match sequence 4" in replay.findings[0].message
    assert "edited" in replay.findings[0].message


def test_an_edited_state_also_breaks_from_to_continuity() -> None:
    _, events = _history()
    edited = events[_index(events, CAMPAIGN, 3)]
    edited["data"]["to"] = "FAILED" if edited["data"]["to"] != "FAILED" else "RUNNING"
    replay = _replay(_records(events))
    assert _found(replay) == {(K.HASH_MISMATCH, CAMPAIGN, 4), (K.FROM_MISMATCH, CAMPAIGN, 4)}


def test_an_inserted_event_with_a_used_sequence_is_a_conflicting_duplicate() -> None:
    _, events = _history()
    at = _index(events, CAMPAIGN, 4)
    forged = copy.deepcopy(events[at])
    forged["data"]["to"] = "STOPPED"
    forged["data"].pop("anomaly", None)
    events.insert(at, forged)  # the forgery lands first, so it is the one kept
    replay = _replay(_records(events))
    assert (K.CONFLICTING_DUPLICATE, CAMPAIGN, 4) in _found(replay)
    assert (K.HASH_MISMATCH, CAMPAIGN, 5) in _found(replay)
    duplicate = next(f for f in replay.findings if f.kind is K.CONFLICTING_DUPLICATE)
    assert duplicate.message.startswith("sequence 4 delivered twice with different content")


def test_an_appended_forgery_with_a_wrong_prev_hash_is_named() -> None:
    generator, events = _history()
    campaign = generator.campaigns[CAMPAIGN]
    last = events[_index(events, CAMPAIGN, campaign.sequence)]
    forged = copy.deepcopy(last)
    forged["data"]["sequence"] = campaign.sequence + 1
    forged["id"] = f"{CAMPAIGN}:{campaign.sequence + 1}"
    forged["data"]["from"] = last["data"]["to"]
    forged["data"]["prevHash"] = "0" * 64
    events.append(forged)
    replay = _replay(_records(events))
    assert _found(replay) == {(K.HASH_MISMATCH, CAMPAIGN, campaign.sequence + 1)}


def test_two_reordered_events_are_named_while_the_chain_still_holds() -> None:
    _, events = _history()
    a, b = _index(events, CAMPAIGN, 4), _index(events, CAMPAIGN, 5)
    events[a], events[b] = events[b], events[a]
    replay = _replay(_records(events))
    assert _found(replay) == {(K.OUT_OF_ORDER, CAMPAIGN, 4)}
    assert replay.findings[0].message == "sequence 4 appears after sequence 5 in the log (reordered)"
    # The timeline is still rebuilt in sequence order.
    assert [e.sequence for e in replay.histories[CAMPAIGN].entries][:6] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("strict", [True, False])
def test_an_identical_re_delivery_is_dropped_and_counted_not_a_finding(strict: bool) -> None:
    _, events = _history()
    records = _records(events)
    records.append(_record(events[_index(events, CAMPAIGN, 4)], 0, len(records)))
    records.append(_record(events[_index(events, CAMPAIGN, 1)], 0, len(records) + 1))
    replay = _replay(records, strict=strict)
    assert replay.findings == []
    assert replay.duplicates == 2
    assert replay.histories[CAMPAIGN].duplicates == 2
    assert replay.events == len(events)


def test_a_re_delivery_with_keys_in_another_order_is_identical_content_for_the_audit() -> None:
    _, events = _history()
    original = events[_index(events, CAMPAIGN, 2)]
    reordered = dict(reversed(list(original.items())))
    records = [*_records(events), _record(reordered, 0, 10_000)]
    assert _replay(records, strict=True).findings == []


@pytest.mark.parametrize("strict", [True, False])
def test_a_re_delivery_with_different_content_is_a_finding(strict: bool) -> None:
    _, events = _history()
    changed = copy.deepcopy(events[_index(events, CAMPAIGN, 4)])
    changed["data"]["observedAt"] = "2030-01-01T00:00:00.000Z"
    records = [*_records(events), _record(changed, 0, 10_000)]
    replay = _replay(records, strict=strict)
    assert _found(replay) == {(K.CONFLICTING_DUPLICATE, CAMPAIGN, 4)}
    finding = replay.findings[0]
    assert (finding.partition, finding.offset) == (0, 10_000)
    # The first delivery is the one kept.
    assert replay.histories[CAMPAIGN].entries[3].observed_at != "2030-01-01T00:00:00.000Z"


def test_a_campaign_split_across_partitions_or_wrongly_keyed_is_named() -> None:
    _, events = _history()
    records = _records(events)
    moved = _index(events, CAMPAIGN, 6)
    records[moved] = _record(events[moved], 2, 0)
    rekeyed = _index(events, CAMPAIGN, 7)
    records[rekeyed] = _record(events[rekeyed], 0, records[rekeyed].offset, key="someone-else")
    replay = _replay(records)
    assert _found(replay) == {(K.WRONG_PARTITION, CAMPAIGN, 6), (K.WRONG_KEY, CAMPAIGN, 7)}


def test_a_first_event_with_a_from_state_or_a_prev_hash_is_named() -> None:
    _, events = _history()
    first = events[_index(events, CAMPAIGN, 1)]
    first["data"]["from"] = "RUNNING"
    first["data"]["prevHash"] = "a" * 64
    replay = _replay(_records(events))
    found = _found(replay)
    assert (K.FROM_MISMATCH, CAMPAIGN, 1) in found
    assert (K.HASH_MISMATCH, CAMPAIGN, 1) in found
    assert (K.HASH_MISMATCH, CAMPAIGN, 2) in found  # sequence 1 no longer hashes the same


def test_a_log_not_starting_at_one_names_every_missing_sequence() -> None:
    _, events = _history()
    events = [e for e in events if not (e["data"]["campaignId"] == CAMPAIGN and e["data"]["sequence"] <= 3)]
    replay = _replay(_records(events))
    assert _found(replay) == {(K.MISSING, CAMPAIGN, 1), (K.MISSING, CAMPAIGN, 2), (K.MISSING, CAMPAIGN, 3)}


def test_a_long_gap_is_one_finding_with_its_range() -> None:
    _, events = _history(campaigns=1, events=60)
    events = [e for e in events if not 10 <= e["data"]["sequence"] <= 45]
    replay = _replay(_records(events))
    assert [f.message for f in replay.findings] == ["sequences 10 to 45 missing"]


# --- malformed records ---------------------------------------------------------------------------


def _bad_event(mutate: Any) -> dict[str, Any]:
    _, events = _history(campaigns=1, events=3)
    event = events[1]
    mutate(event)
    return event


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(("value", "expected"), [
    (b"not json at all", "not JSON"),
    (None, "tombstone"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (b'{"data": {}}', "Field required"),
    (orjson.dumps(_bad_event(lambda e: e["data"].update(to="SLEEPING"))), "data.to"),
    (orjson.dumps(_bad_event(lambda e: e["data"].update(sequence="2"))), "data.sequence"),
    (orjson.dumps(_bad_event(lambda e: e.update(id="camp-000000:99"))), "id 'camp-000000:99'"),
    (orjson.dumps(_bad_event(lambda e: e["data"].update(observedAt="yesterday"))), "data.observedAt"),
    (orjson.dumps(_bad_event(lambda e: e["data"].pop("dialerType"))), "data.dialerType"),
])
def test_malformed_records_are_findings_never_exceptions(strict: bool, value: bytes | None, expected: str) -> None:
    _, events = _history(campaigns=1, events=5)
    records = [*_records(events), _record(value, 0, 77, key="camp-000000")]
    replay = _replay(records, strict=strict)
    malformed = [f for f in replay.findings if f.kind is K.MALFORMED]
    assert len(malformed) == 1, replay.findings
    assert (malformed[0].campaign_id, malformed[0].partition, malformed[0].offset) == ("camp-000000", 0, 77)
    assert expected in malformed[0].message
    assert replay.events == 5


def test_the_audit_validates_the_whole_schema_where_replay_only_checks_the_shape() -> None:
    _, events = _history(campaigns=1, events=4)
    events[2]["data"]["commandId"] = "not-a-uuid"
    strict = _replay(_records(events), strict=True)
    loose = _replay(_records(events), strict=False)
    # Refused by the audit, the event also leaves a hole in the campaign's sequence.
    assert _found(strict) == {(K.MALFORMED, "camp-000000", 3), (K.MISSING, "camp-000000", 3)}
    malformed = next(f for f in strict.findings if f.kind is K.MALFORMED)
    assert "data.commandId" in malformed.message
    assert loose.findings == []


def test_a_header_that_contradicts_the_event_is_named() -> None:
    _, events = _history(campaigns=1, events=3)
    records = _records(events)
    bad = records[1]
    records[1] = Record(bad.topic, bad.partition, bad.offset, bad.key, bad.value,
                        (*bad.headers, ("ce_id", b"camp-000000:42")), 0)
    replay = _replay(records)
    assert (K.MALFORMED, "camp-000000", 2) in _found(replay)
    assert "ce_id" in replay.findings[0].message


# --- filters -------------------------------------------------------------------------------------


def test_one_campaign_and_a_time_window() -> None:
    _, events = _history()
    only = _replay(_records(events), strict=False, campaign=CAMPAIGN)
    assert set(only.histories) == {CAMPAIGN}
    times = sorted(parse_time(e["data"]["observedAt"]) for e in events)
    since, until = times[10], times[30]
    window = _replay(_records(events), strict=False, since=since, until=until)
    kept = [e.at for h in window.histories.values() for e in h.entries]
    assert len(kept) == sum(1 for t in times if since <= t <= until)
    assert min(kept) >= since and max(kept) <= until


# --- derived views -------------------------------------------------------------------------------


def test_time_in_state_adds_up_the_gaps_between_events() -> None:
    machine = CampaignMachine()
    campaign, first = machine.adopt("c-1", CampaignState.STOPPED, DialerType.POWER, at=1000.0)
    changes = [first]
    decision = machine.command(campaign, Action.START, at=1010.0, command_id="7d4f2b9e-0c1a-4e8b-9f3a-2b6c8d0e1f2a")
    assert decision.change is not None
    changes.append(decision.change)
    running = machine.observe(campaign, CampaignState.RUNNING, cause=Cause.NOTIFICATION, at=1012.5)
    assert running is not None
    changes.append(running)
    events = [campaign.chain(change) for change in changes]
    replay = _replay(_records(events))
    assert replay.findings == []
    assert time_in_state(replay.histories["c-1"]) == {"STOPPED": 10.0, "STARTING": 2.5}


def test_rebuilt_state_equals_the_machines_snapshot_for_every_campaign() -> None:
    generator, events = _history(campaigns=40, events=1_500, seed=11)
    replay = _replay(_records(events), strict=False)
    windows = generator.machine.windows
    in_flight = 0
    for campaign_id, campaign in generator.campaigns.items():
        expected = {**campaign.snapshot(), "heldCommand": None, "scheduledCommands": None}
        assert rebuild_state(replay.histories[campaign_id], windows) == expected, campaign_id
        in_flight += campaign.in_flight
    assert in_flight > 0, "the sample should end with some transitions in flight"
    again = _replay(_records(events), strict=True)
    assert [orjson.dumps(rebuild_state(h, windows)) for h in again.histories.values()] == \
        [orjson.dumps(rebuild_state(h, windows)) for h in replay.histories.values()]


def test_the_state_topic_finds_a_dropped_or_edited_last_event() -> None:
    generator, events = _history()
    states = {cid: {**c.snapshot(), "heldCommand": None, "scheduledCommands": None}
              for cid, c in generator.campaigns.items()}
    assert check_state_records(_replay(_records(events)), states) == []

    last = generator.campaigns[CAMPAIGN].sequence
    dropped = [e for e in events if e is not events[_index(events, CAMPAIGN, last)]]
    replay = _replay(_records(dropped))
    assert replay.findings == []  # the chain alone cannot see it
    found = check_state_records(replay, states)
    assert [(f.kind, f.campaign_id, f.sequence) for f in found] == [(K.MISSING, CAMPAIGN, last)]
    assert found[0].message.startswith(f"sequence {last} missing")
    assert not replay.clean

    edited = copy.deepcopy(events)
    data = edited[_index(edited, CAMPAIGN, last)]["data"]
    data["cause"] = "poll" if data["cause"] != "poll" else "timeout"
    replay = _replay(_records(edited))
    found = check_state_records(replay, states)
    assert [(f.kind, f.campaign_id, f.sequence) for f in found] == [(K.STATE_MISMATCH, CAMPAIGN, last)]


def test_the_chain_hash_is_the_events_own_event_hash() -> None:
    _, events = _history(campaigns=1, events=5)
    replay = _replay(_records(events))
    assert [e.fingerprint for e in replay.histories["camp-000000"].entries] == [event_hash(e) for e in events]


@pytest.mark.parametrize(("text", "epoch"), [
    ("2023-11-14T22:13:20.125Z", 1_700_000_000.125),
    ("2023-11-14T22:13:20Z", 1_700_000_000.0),
    ("2023-11-15T00:13:20.500+02:00", 1_700_000_000.5),
])
def test_time_parsing(text: str, epoch: float) -> None:
    assert parse_time(text) == epoch


def test_time_parsing_refuses_what_is_not_a_zoned_timestamp() -> None:
    for bad in ("2023-11-14T22:13:20.125", "2023-13-14T22:13:20.125Z", "2023-11-14T22:13:61.125Z", "soon"):
        with pytest.raises(ValueError):
            parse_time(bad)


# --- the consumer recipe in docs/events.md --------------------------------------------------------


def _docs_recipe() -> dict[str, Any]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None, "docs/events.md lost its Python recipe"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), "docs/events.md", "exec"), namespace)  # our own doc
    return namespace


def test_the_documented_stdlib_hash_is_our_event_hash() -> None:
    recipe = _docs_recipe()
    _, events = _history(campaigns=2, events=40)
    events[5]["data"]["errors"] = [{"code": "x", "message": "Kontaktliste gesperrt \u2013 ½ importé \u2028 \"q\""}]
    assert [recipe["event_hash"](e) for e in events] == [event_hash(e) for e in events]


def test_the_documented_verifier_finds_what_the_audit_finds() -> None:
    recipe = _docs_recipe()
    _, events = _history()
    mine = [e for e in events if e["data"]["campaignId"] == CAMPAIGN]
    assert recipe["verify"](mine) == []
    edited = copy.deepcopy(mine)
    edited[3]["data"]["cause"] = "poll" if edited[3]["data"]["cause"] != "poll" else "timeout"
    assert recipe["verify"](edited) == ["sequence 5 prevHash does not match sequence 4 (edited?)"]
    assert recipe["verify"](mine[:2] + mine[3:]) == ["sequences 3 to 3 missing"]
