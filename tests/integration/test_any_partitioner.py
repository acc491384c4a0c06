"""Two instances, a third-party producer with librdkafka's default partitioner and garbage keys
(issue 13, item 4): every command gets exactly one final result within the bound, none is lost,
and both instances keep taking commands.

librdkafka (confluent-kafka) partitions keyed records with `consistent_random` (CRC32) unless told
`partitioner=murmur2_random`, so some campaigns' commands land on a partition that murmur2 (the
service's rule, the Java client's default) does not give them, often one the other instance owns.
Such a command is answered REFUSED WRONG_PARTITION naming the right partition, counted in
`/metrics`; a command re-sent with the murmur2 partitioner is then executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import KafkaError, Message
from confluent_kafka import Producer as LibrdkafkaProducer

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.kafka import partition_of
from adapters.service import Service
from adapters.signing import Signer
from schemas.commands import Command
from schemas.types import Action, CampaignState
from tests.integration.harness import SIGNING_KEY_ID, Run, e2e

pytestmark = pytest.mark.integration

KEY = bytes.fromhex("6a" * 32)
SIGNER = Signer(SIGNING_KEY_ID, KEY)  # the project's own signing helper, whatever its format
PARTITIONS = 3  # the harness creates the topics with three
FINAL = {"REFUSED", "COMPLETED", "FAILED"}
REFUSAL_BOUND_S = 15.0  # a refusal needs no platform call: it comes at once
COMPLETION_BOUND_S = 60.0


def _command(campaign_id: str, action: Action) -> Command:
    return SIGNER.sign(Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action,
                               requested_by="librdkafka-producer", issued_at=datetime.now(UTC)))


class _Librdkafka:
    """A confluent-kafka producer; `partitioner` None leaves librdkafka's default (consistent_random)."""

    def __init__(self, bootstrap: str, partitioner: str | None = None) -> None:
        config: dict[str, Any] = {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"}
        if partitioner is not None:
            config["partitioner"] = partitioner
        self._producer = LibrdkafkaProducer(config)
        self.landed: dict[str, int] = {}  # command id -> partition
        self.errors: list[str] = []

    def send(self, topic: str, key: bytes | None, command: Command) -> None:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.landed[str(command.id)] = int(msg.partition() or 0)

        # The record as signed: its value bytes and signing headers (docs/signing.md); a garbage key
        # keeps the signature made for the campaign id, so it is refused KEY_MISMATCH before any check.
        signed = command.signed
        assert signed is not None
        self._producer.produce(topic, value=signed.value, key=key, headers=list(signed.headers().items()),
                               on_delivery=delivered)

    async def flush_and_close(self) -> None:
        left = await asyncio.to_thread(self._producer.flush, 30)
        self._producer.close()  # no client left reconnecting to a broker the session stops
        assert left == 0 and not self.errors, f"{left} not delivered; errors {self.errors}"


async def _misrouted(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    found = re.findall(r'^campaign_fsm_commands_misrouted\{reason="([A-Z_]+)"\} ([0-9.e+]+)$', text, re.M)
    return {reason: float(n) for reason, n in found}


@contextlib.asynccontextmanager
async def _two_instances(run: Run, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(Service(run.settings).running())
        other = run.settings.model_copy(update={"outbox_path": str(tmp_path / "b.sqlite3")})
        b = await stack.enter_async_context(Service(other).running())
        owners = (a.extra["ownership"], b.extra["ownership"])
        await run.until(lambda: all(o.owned for o in owners) and sum(len(o.owned) for o in owners) == PARTITIONS
                        and a.orchestrator.ready and b.orchestrator.ready,
                        timeout=90, what="both instances ready, sharing the three partitions")
        yield a, b


def _finals(run: Run, command: Command) -> list[str]:
    return [o for o in run.outcomes(command) if o in FINAL]


async def test_a_librdkafka_producer_and_garbage_keys_against_two_instances(
        broker: BrokerHandle, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    # Two campaigns per dialer, few calls each: no start waits for dialer capacity.
    tenant = generate_tenant(12, 6, state=CampaignState.STOPPED, max_active_calls=5)
    ids = sorted(tenant.campaigns)
    async with e2e(broker, unique_name, tenant=tenant, start_service=False, signing_key=KEY) as run, \
            _two_instances(run, tmp_path) as (a, b):
        default = _Librdkafka(broker.bootstrap)  # consistent_random: the mis-partitioning producer
        starts = {cid: _command(cid, Action.START) for cid in ids}
        garbage = [_command(ids[i], Action.START) for i in range(4)]
        for cid, command in starts.items():
            default.send(run.topics.commands, cid.encode(), command)
        for i, command in enumerate(garbage):  # a foreign key, bytes that are not UTF-8, none at all
            key = (b"garbage", b"\xff\xfe\x00", None, b"campaign-0001 ")[i]
            default.send(run.topics.commands, key, command)
        sent = time.monotonic()
        await default.flush_and_close()
        wrong = {cid for cid, c in starts.items() if default.landed[str(c.id)] != partition_of(cid, PARTITIONS)}
        assert wrong, "librdkafka's default partitioner put every campaign where murmur2 does: no test"

        everything = [*starts.values(), *garbage]
        await run.until(lambda: all(_finals(run, c) or run.outcomes(c) == ["ACCEPTED"] for c in everything),
                        timeout=REFUSAL_BOUND_S, what="a first answer for every command")
        assert time.monotonic() - sent < REFUSAL_BOUND_S
        for cid in wrong:
            command = starts[cid]
            assert run.outcomes(command) == ["REFUSED"] and run.reasons(command) == ["WRONG_PARTITION"], cid
            message = next(r["message"] for r in run.results if r["commandId"] == str(command.id))
            assert f"partition {partition_of(cid, PARTITIONS)} " in message and "murmur2_random" in message
        for command in garbage:
            assert run.outcomes(command) == ["REFUSED"] and run.reasons(command) == ["KEY_MISMATCH"]
        right = [starts[cid] for cid in ids if cid not in wrong]
        await run.until(lambda: all(_finals(run, c) == ["COMPLETED"] for c in right), timeout=COMPLETION_BOUND_S,
                        what="the well-partitioned starts completed")
        assert not [r for r in run.sim.traffic.records if r.kind == "command" and r.campaign_id in wrong], \
            "a refused command reached the platform"

        # Counted in /metrics, by whichever instance read the record.
        counts = [await _misrouted(parts.http_url) for parts in (a, b)]
        assert sum(c.get("WRONG_PARTITION", 0) for c in counts) == len(wrong)
        assert sum(c.get("KEY_MISMATCH", 0) for c in counts) == len(garbage)

        # Both instances keep taking commands: the refused starts again, with the murmur2 partitioner.
        consumed = (a.intake.consumed, b.intake.consumed)
        murmur2 = _Librdkafka(broker.bootstrap, "murmur2_random")
        again = {cid: _command(cid, Action.START) for cid in wrong}
        stops = {cid: _command(cid, Action.STOP) for cid in ids if cid not in wrong}
        for cid, command in (*again.items(), *stops.items()):
            murmur2.send(run.topics.commands, cid.encode(), command)
        await murmur2.flush_and_close()
        assert all(murmur2.landed[str(c.id)] == partition_of(c.campaign_id, PARTITIONS)
                   for c in (*again.values(), *stops.values()))
        second = (*again.values(), *stops.values())
        try:
            await run.until(lambda: all(_finals(run, c) == ["COMPLETED"] for c in second),
                            timeout=COMPLETION_BOUND_S, what="every command of the second round completed")
        except AssertionError as exc:
            got = {c.campaign_id: list(zip(run.outcomes(c), run.reasons(c), strict=True)) for c in second}
            raise AssertionError(f"{exc}: {got}") from None
        assert a.intake.consumed > consumed[0] and b.intake.consumed > consumed[1], "an instance stopped taking"
        assert a.intake.healthy and b.intake.healthy

    for command in (*everything, *second):
        assert len(_finals(run, command)) == 1, f"{command.campaign_id}: exactly one final result"
