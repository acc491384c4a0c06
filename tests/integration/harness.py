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
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator import Simulator, SimulatorConfig
from adapters.devtools.simulator.tenant import Tenant
from adapters.devtools.stack import local_stack
from adapters.kafka import Producer, TopicNames
from adapters.service import Service
from adapters.settings import Settings
from fsm.authorization import canonical_body, sign_body
from schemas.commands import Command
from schemas.types import Action, Priority

SIGNING_KEY_ID = "e2e"


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
    signing_key: bytes | None = None  # set: commands from `send` are signed with key id SIGNING_KEY_ID

    async def send(self, campaign_id: str, action: str | Action, priority: Priority = Priority.STANDARD,
                   **extra: Any) -> Command:
        command = self.command(campaign_id, action, priority, **extra)
        await self.producer.send(self.topics.commands, campaign_id, command)
        return command

    def command(self, campaign_id: str, action: str | Action, priority: Priority = Priority.STANDARD,
                **extra: Any) -> Command:
        command = Command(id=uuid.uuid4(), campaign_id=campaign_id, action=Action(action), priority=priority,
                          requested_by="e2e-test", issued_at=datetime.now(UTC), **extra)
        if self.signing_key is None:
            return command
        unsigned = command.model_copy(update={"key_id": SIGNING_KEY_ID})
        return unsigned.model_copy(update={"signature": sign_body(self.signing_key, canonical_body(unsigned))})

    async def send_raw(self, key: str | None, value: bytes) -> None:
        await self.producer.send(self.topics.commands, key, value)

    def outcomes(self, command: Command) -> list[str]:
        return [r["outcome"] for r in self.results if r["commandId"] == str(command.id)]

    def reasons(self, command: Command) -> list[str | None]:
        return [r.get("reason") for r in self.results if r["commandId"] == str(command.id)]

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
        run.topics.events, run.topics.results, run.topics.dead_letters, bootstrap_servers=bootstrap,
        auto_offset_reset="earliest", enable_auto_commit=False, group_id=None, fetch_max_wait_ms=fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            for tp, records in batches.items():
                for record in records:
                    if tp.topic == run.topics.events:
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
