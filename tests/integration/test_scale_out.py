"""Two instances in one consumer group; one is SIGKILLed mid-transition; the other takes over.

Runs on its own tansu broker whatever CAMPAIGN_FSM_BROKER says: noida-db never evicts a killed
group member, so there the partitions would never move (see DEVELOPERS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from adapters.devtools.brokers import BrokerHandle, start_broker
from adapters.devtools.simulator import Simulator, SimulatorConfig, run_simulator
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.kafka import Producer, TopicNames, ensure_topics, open_admin
from schemas.commands import Command
from schemas.types import Action, CampaignState, DialerType

pytestmark = pytest.mark.integration
SCALE = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _tansu(tmp_path: Path) -> AsyncIterator[BrokerHandle]:
    handle = await asyncio.to_thread(start_broker, "tansu", tmp_path / "tansu")
    try:
        yield handle
    finally:
        await asyncio.to_thread(handle.stop)


async def _instance(name: str, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters.cli", "run",
        env={**env, "CAMPAIGN_FSM_HTTP__PORT": str(port), "CAMPAIGN_FSM_KAFKA__CLIENT_ID": name,
             "CAMPAIGN_FSM_OUTBOX_PATH": env["OUTBOX_DIR"] + f"/{name}.sqlite3"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    return process, port


async def _campaign_count(port: int) -> float | None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:
        try:
            if (await http.get("/readyz")).status_code != 200:
                return None
            text = (await http.get("/metrics")).text
        except httpx.TransportError:
            return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("campaign_fsm_campaigns{"))


async def _budget(port: int) -> float:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:
        text = (await http.get("/metrics")).text
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("campaign_fsm_request_budget"))


async def _until(predicate: Any, timeout: float, what: str) -> None:  # noqa: ASYNC109  # a polling wait
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_sigkilled_instance_is_taken_over_without_reissuing(tmp_path: Path) -> None:
    # Two campaigns per dialer: all twelve stops can be in flight at once (two per dialer at most).
    tenant = generate_tenant(12, 6, dialer_types=(DialerType.PREDICTIVE,), state=CampaignState.RUNNING,
                             max_active_calls=5)
    sim = Simulator(tenant, SimulatorConfig(rate_clock="sim"), time_scale=SCALE)
    topics = TopicNames.with_prefix(f"so-{uuid.uuid4().hex[:8]}.")
    (tmp_path / "outbox").mkdir()
    async with _tansu(tmp_path) as broker, run_simulator(simulator=sim) as (url, sim):
        kafka = broker.kafka_config(topics=topics)
        async with open_admin(kafka) as admin:
            await ensure_topics(admin, topics, 3)
        env = dict(os.environ)
        env.update({
            "OUTBOX_DIR": str(tmp_path / "outbox"),
            "CAMPAIGN_FSM_TIME_SCALE": str(SCALE),
            "CAMPAIGN_FSM_PLATFORM__INSTANCES": "2",  # two instances share the tenant's 10 reads/s
            "CAMPAIGN_FSM_PLATFORM__BASE_URL": url,
            "CAMPAIGN_FSM_PLATFORM__CLIENT_ID": sim.config.client_id,
            "CAMPAIGN_FSM_PLATFORM__CLIENT_SECRET": sim.config.client_secret,
            "CAMPAIGN_FSM_KAFKA__BOOTSTRAP": broker.bootstrap,
            "CAMPAIGN_FSM_KAFKA__GROUP_ID": "so-group",
            "CAMPAIGN_FSM_KAFKA__PARTITIONS": "3",
            "CAMPAIGN_FSM_KAFKA__ENABLE_IDEMPOTENCE": "false",
            "CAMPAIGN_FSM_KAFKA__FETCH_MAX_WAIT_MS": "20",
            "CAMPAIGN_FSM_KAFKA__SESSION_TIMEOUT_MS": "3000",
            "CAMPAIGN_FSM_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
            **{f"CAMPAIGN_FSM_KAFKA__TOPICS__{k.upper()}": v for k, v in (
                ("commands", topics.commands), ("results", topics.results), ("events", topics.events),
                ("state", topics.state), ("dead_letters", topics.dead_letters))},
        })
        a, port_a = await _instance("instance-a", env)
        b, port_b = await _instance("instance-b", env)
        consumer = AIOKafkaConsumer(topics.events, topics.results, bootstrap_servers=broker.bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                                    fetch_max_wait_ms=20)
        producer = Producer(kafka)
        events: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        try:
            async def both_own_some() -> bool:
                counts = [await _campaign_count(port_a), await _campaign_count(port_b)]
                return all(c for c in counts) and sum(c or 0 for c in counts) == 12

            await _until(both_own_some, 60, "both instances ready, sharing the 12 campaigns")
            owned_by_a = await _campaign_count(port_a)
            # The tenant's 10 reads/s split by partition share (3 partitions: 2 and 1 -> 6 and 3).
            shares = sorted([await _budget(port_a), await _budget(port_b)])
            assert shares == [3.0, 6.0], shares
            await consumer.start()
            await producer.start()
            ids = sorted(tenant.campaigns)
            for cid in ids:
                sim.next_transition(cid, "stall", duration=100)  # long enough to kill mid-way
            commands = {}
            for cid in ids:
                command = Command(id=uuid.uuid4(), campaign_id=cid, action=Action.STOP, requested_by="so-test",
                                  issued_at=datetime.now(UTC))
                commands[cid] = command
                await producer.send(topics.commands, cid, command)

            async def drain() -> None:
                for tp, records in (await consumer.getmany(timeout_ms=50)).items():
                    for record in records:
                        (events if tp.topic == topics.events else results).append(orjson.loads(record.value))

            async def all_stopping() -> bool:
                await drain()
                return {e["subject"] for e in events if e["data"]["to"] == "STOPPING"} == set(ids)

            await _until(all_stopping, 60, "every campaign STOPPING")
            a.send_signal(signal.SIGKILL)  # no goodbye: the group notices by session timeout
            await a.wait()

            async def all_completed() -> bool:
                await drain()
                done = {r["commandId"] for r in results if r["outcome"] == "COMPLETED"}
                return done >= {str(c.id) for c in commands.values()}

            await _until(all_completed, 90, "every stop COMPLETED after the takeover")
            assert await _campaign_count(port_b) == 12, "the survivor owns every campaign"
            assert await _budget(port_b) == 10.0, "the dead instance's share of the budget came back"
        finally:
            if os.environ.get("SO_DEBUG"):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_b}") as http:
                    print("--- metrics b", "\n".join(line for line in (await http.get("/metrics")).text.splitlines()
                                                 if line.startswith("campaign_fsm")))
                print("--- events", len(events), "results", len(results), [r["outcome"] for r in results])
            for process in (a, b):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(process.wait(), 30)
                    except TimeoutError:
                        process.kill()
                        await process.wait()
            await consumer.stop()
            await producer.stop()
            if os.environ.get("SO_DEBUG"):
                for name, process in (("a", a), ("b", b)):
                    assert process.stderr is not None
                    print(f"--- {name}", (await process.stderr.read()).decode()[-6000:])
    assert owned_by_a and owned_by_a < 12, "the killed instance owned part of the campaigns"
    assert not [r for r in sim.traffic.records if r.status == 429], "together they stay under the tenant limit"
    posts = [r for r in sim.traffic.records if r.kind == "command"]
    assert sorted(r.campaign_id for r in posts) == ids, "each stop reached the platform exactly once"
    for cid in ids:
        unique = {e["id"]: e for e in events if e["subject"] == cid}  # dedupe re-deliveries by id
        sequences = sorted(e["data"]["sequence"] for e in unique.values())
        assert sequences == list(range(1, len(sequences) + 1)), f"{cid}: gap or duplicate {sequences}"
        assert unique[f"{cid}:{sequences[-1]}"]["data"]["to"] == "STOPPED"
