"""Hostile records on the commands topic, over the real broker and the simulator: none of them loses
the commands around it, wedges the intake, or hides a dead intake behind a green /readyz."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.kafka import KafkaEdgeError, OutgoingRecord, Partition, partition_of
from adapters.service import Service
from adapters.settings import AuthSettings, Settings
from adapters.signing import Signer
from schemas.base import encode
from schemas.commands import Command
from schemas.types import Action, CampaignState
from tests.integration.harness import Run, e2e

pytestmark = pytest.mark.integration

KEY = bytes.fromhex("5f" * 32)
SIGNER = Signer("ops-1", KEY)
PARTITIONS = 3  # the harness creates the topics with three


def _record(run: Run, command: Command) -> OutgoingRecord:
    """`command` as its signer produced it: the signed bytes and the signing headers."""
    assert command.signed is not None
    return OutgoingRecord(run.topics.commands, command.campaign_id, command.signed.value,
                          headers=command.signed.headers())


def signed(campaign_id: str, action: Action = Action.START) -> Command:
    return SIGNER.sign(Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, requested_by="hostile-test",
                               issued_at=datetime.now(UTC)))


def with_keys(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": AuthSettings(keys={"ops-1": f"hex:{KEY.hex()}"})})


def answered(run: Run) -> set[str]:
    return {r["commandId"] for r in run.results}


async def _readyz(url: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        return (await http.get("/readyz")).status_code


async def test_a_campaign_id_with_a_trailing_newline_loses_no_command_after_it(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    tenant = generate_tenant(12, 3, state=CampaignState.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, start_service=False) as run:
        async with Service(with_keys(run.settings)).running():
            commands = [signed(f"campaign-{1 + i % 12:04d}") for i in range(300)]
            body = orjson.loads(encode(signed("campaign-0001")))
            body["campaignId"] = "campaign-0001\n"
            records = [_record(run, c) for c in commands]
            # Early in the stream, so most of the 300 sit behind it in the same fetched batch.
            records.insert(5, OutgoingRecord(run.topics.commands, "campaign-0001", orjson.dumps(body)))
            await run.producer.send_many(records)
            ids = {str(c.id) for c in commands}
            await run.until(lambda: ids <= answered(run), timeout=90, what="all 300 answered")
            await run.until(lambda: len(run.dead_letters) == 1, what="the unusable record dead-lettered")
        assert body["id"] not in answered(run), "no result can carry that campaign id"
        headers = dict(run.dead_letters[0].headers)
        assert headers["source-offset"] and b"campaignId" in headers["error"]


async def test_mis_keyed_and_mis_partitioned_records_are_refused_and_wedge_nothing(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    """A second group member owns some partitions, so the service reads records naming campaigns it
    does not drive: the one keyed "garbage" and the one produced onto the wrong partition by hand."""
    tenant = generate_tenant(12, 3, state=CampaignState.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, start_service=False) as run:
        async with Service(run.settings).running() as parts:
            ownership = parts.extra["ownership"]
            rebalances = ownership.rebalances
            other = AIOKafkaConsumer(run.topics.commands, bootstrap_servers=broker.bootstrap,
                                     group_id=run.settings.kafka.group_id, enable_auto_commit=False,
                                     auto_offset_reset="earliest", session_timeout_ms=10_000,
                                     heartbeat_interval_ms=1_000)
            await other.start()
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                await run.until(lambda: ownership.rebalances > rebalances and 0 < len(ownership.owned) < PARTITIONS,
                                timeout=60, what="the second member took a share")
                await run.until(lambda: parts.orchestrator.ready, what="ready again")
                owned = set(ownership.owned)
                ids = sorted(tenant.campaigns)
                foreign = next(c for c in ids if partition_of(c, PARTITIONS) not in owned)
                mine = [c for c in ids if partition_of(c, PARTITIONS) in owned]
                into = min(owned)
                garbage, misplaced = signed(foreign, Action.STOP), signed(foreign, Action.STOP)
                for command, key in ((garbage, b"garbage"), (misplaced, foreign.encode())):
                    record = _record(run, command)
                    await producer.send_and_wait(run.topics.commands, record.value, key=key, partition=into,
                                                 headers=[(k, str(v).encode()) for k, v in record.headers.items()])
                sent = time.monotonic()
                valid = [signed(c) for c in mine]
                await run.producer.send_many([_record(run, c) for c in valid])
                await run.until(lambda: {str(c.id) for c in valid} <= answered(run), timeout=10,
                                what="the valid commands after them answered")
                took = time.monotonic() - sent
                await run.until(lambda: {str(garbage.id), str(misplaced.id)} <= answered(run), timeout=10,
                                what="the hostile records answered")
            finally:
                await producer.stop()
                await other.stop()
        assert took < 5.0, f"valid commands waited {took:.1f} s behind the hostile records"
        assert run.reasons(garbage) == ["KEY_MISMATCH"] and run.outcomes(garbage) == ["REFUSED"]
        assert run.reasons(misplaced) == ["WRONG_PARTITION"] and run.outcomes(misplaced) == ["REFUSED"]
        message = next(r["message"] for r in run.results if r["commandId"] == str(misplaced.id))
        assert f"partition {partition_of(foreign, PARTITIONS)}" in message and "murmur2" in message
        assert not [r for r in run.sim.traffic.records if r.kind == "command" and r.campaign_id == foreign]


async def test_a_failing_commit_turns_readyz_503_and_back_losing_nothing(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    tenant = generate_tenant(12, 3, state=CampaignState.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, start_service=False) as run:
        async with Service(run.settings).running() as parts:
            assert parts.http_url is not None
            assert await _readyz(parts.http_url) == 200
            consumer = parts.consumer
            commit = consumer.commit
            failing = True

            async def broken_commit(offsets: Mapping[Partition, int]) -> None:
                if failing:
                    raise KafkaEdgeError("commit failed: the coordinator is away (injected)")
                await commit(offsets)

            consumer.commit = broken_commit  # type: ignore[method-assign]
            first = [await run.send(f"campaign-{i:04d}", "start") for i in range(1, 13)]
            deadline = time.monotonic() + 20
            while await _readyz(parts.http_url) != 503:
                assert time.monotonic() < deadline, "/readyz stayed 200 while every commit failed"
                await asyncio.sleep(0.05)
            later = [await run.send(f"campaign-{i:04d}", "start") for i in range(1, 13)]
            failing = False
            deadline = time.monotonic() + 60
            while await _readyz(parts.http_url) != 200:
                assert time.monotonic() < deadline, "/readyz did not recover"
                await asyncio.sleep(0.05)
            await run.until(lambda: {str(c.id) for c in (*first, *later)} <= answered(run), timeout=30,
                            what="every command answered")

            async def committed_to_end() -> bool:
                for tp in consumer.assignment:
                    if await consumer.committed(tp) != parts.intake.positions.get(tp):
                        return False
                return sum(consumer.lag(parts.intake.positions).values()) == 0

            deadline = time.monotonic() + 30
            while not await committed_to_end():
                assert time.monotonic() < deadline, "offsets not committed after recovery"
                await asyncio.sleep(0.05)
        for command in (*first, *later):
            assert len(run.outcomes(command)) == 1, f"{command.campaign_id}: one result each, none lost"


async def test_a_dead_notifications_relay_turns_readyz_503(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    """Issue 12 item 5: the task that hands notifications to the core is supervised like the intake:
    if it ends, it is logged and the instance leaves rotation (its campaigns would only be polled)."""
    tenant = generate_tenant(3, 1, state=CampaignState.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, start_service=False) as run:
        async with Service(run.settings).running() as parts:
            assert parts.http_url is not None
            assert await _readyz(parts.http_url) == 200
            relay = next(t for t in asyncio.all_tasks() if t.get_name() == "notifications-relay")
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
            assert await _readyz(parts.http_url) == 503


async def test_an_outbox_that_can_no_longer_store_turns_readyz_503(
        broker: BrokerHandle, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 item 5: an outbox whose writer ended (a defect) stores and delivers nothing any more,
    even with no command arriving to show it: the instance leaves rotation at once."""
    from adapters.outbox import OutboxError, store

    tenant = generate_tenant(3, 1, state=CampaignState.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, start_service=False) as run:
        async with Service(run.settings).running() as parts:
            assert parts.http_url is not None
            assert await _readyz(parts.http_url) == 200

            def broken(self: object, ops: list[object]) -> list[object]:
                raise RuntimeError("a defect in the outbox's store (injected)")

            monkeypatch.setattr(store.Store, "commit_appends", broken)
            with pytest.raises(OutboxError):
                await parts.sink.state_saved({"campaignId": "c-x", "state": "RUNNING", "sequence": 1,
                                              "lastHash": None})
            assert await _readyz(parts.http_url) == 503
            monkeypatch.undo()
