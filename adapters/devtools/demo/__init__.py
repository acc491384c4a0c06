"""The one-command demo: a broker, the platform simulator, the service, and a scripted shift of commands.

`campaign-fsm demo` starts a bundled Kafka-protocol broker (by PID, stopped at the end), serves the
simulator with a realistic tenant (twelve campaigns on three dialers: predictive, progressive,
power), runs the real service in-process against both, and publishes a scenario of signed
commands onto the commands topic, one step at a time. Each step waits for what it caused to be
*observed* on the results and events topics (never for a fixed time), with a timeout that names
what did not happen. The steps, in order:

1. shift start: eight campaigns started at once (STANDARD: the dialers' stagger shows);
2. an unsigned command is refused (the demo's key signs everything else);
3. pause and resume of a predictive campaign;
4. a start refused with TRANSITION_IN_FLIGHT because the previous stop has not finished;
5. a locked contact list defers a start (CONTACT_LIST_NOT_READY); released, the start proceeds;
6. a call surge takes a dialer over 80 % of its capacity: a STANDARD start is deferred
   (DIALER_OVER_CAPACITY) while a HIGH one proceeds; the surge subsides and the STANDARD one goes;
7. a predictive stop stalls for 140 s: past any uniform 60 s timeout, still inside its 180 s
   window, so it is not FAILED;
8. a start fails on the platform (FAILED with errors); the fault is cleared and a reset returns
   the campaign to its last stable state; the start is then retried;
9. a stop storm: every campaign still dialing is stopped at once.

Then everything is stopped, the three topics are read back, and `check_situations` decides from
those records alone whether each situation happened; the audit replays `campaign.events` (hash
chain, sequences, last events against `campaign.state`) and writes the HTML report. Exit code 0
only when every situation was seen and the audit is clean.

Time is scaled (`speed`): the service and the simulator share the factor, so a 90 s predictive
drain takes 4.5 s at the default speed 20.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer

from adapters.audit import build_report, read_events, read_requesters, read_state_records, render_html, render_text
from adapters.cli.send import publish_command
from adapters.kafka import KafkaConfig, Producer, TopicNames, read_topic
from adapters.logs import JsonFormatter
from adapters.service import Service
from adapters.settings import Settings
from adapters.signing import Signer
from fsm.audit import check_state_records
from fsm.orchestrator import Orchestrator
from fsm.windows import DEFAULT_WINDOWS
from schemas.commands import Command
from schemas.types import Action, CampaignState, DialerType, Priority

from ..brokers import BrokerError, BrokerHandle, parse_broker_choice, probe_kafka, start_broker
from ..simulator import Simulator, SimulatorConfig, run_simulator
from ..simulator.clock import ScaledClock
from ..simulator.tenant import Tenant, parse_tenant
from ..tui import CampaignRow, DialerRow, LiveView, Snapshot, StreamLine, plain_frame

__all__ = [
    "DEFAULT_SPEED",
    "DEMO_TENANT",
    "PRINCIPAL",
    "SITUATIONS",
    "STEPS",
    "DemoOptions",
    "DemoOutcome",
    "Situation",
    "StepFailed",
    "check_situations",
    "demo_tenant",
    "main",
    "run_demo",
]

_log = logging.getLogger(__name__)

DEFAULT_SPEED = 20.0
MIN_SPEED, MAX_SPEED = 1.0, 100.0
PRINCIPAL = "demo:"  # requestedBy is "demo:<step key>": the topic alone says which step sent what
KEY_ID = "demo-ops"
STALL_S = 140.0  # past a uniform 60 s timeout, inside the predictive 180 s window

_TERMINAL = ("COMPLETED", "REFUSED", "FAILED")
_TRANSITIONAL = ("STARTING", "PAUSING", "STOPPING")
_SETTLED = ("STOPPED", "RUNNING", "PAUSED", "FAILED")


# --- the tenant ----------------------------------------------------------------------------------

def _campaign(cid: str, name: str, kind: str, dialer: str, calls: int) -> dict[str, Any]:
    return {"id": cid, "name": name, "dialerType": kind, "dialerId": dialer, "contactListId": f"{cid}-list",
            "activeCalls": calls}


_CAMPAIGNS = [
    _campaign("uk-retention-q3", "UK Retention Q3", "PREDICTIVE", "dlr-pred-east", 40),
    _campaign("card-upsell", "Credit Card Upsell", "PREDICTIVE", "dlr-pred-east", 35),
    _campaign("broadband-winback", "Broadband Win-back", "PREDICTIVE", "dlr-pred-east", 30),
    _campaign("energy-renewals", "Energy Renewals", "PREDICTIVE", "dlr-pred-east", 25),
    _campaign("collections-30d", "Collections 30-60 days", "PROGRESSIVE", "dlr-prog-central", 30),
    _campaign("collections-60d", "Collections 60-90 days", "PROGRESSIVE", "dlr-prog-central", 20),
    _campaign("appt-reminders", "Appointment Reminders", "PROGRESSIVE", "dlr-prog-central", 12),
    _campaign("nps-survey", "NPS Survey", "PROGRESSIVE", "dlr-prog-central", 10),
    _campaign("web-leads", "Web Lead Follow-up", "POWER", "dlr-power-west", 20),
    _campaign("webinar-invites", "Webinar Invites", "POWER", "dlr-power-west", 15),
    _campaign("event-rsvp", "Event RSVP", "POWER", "dlr-power-west", 10),
    _campaign("reactivation", "Dormant Reactivation", "POWER", "dlr-power-west", 20),
]

DEMO_TENANT: Mapping[str, Any] = {
    "dialers": [
        {"id": "dlr-pred-east", "licensedCapacity": 300},
        {"id": "dlr-prog-central", "licensedCapacity": 100},
        {"id": "dlr-power-west", "licensedCapacity": 150},
    ],
    "contactLists": [{"id": c["contactListId"], "name": f"{c['name']} contacts", "size": 5000}
                     for c in _CAMPAIGNS],
    "campaigns": _CAMPAIGNS,
}


def demo_tenant() -> Tenant:
    """A fresh copy of the demo tenant (the simulator mutates it)."""
    return parse_tenant(orjson.loads(orjson.dumps(DEMO_TENANT)), source="demo tenant")


# --- situations, judged from the topics alone ----------------------------------------------------

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
                now_inside = data.get("to") in _TRANSITIONAL
                if now_inside != inside:
                    # Leaving sorts before entering at the same instant: a freed slot is reused.
                    marks.setdefault(dialer, []).append((_instant(data.get("observedAt")), 1 if now_inside else 0))
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
            began, ended = _instant(trail[0]["observedAt"]), _instant(trail[-1]["observedAt"])
            if began <= _instant(refusal["at"]) <= ended:
                return True, (f"{start['campaignId']}: start refused TRANSITION_IN_FLIGHT "
                              f"{_instant(refusal['at']) - began:.0f} s into a {ended - began:.0f} s stop")
    return False, "no start refused with TRANSITION_IN_FLIGHT between a stop's STOPPING and STOPPED"


def _judge_locked_list(f: _Facts) -> tuple[bool, str]:
    for start in f.step("locked-list", "start"):
        deferral = f.result(start, "DEFERRED", "CONTACT_LIST_NOT_READY")
        trail = f.trail(start)
        if deferral is None or not trail:
            continue
        waited = _instant(trail[0]["observedAt"]) - _instant(deferral["at"])
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
        std_began = _instant(std_trail[0]["observedAt"]) if std_trail else float("inf")
        for high in highs:
            high_trail = f.trail(high)
            if not high_trail or f.dialer_of(high["campaignId"]) != f.dialer_of(std["campaignId"]):
                continue
            high_began = _instant(high_trail[0]["observedAt"])
            if _instant(deferral["at"]) <= high_began < std_began and "COMPLETED" in f.outcomes(high) \
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
        lasted = _instant(trail[-1]["observedAt"]) - _instant(trail[0]["observedAt"])
        delayed = any((d.get("anomaly") or {}).get("kind") == "TRANSITION_DELAYED" for d in trail)
        if uniform < lasted < window and not delayed and "COMPLETED" in f.outcomes(stop):
            return True, f"{stop['campaignId']}: STOPPING for {lasted:.0f} s (window {window:.0f} s), then STOPPED"
        return False, f"{stop['campaignId']}: STOPPING lasted {lasted:.0f} s (expected {uniform:.0f}..{window:.0f})"
    return False, "no predictive stop went RUNNING -> STOPPING -> STOPPED"


def _judge_failure_reset(f: _Facts) -> tuple[bool, str]:
    resets = f.step("failure-reset", "reset")
    for start in f.step("failure-reset", "start"):
        trail = f.trail(start)
        if not trail or trail[-1].get("to") != "FAILED" or not trail[-1].get("errors") \
                or f.result(start, "FAILED") is None:
            continue
        for reset in resets:
            reset_trail = f.trail(reset)
            if reset["campaignId"] == start["campaignId"] and reset_trail \
                    and reset_trail[0].get("from") == "FAILED" and "COMPLETED" in f.outcomes(reset):
                codes = ", ".join(str(e.get("code")) for e in trail[-1]["errors"])
                return True, f"{start['campaignId']}: FAILED ({codes}), reset to {reset_trail[0].get('to')}"
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


def check_situations(commands: Sequence[Any], results: Sequence[Any], events: Sequence[Any]) -> list[Situation]:
    """Whether each scripted situation happened, from decoded topic records alone.

    `commands` are Command documents (the commands topic), `results` CommandResult documents,
    `events` CloudEvents of `campaign.events`. Each command's step is its `requestedBy`.
    """
    facts = _Facts(commands, results, events)
    out = []
    for key, title in SITUATIONS:
        try:
            ok, detail = _JUDGES[key](facts)
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # a malformed record: not seen
            ok, detail = False, f"unreadable records ({type(exc).__name__}: {exc})"
        out.append(Situation(key, title, ok, detail))
    return out


# --- options and outcome -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What `campaign-fsm demo` was asked. `tui_size` fixes the terminal size (tests)."""

    speed: float = DEFAULT_SPEED
    tui: bool = True
    broker: str = "noida"
    keep_data: Path | None = None
    topic_prefix: str | None = None
    report: Path | None = None
    tui_size: tuple[int, int] | None = None
    color: bool = True

    def problems(self) -> list[str]:
        found = []
        if not MIN_SPEED <= self.speed <= MAX_SPEED:
            found.append(f"--speed must be within {MIN_SPEED:g}..{MAX_SPEED:g}, got {self.speed:g}")
        try:
            parse_broker_choice(self.broker)
        except BrokerError as exc:
            found.append(f"--broker: {exc}".replace("CAMPAIGN_FSM_BROKER=", ""))
        if self.topic_prefix is not None and self.topic_prefix and not all(
                ch.isalnum() or ch in "._-" for ch in self.topic_prefix):
            found.append(f"--topic-prefix {self.topic_prefix!r}: only letters, digits, '.', '_' and '-'")
        if self.keep_data is not None and self.keep_data.exists():
            if not self.keep_data.is_dir():
                found.append(f"--keep-data {self.keep_data}: exists and is not a directory")
            elif any(self.keep_data.iterdir()):
                # The broker's data would bring back an earlier run's topics: two runs' events mixed.
                found.append(f"--keep-data {self.keep_data}: not empty; give a new or empty directory")
        if self.report is not None and not self.report.parent.is_dir():
            found.append(f"--report {self.report}: directory {self.report.parent} does not exist")
        return found


@dataclass(slots=True)
class DemoOutcome:
    """What a run saw. `records` holds the decoded commands, results and events read back."""

    exit_code: int
    topics: TopicNames
    bootstrap: str
    situations: list[Situation] = field(default_factory=list)
    audit_clean: bool | None = None
    report_path: Path | None = None
    failure: str | None = None
    steps_done: int = 0
    records: dict[str, list[Any]] = field(default_factory=dict)


class StepFailed(Exception):
    """A scripted step did not see what it waited for. The message names it."""


# --- the stream of what happens ------------------------------------------------------------------

class _Feed:
    """Every line of the run: kept for the live view, printed at once in plain mode."""

    def __init__(self, out: TextIO, *, echo: bool, keep: int = 400) -> None:
        self._out = out
        self.echo = echo
        self.lines: deque[StreamLine] = deque(maxlen=keep)
        self._t0 = time.monotonic()

    def emit(self, kind: str, text: str) -> None:
        self.lines.append(StreamLine(kind, text))
        if self.echo:
            self._out.write(f"[{time.monotonic() - self._t0:6.1f}s] {kind:<7} {text}\n")
            self._out.flush()

    def print(self, text: str = "") -> None:
        """A line of the final summary: always printed."""
        self._out.write(text + "\n")
        self._out.flush()


def _event_text(event: Mapping[str, Any]) -> str:
    d = event.get("data") or {}
    how = str(d.get("cause", "?")) + (f" {d['action']}" if d.get("action") else "")
    extra = ""
    anomaly = d.get("anomaly")
    if isinstance(anomaly, dict):
        extra += f"  anomaly {anomaly.get('kind')}"
    if d.get("reason"):
        extra += f"  reason {d['reason']}"
    if d.get("errors"):
        extra += "  errors " + ", ".join(str(e.get("code")) for e in d["errors"] if isinstance(e, dict))
    arrow = f"{d.get('from') or '(new)'} -> {d.get('to')}"
    return f"{d.get('campaignId', '?'):<18} #{d.get('sequence', '?'):<3} {arrow:<22} {how}{extra}"


class _Observer:
    """Reads the results and events topics as they are written (no consumer group)."""

    def __init__(self, config: KafkaConfig, topics: TopicNames, feed: _Feed,
                 describe: Callable[[Mapping[str, Any]], str]) -> None:
        self._config = config
        self._topics = topics
        self._feed = feed
        self._describe = describe
        self.results: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.last_result: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[_Observer]:
        consumer = AIOKafkaConsumer(
            self._topics.results, self._topics.events, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=min(self._config.fetch_max_wait_ms, 100),
            **self._config.client_kwargs())
        await consumer.start()
        task = asyncio.create_task(self._pump(consumer), name="demo-observer")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await consumer.stop()

    async def _pump(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                for record in records:
                    try:
                        value = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(value, dict):
                        continue
                    if tp.topic == self._topics.events:
                        self.events.append(value)
                        self._feed.emit("event", _event_text(value))
                    else:
                        self.results.append(value)
                        self.last_result[str(value.get("campaignId"))] = value
                        self._feed.emit("result", self._describe(value))
            if batches:
                self.changed.set()


# --- the scripted run ----------------------------------------------------------------------------

class _Run:
    """What a step can do: send commands, look at the platform, and wait for observed facts."""

    def __init__(self, *, sim: Simulator, service: Service, producer: Producer, topics: TopicNames,
                 signer: Signer, observer: _Observer, feed: _Feed, speed: float,
                 sent: dict[str, Command]) -> None:
        self.sim = sim
        self.service = service
        self.producer = producer
        self.topics = topics
        self.signer = signer
        self.observer = observer
        self.feed = feed
        self.speed = speed
        self.step_key = "setup"
        self.sent = sent

    @property
    def orchestrator(self) -> Orchestrator:
        assert self.service.parts is not None
        return self.service.parts.orchestrator

    async def send(self, campaign_id: str, action: Action, *, priority: Priority = Priority.STANDARD,
                   signed: bool = True) -> Command:
        command = Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, priority=priority,
                          requested_by=PRINCIPAL + self.step_key, issued_at=datetime.now(UTC))
        if signed:
            command = self.signer.sign(command)
        self.sent[str(command.id)] = command
        await publish_command(self.producer, self.topics, command)
        self.feed.emit("command", f"{campaign_id:<18} {action.value:<6} {priority.value}"
                                  f"{' (signed ' + KEY_ID + ')' if signed else ' UNSIGNED'}")
        return command

    def results(self, command: Command) -> list[dict[str, Any]]:
        wanted = str(command.id)
        return [r for r in self.observer.results if r.get("commandId") == wanted]

    def state(self, campaign_id: str) -> str:
        campaign = self.orchestrator.campaigns.get(campaign_id)
        return str(campaign.state) if campaign is not None else "?"

    def entered(self, campaign_id: str, state: str, command: Command | None = None) -> bool:
        """Whether an event on the topic moved `campaign_id` to `state` (for `command`, if given)."""
        for event in self.observer.events:
            data = event.get("data") or {}
            if data.get("campaignId") == campaign_id and data.get("to") == state and (
                    command is None or data.get("commandId") == str(command.id)):
                return True
        return False

    def real_seconds(self, sim_seconds: float) -> float:
        """A timeout in real seconds for something that takes `sim_seconds` of platform time."""
        return 15.0 + 3.0 * sim_seconds / self.speed

    async def until(self, predicate: Callable[[], bool], what: str, sim_seconds: float = 30.0) -> None:
        limit = self.real_seconds(sim_seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StepFailed(f"waited {limit:.0f} s and never saw {what}")
            self.observer.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.observer.changed.wait(), min(remaining, 0.2))

    async def expect(self, command: Command, outcome: str, *, reason: str | None = None,
                     sim_seconds: float = 60.0) -> dict[str, Any]:
        """Wait for `outcome` (and `reason`) on this command; a different final outcome fails the step."""
        label = f"{command.action.value} {command.campaign_id}"
        found: list[dict[str, Any]] = []

        def settled() -> bool:
            for r in self.results(command):
                if r.get("outcome") == outcome and (reason is None or r.get("reason") == reason):
                    found.append(r)
                    return True
                if r.get("outcome") in _TERMINAL:
                    found.append(r)
                    return True
            return False

        await self.until(settled, f"{outcome}{' ' + reason if reason else ''} for {label}", sim_seconds)
        result = found[0]
        if result.get("outcome") != outcome or (reason is not None and result.get("reason") != reason):
            got = f"{result.get('outcome')}{' ' + str(result['reason']) if result.get('reason') else ''}"
            raise StepFailed(f"{label}: expected {outcome}{' ' + reason if reason else ''}, got {got}: "
                             f"{result.get('message')}")
        return result

    async def all_completed(self, commands: Sequence[Command], what: str, sim_seconds: float) -> None:
        await asyncio.gather(*(self.expect(c, "COMPLETED", sim_seconds=sim_seconds) for c in commands))
        self.feed.emit("info", f"{what}: {len(commands)} COMPLETED")


async def _shift_start(run: _Run) -> None:
    ids = ["uk-retention-q3", "card-upsell", "broadband-winback", "energy-renewals",
           "collections-30d", "appt-reminders", "web-leads", "webinar-invites"]
    commands = [await run.send(cid, Action.START) for cid in ids]
    await run.all_completed(commands, "shift start", sim_seconds=150)


async def _unsigned(run: _Run) -> None:
    command = await run.send("uk-retention-q3", Action.STOP, signed=False)
    await run.expect(command, "REFUSED", reason="UNSIGNED", sim_seconds=5)
    if run.state("uk-retention-q3") != "RUNNING":
        raise StepFailed("uk-retention-q3 left RUNNING after an unsigned stop")


async def _pause_resume(run: _Run) -> None:
    cid = "card-upsell"
    pause = await run.send(cid, Action.PAUSE)
    await run.expect(pause, "COMPLETED", sim_seconds=120)
    resume = await run.send(cid, Action.RESUME)
    await run.expect(resume, "COMPLETED", sim_seconds=60)


async def _start_while_stopping(run: _Run) -> None:
    cid = "broadband-winback"
    stop = await run.send(cid, Action.STOP)
    await run.until(lambda: run.entered(cid, "STOPPING", stop), f"{cid} STOPPING", sim_seconds=30)
    start = await run.send(cid, Action.START)
    await run.expect(start, "REFUSED", reason="TRANSITION_IN_FLIGHT", sim_seconds=10)
    await run.expect(stop, "COMPLETED", sim_seconds=180)
    again = await run.send(cid, Action.START)
    await run.expect(again, "COMPLETED", sim_seconds=60)


async def _locked_list(run: _Run) -> None:
    cid = "reactivation"
    list_id = run.sim.campaign(cid).contact_list_id
    run.sim.set_contact_list(list_id, state="LOCKED")
    run.feed.emit("info", f"platform: contact list {list_id} LOCKED (an import holds it)")
    start = await run.send(cid, Action.START)
    await run.expect(start, "DEFERRED", reason="CONTACT_LIST_NOT_READY", sim_seconds=10)
    if run.entered(cid, "STARTING", start):
        raise StepFailed(f"{cid} started while its contact list was locked")
    run.sim.set_contact_list(list_id, state="ACTIVE")
    run.feed.emit("info", f"platform: contact list {list_id} ACTIVE again")
    await run.expect(start, "COMPLETED", sim_seconds=60)


async def _over_capacity(run: _Run) -> None:
    dialer = "dlr-prog-central"
    capacity = run.sim.tenant.dialers[dialer].licensed_capacity
    run.sim.engine.force_state("collections-30d", active_calls=75)
    calls = run.sim.engine.dialer_calls(dialer)
    run.feed.emit("info", f"platform: call surge on {dialer}: {calls} of {capacity} lines busy")
    standard = await run.send("collections-60d", Action.START)
    await run.expect(standard, "DEFERRED", reason="DIALER_OVER_CAPACITY", sim_seconds=10)
    high = await run.send("nps-survey", Action.START, priority=Priority.HIGH)
    await run.expect(high, "COMPLETED", sim_seconds=60)
    if run.entered("collections-60d", "STARTING", standard):
        raise StepFailed("the STANDARD start went ahead while the dialer was over capacity")
    run.sim.engine.force_state("collections-30d", active_calls=30)
    calls = run.sim.engine.dialer_calls(dialer)
    run.feed.emit("info", f"platform: surge over on {dialer}: {calls} of {capacity} lines busy")
    await run.expect(standard, "COMPLETED", sim_seconds=90)


async def _stalled_stop(run: _Run) -> None:
    cid = "uk-retention-q3"
    run.sim.next_transition(cid, "stall", duration=STALL_S)
    window = DEFAULT_WINDOWS[DialerType.PREDICTIVE].stopping
    run.feed.emit("info", f"platform: the next stop of {cid} drains for {STALL_S:.0f} s (window {window:.0f} s)")
    stop = await run.send(cid, Action.STOP)
    await run.expect(stop, "COMPLETED", sim_seconds=STALL_S + 60)
    if run.entered(cid, "FAILED"):
        raise StepFailed(f"{cid} was marked FAILED inside its tolerance window")


async def _failure_reset(run: _Run) -> None:
    cid = "event-rsvp"
    errors = [{"code": "dialer.trunk.unavailable", "message": "No outbound SIP trunk is available for this dialer."}]
    run.sim.next_transition(cid, "fail", errors=errors)
    start = await run.send(cid, Action.START)
    await run.expect(start, "FAILED", sim_seconds=30)
    # The operator clears the fault in the platform's console; that console sends no notification,
    # so the model still says FAILED until the reset, which confirms the state with one read.
    run.sim.faults.drop_topic = f"v2.outbound.campaigns.{cid}"
    run.sim.faults.drop_next = 1
    run.sim.set_state(cid, CampaignState.STOPPED, errors=[])
    run.feed.emit("info", f"platform: operator cleared the fault on {cid} (now STOPPED, no errors)")
    reset = await run.send(cid, Action.RESET, priority=Priority.HIGH)
    await run.expect(reset, "COMPLETED", sim_seconds=10)
    retry = await run.send(cid, Action.START)
    await run.expect(retry, "COMPLETED", sim_seconds=30)


async def _stop_storm(run: _Run) -> None:
    dialing = [cid for cid, c in run.orchestrator.campaigns.items() if c.state in ("RUNNING", "PAUSED")]
    commands = [await run.send(cid, Action.STOP) for cid in sorted(dialing)]
    await run.all_completed(commands, "stop storm", sim_seconds=400)


@dataclass(frozen=True, slots=True)
class _Step:
    key: str
    title: str
    narration: str
    run: Callable[[_Run], Awaitable[None]]


STEPS: tuple[_Step, ...] = (
    _Step("shift-start", "shift start", "08:00: eight campaigns start at once; each dialer takes two at a "
          "time, STANDARD commands 15 s apart", _shift_start),
    _Step("unsigned", "unsigned command", "a stop without a signature arrives: refused before any platform call",
          _unsigned),
    _Step("pause-resume", "pause and resume", "card-upsell pauses (its predictive buffer drains), then resumes",
          _pause_resume),
    _Step("start-while-stopping", "start during a stop", "broadband-winback is stopping; a start arrives "
          "before STOPPED: refused TRANSITION_IN_FLIGHT, accepted once stopped", _start_while_stopping),
    _Step("locked-list", "locked contact list", "reactivation's contact list is locked by an import: the "
          "start waits (DEFERRED), then proceeds when the list is released", _locked_list),
    _Step("over-capacity", "dialer over 80 %", "a call surge takes dlr-prog-central over 80 %: STANDARD "
          "waits, HIGH goes at once", _over_capacity),
    _Step("stalled-stop", "stalled predictive stop", "uk-retention-q3's stop drains for 140 s: longer than a "
          "uniform 60 s timeout, inside the predictive 180 s window: not FAILED", _stalled_stop),
    _Step("failure-reset", "failure and reset", "event-rsvp's start FAILS on the platform (no SIP trunk); "
          "after the fix, a reset returns it to STOPPED and the start is retried", _failure_reset),
    _Step("stop-storm", "stop storm", "end of shift: every campaign still dialing is stopped at once; "
          "two in flight per dialer, the rest queued", _stop_storm),
)


# --- the view model ------------------------------------------------------------------------------

class _Viewer:
    """Builds `Snapshot`s from the service's model, its dialer gate and the simulated platform."""

    def __init__(self, run: _Run, settings: Settings, feed: _Feed, names: Mapping[str, str]) -> None:
        self._run = run
        self._settings = settings
        self._feed = feed
        self._names = names
        self._windows = settings.tolerance_windows()
        self._t0 = time.monotonic()
        self._sim0 = run.sim.clock.monotonic()
        self.step = "starting up"
        self.narration = "broker, simulator and service are starting"

    def snapshot(self) -> Snapshot:
        run, parts = self._run, self._run.service.parts
        now = run.service.clock.now()
        rows = []
        for sim_campaign in run.sim.tenant.campaigns.values():
            model = parts.orchestrator.campaigns.get(sim_campaign.id) if parts is not None else None
            state = str(model.state) if model is not None else "?"
            window = None
            if state in _TRANSITIONAL and model is not None:
                window = self._windows.window(model.dialer_type, CampaignState(state))
            rows.append(CampaignRow(
                sim_campaign.id, self._names.get(sim_campaign.id, sim_campaign.name), sim_campaign.dialer_id,
                sim_campaign.dialer_type.value, state, now - model.entered_at if model is not None else 0.0,
                window, self._note(sim_campaign.id)))
        gate = {s.dialer_id: s for s in parts.orchestrator.gate.stats()} if parts is not None else {}
        dialers = []
        for dialer in run.sim.tenant.dialers.values():
            types = sorted({c.dialer_type.value for c in run.sim.tenant.campaigns_on_dialer(dialer.id)})
            stats = gate.get(dialer.id)
            dialers.append(DialerRow(
                dialer.id, "/".join(types), stats.in_flight if stats else 0,
                self._settings.dispatch.max_in_flight_per_dialer, stats.queued_high if stats else 0,
                stats.queued_standard if stats else 0, run.sim.engine.dialer_calls(dialer.id),
                dialer.licensed_capacity))
        sim_now = run.sim.clock.monotonic()
        reads = [r.sim_time for r in run.sim.traffic.records if r.kind == "read"]
        return Snapshot(
            speed=run.speed, sim_elapsed_s=sim_now - self._sim0, real_elapsed_s=time.monotonic() - self._t0,
            step=self.step, narration=self.narration, campaigns=tuple(rows), dialers=tuple(dialers),
            notifications_up=bool(parts is not None and parts.channels.up),
            reads_per_s=sum(1 for t in reads if t > sim_now - 1.0),
            reads_peak=run.sim.traffic.reads_per_second_peak(clock="sim"),
            read_limit=self._settings.platform.read_limit_per_s,
            commands=len(run.sent), results=len(run.observer.results), events=len(run.observer.events),
            stream=tuple(self._feed.lines),
        )

    def _note(self, campaign_id: str) -> str:
        result = self._run.observer.last_result.get(campaign_id)
        if result is None:
            return ""
        command = self._run.sent.get(str(result.get("commandId")))
        action = command.action.value if command is not None else "?"
        reason = f" {result['reason']}" if result.get("reason") else ""
        return f"{action} {result.get('outcome')}{reason}"


def _result_text(sent: Mapping[str, Command]) -> Callable[[Mapping[str, Any]], str]:
    def describe(result: Mapping[str, Any]) -> str:
        command = sent.get(str(result.get("commandId")))
        action = command.action.value if command is not None else "?"
        reason = f" {result['reason']}" if result.get("reason") else ""
        return (f"{result.get('campaignId', '?'):<18} {action:<6} {result.get('outcome')}{reason}  "
                f"{result.get('message', '')}")
    return describe


# --- the run -------------------------------------------------------------------------------------

def _settings(broker: BrokerHandle, topics: TopicNames, url: str, config: SimulatorConfig, speed: float,
              key_text: str, data_dir: Path) -> Settings:
    return Settings(
        # The demo is self-contained: CAMPAIGN_FSM_* variables meant for `run` must not reach it.
        _env_prefix="CAMPAIGN_FSM_DEMO_IGNORES_THE_ENVIRONMENT__",
        platform={"profile": "guide", "base_url": url, "client_id": config.client_id,
                  "client_secret": config.client_secret, "notifications": True},
        kafka=broker.service_kafka_settings(topics, group_id=f"campaign-fsm-demo-{uuid.uuid4().hex[:8]}",
                                            partitions=3),
        auth={"keys": {KEY_ID: key_text}},
        http={"port": 0},
        outbox_path=str(data_dir / "outbox.sqlite3"),
        time_scale=speed,
    )


def _topics_for(options: DemoOptions, broker: BrokerHandle) -> TopicNames:
    if options.topic_prefix is not None:
        return TopicNames.with_prefix(options.topic_prefix)
    if broker.kind == "external":
        # A shared broker may hold an earlier run's topics: this run gets its own.
        return TopicNames.with_prefix(f"demo-{uuid.uuid4().hex[:8]}.")
    return TopicNames()


def _default_report(options: DemoOptions) -> Path:
    if options.report is not None:
        return options.report
    if options.keep_data is not None:
        return options.keep_data / "audit-report.html"
    return Path(tempfile.mkdtemp(prefix="campaign-fsm-demo-report-")) / "audit-report.html"


async def run_demo(options: DemoOptions, broker: BrokerHandle, *, out: TextIO, data_dir: Path) -> DemoOutcome:
    """Run the scenario against `broker` (left running: the caller owns it) and judge it.

    Everything started here is stopped here, in reverse order, whether the run ends, fails or is
    cancelled. The topics are read back before returning, so the caller may stop the broker.
    """
    topics = _topics_for(options, broker)
    outcome = DemoOutcome(exit_code=1, topics=topics, bootstrap=broker.bootstrap)
    feed = _Feed(out, echo=not options.tui)
    feed.emit("info", f"broker {broker.kind}{f' pid {broker.pid}' if broker.pid else ''} on {broker.bootstrap}; "
                      f"topics {topics.commands}, {topics.results}, {topics.events}")
    key = secrets.token_bytes(32)
    key_text = "base64:" + base64.b64encode(key).decode()
    signer = Signer(KEY_ID, key)
    tenant = demo_tenant()
    names = {c.id: c.name for c in tenant.campaigns.values()}
    sim = Simulator(tenant, SimulatorConfig(rate_clock="sim"), clock=ScaledClock(options.speed))
    live: LiveView | None = None
    async with contextlib.AsyncExitStack() as stack:
        url, sim = await stack.enter_async_context(run_simulator(simulator=sim))
        feed.emit("info", f"simulator {url}: {len(tenant.campaigns)} campaigns on {len(tenant.dialers)} "
                          f"dialers, time x{options.speed:g}")
        settings = _settings(broker, topics, url, sim.config, options.speed, key_text, data_dir)
        service = Service(settings)
        parts = await stack.enter_async_context(service.running())
        feed.emit("info", f"service ready: {len(parts.orchestrator.campaigns)} campaigns reconciled; "
                          f"metrics at {parts.http_url}/metrics")
        producer = Producer(broker.kafka_config(topics=topics, client_id="campaign-fsm-demo"))
        await stack.enter_async_context(producer)
        sent: dict[str, Command] = {}
        observer = _Observer(broker.kafka_config(topics=topics), topics, feed, _result_text(sent))
        await stack.enter_async_context(observer.running())
        run = _Run(sim=sim, service=service, producer=producer, topics=topics, signer=signer,
                   observer=observer, feed=feed, speed=options.speed, sent=sent)
        viewer = _Viewer(run, settings, feed, names)
        if options.tui:
            live = LiveView(out, viewer.snapshot, size=options.tui_size, color=options.color)
            await stack.enter_async_context(live.running())
        await _play(run, viewer, feed, outcome)
        final = viewer.snapshot()  # before the service stops: channels, gates and loads as they ended
    if live is not None:
        # The alternate screen is gone with the live view: leave the last frame in the scrollback.
        columns, lines = live.size()
        feed.print(plain_frame(final, (columns - 1, lines)))
    config = broker.kafka_config(topics=topics, client_id="campaign-fsm-demo-readback")
    await _read_back(config, topics, outcome)
    _judge(outcome, feed)
    await _audit(config, topics, _default_report(options), outcome, feed)
    passed = outcome.failure is None and all(s.ok for s in outcome.situations) and outcome.audit_clean is True
    outcome.exit_code = 0 if passed else 1
    feed.print(f"demo {'PASSED' if passed else 'FAILED'}: {sum(s.ok for s in outcome.situations)} of "
               f"{len(SITUATIONS)} situations seen on the topics, audit "
               f"{'clean' if outcome.audit_clean else 'NOT clean'}"
               + (f"; {outcome.failure}" if outcome.failure else ""))
    return outcome


async def _play(run: _Run, viewer: _Viewer, feed: _Feed, outcome: DemoOutcome) -> None:
    for number, step in enumerate(STEPS, 1):
        run.step_key = step.key
        viewer.step = f"step {number}/{len(STEPS)}: {step.title}"
        viewer.narration = step.narration
        feed.emit("step", f"{number}/{len(STEPS)} {step.title}: {step.narration}")
        try:
            await step.run(run)
        except StepFailed as exc:
            outcome.failure = f"step {number} ({step.title}) failed: {exc}"
            feed.emit("fail", outcome.failure)
            return
        outcome.steps_done = number
        feed.emit("ok", f"{number}/{len(STEPS)} {step.title}: done")
    viewer.step = "scenario done"
    viewer.narration = "stopping the service; then the topics are read back and audited"


def _decode(values: Sequence[bytes | None]) -> list[Any]:
    out = []
    for value in values:
        if value is None:
            continue
        with contextlib.suppress(orjson.JSONDecodeError):
            out.append(orjson.loads(value))
    return out


async def _read_back(config: KafkaConfig, topics: TopicNames, outcome: DemoOutcome) -> None:
    for name, topic in (("commands", topics.commands), ("results", topics.results), ("events", topics.events)):
        records = await read_topic(config, topic)
        outcome.records[name] = _decode([r.value for r in records])


def _judge(outcome: DemoOutcome, feed: _Feed) -> None:
    outcome.situations = check_situations(outcome.records.get("commands", []), outcome.records.get("results", []),
                                          outcome.records.get("events", []))
    feed.print(f"situations, judged from {outcome.topics.commands}, {outcome.topics.results} and "
               f"{outcome.topics.events}:")
    for s in outcome.situations:
        feed.print(f"  [{'ok' if s.ok else 'MISSING'}] {s.title}\n         {s.detail}")


async def _audit(config: KafkaConfig, topics: TopicNames, report_path: Path, outcome: DemoOutcome,
                 feed: _Feed) -> None:
    replay = await read_events(config, topics.events, strict=True)
    states = await read_state_records(config, topics.state)
    check_state_records(replay, states)
    requesters = await read_requesters(config, topics.commands)
    report = build_report(replay, topic=topics.events, requesters=requesters, state_checked=topics.state)
    feed.print("")
    feed.print(f"audit of {topics.events}:")
    for line in render_text(report, transitions=False):
        feed.print("  " + line)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_write_report, report, report_path)
    outcome.audit_clean = bool(report["clean"])
    outcome.report_path = report_path
    feed.print(f"HTML report: {report_path}")


def _write_report(report: Mapping[str, Any], path: Path) -> None:
    path.write_text(render_html(report), encoding="utf-8")
    path.with_suffix(".json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


# --- the command: broker lifecycle, signals, logs ------------------------------------------------

class _Interrupted(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted(signum)


@contextlib.contextmanager
def _signals(handler: Any) -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """The service logs into the data dir: on the terminal they would tear the live view."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    quiet = {name: logging.getLogger(name).level for name in ("transitions", "aiokafka")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)
        handler.close()


async def _run_until_signal(options: DemoOptions, broker: BrokerHandle, out: TextIO, data_dir: Path) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            task.cancel()
        else:
            sys.stderr.write("campaign-fsm demo: still stopping, please wait\n")

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        outcome = await run_demo(options, broker, out=out, data_dir=data_dir)
        return outcome.exit_code
    except asyncio.CancelledError:
        if not received:
            raise
        return 128 + received[0]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            # remove_signal_handler puts the defaults back; until main() is done, a signal still
            # has to end in the broker being stopped.
            signal.signal(sig, _raise_interrupted)


def main(options: DemoOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`campaign-fsm demo`: start the broker, run the demo, stop everything. Returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    problems = options.problems()
    if problems:
        for problem in problems:
            err.write(f"campaign-fsm demo: error: {problem}\n")
        return 2
    if options.keep_data is not None:
        options.keep_data.mkdir(parents=True, exist_ok=True)
        data_dir = options.keep_data
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="campaign-fsm-demo-"))
    handle: BrokerHandle | None = None
    code = 1
    try:
        with _signals(_raise_interrupted), _logs_to(data_dir / "demo.log"):
            try:
                handle = _start_broker(options.broker, data_dir / "broker", out)
                code = asyncio.run(_run_until_signal(options, handle, out, data_dir))
            except _Interrupted as exc:
                code = 128 + exc.signum
            except BrokerError as exc:
                err.write(f"campaign-fsm demo: error: {exc}\n")
                code = 2
        if code >= 128:
            out.write(f"\ncampaign-fsm demo: interrupted ({signal.Signals(code - 128).name}): the service and "
                      "the simulator are stopped; stopping the broker\n")
            out.flush()
    finally:
        # A second Ctrl-C must not leave the broker behind halfway through stopping it.
        with _signals(signal.SIG_IGN):
            if handle is not None:
                handle.stop()
        if options.keep_data is None:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            out.write(f"data kept in {data_dir} (broker data, demo.log)\n")
            out.flush()
    return code


def _start_broker(choice_text: str, directory: Path, out: TextIO) -> BrokerHandle:
    choice = parse_broker_choice(choice_text)
    if choice.kind == "external":
        assert choice.bootstrap is not None
        try:
            probe_kafka(choice.bootstrap, timeout=5.0)  # it asks the first address
        except (OSError, BrokerError) as exc:
            raise BrokerError(f"no Kafka broker answers at {choice.bootstrap}: {exc}") from None
        return BrokerHandle(kind="external", bootstrap=choice.bootstrap)
    out.write(f"starting the bundled {choice.kind} broker...\n")
    out.flush()
    return start_broker(choice.kind, directory)
