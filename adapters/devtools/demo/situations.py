"""Whether each scripted situation happened, judged from the three topics alone (`check_situations`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fsm.windows import DEFAULT_WINDOWS
from schemas.types import DialerType

from .scenario import PRINCIPAL, TRANSITIONAL

__all__ = ["SITUATIONS", "Situation", "check_situations"]

_SETTLED = ("STOPPED", "RUNNING", "PAUSED", "FAILED")


SITUATIONS: tuple[tuple[str, str], ...] = (
    ("shift-start", "shift start: several campaigns STOPPED -> STARTING -> RUNNING"),
    ("unsigned", "an unsigned command is refused (UNSIGNED) and changes nothing"),
    ("pause-resume", "pause and resume: RUNNING -> PAUSING -> PAUSED -> STARTING -> RUNNING"),
    ("start-while-stopping", "a start refused with TRANSITION_IN_FLIGHT while the stop is not finished"),
    ("locked-list", "a locked contact list defers a start (CONTACT_LIST_NOT_READY); released, it proceeds"),
    ("over-capacity", "dialer over 80 %: STANDARD deferred (DIALER_OVER_CAPACITY) while HIGH proceeds"),
    ("stalled-stop", "a stalled predictive stop stays inside its window and is not FAILED"),
    ("failure-reset", "a transition FAILED with platform errors, then a reset to the last stable state"),
    ("stop-storm", "a stop storm: every stop completed, never more than two in flight per dialer"),
)


@dataclass(frozen=True, slots=True)
class Situation:
    key: str
    title: str
    ok: bool
    detail: str
    applies: bool = True  # False: the platform profile cannot show it (`detail` says why); not judged


def _when(record: Mapping[str, Any]) -> float:
    """When an event's data or a result happened on the clock the service ran on: the demo runs it
    scaled, and then `platformTime` is that clock's instant (`observedAt`/`at` the wall clock's)."""
    return _instant(record.get("platformTime") or record.get("observedAt") or record.get("at"))


def _instant(text: Any) -> float:
    if not isinstance(text, str):
        return float("nan")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class _Facts:
    """The three topics, indexed: commands by step, results by command, events by campaign."""

    def __init__(self, commands: Sequence[Any], results: Sequence[Any], events: Sequence[Any]) -> None:
        self.commands = [c for c in commands if isinstance(c, dict) and isinstance(c.get("id"), str)]
        self.results: dict[str, list[dict[str, Any]]] = {}
        for r in results:
            if isinstance(r, dict) and isinstance(r.get("commandId"), str):
                self.results.setdefault(r["commandId"], []).append(r)
        self.events: dict[str, list[dict[str, Any]]] = {}
        seen: set[tuple[str, int]] = set()
        for e in events:
            data = e.get("data") if isinstance(e, dict) else None
            if not isinstance(data, dict) or not isinstance(data.get("campaignId"), str):
                continue
            key = (data["campaignId"], int(data.get("sequence", 0)))
            if key in seen:
                continue  # an identical re-delivery
            seen.add(key)
            self.events.setdefault(data["campaignId"], []).append(data)
        for trail in self.events.values():
            trail.sort(key=lambda d: int(d.get("sequence", 0)))

    def step(self, key: str, action: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.commands if c.get("requestedBy") == PRINCIPAL + key
                and (action is None or c.get("action") == action)]

    def outcomes(self, command: Mapping[str, Any]) -> list[str]:
        return [r.get("outcome", "") for r in self.results.get(command["id"], [])]

    def result(self, command: Mapping[str, Any], outcome: str, reason: str | None = None) -> dict[str, Any] | None:
        for r in self.results.get(command["id"], []):
            if r.get("outcome") == outcome and (reason is None or r.get("reason") == reason):
                return r
        return None

    def trail(self, command: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The command's own event, then the observations that followed, up to a settled state."""
        events = self.events.get(command.get("campaignId", ""), [])
        out: list[dict[str, Any]] = []
        for data in events:
            if not out:
                if data.get("commandId") == command["id"] and data.get("cause") == "command":
                    out.append(data)
                    if data.get("to") in _SETTLED:
                        break
                continue
            if data.get("cause") == "command":
                break
            out.append(data)
            if data.get("to") in _SETTLED:
                break
        return out

    def path(self, command: Mapping[str, Any]) -> list[str]:
        trail = self.trail(command)
        return [str(trail[0].get("from")), *(str(d.get("to")) for d in trail)] if trail else []

    def dialer_of(self, campaign_id: str) -> str | None:
        for data in self.events.get(campaign_id, []):
            if data.get("dialerId"):
                return str(data["dialerId"])
        return None

    def max_in_flight(self) -> dict[str, int]:
        """Per dialer, the most campaigns the service held in a transitional state at one instant."""
        marks: dict[str, list[tuple[float, int]]] = {}
        for campaign_id, events in self.events.items():
            dialer = self.dialer_of(campaign_id) or campaign_id
            inside = False
            for data in events:
                now_inside = data.get("to") in TRANSITIONAL
                if now_inside != inside:
                    # Leaving sorts before entering at the same instant: a freed slot is reused.
                    marks.setdefault(dialer, []).append((_when(data), 1 if now_inside else 0))
                    inside = now_inside
        peaks: dict[str, int] = {}
        for dialer, points in marks.items():
            level = peak = 0
            for _, entering in sorted(points):
                level += 1 if entering else -1
                peak = max(peak, level)
            peaks[dialer] = peak
        return peaks


def _judge_shift_start(f: _Facts) -> tuple[bool, str]:
    starts = f.step("shift-start", "start")
    done = [c for c in starts if f.path(c)[:3] == ["STOPPED", "STARTING", "RUNNING"] and "COMPLETED" in f.outcomes(c)]
    ok = len(starts) >= 6 and len(done) == len(starts)
    return ok, f"{len(done)} of {len(starts)} started campaigns went STOPPED -> STARTING -> RUNNING"


def _judge_unsigned(f: _Facts) -> tuple[bool, str]:
    sent = f.step("unsigned")
    refused = [c for c in sent if f.result(c, "REFUSED", "UNSIGNED") and not f.trail(c)]
    ok = bool(sent) and len(refused) == len(sent)
    return ok, f"{len(refused)} of {len(sent)} unsigned commands refused, no event"


def _judge_pause_resume(f: _Facts) -> tuple[bool, str]:
    pauses, resumes = f.step("pause-resume", "pause"), f.step("pause-resume", "resume")
    if not pauses or not resumes:
        return False, "no pause and resume commands on the topic"
    pause, resume = pauses[0], resumes[0]
    p, r = f.path(pause), f.path(resume)
    ok = (p == ["RUNNING", "PAUSING", "PAUSED"] and r == ["PAUSED", "STARTING", "RUNNING"]
          and "COMPLETED" in f.outcomes(pause) and "COMPLETED" in f.outcomes(resume))
    return ok, f"{pause['campaignId']}: pause {' -> '.join(p) or '?'}; resume {' -> '.join(r) or '?'}"


def _judge_start_while_stopping(f: _Facts) -> tuple[bool, str]:
    stops = f.step("start-while-stopping", "stop")
    for start in f.step("start-while-stopping", "start"):
        refusal = f.result(start, "REFUSED", "TRANSITION_IN_FLIGHT")
        if refusal is None:
            continue
        for stop in stops:
            trail = f.trail(stop)
            if stop["campaignId"] != start["campaignId"] or f.path(stop) != ["RUNNING", "STOPPING", "STOPPED"]:
                continue
            began, ended = _when(trail[0]), _when(trail[-1])
            if began <= _when(refusal) <= ended:
                return True, (f"{start['campaignId']}: start refused TRANSITION_IN_FLIGHT "
                              f"{_when(refusal) - began:.0f} s into a {ended - began:.0f} s stop")
    return False, "no start refused with TRANSITION_IN_FLIGHT between a stop's STOPPING and STOPPED"


def _judge_locked_list(f: _Facts) -> tuple[bool, str]:
    for start in f.step("locked-list", "start"):
        deferral = f.result(start, "DEFERRED", "CONTACT_LIST_NOT_READY")
        trail = f.trail(start)
        if deferral is None or not trail:
            continue
        waited = _when(trail[0]) - _when(deferral)
        if waited >= 0 and f.path(start)[:3] == ["STOPPED", "STARTING", "RUNNING"] \
                and "COMPLETED" in f.outcomes(start):
            return True, f"{start['campaignId']}: deferred CONTACT_LIST_NOT_READY, started {waited:.0f} s later"
    return False, "no start deferred with CONTACT_LIST_NOT_READY that then ran"


def _judge_over_capacity(f: _Facts) -> tuple[bool, str]:
    commands = f.step("over-capacity", "start")
    highs = [c for c in commands if c.get("priority") == "HIGH"]
    for std in (c for c in commands if c.get("priority", "STANDARD") == "STANDARD"):
        deferral = f.result(std, "DEFERRED", "DIALER_OVER_CAPACITY")
        if deferral is None:
            continue
        std_trail = f.trail(std)
        std_began = _when(std_trail[0]) if std_trail else float("inf")
        for high in highs:
            high_trail = f.trail(high)
            if not high_trail or f.dialer_of(high["campaignId"]) != f.dialer_of(std["campaignId"]):
                continue
            high_began = _when(high_trail[0])
            if _when(deferral) <= high_began < std_began and "COMPLETED" in f.outcomes(high) \
                    and "COMPLETED" in f.outcomes(std):
                return True, (f"{f.dialer_of(std['campaignId'])}: STANDARD {std['campaignId']} deferred, HIGH "
                              f"{high['campaignId']} started {std_began - high_began:.0f} s before it")
    return False, "no STANDARD start deferred DIALER_OVER_CAPACITY while a HIGH one on its dialer started"


def _judge_stalled_stop(f: _Facts) -> tuple[bool, str]:
    uniform = DEFAULT_WINDOWS[DialerType.PROGRESSIVE].stopping
    window = DEFAULT_WINDOWS[DialerType.PREDICTIVE].stopping
    for stop in f.step("stalled-stop", "stop"):
        trail = f.trail(stop)
        if f.path(stop) != ["RUNNING", "STOPPING", "STOPPED"] or trail[0].get("dialerType") != "PREDICTIVE":
            continue
        lasted = _when(trail[-1]) - _when(trail[0])
        delayed = any((d.get("anomaly") or {}).get("kind") == "TRANSITION_DELAYED" for d in trail)
        if uniform < lasted < window and not delayed and "COMPLETED" in f.outcomes(stop):
            return True, f"{stop['campaignId']}: STOPPING for {lasted:.0f} s (window {window:.0f} s), then STOPPED"
        return False, f"{stop['campaignId']}: STOPPING lasted {lasted:.0f} s (expected {uniform:.0f}..{window:.0f})"
    return False, "no predictive stop went RUNNING -> STOPPING -> STOPPED"


def _judge_failure_reset(f: _Facts) -> tuple[bool, str]:
    resets = f.step("failure-reset", "reset")
    # The guide's failing transition is a start; Genesys' a stop (it shows no starting status).
    for failing in f.step("failure-reset"):
        trail = f.trail(failing)
        if failing.get("action") not in ("start", "stop") or not trail or trail[-1].get("to") != "FAILED" \
                or not trail[-1].get("errors") or f.result(failing, "FAILED") is None:
            continue
        for reset in resets:
            reset_trail = f.trail(reset)
            if reset["campaignId"] == failing["campaignId"] and reset_trail \
                    and reset_trail[0].get("from") == "FAILED" and "COMPLETED" in f.outcomes(reset):
                codes = ", ".join(str(e.get("code")) for e in trail[-1]["errors"])
                return True, (f"{failing['campaignId']}: {failing['action']} FAILED ({codes}), "
                              f"reset to {reset_trail[0].get('to')}")
    return False, "no FAILED transition with platform errors followed by a completed reset"


def _judge_stop_storm(f: _Facts) -> tuple[bool, str]:
    stops = f.step("stop-storm", "stop")
    done = [c for c in stops if "COMPLETED" in f.outcomes(c) and f.path(c)[-1:] == ["STOPPED"]]
    peaks = f.max_in_flight()
    worst = max(peaks.values(), default=0)
    ok = len(stops) >= 8 and len(done) == len(stops) and worst <= 2
    return ok, f"{len(done)} of {len(stops)} stops completed; at most {worst} in flight on one dialer"


_JUDGES: dict[str, Callable[[_Facts], tuple[bool, str]]] = {
    "shift-start": _judge_shift_start,
    "unsigned": _judge_unsigned,
    "pause-resume": _judge_pause_resume,
    "start-while-stopping": _judge_start_while_stopping,
    "locked-list": _judge_locked_list,
    "over-capacity": _judge_over_capacity,
    "stalled-stop": _judge_stalled_stop,
    "failure-reset": _judge_failure_reset,
    "stop-storm": _judge_stop_storm,
}


def check_situations(commands: Sequence[Any], results: Sequence[Any], events: Sequence[Any], *,
                     not_applicable: Mapping[str, str] | None = None) -> list[Situation]:
    """Whether each scripted situation happened, from decoded topic records alone.

    `commands` are Command documents (the commands topic), `results` CommandResult documents,
    `events` CloudEvents of `campaign.events`. Each command's step is its `requestedBy`.
    `not_applicable`: situation key -> why the platform profile cannot show it; those are not judged.
    """
    facts = _Facts(commands, results, events)
    skipped = not_applicable or {}
    out = []
    for key, title in SITUATIONS:
        if key in skipped:
            out.append(Situation(key, title, True, f"not applicable: {skipped[key]}", applies=False))
            continue
        try:
            ok, detail = _JUDGES[key](facts)
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # a malformed record: not seen
            ok, detail = False, f"unreadable records ({type(exc).__name__}: {exc})"
        out.append(Situation(key, title, ok, detail))
    return out
