"""The storm bench's runs: the service against the simulator (`service_run`, notifications followed
or not) and the naive client (`naive_run`), each on a fresh simulator process, and what each saw
(`ServiceRun`, `NaiveRun`)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from _storm_naive import NaiveResult, run_naive
from _storm_platform import CLIENT_ID, SimProcess
from aiokafka import AIOKafkaConsumer

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator.traffic import peak_in_window
from adapters.devtools.stack import Platform, local_stack
from adapters.kafka import KafkaSink, OutgoingRecord, TopicNames
from fsm.tasks import cancel_and_wait
from schemas.commands import Command, CommandResult
from schemas.types import Action, Priority

__all__ = ["NaiveRun", "ServiceRun", "naive_run", "service_run"]

_TERMINAL = frozenset({"COMPLETED", "FAILED", "REFUSED"})



class _TimedSink:
    """KafkaSink plus, per campaign, when a STOPPED event was handed over and when it was acknowledged."""

    def __init__(self, inner: KafkaSink, marks: dict[str, tuple[float, float]]) -> None:
        self._inner = inner
        self._marks = marks

    async def state_changed(self, event: dict[str, Any], snapshot: dict[str, Any],
                            results: Sequence[CommandResult] = ()) -> None:
        handed = time.monotonic()
        await self._inner.state_changed(event, snapshot, results)
        if event.get("data", {}).get("to") == "STOPPED":
            self._marks.setdefault(event["subject"], (handed, time.monotonic()))

    async def state_saved(self, snapshot: dict[str, Any], results: Sequence[CommandResult] = ()) -> None:
        await self._inner.state_saved(snapshot, results)

    async def command_result(self, result: CommandResult) -> None:
        await self._inner.command_result(result)

    @property
    def depth(self) -> int:
        return self._inner.depth

    @property
    def undeliverable(self) -> int:
        return self._inner.undeliverable

    @property
    def healthy(self) -> bool:
        return self._inner.healthy

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def wait_drained(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        return await self._inner.wait_drained(timeout)


class _StampingTransport(httpx.AsyncBaseTransport):
    """The service's HTTP transport, noting when each request left and when its answer came back."""

    def __init__(self, sent: list[tuple[str, str, float, float, int]]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._sent = sent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        left = time.monotonic()
        response = await self._inner.handle_async_request(request)
        self._sent.append((request.method, request.url.path, left, time.monotonic(), response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(slots=True)
class ServiceRun:
    label: str
    scale: float
    notifications: bool
    campaigns: int
    transitions: int = 0  # commands sent (guide: one stop per campaign; genesys: the waves' stops and starts)
    waves: int = 1
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    real_s: float = 0.0
    startup_real_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: list[dict[str, Any]] = field(default_factory=list)
    final_states: collections.Counter[str] = field(default_factory=collections.Counter)
    detect_ms: list[float] = field(default_factory=list)
    emit_ms: list[float] = field(default_factory=list)  # simulator STOPPED -> orchestrator hands the event over
    ack_ms: list[float] = field(default_factory=list)  # -> broker acknowledged (acks=all)
    causes: collections.Counter[str] = field(default_factory=collections.Counter)
    unmatched: int = 0
    timed_out: bool = False
    storm_at: float = 0.0  # monotonic instant the 1,000 stops were published
    high: frozenset[str] = frozenset()
    accepted_at: list[float] = field(default_factory=list)  # ACCEPTED results received (monotonic)
    detect_late_ms: list[float] = field(default_factory=list)  # detections of STOPPEDs after the last ACCEPTED
    loop_lag_ms: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, real ms a 10 ms sleep overslept)
    sim_stalls: list[tuple[str, float, float]] = field(default_factory=list)  # --sim-diag: (gc|lag, monotonic, ms)
    cap_deferred_count: int = 0

    @property
    def completed(self) -> int:
        return self.outcomes["COMPLETED"]

    @property
    def sim_s(self) -> float:
        return self.real_s * self.scale

    def reads(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["kind"] == "read"]

    def status(self, *statuses: int) -> int:
        return sum(1 for r in self.requests if r["status"] in statuses)

    def peak_reads_per_s(self) -> int:
        return peak_in_window(r["simTime"] for r in self.reads())

    def max_in_flight(self) -> int:
        return max((s["inFlight"] for s in self.in_flight), default=0)

    def commands_while_in_flight(self) -> int:
        return sum(1 for r in self.requests if r["kind"] == "command" and r["campaignInFlight"])

    def gets_per_transition(self) -> float:
        return len(self.reads()) / (self.transitions or self.campaigns)

    def api_requests(self) -> list[dict[str, Any]]:
        """Every request the service made of the API, any method (the token POST apart: Genesys takes
        it at login.<region>, outside the API's per-client budget)."""
        return [r for r in self.requests if r["kind"] != "auth"]

    def peak_requests_per_60s(self) -> int:
        return peak_in_window((r["simTime"] for r in self.api_requests()), 60.0)

    def cap_deferred(self) -> int:
        """Commands held DEFERRED by the active-campaign cap gate (at least once)."""
        return self.cap_deferred_count

    def sim_after_storm(self, wall: float) -> float:
        return (wall - self.storm_at) * self.scale

    def posts(self) -> list[dict[str, Any]]:
        return sorted((r for r in self.requests if r["kind"] == "command"), key=lambda r: r["wallTime"])

    def first_post_s(self) -> float:
        posts = self.posts()
        return self.sim_after_storm(posts[0]["wallTime"]) if posts else math.nan

    def last_high_post_s(self) -> float:
        times = [self.sim_after_storm(r["wallTime"]) for r in self.posts() if r["campaignId"] in self.high]
        return max(times, default=math.nan)

    def last_accepted_s(self) -> float:
        return self.sim_after_storm(max(self.accepted_at)) if self.accepted_at else math.nan

    def max_post_gap_s(self) -> float:
        """The longest wait between two POSTs on one dialer (the stagger asks for 15 s)."""
        last: dict[str, float] = {}
        gap = 0.0
        for r in self.posts():
            t = r["wallTime"]
            if r["dialerId"] in last:
                gap = max(gap, t - last[r["dialerId"]])
            last[r["dialerId"]] = t
        return gap * self.scale

    def reads_by_resource(self) -> dict[str, int]:
        return dict(collections.Counter(_resource(r["path"]) for r in self.reads()))


def _resource(path: str) -> str:
    parts = path.rstrip("/").split("/")
    if "contactlists" in parts:
        return "list"
    if "dialers" in parts:
        return "dialer"
    if parts[-1] == "campaigns":
        return "page"
    return "campaign" if parts[-2] == "campaigns" else parts[-1]


@dataclass(slots=True)
class _Seen:
    outcomes: dict[str, str] = field(default_factory=dict)  # command id -> latest terminal outcome
    stopped_at: dict[str, float] = field(default_factory=dict)  # campaign -> STOPPED event received (monotonic)
    cause: dict[str, str] = field(default_factory=dict)
    # received, campaign, outcome, reason, command id
    log: list[tuple[float, str, str, str | None, str]] = field(default_factory=list)


async def _watch(broker: BrokerHandle, topics: TopicNames, fetch_wait_ms: int, seen: _Seen,
                 stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        topics.events, topics.results, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None, fetch_max_wait_ms=fetch_wait_ms,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            received = time.monotonic()
            for tp, records in batches.items():
                for record in records:
                    value = orjson.loads(record.value)
                    if tp.topic == topics.events:
                        data = value.get("data", {})
                        # A campaign's first record, "(new) -> STOPPED" (genesys: the start-up reconcile of
                        # the campaigns that are off), is no detection of the storm's stop.
                        if data.get("to") == "STOPPED" and data.get("from") is not None:
                            seen.stopped_at.setdefault(value["subject"], received)
                            seen.cause.setdefault(value["subject"], str(data.get("cause")))
                    else:
                        seen.log.append((received, value["campaignId"], value["outcome"], value.get("reason"),
                                         value["commandId"]))
                        if value.get("outcome") in _TERMINAL:
                            seen.outcomes[value["commandId"]] = value["outcome"]
    finally:
        await consumer.stop()


async def _loop_lag(out: list[tuple[float, float]]) -> None:
    """How late a 10 ms sleep wakes up: the service's event loop is this busy (it shares the loop)."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        after = time.monotonic()
        out.append((after, (after - before - 0.01) * 1000.0))


async def _progress(label: str, scale: float, started: float, total: int, seen: _Seen, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        done = sum(1 for o in seen.outcomes.values() if o == "COMPLETED")
        sim = (time.monotonic() - started) * scale
        print(f"[{label}] {time.monotonic() - started:6.1f} s real, {sim:7.1f} s sim: "
              f"{done}/{total} completed", file=sys.stderr, flush=True)


async def service_run(broker: BrokerHandle, args: argparse.Namespace, workdir: Path, tenant: dict[str, Any],
                      ids: list[str], high: set[str], *, label: str, scale: float, notifications: bool,
                      plan: list[list[tuple[str, Action]]]) -> ServiceRun:
    """One service run: each wave of `plan` published at once, the next when every command of it has ended."""
    total = sum(len(wave) for wave in plan)
    run = ServiceRun(label, scale, notifications, len(ids), transitions=total, waves=len(plan))
    tenant_file = workdir / f"tenant-{label}.json"
    tenant_file.write_bytes(orjson.dumps(tenant))
    secret = uuid.uuid4().hex
    sim_log = workdir / f"simulator-{label}.log"
    async with SimProcess(tenant_file, scale, secret, sim_log, args.seed, diag=args.sim_diag,
                          profile=args.profile) as sim:
        print(f"[{label}] simulator pid {sim.pid} at {sim.url}, scale {scale:g}", file=sys.stderr, flush=True)
        prefix = f"storm-{uuid.uuid4().hex[:8]}.{label}."
        topics = TopicNames.with_prefix(prefix)
        marks: dict[str, tuple[float, float]] = {}
        sent: list[tuple[str, str, float, float, int]] = []
        service_options = {"serve_http": False, "platform_transport": _StampingTransport(sent),
                           "sink_factory": lambda producer, names: _TimedSink(KafkaSink(producer, names), marks)}
        seen = _Seen()
        stop = asyncio.Event()
        started = time.monotonic()
        async with local_stack(broker, topics, platform=Platform(sim.url, CLIENT_ID, secret), group=prefix + "group",
                               scale=scale, partitions=6, client_id="storm-bench",
                               service_options=service_options, notifications=notifications,
                               profile=args.profile) as stack:
            run.startup_real_s = stack.startup_s
            producer = stack.producer
            watcher = asyncio.create_task(_watch(broker, topics, args.fetch_wait_ms, seen, stop),
                                          name=f"storm-watch-{label}")
            lag = asyncio.create_task(_loop_lag(run.loop_lag_ms), name=f"storm-loop-lag-{label}")
            progress: asyncio.Task[None] | None = None
            try:
                started = time.monotonic()
                progress = asyncio.create_task(
                    _progress(label, scale, started, total, seen, args.progress_s), name=f"storm-progress-{label}")
                deadline = started + args.cap_s / scale
                published = 0
                for wave in plan:
                    now = datetime.now(UTC)
                    commands = [Command(id=uuid.uuid4(), campaign_id=cid, action=action,
                                        priority=Priority.HIGH if cid in high else Priority.STANDARD,
                                        requested_by="storm-bench", issued_at=now) for cid, action in wave]
                    await producer.send_many(OutgoingRecord(topics.commands, c.campaign_id, c) for c in commands)
                    published += len(commands)
                    while len(seen.outcomes) < published and not run.timed_out:
                        run.timed_out = time.monotonic() > deadline
                        if watcher.done():
                            watcher.result()  # the consumer died: raise why
                        await asyncio.sleep(0.05)
                run.real_s = time.monotonic() - started
            finally:
                await cancel_and_wait(progress, lag)
                await asyncio.sleep(0.2)  # let the last STOPPED events reach the watcher
                stop.set()
                await watcher
        run.outcomes.update(seen.outcomes.values())
        run.storm_at, run.high = started, frozenset(high)
        run.accepted_at = [at for at, _, outcome, _, _ in seen.log if outcome == "ACCEPTED"]
        run.cap_deferred_count = len({cmd for _, _, outcome, reason, cmd in seen.log
                                      if outcome == "DEFERRED" and reason == "ACTIVE_CAMPAIGN_CAP"})
        traffic = await sim.admin("/admin/traffic")
        state = await sim.admin("/admin/state")
    if args.sim_diag:
        stalls = [line for line in sim_log.read_text(errors="replace").splitlines() if line.startswith("SIMDIAG")]
        run.sim_stalls = [(line.split()[1], float(line.split()[2]), float(line.split()[3])) for line in stalls]
    run.requests = traffic["requests"]
    run.in_flight = traffic["inFlight"]
    run.final_states.update(c["state"] for c in state["campaigns"])
    _latencies(run, seen, marks)
    if args.dump:
        _dump(Path(args.dump) / f"{label}.json", {
            "scale": scale, "stormStartedAt": started, "requests": run.requests, "inFlight": run.in_flight,
            "sent": [list(s) for s in sent], "results": seen.log, "stoppedAt": seen.stopped_at, "marks": marks,
            "loopLag": run.loop_lag_ms, "simStalls": run.sim_stalls})
    return run


def _dump(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(record))


def _latencies(run: ServiceRun, seen: _Seen, marks: dict[str, tuple[float, float]]) -> None:
    """Match each campaign's STOPPED on the platform (its last in-flight sample) to our event."""
    left: dict[str, float] = {}
    for sample in run.in_flight:  # in order: the last one of a campaign is it leaving STOPPING
        left[sample["campaignId"]] = sample["wallTime"]
    to_ms = run.scale * 1000.0
    for cid, platform_at in left.items():
        arrived = seen.stopped_at.get(cid)
        if arrived is None:
            run.unmatched += 1
            continue
        run.detect_ms.append((arrived - platform_at) * to_ms)
        if run.accepted_at and platform_at > max(run.accepted_at):
            run.detect_late_ms.append((arrived - platform_at) * to_ms)
        run.causes[seen.cause.get(cid, "?")] += 1
        if cid in marks:
            handed, acked = marks[cid]
            run.emit_ms.append((handed - platform_at) * to_ms)
            run.ack_ms.append((acked - platform_at) * to_ms)


@dataclass(slots=True)
class NaiveRun:
    scale: float
    result: NaiveResult
    final_states: collections.Counter[str] = field(default_factory=collections.Counter)
    max_in_flight: int = 0


async def naive_run(args: argparse.Namespace, workdir: Path, tenant: dict[str, Any], ids: list[str], *,
                    scale: float) -> NaiveRun:
    tenant_file = workdir / "tenant-naive.json"
    tenant_file.write_bytes(orjson.dumps(tenant))
    secret = uuid.uuid4().hex
    async with SimProcess(tenant_file, scale, secret, workdir / "simulator-naive.log", args.seed) as sim:
        print(f"[naive] simulator pid {sim.pid} at {sim.url}, scale {scale:g}", file=sys.stderr, flush=True)
        result = NaiveResult(list(ids))
        began = time.monotonic()

        async def progress() -> None:
            while True:
                await asyncio.sleep(args.progress_s)
                real = time.monotonic() - began
                print(f"[naive] {real:6.1f} s real, {real * scale:7.1f} s sim: {len(result.seen_at)}/{len(ids)} "
                      f"seen STOPPED, {result.gets} GETs", file=sys.stderr, flush=True)

        watcher = asyncio.create_task(progress(), name="storm-progress-naive")
        try:
            await run_naive(sim.url, CLIENT_ID, secret, ids, scale=scale, cap_s=args.naive_cap_s, result=result)
        finally:
            await cancel_and_wait(watcher)
        state = await sim.admin("/admin/state")
        timeline = (await sim.admin("/admin/traffic"))["inFlight"] if args.naive_traffic else []
    run = NaiveRun(scale, result)
    run.final_states.update(c["state"] for c in state["campaigns"])
    run.max_in_flight = max((s["inFlight"] for s in timeline), default=0)
    return run
