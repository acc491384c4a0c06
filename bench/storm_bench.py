"""Bench: the shift-change storm. 1,000 running campaigns on 20 dialers, all told to stop at once.

Three runs, each on a fresh simulator process with a fresh tenant (so nothing carries over):

1. `ws-up`: the service (in-process, `Service(settings).running()`, its own topics and group)
   with platform notifications followed;
2. `ws-down`: the same with `platform.notifications = False`, so the service never opens a channel
   and tracks every transition by fallback polling (2 s, x1.5, cap 30 s, +-20 % jitter, staggered).
   This is "down for the whole storm": a socket-closing fault would instead make the channel flap
   and reconnect, measuring recovery rather than the steady fallback;
3. `naive`: `bench/_storm_naive.py`, a client without the guide's rules (fixed 2 s polling of every
   campaign, no state gate, no per-dialer limit, no read limiter, 429s ignored) sending the same
   1,000 stops straight to the simulator with httpx.

The tenant: 1,000 campaigns round-robin over 20 dialers; on each dialer every other campaign is
PREDICTIVE and the rest alternate PROGRESSIVE/POWER (so every dialer is half predictive); all
RUNNING; 0..`--max-calls` (10) active calls each on 1,000 licensed lines per dialer, so no dialer
is above 50 % of capacity: the bench measures the storm, not the 80 % capacity deferral (which
would only hold STANDARD stops back). One campaign per dialer (`--high`, 20) is HIGH priority, the
rest STANDARD. The simulator keeps the guide's platform limits: 409/500 above 3 transitions in
flight per dialer, 429 above 10 reads per *simulated* second (`--rate-clock sim`).

Why the simulator runs as a subprocess (`python -m adapters.cli.simulate`): it is the platform,
not part of us. In-process it would share the service's event loop and GIL, so its HTTP and
WebSocket work would delay the service's and inflate (or hide) the detection latency; on its own
process it runs on the other core as a real platform would. What the bench needs from it comes
through its admin API (`GET /admin/traffic`: every request it served with status, kind and
simulated/wall time, and the in-flight timeline of every transitional state entered or left).

Time is scaled: service and simulator share the scale, all rates and delays are in simulated
seconds, and the 15 s STANDARD stagger makes a dialer's 50 stops take >= 750 simulated seconds.
A larger scale shortens the run but multiplies every real millisecond, so each run has its own
scale (`--scale-up`, `--scale-down`, `--scale-naive`):

- ws-up, 2: the detection target is 100 simulated ms, and the service's real p99 from platform
  change to event on Kafka is ~10-35 ms on a shared 2-core machine (x2 = 20-70 sim ms);
- ws-down, 4: no latency target. The read window holds at any scale: the limiter counts a read
  from its answer, so a real stall of either process (which the scale turns into a large part of a
  simulated second) delays reads but cannot bunch eleven into one simulated second at the
  simulator. (Counted from the grant, as before, a 52 ms stall at scale 8 put 11 reads in one
  simulated second, and a full run on a busy machine got 1 and 3 429s at scales 2 and 4.)
- naive, 2: the naive client asks for 500 reads per simulated second; at 2 it keeps its 2 s
  cadence (the table shows the achieved interval), at 4 it cannot and would under-count.

What is measured (from the simulator's own record unless said otherwise):

- `completed`: COMPLETED results on `campaign.command-results` (of `--campaigns`), per run;
- `max_in_flight_per_dialer`: the most campaigns transitional at once on one dialer;
- `peak_reads_per_s`: the most GETs (429s included) within any 1 s of simulated time;
- `http_409`, `http_429`, `http_500`: answers the simulator gave the service, both runs;
- `gets_per_transition`: the service's GETs / campaigns (startup reads included); the JSON key is
  the worse of the two runs, with `_ws_up` and `_ws_down` beside it;
- `naive_gets_per_transition`: every GET the naive client sent / campaigns (client-side count);
- `detect_p99_ms_*`: for each campaign, the wall time at which the simulator moved it to STOPPED
  (its in-flight timeline: the sample where the campaign leaves STOPPING) to the wall time at
  which a dedicated consumer on `campaign.events` (fetch_max_wait `--fetch-wait-ms`) received our
  `CampaignStateChanged` to STOPPED; both are CLOCK_MONOTONIC (shared by the processes of one
  machine), and the real latency is multiplied by the run's scale to give simulated ms. STOPPING
  is not a detection (it is emitted on the 202), so only STOPPED counts. Beside it, from a sink
  wrapper inside the service: when the orchestrator handed the event to the sink (`emit`) and
  when the broker acknowledged it (`acked`, the literal "on Kafka"), to split the latency. The
  table also shows the p99 of the STOPPEDs that happened after the last ACCEPTED result (the
  service's steady state, once the intake backlog is gone), and when the first POST, the last
  HIGH POST and the last ACCEPTED went out, which show how long the storm's intake held
  dispatch and detection back.

Run: `.venv/bin/python bench/storm_bench.py [--broker noida|tansu|host:port] [--scale-up 2]
[--scale-down 4] [--scale-naive 2] [--runs up,down,naive] [--dump DIR]` (about 18 minutes; `--campaigns
40 --dialers 4 --scale-up 10 --scale-down 10 --scale-naive 10` for a one-minute look). Progress goes
to stderr; the table, then as the last line one JSON object, to stdout. Exit 0 when every target
is met. Everything started here (broker, simulator processes) is stopped on the way out, Ctrl-C
included.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
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
from aiokafka import AIOKafkaConsumer

from adapters.devtools.brokers import BrokerError, BrokerHandle, broker_from_env
from adapters.devtools.simulator.traffic import peak_in_window
from adapters.kafka import KafkaSink, OutgoingRecord, Producer, TopicNames
from adapters.service import Service
from adapters.settings import Settings
from schemas.commands import Command, CommandResult
from schemas.types import Action, Priority

__all__ = ["main"]

_CLIENT_ID = "storm-bench"
_TERMINAL = frozenset({"COMPLETED", "FAILED", "REFUSED"})
_ROOT = Path(__file__).resolve().parent.parent

# --- the tenant ----------------------------------------------------------------------------------


def storm_tenant(campaigns: int, dialers: int, *, high: int, max_calls: int, capacity: int,
                 seed: int) -> tuple[dict[str, Any], list[str], set[str]]:
    """The tenant document, the campaign ids, and the ids of the HIGH priority ones."""
    rng = random.Random(seed)
    width = max(4, len(str(campaigns)))
    dialer_ids = [f"dialer-{i + 1:02d}" for i in range(dialers)]
    doc: dict[str, Any] = {"dialers": [{"id": d, "licensedCapacity": capacity} for d in dialer_ids],
                           "contactLists": [], "campaigns": []}
    ids: list[str] = []
    for i in range(campaigns):
        cid, lid = f"campaign-{i + 1:0{width}d}", f"list-{i + 1:0{width}d}"
        nth_on_dialer = i // dialers
        # Types alternate within each dialer (not across dialers), so every dialer is half predictive.
        dialer_type = ("PREDICTIVE" if nth_on_dialer % 2 == 0
                       else "PROGRESSIVE" if nth_on_dialer % 4 == 1 else "POWER")
        doc["contactLists"].append({"id": lid, "name": f"Contacts {i + 1}"})
        doc["campaigns"].append({"id": cid, "name": f"Campaign {i + 1}", "dialerType": dialer_type,
                                 "dialerId": dialer_ids[i % dialers], "contactListId": lid,
                                 "state": "RUNNING", "activeCalls": rng.randint(0, max_calls)})
        ids.append(cid)
    return doc, ids, set(ids[:high])


# --- the simulator process -----------------------------------------------------------------------


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the bench dies without cleaning up (SIGKILL, crash).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# With --sim-diag the simulator also reports, on stderr, each garbage collection and each event-loop
# stall over 20 ms: what a read waiting in its socket meanwhile is stamped late by.
_SIM_DIAG = """
import asyncio, gc, sys, time
from adapters.devtools.simulator.app import Simulator

_gc_started = [0.0]
def _gc(phase, info):
    if phase == "start":
        _gc_started[0] = time.monotonic()
    elif (time.monotonic() - _gc_started[0]) > 0.02:
        print(f"SIMDIAG gc {time.monotonic():.3f} {(time.monotonic() - _gc_started[0]) * 1000:.1f} ms "
              f"gen {info['generation']}", file=sys.stderr, flush=True)
gc.callbacks.append(_gc)

async def _lag():
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        late = time.monotonic() - before - 0.01
        if late > 0.02:
            print(f"SIMDIAG lag {time.monotonic():.3f} {late * 1000:.1f} ms", file=sys.stderr, flush=True)

_start = Simulator.start
async def _start_with_lag(self):
    self._diag_task = asyncio.create_task(_lag(), name="simdiag-lag")
    await _start(self)
Simulator.start = _start_with_lag
from adapters.cli.simulate import main
sys.exit(main())
"""


class SimProcess:
    """`python -m adapters.cli.simulate` on a free port; stopped (TERM, then KILL) on the way out."""

    def __init__(self, tenant_file: Path, scale: float, secret: str, log_file: Path, seed: int, *,
                 diag: bool = False) -> None:
        entry = ["-c", _SIM_DIAG] if diag else ["-m", "adapters.cli.simulate"]
        self._argv = [sys.executable, *entry, "--tenant", str(tenant_file),
                      "--time-scale", f"{scale:g}", "--rate-clock", "sim", "--client-id", _CLIENT_ID,
                      "--seed", str(seed), "--port", "0"]
        self._env = {**os.environ, "CAMPAIGN_FSM_SIM_CLIENT_SECRET": secret}
        self._log_file = log_file
        self._process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.pid: int | None = None

    async def __aenter__(self) -> SimProcess:
        with self._log_file.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv, stdout=asyncio.subprocess.PIPE, stderr=log, env=self._env, cwd=_ROOT,
                start_new_session=True, preexec_fn=_die_with_parent)
        self.pid = self._process.pid
        try:
            assert self._process.stdout is not None
            line = await asyncio.wait_for(self._process.stdout.readline(), timeout=60)
            if not line:
                raise RuntimeError(f"the simulator exited ({await self._process.wait()}): "
                                   f"{self._log_file.read_text(errors='replace')[-2000:]}")
            self.url = orjson.loads(line)["url"]
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def admin(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as client:
            resp = await client.get(path)
            resp.raise_for_status()
            return resp.json()


# --- the service runs ----------------------------------------------------------------------------


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
        return len(self.reads()) / self.campaigns

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


def _settings(broker: BrokerHandle, topics: TopicNames, group: str, url: str, secret: str, *, scale: float,
              notifications: bool) -> Settings:
    return Settings(
        platform={"profile": "guide", "base_url": url, "client_id": _CLIENT_ID, "client_secret": secret,
                  "notifications": notifications},
        kafka=broker.service_kafka_settings(topics, group_id=group, partitions=6),
        http={"port": 0},
        time_scale=scale,
    )


@dataclass(slots=True)
class _Seen:
    outcomes: dict[str, str] = field(default_factory=dict)  # command id -> latest terminal outcome
    stopped_at: dict[str, float] = field(default_factory=dict)  # campaign -> STOPPED event received (monotonic)
    cause: dict[str, str] = field(default_factory=dict)
    log: list[tuple[float, str, str, str | None]] = field(default_factory=list)  # received, campaign, outcome, reason


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
                        if data.get("to") == "STOPPED":
                            seen.stopped_at.setdefault(value["subject"], received)
                            seen.cause.setdefault(value["subject"], str(data.get("cause")))
                    else:
                        seen.log.append((received, value["campaignId"], value["outcome"], value.get("reason")))
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
                      ids: list[str], high: set[str], *, label: str, scale: float,
                      notifications: bool) -> ServiceRun:
    run = ServiceRun(label, scale, notifications, len(ids))
    tenant_file = workdir / f"tenant-{label}.json"
    tenant_file.write_bytes(orjson.dumps(tenant))
    secret = uuid.uuid4().hex
    sim_log = workdir / f"simulator-{label}.log"
    async with SimProcess(tenant_file, scale, secret, sim_log, args.seed, diag=args.sim_diag) as sim:
        print(f"[{label}] simulator pid {sim.pid} at {sim.url}, scale {scale:g}", file=sys.stderr, flush=True)
        prefix = f"storm-{uuid.uuid4().hex[:8]}.{label}."
        topics = TopicNames.with_prefix(prefix)
        settings = _settings(broker, topics, prefix + "group", sim.url, secret, scale=scale,
                             notifications=notifications)
        marks: dict[str, tuple[float, float]] = {}
        sent: list[tuple[str, str, float, float, int]] = []
        service = Service(settings, serve_http=False, platform_transport=_StampingTransport(sent),
                          sink_factory=lambda producer, names: _TimedSink(KafkaSink(producer, names), marks))
        seen = _Seen()
        stop = asyncio.Event()
        booted = started = time.monotonic()
        async with service.running():
            run.startup_real_s = time.monotonic() - booted
            producer = Producer(broker.kafka_config(topics=topics, client_id="storm-bench"))
            await producer.start()
            watcher = asyncio.create_task(_watch(broker, topics, args.fetch_wait_ms, seen, stop),
                                          name=f"storm-watch-{label}")
            lag = asyncio.create_task(_loop_lag(run.loop_lag_ms), name=f"storm-loop-lag-{label}")
            progress: asyncio.Task[None] | None = None
            try:
                now = datetime.now(UTC)
                commands = [Command(id=uuid.uuid4(), campaign_id=cid, action=Action.STOP,
                                    priority=Priority.HIGH if cid in high else Priority.STANDARD,
                                    requested_by="storm-bench", issued_at=now) for cid in ids]
                started = time.monotonic()
                await producer.send_many(OutgoingRecord(topics.commands, c.campaign_id, c) for c in commands)
                progress = asyncio.create_task(
                    _progress(label, scale, started, len(ids), seen, args.progress_s), name=f"storm-progress-{label}")
                deadline = started + args.cap_s / scale
                while len(seen.outcomes) < len(ids):
                    if time.monotonic() > deadline:
                        run.timed_out = True
                        break
                    if watcher.done():
                        watcher.result()  # the consumer died: raise why
                    await asyncio.sleep(0.05)
                run.real_s = time.monotonic() - started
            finally:
                for task in (progress, lag):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                await asyncio.sleep(0.2)  # let the last STOPPED events reach the watcher
                stop.set()
                await watcher
                await producer.stop()
        run.outcomes.update(seen.outcomes.values())
        run.storm_at, run.high = started, frozenset(high)
        run.accepted_at = [at for at, _, outcome, _ in seen.log if outcome == "ACCEPTED"]
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


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100.0 * len(ordered)) - 1)]


# --- the naive run -------------------------------------------------------------------------------


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
            await run_naive(sim.url, _CLIENT_ID, secret, ids, scale=scale, cap_s=args.naive_cap_s, result=result)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        state = await sim.admin("/admin/state")
        timeline = (await sim.admin("/admin/traffic"))["inFlight"] if args.naive_traffic else []
    run = NaiveRun(scale, result)
    run.final_states.update(c["state"] for c in state["campaigns"])
    run.max_in_flight = max((s["inFlight"] for s in timeline), default=0)
    return run


# --- report --------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def report(runs: list[ServiceRun], naive: NaiveRun | None, campaigns: int) -> tuple[str, dict[str, Any]]:
    up = next((r for r in runs if r.notifications), None)
    down = next((r for r in runs if not r.notifications), None)
    rows: list[tuple[str, list[Any], str]] = []

    def row(name: str, fn: Any, target: str = "") -> None:
        rows.append((name, [fn(r) for r in runs], target))

    row("time scale (sim s per real s)", lambda r: r.scale)
    row("service startup, real s", lambda r: round(r.startup_real_s, 1))
    row("storm, real s", lambda r: round(r.real_s, 1))
    row("storm, sim s", lambda r: round(r.sim_s, 1))
    row("completed", lambda r: r.completed, f"== {campaigns}")
    row("other terminal results", lambda r: sum(n for o, n in r.outcomes.items() if o != "COMPLETED"), "0")
    row("platform: campaigns STOPPED", lambda r: r.final_states["STOPPED"], f"== {campaigns}")
    row("max in flight per dialer", lambda r: r.max_in_flight(), "<= 2")
    row("peak reads per sim s", lambda r: r.peak_reads_per_s(), "<= 10")
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
    row("detect p99, sim ms", lambda r: round(percentile(r.detect_ms, 99), 1), "ws-up <= 100")
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
        summary["completed"] = min(r.completed for r in runs)
        for r in runs:
            summary[f"completed_{_key(r)}"] = r.completed
        summary["max_in_flight_per_dialer"] = max(r.max_in_flight() for r in runs)
        summary["peak_reads_per_s"] = max(r.peak_reads_per_s() for r in runs)
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
    misses = _misses(summary, runs, naive, campaigns)
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


def _misses(s: dict[str, Any], runs: list[ServiceRun], naive: NaiveRun | None, campaigns: int) -> list[str]:
    misses = []
    if any(r.completed != campaigns for r in runs):
        misses.append("completed")
    if s.get("max_in_flight_per_dialer", 0) > 2:
        misses.append("max_in_flight_per_dialer")
    if s.get("peak_reads_per_s", 0) > 10:
        misses.append("peak_reads_per_s")
    misses += [k for k in ("http_409", "http_429", "http_500") if s.get(k, 0)]
    if naive is not None and s.get("gets_per_transition", 0) * 5 > s["naive_gets_per_transition"]:
        misses.append("gets_per_transition")
    up = s.get("detect_p99_ms_ws_up")
    if any(r.notifications for r in runs) and (up is None or up > 100):
        misses.append("detect_p99_ms_ws_up")
    return misses


# --- main ----------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="noida", help="noida (default) | tansu | host:port[,host:port]")
    parser.add_argument("--campaigns", type=int, default=1000)
    parser.add_argument("--dialers", type=int, default=20)
    parser.add_argument("--high", type=int, default=20, help="HIGH priority stops (the first N campaigns)")
    parser.add_argument("--max-calls", type=int, default=10, help="active calls per campaign, 0..N")
    parser.add_argument("--capacity", type=int, default=1000, help="licensed lines per dialer")
    parser.add_argument("--scale-up", type=float, default=2.0, help="time scale of the ws-up run")
    parser.add_argument("--scale-down", type=float, default=4.0, help="time scale of the ws-down run")
    parser.add_argument("--scale-naive", type=float, default=2.0, help="time scale of the naive run")
    parser.add_argument("--runs", default="up,down,naive", help="which runs, comma list of up, down, naive")
    parser.add_argument("--cap-s", type=float, default=3600.0, help="service runs give up after this, sim s")
    parser.add_argument("--naive-cap-s", type=float, default=1800.0, help="naive run gives up after this, sim s")
    parser.add_argument("--naive-traffic", action="store_true",
                        help="also fetch the naive run's in-flight timeline (large)")
    parser.add_argument("--fetch-wait-ms", type=int, default=5, help="the watching consumer's fetch_max_wait_ms")
    parser.add_argument("--progress-s", type=float, default=15.0, help="progress line every N real s (stderr)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sim-diag", action="store_true",
                        help="the simulator logs its GC pauses and event-loop stalls over 20 ms (see _SIM_DIAG)")
    parser.add_argument("--dump", metavar="DIR", help="write each run's raw record (requests, timeline, results) here")
    args = parser.parse_args(argv)
    runs = {r.strip() for r in args.runs.split(",") if r.strip()}
    if not runs or not runs <= {"up", "down", "naive"}:
        parser.error(f"--runs: a comma list of up, down, naive; got {args.runs!r}")
    args.run_set = runs
    if args.campaigns < 1 or args.dialers < 1 or not 0 <= args.high <= args.campaigns or args.max_calls < 0:
        parser.error("--campaigns and --dialers must be >= 1, --high within 0..campaigns, --max-calls >= 0")
    if min(args.scale_up, args.scale_down, args.scale_naive, args.cap_s, args.naive_cap_s) <= 0:
        parser.error("scales and caps must be > 0")
    return args


async def _all_runs(broker: BrokerHandle, args: argparse.Namespace, workdir: Path) -> tuple[str, dict[str, Any]]:
    tenant, ids, high = storm_tenant(args.campaigns, args.dialers, high=args.high, max_calls=args.max_calls,
                                     capacity=args.capacity, seed=args.seed)
    runs: list[ServiceRun] = []
    if "up" in args.run_set:
        runs.append(await service_run(broker, args, workdir, tenant, ids, high, label="ws-up",
                                      scale=args.scale_up, notifications=True))
    if "down" in args.run_set:
        runs.append(await service_run(broker, args, workdir, tenant, ids, high, label="ws-down",
                                      scale=args.scale_down, notifications=False))
    naive = None
    if "naive" in args.run_set:
        naive = await naive_run(args, workdir, tenant, ids, scale=args.scale_naive)
    return report(runs, naive, len(ids))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    args = _parse(argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="storm-bench-") as tmp:
        workdir = Path(tmp)
        try:
            broker = broker_from_env(workdir / "broker", {"CAMPAIGN_FSM_BROKER": args.broker})
        except BrokerError as exc:
            print(f"storm_bench: --broker: {exc}", file=sys.stderr)
            return 2
        print(f"broker {broker.kind} at {broker.bootstrap} (pid {broker.pid})", file=sys.stderr, flush=True)
        try:
            table, summary = asyncio.run(_all_runs(broker, args, workdir))
        except KeyboardInterrupt:
            print("storm_bench: interrupted; everything it started is being stopped", file=sys.stderr)
            return 130
        finally:
            broker.stop()
    summary["real_s_total"] = round(time.monotonic() - began, 1)
    print(table)
    print(json.dumps(summary))
    return 0 if summary["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
