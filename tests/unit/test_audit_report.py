"""The audit report (text, JSON, HTML) and the replay/audit command lines' usage errors."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from adapters.audit.replay import rebuilt_state_records, render_timelines, timelines_json
from adapters.audit.report import build_report, format_duration, render_text
from adapters.audit.report_html import render_html
from adapters.cli import main
from adapters.cli.audit import BOOTSTRAP_ENV
from adapters.kafka import Record
from fsm.audit import EventLog, LogReplay
from fsm.audit_history import HistoryGenerator
from schemas.events import STATE_CHANGED_TYPE

CAMPAIGN = "camp-000002"


def _replay(events: list[dict[str, Any]], *, strict: bool = True) -> LogReplay:
    log = EventLog(strict=strict)
    log.add([Record("campaign.events", 0, offset, e["data"]["campaignId"], orjson.dumps(e),
                    (("ce_type", STATE_CHANGED_TYPE.encode()),), 0) for offset, e in enumerate(events)])
    return log.finish()


def _events(campaigns: int = 4, count: int = 200, seed: int = 3) -> list[dict[str, Any]]:
    return list(HistoryGenerator(campaigns, seed=seed).events(count))


def _tampered() -> list[dict[str, Any]]:
    return [e for e in _events() if not (e["data"]["campaignId"] == CAMPAIGN and e["data"]["sequence"] == 6)]


def test_the_report_lists_transitions_commanders_time_in_state_anomalies_and_failures() -> None:
    events = _events()
    report = build_report(_replay(events), topic="campaign.events")
    assert report["clean"] and report["summary"]["findings"] == 0
    assert report["summary"]["events"] == len(events)
    campaign = next(c for c in report["campaigns"] if c["campaignId"] == CAMPAIGN)
    sequences = [t["sequence"] for t in campaign["transitions"]]
    assert sequences == list(range(1, len(sequences) + 1))
    commanded = [t for t in campaign["transitions"] if t["cause"] == "command"]
    assert commanded and all(t["commandId"] and t["action"] for t in commanded)
    assert all(t["requestedBy"] is None for t in commanded)  # not in events, and not joined
    assert set(campaign["timeInState"]) <= {"STOPPED", "STARTING", "RUNNING", "PAUSING", "PAUSED", "STOPPING",
                                            "FAILED"}
    assert sum(campaign["timeInState"].values()) == pytest.approx(
        campaign["transitions"][-1]["epoch"] - campaign["transitions"][0]["epoch"])
    every = report["campaigns"]
    assert any(c["anomalies"] for c in every), "the sample history has skipped states and delays"
    failures = [f for c in every for f in c["failures"]]
    assert failures and all(f["reason"] in ("TOLERANCE_EXCEEDED", "TRANSITION_FAILED") for f in failures)
    assert any(f["errors"] for f in failures)
    # JSON-ready as it is.
    assert orjson.loads(orjson.dumps(report)) == report


def test_requesters_joined_from_the_commands_topic_name_who_asked() -> None:
    events = _events()
    replay = _replay(events)
    some = next(e["data"]["commandId"] for e in events if e["data"].get("cause") == "command")
    report = build_report(replay, topic="t", requesters={some: "ops-console/jane"})
    named = [t for c in report["campaigns"] for t in c["transitions"] if t.get("requestedBy")]
    assert named and all(t["commandId"] == some for t in named)
    assert "ops-console/jane" in "\n".join(render_text(report))


def test_the_text_report_names_campaign_and_sequence_of_each_finding_and_ends_with_the_verdict() -> None:
    report = build_report(_replay(_tampered()), topic="campaign.events")
    lines = list(render_text(report))
    assert "   FINDING  sequence 6 missing" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith(f"== {CAMPAIGN} "))
    finding = lines.index("   FINDING  sequence 6 missing")
    following = next(i for i, line in enumerate(lines) if line.startswith("== ") and i > header)
    assert header < finding < following
    assert lines[-1].endswith("1 FINDINGS in 1 campaigns")
    assert "requestedBy not in events" in lines[-1]
    clean = list(render_text(build_report(_replay(_events()), topic="campaign.events"), transitions=False))
    assert clean[-1].endswith("CLEAN")
    assert not any(line.startswith("   #") for line in clean)


def test_the_html_report_is_self_contained_with_a_timeline_per_campaign() -> None:
    report = build_report(_replay(_tampered()), topic="campaign.events")
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg ") == len(report["campaigns"])
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert set(re.findall(r"https?://[^\"' )]+", page)) == {"http://www.w3.org/2000/svg"}
    assert "sequence 6 missing" in page
    assert page.index(f'id="{CAMPAIGN}"') < min(page.index(f'id="{c["campaignId"]}"')
                                                for c in report["campaigns"] if c["campaignId"] != CAMPAIGN)


def test_the_html_report_escapes_what_it_shows() -> None:
    report = build_report(_replay(_events()), topic="<campaign.events>")
    report["campaigns"][0]["dialerId"] = "<img src=x onerror=alert(1)>"
    page = render_html(report)
    assert "<img src=x" not in page and "&lt;img src=x" in page
    assert "<campaign.events>" not in page


def test_the_html_report_caps_the_campaigns_it_draws() -> None:
    report = build_report(_replay(_events(campaigns=12, count=120)), topic="t")
    page = render_html(report, max_campaigns=5)
    assert page.count("<svg ") == 5
    assert "7 more campaigns" in page


def test_replay_output_text_and_json() -> None:
    events = _events()
    replay = _replay(events, strict=False)
    lines = list(render_timelines(replay, "campaign.events"))
    assert lines[-1] == (f"campaign.events: {len(events)} records, {len(events)} events, 4 campaigns, "
                         "0 duplicate deliveries dropped, 0 anomalies")
    assert sum(1 for line in lines if line.startswith("camp-")) == 4
    document = timelines_json(replay, "campaign.events")
    assert [c["campaignId"] for c in document["campaigns"]] == sorted(c["campaignId"] for c in document["campaigns"])
    timeline = document["campaigns"][0]["events"]
    assert [e["sequence"] for e in timeline] == list(range(1, len(timeline) + 1))
    by_id = {(e["data"]["campaignId"], e["data"]["sequence"]): e["data"] for e in events}
    first = document["campaigns"][0]
    for item in timeline:
        original = by_id[(first["campaignId"], item["sequence"])]
        assert item["observedAt"] == original["observedAt"]
        assert (item["from"], item["to"], item.get("commandId")) == \
            (original["from"], original["to"], original.get("commandId"))


@pytest.mark.parametrize(("seconds", "text"), [(12.5, "12.5s"), (3.0, "3s"), (185, "3m 05s"),
                                               (3720, "1h 02m"), (90_000, "1d 01h")])
def test_durations_read_naturally(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("argv", "message"), [
    (["replay"], f"no broker: pass --bootstrap HOST:PORT or set {BOOTSTRAP_ENV}"),
    (["audit"], f"no broker: pass --bootstrap HOST:PORT or set {BOOTSTRAP_ENV}"),
    (["replay", "--bootstrap", "nohost"], "bootstrap must be host:port"),
    (["replay", "--bootstrap", "h:1", "--since", "last tuesday"], "--since 'last tuesday' is not an ISO 8601 time"),
    (["replay", "--bootstrap", "h:1", "--since", "2024-05-02", "--until", "2024-05-01"], "--since is after --until"),
    (["replay", "--bootstrap", "h:1", "--rebuild-state", "--since", "2024-05-01"], "--rebuild-state needs every event"),
    (["audit", "--bootstrap", "h:1", "--timeout", "0"], "--timeout must be positive"),
    (["audit", "--bootstrap", "h:1", "--json-out", "/nonexistent-dir/r.json"],
     "directory /nonexistent-dir does not exist"),
])
def test_usage_errors_exit_2_with_one_clear_line(argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_rebuilt_state_skips_a_campaign_whose_replayed_time_is_garbage() -> None:
    events = _events()
    last = max((e for e in events if e["data"]["campaignId"] == CAMPAIGN), key=lambda e: e["data"]["sequence"])
    last["data"]["observedAt"] = "2023-99-99T99:99:99.999Z"  # shaped like ours: replay only checks the shape
    replay = _replay(events, strict=False)
    assert replay.findings == []
    records, problems = rebuilt_state_records(replay)
    assert [key for key, _ in records] == sorted({e["data"]["campaignId"] for e in events} - {CAMPAIGN})
    assert len(problems) == 1 and problems[0].startswith(f"{CAMPAIGN}: not rebuilt: ")
    # The audit validates the full schema, so the same record is a finding there.
    assert any(f.kind.value == "MALFORMED" and f.campaign_id == CAMPAIGN for f in _replay(events).findings)
