"""End-to-end harness: a real broker, the simulator over real HTTP/WebSocket, and the service.

    async with e2e(broker, unique_name, tenant=...) as run:
        command = await run.send("campaign-0001", "start")
        await run.until(lambda: run.outcomes(command) [-1:] == ["COMPLETED"])

Time is scaled (service and simulator share the scale, and the simulator's 10 reads/s window runs
on simulated time), so a 120 s predictive drain takes a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from jsonschema import Draft202012Validator, FormatChecker

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator import Simulator, SimulatorConfig
from adapters.devtools.simulator.tenant import Tenant
from adapters.devtools.stack import local_stack
from adapters.kafka import STATE_TYPE, Producer, TopicNames
from adapters.service import Service
from adapters.settings import Settings
from adapters.signing import Signer
from schemas.commands import Command
from schemas.types import Action, Priority

SIGNING_KEY_ID = "e2e"
_SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def _published(stem: str) -> Draft202012Validator:
    """The validator of a published schema (docs/schemas), format checks on (date-time, uuid, ...)."""
    return Draft202012Validator(orjson.loads((_SCHEMAS / f"{stem}.json").read_bytes()), format_checker=FormatChecker())


# Every record the end-to-end tests read back is checked against the schema we publish for it.
_CONTRACT = {"events": _published("campaign-state-changed"), "results": _published("command-result"),
             "state": _published("campaign-state")}


def contract_problems(kind: str, value: bytes | None, headers: list[tuple[str, bytes]]) -> list[str]:
    """What is wrong with a record of topic `kind` against its published schema ([] if nothing)."""
    if value is None:
        return [] if kind == "state" else ["a null value (only campaign.state has tombstones)"]
    problems = [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in _CONTRACT[kind].iter_errors(orjson.loads(value))]
    if kind == "events" and any(name.startswith("ce_") for name, _ in headers):
        problems.append("a structured-mode event with a ce_ header (CloudEvents reads it as binary mode)")
    return problems


@dataclass
class Run:
    sim: Simulator
    sim_url: str
    service: Service
    producer: Producer
    topics: TopicNames
    scale: float
    settings: Settings
    events: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[Any] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    # Records read back that do not fit their published schema: the harness fails the test on any.
    contract_violations: list[str] = field(default_factory=list)
    signing_key: bytes | None = None  # set: commands from `send` are signed with key id SIGNING_KEY_ID

    async def send(self, campaign_id: str, action: str | Action, priority: Priority = Priority.STANDARD,
                   **extra: Any) -> Command:
        command = self.command(campaign_id, action, priority, **extra)
        await self.send_command(command)
        return command

    async def send_command(self, command: Command, key: str | None = None) -> None:
        """Produce `command` as it was signed (its record's bytes and headers), or as its wire JSON."""
        record = command.signed
        value: object = command if record is None else record.value
        headers = {} if record is None else record.headers()
        await self.producer.send(self.topics.commands, command.campaign_id if key is None else key, value,
                                 headers=headers)

    def command(self, campaign_id: str, action: str | Action, priority: Priority = Priority.STANDARD,
                **extra: Any) -> Command:
        command = Command(id=uuid.uuid4(), campaign_id=campaign_id, action=Action(action), priority=priority,
                          requested_by="e2e-test", issued_at=datetime.now(UTC), **extra)
        if self.signing_key is None:
            return command
        return Signer(SIGNING_KEY_ID, self.signing_key).sign(command)

    async def send_raw(self, key: str | None, value: bytes) -> None:
        await self.producer.send(self.topics.commands, key, value)

    def outcomes(self, command: Command | str) -> list[str]:
        command_id = command if isinstance(command, str) else command.id
        return [r["outcome"] for r in self.results if r["commandId"] == command_id]

    def reasons(self, command: Command | str) -> list[str | None]:
        command_id = command if isinstance(command, str) else command.id
        return [r.get("reason") for r in self.results if r["commandId"] == command_id]

    def of(self, campaign_id: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["subject"] == campaign_id]

    async def until(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:  # noqa: ASYNC109  # a polling wait with its own failure message
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
            await asyncio.sleep(0.02)


async def _collect(run: Run, bootstrap: str, stop: asyncio.Event, fetch_max_wait_ms: int) -> None:
    consumer = AIOKafkaConsumer(
        run.topics.events, run.topics.results, run.topics.dead_letters, run.topics.state, bootstrap_servers=bootstrap,
        auto_offset_reset="earliest", enable_auto_commit=False, group_id=None, fetch_max_wait_ms=fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            for tp, records in batches.items():
                kind = {run.topics.events: "events", run.topics.results: "results",
                        run.topics.state: "state"}.get(tp.topic)
                for record in records:
                    # Tests plant hostile campaign.state records on purpose (without the service's
                    # ce_type header); only what the service wrote must fit the contract.
                    planted = kind == "state" and ("ce_type", STATE_TYPE.encode()) not in (record.headers or ())
                    if kind is not None and not planted:
                        run.contract_violations.extend(
                            f"{tp.topic}[{tp.partition}]@{record.offset}: {problem}"
                            for problem in contract_problems(kind, record.value, list(record.headers or ())))
                    if tp.topic == run.topics.state:
                        if record.value is not None:
                            run.states.append(orjson.loads(record.value))
                    elif tp.topic == run.topics.events:
                        run.events.append(orjson.loads(record.value))
                    elif tp.topic == run.topics.results:
                        run.results.append(orjson.loads(record.value))
                    else:
                        run.dead_letters.append(record)
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def e2e(
    broker: BrokerHandle,
    unique_name: Callable[[str], str],
    *,
    tenant: Tenant,
    scale: float = 50.0,
    profile: str = "guide",
    sim_config: SimulatorConfig | None = None,
    topics: TopicNames | None = None,
    group: str | None = None,
    simulator: Simulator | None = None,
    start_service: bool = True,
    notifications: bool = True,
    signing_key: bytes | None = None,
    **dispatch: Any,
) -> AsyncIterator[Run]:
    config = sim_config or SimulatorConfig(profile=profile, rate_clock="sim")  # type: ignore[arg-type]
    sim = simulator or Simulator(tenant, config, time_scale=scale)
    topics = topics or TopicNames.with_prefix(unique_name("e2e") + ".")
    auth = {"keys": {SIGNING_KEY_ID: "hex:" + signing_key.hex()}} if signing_key else {}
    stop = asyncio.Event()
    collector: asyncio.Task[None] | None = None
    try:
        async with local_stack(broker, topics, platform=sim, group=group or unique_name("group"), scale=scale,
                               start_service=start_service, profile=profile, notifications=notifications,
                               auth=auth, dispatch=dispatch) as stack:
            assert stack.simulator is not None
            run = Run(stack.simulator, stack.platform.url, stack.service, stack.producer, topics, scale,
                      stack.settings, signing_key=signing_key)
            collector = asyncio.create_task(
                _collect(run, broker.bootstrap, stop, broker.client_overrides.get("fetch_max_wait_ms", 100)),
                name="e2e-collector")
            yield run
    finally:
        # After the service stopped, as before: what it publishes on its way out is collected too.
        stop.set()
        if collector is not None:
            await collector
    shown = "\n".join(run.contract_violations[:10])
    assert not run.contract_violations, (
        f"{len(run.contract_violations)} records do not fit their published schema:\n{shown}")
