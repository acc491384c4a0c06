"""The audit report as one self-contained HTML page: inline CSS, an inline SVG timeline per campaign.

No scripts, fonts, stylesheets or images are fetched: the file can be mailed, archived, or opened
offline. Each timeline is a bar from the campaign's first event to its last, one coloured segment
per state (hover shows the state, its sequence and duration through SVG `<title>`), with markers
for model anomalies (amber), failures (red) and audit findings (black). Campaigns with findings
come first; past `max_campaigns` the rest are only counted (the JSON report has them all).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from html import escape
from typing import Any

from .report import format_duration

__all__ = ["STATE_COLOURS", "render_html"]

STATE_COLOURS: Mapping[str, str] = {
    "STOPPED": "#9aa5b1",
    "STARTING": "#7cc4fa",
    "RUNNING": "#3ebd93",
    "PAUSING": "#f7d070",
    "PAUSED": "#e8b14a",
    "STOPPING": "#b4a5f5",
    "FAILED": "#e12d39",
}

_WIDTH = 960
_BAR_Y = 18
_BAR_H = 22
_HEIGHT = 58

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1f2933;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:0 0 6px}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;font-weight:600;color:#fff}
.clean{background:#27ab83}.dirty{background:#cf1124}
table{border-collapse:collapse;margin:8px 0} td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
th{color:#52606d;font-weight:600}
section{border:1px solid #e4e7eb;border-radius:6px;padding:12px 14px;margin:14px 0}
section.bad{border-color:#cf1124}
.finding{color:#cf1124;font-weight:600} .anomaly{color:#b44d12} .failure{color:#cf1124}
.legend span{display:inline-block;margin-right:12px} .legend i{display:inline-block;width:12px;height:12px;
margin-right:4px;vertical-align:-1px;border-radius:2px}
details summary{cursor:pointer;color:#52606d} code{font:12px ui-monospace,monospace}
ul{margin:4px 0;padding-left:18px}
"""


def render_html(report: Mapping[str, Any], *, max_campaigns: int = 2_000) -> str:
    """The whole page as a string."""
    summary = report["summary"]
    campaigns = sorted(report["campaigns"], key=lambda c: (not c["findings"], c["campaignId"]))
    shown = campaigns[:max_campaigns]
    verdict = ('<span class="verdict clean">CLEAN</span>' if report["clean"]
               else f'<span class="verdict dirty">{summary["findings"]} FINDINGS</span>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>campaign-fsm audit of {escape(report['topic'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Audit of <code>{escape(report['topic'])}</code> {verdict}</h1>",
        _summary_table(summary),
        _legend(),
    ]
    if report["findings"]:
        parts.append("<section class=\"bad\"><h2>Records not attached to a campaign</h2><ul>")
        parts.extend(f"<li class=\"finding\">{escape(_finding_text(f))}</li>" for f in report["findings"])
        parts.append("</ul></section>")
    parts.extend(_campaign_section(c) for c in shown)
    if len(campaigns) > len(shown):
        parts.append(f"<p>{len(campaigns) - len(shown)} more campaigns (without findings) are in the JSON report.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary_table(summary: Mapping[str, Any]) -> str:
    rows = [
        ("records read", summary["records"]), ("events", summary["events"]),
        ("campaigns", summary["campaigns"]), ("identical re-deliveries dropped", summary["duplicatesDropped"]),
        ("findings", summary["findings"]), ("campaigns with findings", summary["campaignsWithFindings"]),
        ("model anomalies", summary["anomalies"]), ("failures", summary["failures"]),
        ("last events checked against", summary["stateChecked"] or "not checked"),
        ("requesters", "joined from the commands topic" if summary["requestersJoined"]
         else "not known: events carry commandId and action, not requestedBy"),
    ]
    cells = "".join(f"<tr><th>{escape(name)}</th><td>{escape(str(value))}</td></tr>" for name, value in rows)
    return f"<table>{cells}</table>"


def _legend() -> str:
    states = "".join(f'<span><i style="background:{colour}"></i>{state}</span>'
                     for state, colour in STATE_COLOURS.items())
    marks = ('<span><i style="background:#f0b429"></i>anomaly</span>'
             '<span><i style="background:#e12d39"></i>failure</span>'
             '<span><i style="background:#1f2933"></i>finding</span>')
    return f'<p class="legend">{states}{marks}</p>'


def _campaign_section(c: Mapping[str, Any]) -> str:
    title = (f"{escape(c['campaignId'])} <small>({escape(str(c['dialerType']))}, dialer "
             f"{escape(str(c['dialerId'] or '-'))})</small>")
    spent = ", ".join(f"{escape(s)} {format_duration(v)}" for s, v in c["timeInState"].items()) or "-"
    lines = [f'<section class="{"bad" if c["findings"] else "ok"}" id="{escape(c["campaignId"])}">',
             f"<h2>{title}</h2>",
             f"<p>{c['events']} events, now <b>{escape(c['state'])}</b> since {escape(c['since'])}; "
             f"time in state: {spent}</p>",
             _timeline_svg(c)]
    if c["findings"]:
        lines.append("<ul>" + "".join(f'<li class="finding">{escape(_finding_text(f))}</li>'
                                      for f in c["findings"]) + "</ul>")
    if c["anomalies"]:
        lines.append("<ul>" + "".join(
            f'<li class="anomaly">#{a["sequence"]} {escape(str(a["kind"]))}: {escape(str(a["from"]))} &rarr; '
            f'{escape(str(a["to"]))}{escape(_detail(a))}</li>' for a in c["anomalies"]) + "</ul>")
    if c["failures"]:
        lines.append("<ul>" + "".join(
            f'<li class="failure">#{f["sequence"]} {escape(str(f["from"]))} &rarr; FAILED '
            f'{escape(str(f["reason"] or ""))} {escape(_errors(f))}</li>' for f in c["failures"]) + "</ul>")
    lines.append(_transitions_table(c["transitions"]))
    lines.append("</section>")
    return "\n".join(lines)


def _timeline_svg(c: Mapping[str, Any]) -> str:
    transitions = c["transitions"]
    start = float(transitions[0]["epoch"])
    end = float(transitions[-1]["epoch"])
    # The current state gets a stub of 4 % of the span so it is visible at all.
    span = max(end - start, 1.0)
    total = span * 1.04

    def x(epoch: float) -> float:
        return round((epoch - start) / total * _WIDTH, 2)

    shapes: list[str] = []
    for index, t in enumerate(transitions):
        begin = x(t["epoch"])
        finish = x(transitions[index + 1]["epoch"]) if index + 1 < len(transitions) else float(_WIDTH)
        width = max(finish - begin, 0.5)
        duration = (transitions[index + 1]["epoch"] - t["epoch"]) if index + 1 < len(transitions) else None
        how_long = format_duration(duration) if duration is not None else "current"
        label = f"#{t['sequence']} {t['to']} from {t['at']} ({how_long}), {t['cause']}"
        shapes.append(f'<rect x="{begin}" y="{_BAR_Y}" width="{round(width, 2)}" height="{_BAR_H}" '
                      f'fill="{STATE_COLOURS.get(t["to"], "#cbd2d9")}"><title>{escape(label)}</title></rect>')
    by_sequence = {t["sequence"]: t["epoch"] for t in transitions}
    for a in c["anomalies"]:
        shapes.append(_marker(x(by_sequence[a["sequence"]]), 10, "#f0b429", f"#{a['sequence']} {a['kind']}"))
    for f in c["failures"]:
        shapes.append(_marker(x(by_sequence[f["sequence"]]), 10, "#e12d39", f"#{f['sequence']} FAILED"))
    for f in c["findings"]:
        where = by_sequence.get(f["sequence"]) if f["sequence"] is not None else None
        position = x(where) if where is not None else _nearest(by_sequence, f["sequence"], x)
        shapes.append(_marker(position, _BAR_Y + _BAR_H + 8, "#1f2933", f["message"]))
    axis = (f'<text x="0" y="{_HEIGHT - 2}" font-size="10" fill="#52606d">{escape(c["first"])}</text>'
            f'<text x="{_WIDTH}" y="{_HEIGHT - 2}" font-size="10" fill="#52606d" text-anchor="end">'
            f'{escape(transitions[-1]["at"])}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT + 4}" '
            f'viewBox="0 0 {_WIDTH} {_HEIGHT + 4}" role="img" aria-label="timeline of {escape(c["campaignId"])}">'
            + "".join(shapes) + axis + "</svg>")


def _nearest(by_sequence: Mapping[int, float], sequence: int | None, x: Callable[[float], float]) -> float:
    if sequence is None or not by_sequence:
        return 0.0
    before = [s for s in by_sequence if s < sequence]
    return x(by_sequence[max(before)]) if before else 0.0


def _marker(cx: float, cy: float, colour: str, label: str) -> str:
    return (f'<circle cx="{cx}" cy="{cy}" r="5" fill="{colour}" stroke="#fff" stroke-width="1">'
            f"<title>{escape(label)}</title></circle>")


def _transitions_table(transitions: list[Mapping[str, Any]]) -> str:
    rows = []
    for t in transitions:
        command = ""
        if "commandId" in t:
            who = t.get("requestedBy") or "requestedBy unknown"
            command = f"{t.get('action') or '-'} <code>{escape(str(t['commandId'] or '-'))}</code> ({escape(who)})"
        rows.append(f"<tr><td>#{t['sequence']}</td><td>{escape(t['at'])}</td><td>{escape(str(t['from'] or '(new)'))}"
                    f" &rarr; {escape(t['to'])}</td><td>{escape(t['cause'])}</td><td>{command}</td>"
                    f"<td>{escape(str(t.get('reason') or ''))}</td></tr>")
    return (f"<details><summary>{len(transitions)} transitions</summary><table>"
            "<tr><th>seq</th><th>observed</th><th>change</th><th>cause</th><th>command</th><th>reason</th></tr>"
            + "".join(rows) + "</table></details>")


def _finding_text(f: Mapping[str, Any]) -> str:
    where = f" [partition {f['partition']} offset {f['offset']}]" if f.get("partition") is not None else ""
    return f"{f.get('campaignId') or '(unknown campaign)'}: {f['message']}{where}"


def _detail(a: Mapping[str, Any]) -> str:
    skipped = f", skipped {' '.join(a['skipped'])}" if a.get("skipped") else ""
    return skipped + (f" ({a['detail']})" if a.get("detail") else "")


def _errors(f: Mapping[str, Any]) -> str:
    return "; ".join(f"{e.get('code')}: {e.get('message', '')}" for e in f["errors"]) or "(no platform errors)"
