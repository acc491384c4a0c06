"""The audit report: what `campaign-fsm audit` prints, writes as JSON, and hands to the HTML page.

`build_report` turns a strict `fsm.audit.LogReplay` (the checks already ran there) into one
JSON-ready document: per campaign its transitions and who commanded them, the time spent in each
state, the anomalies the model noted (`data.anomaly`), the failures (`to` FAILED, with reason and
platform errors), and the findings; then the totals. The same document feeds `render_text` and
`adapters.audit.report_html.render_html`, so the three outputs never disagree.

Events do not carry `requestedBy`; a command's requester is known only when the commands topic
was read alongside (`requesters`), otherwise the report says so.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fsm.audit import CampaignHistory, LogReplay, time_in_state

__all__ = ["build_report", "format_duration", "render_text"]

_UNKNOWN_REQUESTER = "requestedBy not in events"


def build_report(replay: LogReplay, *, topic: str, requesters: Mapping[str, str] | None = None,
                 state_checked: str | None = None) -> dict[str, Any]:
    """The report document. `state_checked` says which campaign.state topic was compared, if any."""
    campaigns = [_campaign(history, requesters) for history in replay.histories.values()]
    return {
        "topic": topic,
        "clean": replay.clean,
        "summary": {
            "records": replay.records,
            "events": replay.events,
            "campaigns": len(campaigns),
            "duplicatesDropped": replay.duplicates,
            "findings": len(replay.findings),
            "campaignsWithFindings": sum(1 for c in campaigns if c["findings"]),
            "anomalies": sum(len(c["anomalies"]) for c in campaigns),
            "failures": sum(len(c["failures"]) for c in campaigns),
            "stateChecked": state_checked,
            "requestersJoined": requesters is not None,
        },
        "findings": [f.to_json() for f in replay.findings if f.campaign_id not in replay.histories],
        "campaigns": campaigns,
    }


def _campaign(history: CampaignHistory, requesters: Mapping[str, str] | None) -> dict[str, Any]:
    transitions: list[dict[str, Any]] = []
    anomalies: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for e in history.entries:
        at = e.observed_at
        item: dict[str, Any] = {"sequence": e.sequence, "at": at, "epoch": e.at, "from": e.from_state,
                                "to": e.to_state, "cause": e.cause}
        if e.command_id is not None or e.action is not None:
            item["commandId"] = e.command_id
            item["action"] = e.action
            if requesters is None:
                item["requestedBy"] = None
            else:
                item["requestedBy"] = requesters.get(e.command_id or "")
        if e.reason is not None:
            item["reason"] = e.reason
        transitions.append(item)
        if e.anomaly is not None:
            anomalies.append({"sequence": e.sequence, "at": at, "from": e.from_state, "to": e.to_state,
                              **{k: e.anomaly.get(k) for k in ("kind", "expected", "skipped", "detail")}})
        if e.to_state == "FAILED":
            failures.append({"sequence": e.sequence, "at": at, "from": e.from_state, "reason": e.reason,
                             "errors": e.errors or [], "commandId": e.command_id, "action": e.action})
    last = history.entries[-1]
    return {
        "campaignId": history.campaign_id,
        "dialerType": history.dialer_type,
        "dialerId": history.dialer_id,
        "events": len(history.entries),
        "duplicatesDropped": history.duplicates,
        "first": history.entries[0].observed_at,
        "state": last.to_state,
        "since": last.observed_at,
        "timeInState": {state: round(seconds, 3) for state, seconds in sorted(time_in_state(history).items())},
        "transitions": transitions,
        "anomalies": anomalies,
        "failures": failures,
        "findings": [f.to_json() for f in history.findings],
    }


def format_duration(seconds: float) -> str:
    """1h 02m, 3m 05s, 12.5s."""
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def render_text(report: Mapping[str, Any], *, transitions: bool = True) -> Iterator[str]:
    """The readable report, line by line: per campaign, then unattached findings and the verdict."""
    joined = report["summary"]["requestersJoined"]
    for c in report["campaigns"]:
        mark = "  FINDINGS" if c["findings"] else ""
        yield (f"== {c['campaignId']} ({c['dialerType']}, dialer {c['dialerId'] or '-'}): {c['events']} events, "
               f"now {c['state']} since {c['since']}{mark}")
        if transitions:
            for t in c["transitions"]:
                yield "   " + _transition_line(t, joined)
        if c["timeInState"]:
            spent = ", ".join(f"{state} {format_duration(s)}" for state, s in c["timeInState"].items())
            yield f"   time in state: {spent}"
        for a in c["anomalies"]:
            skipped = f", skipped {' '.join(a['skipped'])}" if a.get("skipped") else ""
            detail = f" ({a['detail']})" if a.get("detail") else ""
            yield f"   anomaly  #{a['sequence']} {a['kind']}: {a['from']} -> {a['to']}{skipped}{detail}"
        for f in c["failures"]:
            errors = "; ".join(f"{e.get('code')}: {e.get('message', '')}" for e in f["errors"]) or "no platform errors"
            yield f"   failure  #{f['sequence']} {f['from']} -> FAILED {f['reason'] or ''} ({errors})"
        for f in c["findings"]:
            yield f"   FINDING  {f['message']}" + _where(f)
    for f in report["findings"]:
        yield f"FINDING  {f['campaignId'] or '(unknown campaign)'}: {f['message']}" + _where(f)
    s = report["summary"]
    verdict = "CLEAN" if report["clean"] else f"{s['findings']} FINDINGS in {s['campaignsWithFindings']} campaigns"
    state = f"checked against {s['stateChecked']}" if s["stateChecked"] else "not checked against campaign.state"
    who = "requesters joined from the commands topic" if joined else _UNKNOWN_REQUESTER
    yield (f"audit of {report['topic']}: {s['records']} records, {s['events']} events, {s['campaigns']} campaigns, "
           f"{s['duplicatesDropped']} identical re-deliveries dropped, {s['anomalies']} model anomalies, "
           f"{s['failures']} failures; last events {state}; {who}. {verdict}")


def _transition_line(t: Mapping[str, Any], joined: bool) -> str:
    line = f"#{t['sequence']:<5} {t['at']}  {t['from'] or '(new)':>8} -> {t['to']:<9} {t['cause']}"
    if "commandId" in t:
        who = t["requestedBy"] or ("requester unknown" if joined else _UNKNOWN_REQUESTER)
        line += f"  {t['action'] or '-'} command {t['commandId'] or '-'} ({who})"
    if "reason" in t:
        line += f"  {t['reason']}"
    return line


def _where(finding: Mapping[str, Any]) -> str:
    if finding.get("partition") is None:
        return ""
    return f"  [partition {finding['partition']} offset {finding['offset']}]"
