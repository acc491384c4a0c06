"""One run of the demo against a broker: start the simulator and the service, play the steps, stop
everything, read the topics back, judge the situations and audit `campaign.events` (`run_demo`),
with what it was asked (`DemoOptions`) and what it saw (`DemoOutcome`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from adapters.audit import build_report, read_events, read_requesters, read_state_records, render_html, render_text
from adapters.kafka import KafkaSettings, TopicNames, read_topic
from adapters.signing import Signer
from fsm.audit import check_state_records
from schemas.commands import Command
from schemas.types import Action

from ..brokers import BrokerError, BrokerHandle, parse_broker_choice
from ..simulator import Simulator, SimulatorConfig
from ..stack import local_stack
from ..tui import LiveView, plain_frame
from .feed import Feed, Observer
from .scenario import KEY_ID, demo_tenant
from .situations import SITUATIONS, Situation, check_situations
from .steps import STEPS, Run, StepFailed, not_applicable
from .view import Viewer, result_text

__all__ = ["DEFAULT_SPEED", "DemoOptions", "DemoOutcome", "run_demo"]

DEFAULT_SPEED = 20.0
PROFILES = ("guide", "genesys")
# Genesys runs at most 50 voice campaigns at once per organisation; the simulator enforces it there.
_GENESYS_ACTIVE_CAP = 50
MIN_SPEED, MAX_SPEED = 1.0, 100.0


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
    profile: str = "guide"  # the platform profile of simulator and service: guide | genesys

    def problems(self) -> list[str]:
        found = []
        if self.profile not in PROFILES:
            found.append(f"--profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
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
    not_applicable: dict[str, str] = field(default_factory=dict)  # step key -> why the profile cannot run it


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
    feed = Feed(out, echo=not options.tui)
    feed.emit("info", f"broker {broker.kind}{f' pid {broker.pid}' if broker.pid else ''} on {broker.bootstrap}; "
                      f"topics {topics.commands}, {topics.results}, {topics.events}")
    key = secrets.token_bytes(32)
    key_text = "base64:" + base64.b64encode(key).decode()
    signer = Signer(KEY_ID, key)
    tenant = demo_tenant()
    names = {c.id: c.name for c in tenant.campaigns.values()}
    genesys = options.profile == "genesys"
    sim = Simulator(tenant, SimulatorConfig(profile="genesys" if genesys else "guide", rate_clock="sim",
                                            active_campaign_cap=_GENESYS_ACTIVE_CAP if genesys else None),
                    time_scale=options.speed)
    live: LiveView | None = None
    async with contextlib.AsyncExitStack() as stack:
        local = await stack.enter_async_context(local_stack(
            broker, topics, platform=sim, group=f"campaign-fsm-demo-{uuid.uuid4().hex[:8]}", scale=options.speed,
            data_dir=data_dir, client_id="campaign-fsm-demo", auth={"keys": {KEY_ID: key_text}},
            ignore_environment=True, profile=options.profile))
        service, producer, settings = local.service, local.producer, local.settings
        assert service.parts is not None
        feed.emit("info", f"simulator {local.platform.url} ({options.profile} profile): {len(tenant.campaigns)} "
                          f"campaigns on {len(tenant.dialers)} dialers, time x{options.speed:g}")
        feed.emit("info", f"service ready: {len(service.parts.orchestrator.campaigns)} campaigns reconciled; "
                          f"metrics at {service.parts.http_url}/metrics")
        sent: dict[str, Command] = {}
        observer = Observer(broker.kafka_config(topics=topics), topics, feed, result_text(sent))
        await stack.enter_async_context(observer.running())
        run = Run(sim=sim, service=service, producer=producer, topics=topics, signer=signer,
                   observer=observer, feed=feed, speed=options.speed, sent=sent)
        viewer = Viewer(run, settings, feed, names)
        if options.tui:
            live = LiveView(out, viewer.snapshot, size=options.tui_size, color=options.color)
            await stack.enter_async_context(live.running())
        await _play(run, viewer, feed, outcome, options.profile, service.parts.client.supported_actions)
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
    judged = [s for s in outcome.situations if s.applies]
    skipped = [s.key for s in outcome.situations if not s.applies]
    feed.print(f"demo {'PASSED' if passed else 'FAILED'}: {sum(s.ok for s in judged)} of "
               f"{len(SITUATIONS) - len(skipped)} situations seen on the topics"
               + (f" ({len(skipped)} not applicable on {options.profile}: {', '.join(skipped)})" if skipped else "")
               + f", audit {'clean' if outcome.audit_clean else 'NOT clean'}"
               + (f"; {outcome.failure}" if outcome.failure else ""))
    return outcome


async def _play(run: Run, viewer: Viewer, feed: Feed, outcome: DemoOutcome, profile: str,
                supported: frozenset[Action]) -> None:
    for number, step in enumerate(STEPS, 1):
        reason = not_applicable(step, profile, supported)
        if reason is not None:
            outcome.not_applicable[step.key] = reason
            outcome.steps_done = number
            feed.emit("skip", f"{number}/{len(STEPS)} {step.title}: not applicable: {reason}")
            continue
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


async def _read_back(config: KafkaSettings, topics: TopicNames, outcome: DemoOutcome) -> None:
    for name, topic in (("commands", topics.commands), ("results", topics.results), ("events", topics.events)):
        records = await read_topic(config, topic)
        outcome.records[name] = _decode([r.value for r in records])


def _judge(outcome: DemoOutcome, feed: Feed) -> None:
    outcome.situations = check_situations(outcome.records.get("commands", []), outcome.records.get("results", []),
                                          outcome.records.get("events", []), not_applicable=outcome.not_applicable)
    feed.print(f"situations, judged from {outcome.topics.commands}, {outcome.topics.results} and "
               f"{outcome.topics.events}:")
    for s in outcome.situations:
        mark = "n/a" if not s.applies else "ok" if s.ok else "MISSING"
        feed.print(f"  [{mark}] {s.title}\n         {s.detail}")


async def _audit(config: KafkaSettings, topics: TopicNames, report_path: Path, outcome: DemoOutcome,
                 feed: Feed) -> None:
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
