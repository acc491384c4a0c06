"""Chaos: `campaign-fsm run` is SIGKILLed at 20 random points of a scripted scenario and restarted each time.

The scenario. 24 campaigns on 6 dialers (predictive, progressive and power; starting RUNNING, STOPPED
or PAUSED) are driven by one seeded driver per campaign. Each driver waits until its campaign has
settled, then sends the next command: mostly a legal one, sometimes a no-op or an illegal one, every
kind (start, stop, pause, resume, reset). Before some commands it arms a platform failure, or a stall
that outlasts the tolerance window; after a FAILED it plays the operator: clears the fault in the
platform console (which sends no notification) and sends a reset. The simulated platform runs with
faults on (dropped notifications, sockets closed, contact lists locked by a start or a stop, random
failures), on the time scale the service shares, with its read limit on simulated time.

The chaos. The service runs as a process (`python -m adapters.cli run`) with one outbox file and one
consumer group id. At 20 seeded points it is SIGKILLed and started again at once with the same
environment: a few while it is still starting up (draining its outbox, restoring, reconciling), the
rest at random moments of its work, most of them with transitions in flight. After a SIGKILL the dead
member must leave the consumer group before the new incarnation can have its partitions. Kafka and
tansu evict it once its session times out (tansu's is 3 s here); noida-db never does, so on noida
the test sends LeaveGroup on the dead member's behalf, standing in for that eviction.

At the end every campaign settles, the service gets SIGTERM (exit 0), and the topics are read back:

1. No state change the simulator made is missing from `campaign.events`. Per campaign, the
   simulator's states (its initial state, then every change in `sim.history`) must be matched in
   order by the campaign's events. An event matches the next simulator state when its `to` is that
   state; or, when the service could not observe the states in between (it was dead, or had not made
   its observation durable, while the platform moved through them), when the event records the
   anomaly SKIPPED_STATES naming exactly those simulator states and its `to` is the one after them.
   Between matches the model may have events that claim no platform state: a tolerance verdict
   (cause `timeout`: TRANSITION_DELAYED, or FAILED while the platform still moved), a reset (the
   model's own move back to its last stable state), and an observation that brings the model back to
   the platform state matched last (re-converging after one of those). Any other event, or a
   simulator state left unmatched, is a failure.
2. No event id twice with different content; after dedupe by id, each campaign's sequences are
   1..n without gaps.
3. No command sent twice to the platform: each POST the simulator served is attributed to the last
   command the test sent to that campaign before it (a campaign gets its next command only once the
   previous one settled), must carry that command's action, and no command has more than one POST;
   and no command id has more than one event recording a platform request.
4. The final states equal the simulator's: each campaign's last event and its `campaign.state`
   record.
5. `campaign-fsm audit` over the events and state topics exits 0.
6. Every command the test sent has its final result (COMPLETED, FAILED or REFUSED) on the results
   topic: a kill must not lose the COMPLETED of a transition whose last event was published.

Along the way, a campaign that does not settle within 90 s (a command lost, a model that never
catches up with the platform) is a failure too; and the scenario must really have done what it
claims: every command kind sent, every platform action POSTed, a reset completed, 20 kills, at
least half of them with transitions in flight.

On failure the message names the kill points and, per offending campaign, its timeline: simulator
states, events, commands with their results, and POSTs. The full report and every incarnation's log
are kept in the test's tmp_path. `CHAOS_SEED` changes the seed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.protocol.group import LeaveGroupRequest

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator import FaultConfig, Simulator, SimulatorConfig, run_simulator
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.kafka import Producer, TopicNames, ensure_topics, open_admin, read_topic
from schemas.commands import Command
from schemas.types import TRANSITIONAL_STATES, Action, CampaignState, DialerType, Priority

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

S = CampaignState
SCALE = 20.0
CAMPAIGNS = 24
DIALERS = 6
KILLS = 20
STARTUP_KILLS = 4  # of the 20, this many hit an incarnation that is still starting up
SEED = int(os.environ.get("CHAOS_SEED", "5150"))
FINAL = frozenset({"COMPLETED", "FAILED", "REFUSED"})
# A command whose transition has ended (its campaign settled, an event naming it) has its final
# result well within this; one that has not is named by check 6 and the scenario moves on.
DECISION_GRACE_S = 10.0
# Stops and pauses of progressive and power campaigns have a 60 s window: a 90 s stall outlasts it.
STALL_SIM_S = 90.0
LEGAL = {S.STOPPED: (Action.START,), S.RUNNING: (Action.PAUSE, Action.STOP), S.PAUSED: (Action.RESUME, Action.STOP)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- what the topics say, as it arrives ----------------------------------------------------------


@dataclass
class _Seen:
    events: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    by_campaign: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    outcomes: dict[str, list[str]] = field(default_factory=dict)
    acted_on: set[str] = field(default_factory=set)  # command ids some event names

    def add_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event["data"].get("commandId"):
            self.acted_on.add(event["data"]["commandId"])
        self.by_campaign.setdefault(event["subject"], {}).setdefault(event["data"]["sequence"], event)

    def add_result(self, result: dict[str, Any]) -> None:
        self.results.append(result)
        self.outcomes.setdefault(result["commandId"], []).append(result["outcome"])

    def model_state(self, campaign_id: str) -> CampaignState | None:
        events = self.by_campaign.get(campaign_id)
        return S(events[max(events)]["data"]["to"]) if events else None


async def _collect(bootstrap: str, topics: TopicNames, seen: _Seen, stop: asyncio.Event, wait_ms: int) -> None:
    consumer = AIOKafkaConsumer(topics.events, topics.results, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=wait_ms)
    await consumer.start()
    try:
        while not stop.is_set():
            for tp, records in (await consumer.getmany(timeout_ms=50)).items():
                for record in records:
                    value = orjson.loads(record.value)
                    if tp.topic == topics.events:
                        seen.add_event(value)
                    else:
                        seen.add_result(value)
    finally:
        await consumer.stop()


# --- the service process, killed and restarted -------------------------------------------------


@dataclass
class _KillPoint:
    number: int
    at: float  # seconds since the scenario began
    phase: str  # "starting" (not ready yet) or "running"
    in_flight: int  # campaigns transitional on the platform at the moment of the kill
    pid: int


class _ServiceProcess:
    """`campaign-fsm run` as a child process; every incarnation logs to its own file."""

    def __init__(self, env: dict[str, str], port: int, log_dir: Path, bootstrap: str, group: str,
                 *, evict: bool) -> None:
        self.env, self.port, self.log_dir, self.bootstrap, self.group = env, port, log_dir, bootstrap, group
        self.evict = evict
        self.process: asyncio.subprocess.Process | None = None
        self.incarnation = 0
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"service-{self.incarnation:02d}.log"

    async def spawn(self) -> None:
        self.incarnation += 1
        self._log = open(self.log_path, "wb")  # noqa: ASYNC230  # a local file, closed once reaped
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "adapters.cli", "run", env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=self._log)

    async def ready(self) -> bool:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=1) as http:
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

    async def wait_ready(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109  # a polling wait
        assert self.process is not None
        deadline = time.monotonic() + timeout
        evicted_again = False
        while not await self.ready():
            if self.process.returncode is not None:
                raise AssertionError(f"incarnation {self.incarnation} exited with {self.process.returncode} "
                                     f"before getting ready:\n{self.tail()}")
            if self.evict and not evicted_again and time.monotonic() > deadline - timeout / 2:
                # A killed member that was still joining may have slipped past the first eviction.
                evicted_again = True
                await _evict_members(self.bootstrap, self.group)
            if time.monotonic() > deadline:
                raise AssertionError(f"incarnation {self.incarnation} not ready within {timeout} s:\n{self.tail()}")
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self._reap()
        if self.evict:
            await _evict_members(self.bootstrap, self.group)

    async def terminate(self, timeout: float = 60.0) -> int:  # noqa: ASYNC109  # bounded graceful stop
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
        await self._reap()
        assert self.process.returncode is not None
        return self.process.returncode

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
        await self._reap()

    async def _reap(self) -> None:
        if self.process is not None:
            await self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


async def _evict_members(bootstrap: str, group: str) -> None:
    """LeaveGroup on behalf of every member of `group` (all of them dead: there is one instance)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        coordinator = await admin.find_coordinator(group)
        described = await admin.describe_consumer_groups([group], group_coordinator_id=coordinator)
    finally:
        await admin.close()
    members = [member[0] for response in described for group_info in response.groups for member in group_info[5]]
    if not members:
        return
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        for member in members:
            await client.send(coordinator, LeaveGroupRequest(group, member), group=ConnectionGroup.COORDINATION)
    finally:
        await client.close()


# --- the scenario --------------------------------------------------------------------------------


@dataclass
class _Sent:
    command: Command
    at: float  # time.monotonic() just before it was published (the simulator's wall clock)


@dataclass
class _Scenario:
    sim: Simulator
    seen: _Seen
    producer: Producer
    topics: TopicNames
    initial: dict[str, CampaignState]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sent: dict[str, list[_Sent]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    stuck: set[str] = field(default_factory=set)
    armed: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, campaign_id: str, action: Action, priority: Priority = Priority.STANDARD) -> Command:
        command = Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, priority=priority,
                          requested_by="chaos-test", issued_at=datetime.now(UTC))
        self.sent.setdefault(campaign_id, []).append(_Sent(command, time.monotonic()))
        await self.producer.send(self.topics.commands, campaign_id, command)
        return command

    def platform_settled(self, campaign_id: str) -> bool:
        """Nothing in flight on the platform, and the model caught up with it."""
        if campaign_id in self.sim.engine.transitions or self.sim.state_of(campaign_id) in TRANSITIONAL_STATES:
            return False
        model = self.seen.model_state(campaign_id)
        # A tolerance verdict may leave the model FAILED while the platform finished after all
        # (its notification dropped): the next step is then a reset.
        return model is not None and (model is self.sim.state_of(campaign_id) or model is S.FAILED)

    def decided(self, campaign_id: str) -> bool | None:
        """The last command's fate: True decided (a final result), None acted upon (an event names
        it) but no final result yet, False neither (still pending in the service)."""
        sent = self.sent.get(campaign_id)
        if not sent:
            return True
        command_id = str(sent[-1].command.id)
        if FINAL & set(self.seen.outcomes.get(command_id, ())):
            return True
        return None if command_id in self.seen.acted_on else False

    async def until_settled(self, campaign_id: str, timeout: float = 90.0) -> bool:  # noqa: ASYNC109  # a polling wait
        """Wait until the platform and the model agree, nothing is in flight and the last command is decided.

        A command that moved the campaign to its end but whose final result does not come within a
        grace period is not waited for any longer: check 6 names it at the end, and the scenario
        goes on.
        """
        deadline = time.monotonic() + timeout
        grace: float | None = None
        while True:
            if self.platform_settled(campaign_id):
                decided = self.decided(campaign_id)
                if decided:
                    return True
                if decided is None:
                    grace = grace or time.monotonic() + DECISION_GRACE_S
                    if time.monotonic() > grace:
                        return True
            else:
                grace = None
            if time.monotonic() > deadline:
                sent = self.sent.get(campaign_id)
                last = sent[-1].command if sent else None
                self.stuck.add(campaign_id)
                self.problems.append(
                    f"{campaign_id}: not settled after {timeout} s (platform {self.sim.state_of(campaign_id)}, "
                    f"model {self.seen.model_state(campaign_id)}, last command "
                    f"{last and (last.action.value, str(last.id), self.seen.outcomes.get(str(last.id)))})")
                return False
            await asyncio.sleep(0.05)

    async def drive(self, campaign_id: str, rng: random.Random) -> None:
        dialer_type = self.sim.campaign(campaign_id).dialer_type
        while not self.stop.is_set():
            if not await self.until_settled(campaign_id):
                return
            await self._step(campaign_id, dialer_type, rng)
            await asyncio.sleep(rng.uniform(0.0, 0.8))
        # Wind down: end stable, with the model agreeing with the platform.
        for _ in range(3):
            if not await self.until_settled(campaign_id):
                return
            if self.seen.model_state(campaign_id) is not S.FAILED:
                return
            await self._reset(campaign_id)
        self.problems.append(f"{campaign_id}: still FAILED after three resets")

    async def _step(self, campaign_id: str, dialer_type: DialerType, rng: random.Random) -> None:
        state = self.seen.model_state(campaign_id)
        assert state is not None
        if state is S.FAILED:
            await self._reset(campaign_id)
            return
        legal = LEGAL[state]
        if rng.random() < 0.8:
            action = rng.choice(legal)
        else:  # a no-op, an illegal move or a reset from a stable state: refused, never sent
            action = rng.choice([a for a in Action if a not in legal])
        if action in legal:
            dice = rng.random()
            if dice < 0.1:
                self.sim.next_transition(campaign_id, "fail", errors=[
                    {"code": "dialer.trunk.unavailable", "message": "No outbound SIP trunk is available."}])
                self.armed.append((campaign_id, f"fail on {action}"))
            elif dice < 0.2 and action in (Action.STOP, Action.PAUSE) and dialer_type is not DialerType.PREDICTIVE:
                self.sim.next_transition(campaign_id, "stall", duration=STALL_SIM_S)
                self.armed.append((campaign_id, f"stall on {action}"))
        priority = Priority.HIGH if rng.random() < 0.25 else Priority.STANDARD
        await self.send(campaign_id, action, priority)

    async def _reset(self, campaign_id: str) -> None:
        if self.sim.state_of(campaign_id) is S.FAILED:
            # The operator clears the fault in the platform console, which notifies no one; the
            # platform goes back to where the failed transition started.
            history = self.sim.states(campaign_id)
            before = [s for s in history[:len(history) - 1 - history[::-1].index(S.FAILED)]
                      if s in LEGAL] or [self.initial[campaign_id]]
            self.sim.faults.drop_topic = f"v2.outbound.campaigns.{campaign_id}"
            self.sim.faults.drop_next = 1
            self.sim.set_state(campaign_id, before[-1], errors=[])
        await self.send(campaign_id, Action.RESET, Priority.HIGH)


# --- the checks ----------------------------------------------------------------------------------


def _kill_text(kills: list[_KillPoint]) -> str:
    return "\n".join(f"  kill {k.number:2d} at {k.at:6.1f}s while {k.phase}, {k.in_flight} in flight (pid {k.pid})"
                     for k in kills)


def _platform_states(sim: Simulator, initial: CampaignState, campaign_id: str) -> list[CampaignState]:
    states = [initial]
    for state in sim.states(campaign_id):
        if state is not states[-1]:
            states.append(state)
    return states


def _unmatched(platform: list[CampaignState], events: list[dict[str, Any]]) -> str | None:
    """Why `events` (deduplicated, in sequence order) miss a platform state, or None (see check 1)."""
    i = 0
    last: CampaignState | None = None
    for event in events:
        data = event["data"]
        to = S(data["to"])
        anomaly = data.get("anomaly") or {}
        if i < len(platform) and to is platform[i]:
            last, i = to, i + 1
            continue
        if anomaly.get("kind") == "SKIPPED_STATES":
            skipped = [S(s) for s in anomaly.get("skipped", ())]
            end = i + len(skipped)
            if skipped and end < len(platform) and platform[i:end] == skipped and platform[end] is to:
                last, i = to, end + 1
                continue
        explained = (data["cause"] == "timeout"
                     or (data["cause"] == "command" and data.get("action") == "reset")
                     or (to is last and data["cause"] != "command"))
        if not explained:
            expected = platform[i] if i < len(platform) else "nothing more"
            return (f"event {data['sequence']} ({data['from']} -> {to}, cause {data['cause']}, anomaly "
                    f"{anomaly or None}) matches no platform change (the platform's next was {expected})")
    if i < len(platform):
        return f"platform change #{i} to {platform[i]} is missing from the events (platform went {platform})"
    return None


def _timeline(campaign_id: str, scenario: _Scenario, events: list[dict[str, Any]],
              initial: CampaignState, t0: float, raw: list[tuple[int, int, dict[str, Any]]],
              state_record: dict[str, Any] | None) -> str:
    sim = scenario.sim
    lines = [f"--- {campaign_id} ({sim.campaign(campaign_id).dialer_type}), initially {initial}; "
             f"now platform {sim.state_of(campaign_id)}"]
    rows: list[tuple[float, str]] = []
    for change in sim.history:
        if change.campaign_id == campaign_id:
            rows.append((change.wall_time, f"platform  -> {change.state}"))
    for sent in scenario.sent.get(campaign_id, ()):
        c = sent.command
        outcomes = [f"{res['outcome']}{'/' + res['reason'] if res.get('reason') else ''}"
                    for res in scenario.seen.results if res["commandId"] == str(c.id)]
        rows.append((sent.at, f"command   {c.action} {c.priority} {str(c.id)[:8]} results {outcomes}"))
    for r in sim.traffic.records:
        if r.kind == "command" and r.campaign_id == campaign_id:
            rows.append((r.wall_time, f"POST      {r.action} -> {r.status} (platform was {r.campaign_state})"))
    for when, text in sorted(rows):
        lines.append(f"  {when - t0:8.2f}s {text}")
    for event in events:
        d = event["data"]
        lines.append(f"  event {d['sequence']:3d}: {d['from']} -> {d['to']} cause={d['cause']} "
                     f"action={d.get('action')} cmd={str(d.get('commandId'))[:8]} anomaly={d.get('anomaly')} "
                     f"at {d['observedAt']}")
    if len(raw) != len(events):
        lines.append("  every record of the events topic (partition, offset):")
        for partition, offset, event in raw:
            d = event["data"]
            lines.append(f"    [{partition}@{offset}] {event['id']}: {d['from']} -> {d['to']} cause={d['cause']} "
                         f"cmd={str(d.get('commandId'))[:8]} prev={str(d.get('prevHash'))[:8]} at {d['observedAt']}")
    lines.append(f"  campaign.state: {state_record}")
    return "\n".join(lines)


# --- the test ------------------------------------------------------------------------------------


async def test_sigkill_at_20_random_points_loses_nothing_and_reissues_nothing(
        broker: BrokerHandle, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    rng = random.Random(SEED)
    tenant = generate_tenant(CAMPAIGNS, DIALERS, max_active_calls=10, seed=SEED)
    initial: dict[str, CampaignState] = {}
    for n, campaign in enumerate(tenant.campaigns.values()):
        campaign.state = (S.RUNNING, S.STOPPED, S.PAUSED)[(n // 3) % 3]  # every type in every state
        initial[campaign.id] = campaign.state
    faults = FaultConfig(drop_notification_probability=0.1, socket_close_probability=0.1,
                         list_lock_probability=0.08, list_lock_seconds=60.0, fail_probability=0.02)
    sim = Simulator(tenant, SimulatorConfig(rate_clock="sim", faults=faults, seed=SEED), time_scale=SCALE)
    topics = TopicNames.with_prefix(unique_name("chaos") + ".")
    group = unique_name("group")
    port = _free_port()
    kafka = broker.kafka_config(topics=topics)
    async with open_admin(kafka) as admin:
        await ensure_topics(admin, topics, 3)

    async with run_simulator(simulator=sim) as (url, sim):
        env = dict(os.environ)
        env.update({
            "CAMPAIGN_FSM_TIME_SCALE": str(SCALE),
            "CAMPAIGN_FSM_PLATFORM__BASE_URL": url,
            "CAMPAIGN_FSM_PLATFORM__CLIENT_ID": sim.config.client_id,
            "CAMPAIGN_FSM_PLATFORM__CLIENT_SECRET": sim.config.client_secret,
            "CAMPAIGN_FSM_KAFKA__BOOTSTRAP": broker.bootstrap,
            "CAMPAIGN_FSM_KAFKA__GROUP_ID": group,
            "CAMPAIGN_FSM_KAFKA__PARTITIONS": "3",
            "CAMPAIGN_FSM_KAFKA__FETCH_MAX_WAIT_MS": "50",
            "CAMPAIGN_FSM_HTTP__PORT": str(port),
            "CAMPAIGN_FSM_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
            **{f"CAMPAIGN_FSM_KAFKA__TOPICS__{k.upper()}": v for k, v in (
                ("commands", topics.commands), ("results", topics.results), ("events", topics.events),
                ("state", topics.state), ("dead_letters", topics.dead_letters))},
        })
        for name, value in broker.client_overrides.items():
            env[f"CAMPAIGN_FSM_KAFKA__{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        service = _ServiceProcess(env, port, tmp_path, broker.bootstrap, group, evict=broker.kind == "noida")
        seen = _Seen()
        producer = Producer(kafka)
        scenario = _Scenario(sim, seen, producer, topics, initial)
        collecting = asyncio.Event()
        wait_ms = int(broker.client_overrides.get("fetch_max_wait_ms", 50))
        collector = asyncio.create_task(_collect(broker.bootstrap, topics, seen, collecting, wait_ms),
                                        name="chaos-collector")
        kills: list[_KillPoint] = []
        drivers: list[asyncio.Task[None]] = []
        exit_code: int | None = None
        t0 = time.monotonic()
        try:
            await producer.start()
            await service.spawn()
            await service.wait_ready()
            t0 = time.monotonic()
            drivers = [asyncio.create_task(scenario.drive(cid, random.Random(f"{SEED}-{cid}")), name=f"drive-{cid}")
                       for cid in sorted(tenant.campaigns)]
            startup_kills = set(rng.sample(range(KILLS), STARTUP_KILLS))
            for number in range(KILLS):
                if number in startup_kills:
                    await asyncio.sleep(rng.uniform(0.3, 2.0))  # the incarnation is (most likely) still starting
                else:
                    await service.wait_ready()
                    await asyncio.sleep(rng.uniform(1.0, 5.0))
                phase = "running" if await service.ready() else "starting"
                assert service.process is not None
                kills.append(_KillPoint(number + 1, time.monotonic() - t0, phase, len(sim.in_flight_campaigns()),
                                        service.process.pid))
                await service.kill()
                await service.spawn()
            await service.wait_ready()
            await asyncio.sleep(3.0)  # the last incarnation works for a while too
            scenario.stop.set()
            await asyncio.gather(*drivers)
            exit_code = await service.terminate()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nkill points so far:\n{_kill_text(kills)}") from None
        finally:
            scenario.stop.set()
            for task in drivers:
                task.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)
            await service.close()
            collecting.set()
            await collector
            await producer.stop()

        # --- read back and check --------------------------------------------------------------
        raw_events = [(r.partition, r.offset, orjson.loads(r.value)) for r in await read_topic(kafka, topics.events)
                      if r.value]
        events = [event for _, _, event in raw_events]
        results = [orjson.loads(r.value) for r in await read_topic(kafka, topics.results) if r.value]
        state_records = {r.key: orjson.loads(r.value) for r in await read_topic(kafka, topics.state)
                         if r.key and r.value}
        audit = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "adapters.cli", "audit", "--bootstrap", broker.bootstrap,
            "--topic", topics.events, "--state-topic", topics.state, "--brief",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        audit_out, _ = await audit.communicate()

    problems = list(scenario.problems)
    offenders: set[str] = set(scenario.stuck)
    kill_text = _kill_text(kills)
    if exit_code != 0:
        problems.append(f"the last incarnation exited {exit_code} on SIGTERM:\n{service.tail()}")

    # (2) one content per event id; then per campaign 1..n
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        first = unique.setdefault(event["id"], event)
        if first != event:
            problems.append(f"event id {event['id']} delivered twice with different content")
            offenders.add(event["subject"])
    per_campaign: dict[str, list[dict[str, Any]]] = {}
    for event in sorted(unique.values(), key=lambda e: e["data"]["sequence"]):
        per_campaign.setdefault(event["subject"], []).append(event)
    for cid in sorted(tenant.campaigns):
        sequences = [e["data"]["sequence"] for e in per_campaign.get(cid, [])]
        if sequences != list(range(1, len(sequences) + 1)):
            problems.append(f"{cid}: sequences {sequences} have a gap or a duplicate")
            offenders.add(cid)

    # (1) every platform change is in the events
    for cid in sorted(tenant.campaigns):
        why = _unmatched(_platform_states(sim, initial[cid], cid), per_campaign.get(cid, []))
        if why:
            problems.append(f"{cid}: {why}")
            offenders.add(cid)

    # (3) no command sent twice to the platform
    command_of: dict[str, list[_Sent]] = scenario.sent
    posts: dict[str, list[Any]] = {}
    for record in sim.traffic.records:
        if record.kind != "command":
            continue
        assert record.campaign_id is not None
        earlier = [s for s in command_of.get(record.campaign_id, []) if s.at <= record.wall_time]
        if not earlier:
            problems.append(f"{record.campaign_id}: POST {record.action} at {record.wall_time - t0:.2f}s "
                            "before any command")
            offenders.add(record.campaign_id)
            continue
        owner = earlier[-1].command
        posts.setdefault(str(owner.id), []).append(record)
        if record.action != owner.action.value:
            problems.append(f"{record.campaign_id}: POST {record.action} at {record.wall_time - t0:.2f}s while the "
                            f"last command was {owner.action} {owner.id}")
            offenders.add(record.campaign_id)
    for command_id, records in posts.items():
        if len(records) > 1:
            cid = records[0].campaign_id
            problems.append(f"{cid}: command {command_id} was POSTed {len(records)} times "
                            f"({[(r.action, r.status, round(r.wall_time - t0, 2)) for r in records]})")
            offenders.add(cid)
    requests: dict[str, set[str]] = {}
    for event in unique.values():
        if event["data"].get("request") is not None:
            requests.setdefault(event["data"]["commandId"], set()).add(event["id"])
    for command_id, ids in requests.items():
        if len(ids) > 1:
            problems.append(f"command {command_id}: {len(ids)} events record a platform request: {sorted(ids)}")
            offenders.update(i.split(":")[0] for i in ids)

    # (4) final states equal the simulator's
    for cid in sorted(tenant.campaigns):
        platform = sim.state_of(cid).value
        last = per_campaign[cid][-1]["data"]["to"] if per_campaign.get(cid) else None
        stored = state_records.get(cid, {}).get("state")
        if last != platform or stored != platform:
            problems.append(f"{cid}: platform ends {platform}, last event says {last}, campaign.state says {stored}")
            offenders.add(cid)

    # (6) every command has its final result (a settled command's COMPLETED or FAILED is not lost)
    final_of: dict[str, set[str]] = {}
    for result in results:
        final_of.setdefault(result["commandId"], set()).add(result["outcome"])
    for cid, sent_list in sorted(scenario.sent.items()):
        for sent in sent_list:
            if not FINAL & final_of.get(str(sent.command.id), set()):
                problems.append(f"{cid}: {sent.command.action} {sent.command.id} has no final result "
                                f"(results {sorted(final_of.get(str(sent.command.id), set()))})")
                offenders.add(cid)

    # (5) the audit is clean
    if audit.returncode != 0:
        problems.append(f"campaign-fsm audit exited {audit.returncode}:\n{audit_out.decode(errors='replace')[-4000:]}")

    # The scenario did what it claims: every command kind, POSTs of every platform action, resets
    # that completed, kills with transitions in flight.
    kinds = {s.command.action for sent in scenario.sent.values() for s in sent}
    posted = {r.action for r in sim.traffic.records if r.kind == "command"}
    completed_resets = [s for sent in scenario.sent.values() for s in sent if s.command.action is Action.RESET
                        and "COMPLETED" in seen.outcomes.get(str(s.command.id), [])]
    post_count = sum(1 for r in sim.traffic.records if r.kind == "command")
    summary = (f"seed {SEED}; {sum(len(s) for s in scenario.sent.values())} commands ({sorted(kinds)}), "
               f"{post_count} POSTs ({sorted(p or '' for p in posted)}), "
               f"{len(completed_resets)} completed resets, {len(unique)} events ({len(events)} records), "
               f"{len(results)} results, {len(sim.history)} platform changes, armed {len(scenario.armed)} faults, "
               f"{service.incarnation} incarnations")
    print(summary)
    print(kill_text)
    if kinds != set(Action):
        problems.append(f"the scenario sent only {sorted(kinds)}")
    if not {"start", "stop", "pause", "resume"} <= posted:
        problems.append(f"the platform saw only these actions: {sorted(p or '' for p in posted)}")
    if not completed_resets:
        problems.append("no reset completed: the failure path was not exercised")
    busy_kills = sum(1 for k in kills if k.in_flight)
    if len(kills) != KILLS or busy_kills < KILLS // 2:
        problems.append(f"{len(kills)} kills, {busy_kills} of them with transitions in flight")

    if problems:
        report = "\n".join([summary, "kill points:", kill_text, "problems:", *problems, "timelines:"] + [
            _timeline(cid, scenario, per_campaign.get(cid, []), initial[cid], t0,
                      [r for r in raw_events if r[2]["subject"] == cid], state_records.get(cid))
            for cid in sorted(offenders)])
        (tmp_path / "chaos-report.txt").write_text(report)
        pytest.fail(f"{len(problems)} problem(s); full report in {tmp_path / 'chaos-report.txt'}\n"
                    + report[:20000], pytrace=False)
