"""The storm bench's report: the table of every run against its targets, and the summary that
becomes the bench's last line (one JSON object)."""

from __future__ import annotations

import collections
import math
from typing import Any

from _storm_runs import NaiveRun, ServiceRun

__all__ = ["percentile", "report"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100.0 * len(ordered)) - 1)]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def report(runs: list[ServiceRun], naive: NaiveRun | None, campaigns: int, *,
           profile: str = "guide") -> tuple[str, dict[str, Any]]:
    genesys = profile == "genesys"
    up = next((r for r in runs if r.notifications), None)
    down = next((r for r in runs if not r.notifications), None)
    rows: list[tuple[str, list[Any], str]] = []

    def row(name: str, fn: Any, target: str = "") -> None:
        rows.append((name, [fn(r) for r in runs], target))

    row("time scale (sim s per real s)", lambda r: r.scale)
    row("service startup, real s", lambda r: round(r.startup_real_s, 1))
    row("storm, real s", lambda r: round(r.real_s, 1))
    row("storm, sim s", lambda r: round(r.sim_s, 1))
    row("commands (stops and starts), waves", lambda r: f"{r.transitions}, {r.waves}")
    row("completed", lambda r: r.completed, "== commands")
    row("other terminal results", lambda r: sum(n for o, n in r.outcomes.items() if o != "COMPLETED"), "0")
    row("platform: campaigns STOPPED", lambda r: r.final_states["STOPPED"], f"== {campaigns}")
    row("max in flight per dialer", lambda r: r.max_in_flight(), "<= 2")
    row("peak reads per sim s", lambda r: r.peak_reads_per_s(), "" if genesys else "<= 10")
    row("peak requests (any method) per sim 60 s", lambda r: r.peak_requests_per_60s(), "<= 300" if genesys else "")
    row("held DEFERRED by the active-campaign cap", lambda r: r.cap_deferred())
    row("HTTP 400", lambda r: r.status(400), "0")
    row("HTTP 409", lambda r: r.status(409), "0")
    row("HTTP 429", lambda r: r.status(429), "0")
    row("HTTP 500", lambda r: r.status(500), "0")
    row("POSTs while campaign in flight", lambda r: r.commands_while_in_flight(), "0")
    row("GETs", lambda r: len(r.reads()))
    row("GETs per transition", lambda r: round(r.gets_per_transition(), 2))
    row("first POST, sim s after the storm", lambda r: round(r.first_post_s(), 1))
    row("last HIGH POST, sim s after the storm", lambda r: round(r.last_high_post_s(), 1))
    row("last ACCEPTED result, sim s", lambda r: round(r.last_accepted_s(), 1))
    row("longest wait between POSTs on a dialer, sim s", lambda r: round(r.max_post_gap_s(), 1),
        "stagger 15 (longer while 2 slow stops fill both slots)")
    row("detect p50, sim ms", lambda r: round(percentile(r.detect_ms, 50), 1))
    row("detect p99, sim ms", lambda r: round(percentile(r.detect_ms, 99), 1), "" if genesys else "ws-up <= 100")
    row("detect max, sim ms", lambda r: round(max(r.detect_ms, default=math.nan), 1))
    row("detect > 1 s sim (count)", lambda r: sum(1 for v in r.detect_ms if v > 1000))
    row("detect p99 after last ACCEPTED, sim ms", lambda r: round(percentile(r.detect_late_ms, 99), 1))
    row("  platform -> handed to sink p99", lambda r: round(percentile(r.emit_ms, 99), 1))
    row("  platform -> acked by broker p99", lambda r: round(percentile(r.ack_ms, 99), 1))
    row("unmatched STOPPED", lambda r: r.unmatched, "0")
    row("service event-loop lag p99, real ms", lambda r: round(percentile([v for _, v in r.loop_lag_ms], 99), 1))
    row("service event-loop lag max, real ms", lambda r: round(max((v for _, v in r.loop_lag_ms), default=math.nan), 1))
    names = [r.label for r in runs]
    width = max(len(n) for n, _, _ in rows)
    cols = [max(len(names[i]), *(len(_fmt(v[i])) for _, v, _ in rows)) for i in range(len(runs))]
    lines = ["  ".join([f"{'metric':<{width}}", *(f"{n:>{c}}" for n, c in zip(names, cols, strict=True)),
                        "target"])]
    lines.append("-" * (width + sum(cols) + 2 * len(cols) + 8))
    for name, values, target in rows:
        lines.append("  ".join([f"{name:<{width}}", *(f"{_fmt(v):>{c}}" for v, c in zip(values, cols, strict=True)),
                                target]))
    for r in runs:
        if r.sim_stalls:
            kinds = collections.Counter(kind for kind, _, _ in r.sim_stalls)
            lines.append(f"{r.label}: simulator stalls > 20 ms: {_counts(dict(kinds))}, longest "
                         f"{max(ms for _, _, ms in r.sim_stalls):.0f} ms real")
        lines.append(f"{r.label}: GETs by resource {_counts(r.reads_by_resource())}; "
                     f"STOPPED seen via {_counts(dict(r.causes))}")
    summary: dict[str, Any] = {}
    if runs:
        summary["profile"] = profile
        summary["commands"] = max(r.transitions for r in runs)
        summary["waves"] = max(r.waves for r in runs)
        summary["completed"] = min(r.completed for r in runs)
        for r in runs:
            summary[f"completed_{_key(r)}"] = r.completed
        summary["max_in_flight_per_dialer"] = max(r.max_in_flight() for r in runs)
        summary["peak_reads_per_s"] = max(r.peak_reads_per_s() for r in runs)
        summary["peak_requests_per_60s"] = max(r.peak_requests_per_60s() for r in runs)
        summary["cap_deferred"] = max(r.cap_deferred() for r in runs)
        summary["http_400"] = sum(r.status(400) for r in runs)
        summary["http_409"] = sum(r.status(409) for r in runs)
        summary["http_429"] = sum(r.status(429) for r in runs)
        summary["http_500"] = sum(r.status(500) for r in runs)
        summary["gets_per_transition"] = round(max(r.gets_per_transition() for r in runs), 3)
        for r in runs:
            summary[f"gets_per_transition_{_key(r)}"] = round(r.gets_per_transition(), 3)
    if naive is not None:
        n = naive.result
        lines += ["", f"naive baseline (scale {naive.scale:g}): {n.real_s:.1f} s real, {n.sim_s:.1f} s sim"
                  f"{', CAPPED' if n.capped else ''}",
                  f"  STOPPED seen {n.stopped_seen}/{n.campaigns}; platform STOPPED "
                  f"{naive.final_states['STOPPED']}/{n.campaigns}"
                  + (f"; max in flight per dialer {naive.max_in_flight}" if naive.max_in_flight else ""),
                  f"  GETs {n.gets} ({n.gets / n.campaigns:.1f} per transition; {n.status(200, 'GET')} answered 200,"
                  f" {n.status(429, 'GET')} answered 429); at an exact 2 s cadence {n.nominal_gets}"
                  f" ({n.nominal_gets / n.campaigns:.1f} per transition)",
                  f"  POSTs {n.posts}: {n.status(202, 'POST')} x 202, {n.status(409, 'POST')} x 409, "
                  f"{n.status(500, 'POST')} x 500; transport errors {n.transport_errors}",
                  f"  achieved interval between a campaign's GETs: p50 {percentile(n.intervals, 50):.2f} s, "
                  f"p99 {percentile(n.intervals, 99):.2f} s (nominal 2 s)"]
        summary["naive_gets_per_transition"] = round(n.gets / n.campaigns, 2)
        summary["naive_http_409"] = n.status(409)
        summary["naive_http_429"] = n.status(429)
        summary["naive_http_500"] = n.status(500)
        summary["naive_completed"] = n.stopped_seen
    if up is not None:
        summary["detect_p99_ms_ws_up"] = _round(percentile(up.detect_ms, 99))
        summary["detect_p99_ms_ws_up_acked"] = _round(percentile(up.ack_ms, 99))
    if down is not None:
        summary["detect_p99_ms_ws_down"] = _round(percentile(down.detect_ms, 99))
    for r in runs:
        summary[f"scale_{_key(r)}"] = r.scale
        summary[f"real_s_{_key(r)}"] = round(r.real_s, 1)
    if naive is not None:
        summary["scale_naive"] = naive.scale
        summary["real_s_naive"] = round(naive.result.real_s, 1)
    misses = _misses(summary, runs, naive, genesys=genesys)
    summary["targets_met"] = not misses
    summary["missed"] = misses
    text = "\n".join(lines if runs else lines[len(rows) + 2:]).strip("\n")
    return text, summary


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _key(run: ServiceRun) -> str:
    return "ws_up" if run.notifications else "ws_down"


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 1)


def _misses(s: dict[str, Any], runs: list[ServiceRun], naive: NaiveRun | None, *, genesys: bool) -> list[str]:
    misses = []
    if any(r.completed != r.transitions or r.timed_out for r in runs):
        misses.append("completed")
    if s.get("max_in_flight_per_dialer", 0) > 2:
        misses.append("max_in_flight_per_dialer")
    if genesys and s.get("peak_requests_per_60s", 0) > 300:
        misses.append("peak_requests_per_60s")
    if not genesys and s.get("peak_reads_per_s", 0) > 10:
        misses.append("peak_reads_per_s")
    misses += [k for k in ("http_400", "http_409", "http_429", "http_500") if s.get(k, 0)]
    if naive is not None and s.get("gets_per_transition", 0) * 5 > s["naive_gets_per_transition"]:
        misses.append("gets_per_transition")
    up = s.get("detect_p99_ms_ws_up")
    # The 100 ms target is the guide's, at its scale of 2; genesys runs at a scale 10x that (see storm_bench.py).
    if not genesys and any(r.notifications for r in runs) and (up is None or up > 100):
        misses.append("detect_p99_ms_ws_up")
    return misses
