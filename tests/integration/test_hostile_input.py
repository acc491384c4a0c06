"""Hostile input over a real broker and the simulator (issue 10): what an unsigned, forged, replayed,
planted, oversized or malformed record can make happen. Each test names the finding it covers; the
platform's own request record (`sim.traffic`) is the witness of what reached it.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import psutil
import pytest
from aiokafka import AIOKafkaProducer

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.kafka import partition_of
from adapters.service import Service
from adapters.signing import Signer
from schemas.base import encode
from schemas.commands import Command
from schemas.signed import SignedRecord
from schemas.state import StoredCommand
from schemas.types import Action, CampaignState, DialerType, Priority, ReasonCode
from tests.integration.harness import SIGNING_KEY_ID, Run, e2e

pytestmark = pytest.mark.integration
S = CampaignState
KEY = b"hostile-input-test-key-of-32-byt"


def _posts(run: Run, campaign_id: str | None = None) -> list[str]:
    return [f"{r.action} {r.campaign_id}" for r in run.sim.traffic.records
            if r.kind == "command" and (campaign_id is None or r.campaign_id == campaign_id)]


def _reads(run: Run) -> int:
    return sum(1 for r in run.sim.traffic.records if r.kind == "read")


def _forged(run: Run, campaign_id: str, action: Action, n: int) -> Command:
    """Unsigned, signed under a wrong key, or naming a key that does not exist: every third."""
    command = Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, priority=Priority.HIGH,
                      requested_by="mallory", issued_at=datetime.now(UTC))
    if n % 3 == 0:
        return command
    return Command.from_record(SignedRecord(campaign_id.encode(), encode(command),
                                            SIGNING_KEY_ID if n % 3 == 1 else "nobody", f"{n:064x}"))


def _wire(command: Command) -> tuple[bytes, list[tuple[str, bytes]]]:
    """What a producer puts on the topic for `command`: its signed record's bytes and headers."""
    record = command.signed
    if record is None:
        return encode(command), []
    return record.value, [(k, v.encode()) for k, v in record.headers().items()]


def _moved(command: Command, campaign_id: str) -> Command:
    """`command`'s record with its campaign id rewritten, its signature kept: a forgery."""
    record = command.signed
    assert record is not None
    value = record.value.replace(f'"campaignId":"{command.campaign_id}"'.encode(),
                                 f'"campaignId":"{campaign_id}"'.encode())
    return Command.from_record(SignedRecord(campaign_id.encode(), value, record.key_id, record.signature))


async def test_unsigned_and_forged_commands_at_load_never_reach_the_platform(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    # Finding 1: while the campaign's looks are kept busy (signed commands, and a platform flipping
    # it between RUNNING and PAUSED, each change a notification and an event to write), 3,000
    # unsigned or forged commands at it.
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, signing_key=KEY) as run:
        cid = "campaign-0001"
        hostile: list[Command] = []
        signed: list[Command] = []
        flipping = asyncio.Event()

        async def flip() -> None:
            state = S.RUNNING
            while not flipping.is_set():
                state = S.PAUSED if state is S.RUNNING else S.RUNNING
                run.sim.set_state(cid, state)
                await asyncio.sleep(0.1)

        flipper = asyncio.create_task(flip())
        for n in range(3000):
            command = _forged(run, cid, (Action.STOP, Action.PAUSE, Action.START)[n % 3], n)
            hostile.append(command)
            await run.send_command(command)
            if n % 500 == 250:
                signed.append(await run.send(cid, "pause" if len(signed) % 2 == 0 else "resume", Priority.HIGH))
        await run.until(lambda: all(run.outcomes(c) for c in hostile), timeout=120, what="every forgery answered")
        flipping.set()
        await flipper
        assert {tuple(run.reasons(c)) for c in hostile} <= {("UNSIGNED",), ("BAD_SIGNATURE",)}
        await run.until(lambda: all(run.outcomes(c) for c in signed), timeout=60, what="signed ones answered")
        signed_actions = {c.id for c in signed}
        acted = [c for c in hostile if any(e.get("commandId") == str(c.id) for e in run.of(cid))]
        assert acted == [], "no forged command became a transition"
        assert len(_posts(run, cid)) <= len(signed_actions), _posts(run, cid)


async def test_an_oversized_malformed_record_does_not_stop_output(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    # Finding 2: 40,000 unknown fields (~430 kB) with a usable id and campaign id, then a real stop.
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, signing_key=KEY) as run:
        cid = "campaign-0001"
        bad_id = uuid.uuid4()
        body = {"id": str(bad_id), "campaignId": cid, **{f"x{i}": i for i in range(40_000)}}
        await run.send_raw(cid, orjson.dumps(body))
        stop = await run.send(cid, "stop", Priority.HIGH)
        await run.until(lambda: "COMPLETED" in run.outcomes(stop), timeout=60, what="the stop's results on Kafka")
        assert any(e["to"] == "STOPPED" for e in run.of(cid)), "its events too"
        refused = [r for r in run.results if r["commandId"] == str(bad_id)]
        assert [r["reason"] for r in refused] == ["MALFORMED_COMMAND"]
        assert len(orjson.dumps(refused[0])) < 16_000, "the answer is bounded, whatever the record"


async def test_a_signed_command_replayed_after_a_restart_is_refused(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    # Finding 4 (and 11: the replay is answered): the same bytes again after a clean restart.
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, signing_key=KEY, start_service=False) as run:
        cid = "campaign-0001"
        async with Service(run.settings).running():
            stop = await run.send(cid, "stop", Priority.HIGH)
            await run.until(lambda: "COMPLETED" in run.outcomes(stop), timeout=60, what="stop completed")
        run.sim.set_state(cid, S.RUNNING)  # someone started it again meanwhile
        async with Service(run.settings).running() as parts:
            await run.send_command(stop)  # byte for byte, headers too, a new record
            await run.until(lambda: "REFUSED" in run.outcomes(stop), timeout=30, what="the replay answered")
            assert run.reasons(stop)[-1] == "REPLAYED"
            await asyncio.sleep(1.0)
            assert parts.orchestrator.auth_refusals[ReasonCode.REPLAYED] >= 1
        assert _posts(run, cid) == [f"stop {cid}"], "the replay never reached the platform"


async def test_planted_state_records_are_quarantined_and_readiness_is_reached(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    # Finding 5: an unsigned, year-old held stop and an unparseable scheduled command on campaign.state.
    tenant = generate_tenant(2, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, signing_key=KEY, start_service=False) as run:
        async with Service(run.settings).running():
            await run.until(lambda: len(run.of("campaign-0002")) == 1, what="first events")
        records = {e["subject"]: e for e in run.events}
        assert set(records) == {"campaign-0001", "campaign-0002"}
        planted = Command(id=uuid.uuid4(), campaign_id="campaign-0001", action=Action.STOP, requested_by="mallory",
                          issued_at=datetime.now(UTC) - timedelta(days=365))
        one = {**_state_record("campaign-0001"), "held": str(planted.id),
               "heldCommand": StoredCommand.of(planted)}
        two = {**_state_record("campaign-0002"), "scheduledCommands": [{"value": "{}", "keyId": None,
                                                                         "signature": None}]}
        for record in (one, two):
            await run.producer.send(run.topics.state, record["campaignId"], orjson.dumps(record))
        async with Service(run.settings).running() as parts:
            assert parts.orchestrator.ready
            assert dict(parts.orchestrator.quarantined) == {"held": 1, "scheduled": 1}
            start_ok = await run.send("campaign-0002", "stop", Priority.HIGH)
            await run.until(lambda: "COMPLETED" in run.outcomes(start_ok), timeout=60, what="commands still flow")
            await asyncio.sleep(1.0)
        assert _posts(run, "campaign-0001") == [], "the planted stop never ran"


async def test_commands_held_until_year_9999_are_refused_and_intake_stays_fast(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    # Finding 7: 600 signed `notBefore 9999-12-31` commands, then a real one.
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, signing_key=KEY) as run:
        cid = "campaign-0001"
        far = datetime(9999, 12, 31, tzinfo=UTC)
        held = [await run.send(cid, "stop", not_before=far) for _ in range(600)]
        soon = [await run.send(cid, "stop", not_before=datetime.now(UTC) + timedelta(hours=1)) for _ in range(20)]
        pause = await run.send(cid, "pause", Priority.HIGH)
        await run.until(lambda: "COMPLETED" in run.outcomes(pause), timeout=60, what="the pause")
        assert {tuple(run.reasons(c)) for c in held} == {("NOT_BEFORE_TOO_FAR",)}
        reasons = [run.reasons(c)[0] for c in soon]
        assert reasons == ["SCHEDULED"] * 16 + ["TOO_MANY_WAITING"] * 4


async def test_a_notification_moves_only_its_topics_campaign(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    # Finding 8: 0002's body on 0001's topic, and a forged RUNNING -> PAUSED jump with another dialer.
    tenant = generate_tenant(2, 2, dialer_types=(DialerType.POWER,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, signing_key=KEY) as run:
        await run.until(lambda: len(run.of("campaign-0002")) == 1, what="first events")
        other = dict(run.sim.campaign_body(run.sim.campaign("campaign-0002")))
        other["state"] = "STOPPED"
        run.sim.hub.publish("v2.outbound.campaigns.campaign-0001", other)
        forged = dict(run.sim.campaign_body(run.sim.campaign("campaign-0001")))
        forged.update(state="PAUSED", dialerId="dialer-eu-9")
        run.sim.hub.publish("v2.outbound.campaigns.campaign-0001", forged)
        await asyncio.sleep(2.0)
        assert [e["to"] for e in run.of("campaign-0002")] == ["RUNNING"], "0002 never moved"
        assert run.of("campaign-0001")[-1]["to"] == "RUNNING", "the forged jump was read back"
        parts = run.service.parts
        assert parts is not None and parts.orchestrator.campaigns["campaign-0001"].dialer_id == "dialer-01"


async def test_unauthenticated_records_cost_no_platform_reads(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    # Finding 9: 500 records reusing a taken command id under campaigns nobody knows.
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, signing_key=KEY) as run:
        taken = await run.send("campaign-0001", "pause", Priority.HIGH)
        await run.until(lambda: "COMPLETED" in run.outcomes(taken), timeout=60, what="the pause")
        before = _reads(run)
        for n in range(500):
            await run.send_command(_moved(taken, f"ghost-{n:04d}"))
        marker = await run.send("campaign-0001", "resume", Priority.HIGH)
        await run.until(lambda: "COMPLETED" in run.outcomes(marker), timeout=60, what="the resume")
        reused = [r for r in run.results if r["commandId"] == str(taken.id) and r["campaignId"].startswith("ghost-")]
        assert len(reused) == 500 and {r["reason"] for r in reused} == {"BAD_SIGNATURE"}
        assert _reads(run) - before < 40, "only the resume's own reads, not one per ghost"


# --- the mixed load: every class above, 10,000 records, with valid signed commands among them --------


def _sign(command: Command) -> Command:
    return Signer(SIGNING_KEY_ID, KEY).sign(command)


def _hostile_records(run: Run, partitions: int, valid: list[Command], n: int, rng: random.Random,
                     campaigns: list[str]) -> tuple[str, str | None, bytes, list[tuple[str, bytes]], int | None,
                                                    str | None]:
    """One hostile record: (its class, key, value, headers, explicit partition or None, its command id if any)."""
    cid = rng.choice(campaigns)
    kind = n % 12
    base = Command(id=uuid.uuid4(), campaign_id=cid, action=rng.choice(list(Action)), priority=Priority.HIGH,
                   requested_by="mallory", issued_at=datetime.now(UTC))
    wire = encode(base)
    if kind == 0:
        return "unsigned", cid, wire, [], None, str(base.id)
    if kind == 1:
        return "forged", cid, wire, [("cfsm-key-id", SIGNING_KEY_ID.encode()),
                                     ("cfsm-signature", f"{n:064x}".encode())], None, str(base.id)
    if kind == 2 and valid:  # an exact replay of a valid command: a new record with the same bytes and headers
        replay = rng.choice(valid)
        return "replay", replay.campaign_id, *_wire(replay), None, None
    if kind == 3 and valid:  # a taken id (ids are on the results topic) under another campaign
        moved = _moved(rng.choice(valid), f"ghost-{n}")
        return "moved-id", moved.campaign_id, *_wire(moved), None, str(moved.id)
    if kind == 4:  # properly signed, an hour old
        stale = _sign(base.model_copy(update={"issued_at": datetime.now(UTC) - timedelta(hours=1)}))
        return "stale", cid, *_wire(stale), None, str(stale.id)
    if kind == 5:
        return "not-json", cid, b"\xff\xfe{not json " + str(n).encode(), [], None, None
    if kind == 6:
        return "ids-only", cid, orjson.dumps({"id": str(base.id), "campaignId": cid, "n": n}), [], None, str(base.id)
    if kind == 7 and n % 48 == 7:
        big = {"id": str(base.id), "campaignId": cid, **{f"x{i}": i for i in range(10_000)}}
        return "oversized", cid, orjson.dumps(big), [], None, str(base.id)
    if kind == 8:
        newline = {**orjson.loads(wire), "campaignId": cid + "\n"}
        return "newline-id", cid, orjson.dumps(newline), [], None, None
    if kind == 9:
        return "wrong-key", "garbage", *_wire(_sign(base)), None, str(base.id)
    if kind == 10:
        wrong = (partition_of(cid, partitions) + 1) % partitions
        return "wrong-partition", cid, *_wire(_sign(base)), wrong, str(base.id)
    far = _sign(base.model_copy(update={"not_before": datetime(9999, 12, 31, tzinfo=UTC)}))
    return "year-9999", cid, *_wire(far), None, str(far.id)


async def test_ten_thousand_hostile_records_among_valid_commands(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    tenant = generate_tenant(12, 2, dialer_types=(DialerType.POWER, DialerType.PROGRESSIVE), state=S.RUNNING,
                             max_active_calls=0)
    campaigns = sorted(tenant.campaigns)
    rng = random.Random(10)
    async with e2e(broker, unique_name, tenant=tenant, signing_key=KEY, start_service=False) as run:
        # A planted, unsigned, year-old stop for every campaign, waiting on campaign.state.
        planted: list[Command] = []
        async with Service(run.settings).running():
            await run.until(lambda: len({e["subject"] for e in run.events}) == len(campaigns), what="first events")
        for cid in campaigns:
            record = _state_record(cid)
            command = Command(id=uuid.uuid4(), campaign_id=cid, action=Action.STOP, requested_by="mallory",
                              issued_at=datetime.now(UTC) - timedelta(days=365))
            planted.append(command)
            record.update(held=str(command.id), heldCommand=StoredCommand.of(command))
            await run.producer.send(run.topics.state, cid, orjson.dumps(record))
        process = psutil.Process()
        async with Service(run.settings).running() as parts, httpx.AsyncClient() as http:
            assert parts.http_url is not None and parts.orchestrator.quarantined["held"] == len(campaigns)
            rss_before = process.memory_info().rss
            not_ready: list[int] = []
            done = asyncio.Event()

            async def watch() -> None:
                while not done.is_set():
                    answer = await http.get(f"{parts.http_url}/readyz", timeout=5.0)
                    if answer.status_code != 200:
                        not_ready.append(answer.status_code)
                    await asyncio.sleep(0.2)

            watcher = asyncio.create_task(watch())
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
            await producer.start()
            valid: list[Command] = []
            hostile_ids: set[str] = set()
            sent: Counter[str] = Counter()
            partitions = 3
            try:
                pending = []
                for n in range(10_000):
                    if n % 40 == 0:  # 250 valid commands, spread through the stream
                        cid = campaigns[(n // 40) % len(campaigns)]
                        command = run.command(cid, rng.choice(("pause", "resume", "stop", "start")),
                                              rng.choice((Priority.HIGH, Priority.STANDARD)))
                        valid.append(command)
                        value, headers = _wire(command)
                        pending.append(await producer.send(run.topics.commands, value, key=cid.encode(),
                                                           partition=partition_of(cid, partitions), headers=headers))
                    kind, key, value, headers, partition, command_id = _hostile_records(run, partitions, valid, n,
                                                                                         rng, campaigns)
                    sent[kind] += 1
                    if command_id is not None:
                        hostile_ids.add(command_id)
                    pending.append(await producer.send(run.topics.commands, value, key=key.encode() if key else None,
                                                       partition=partition, headers=headers))
                    if len(pending) >= 200:
                        await asyncio.gather(*pending)
                        pending.clear()
                await asyncio.gather(*pending)
            finally:
                await producer.stop()
            valid_ids = {str(c.id) for c in valid}
            final = {"COMPLETED", "FAILED", "REFUSED"}

            campaign_of = {str(c.id): c.campaign_id for c in valid}

            def finals(command_id: str) -> int:
                # The answers to a replay (REPLAYED) or to the id moved to a ghost campaign are theirs.
                return sum(1 for r in run.results if r["commandId"] == command_id and r["outcome"] in final
                           and r.get("reason") != "REPLAYED" and r["campaignId"] == campaign_of[command_id])

            def replays_answered() -> int:
                return sum(1 for r in run.results if r.get("reason") == "REPLAYED" and r["commandId"] in valid_ids)

            await run.until(lambda: all(finals(i) >= 1 for i in valid_ids), timeout=300, what="every valid command")
            await run.until(lambda: hostile_ids <= {r["commandId"] for r in run.results}, timeout=120,
                            what="every hostile record with an id answered")
            await run.until(lambda: replays_answered() >= sent["replay"], timeout=60, what="every replay answered")
            await run.until(lambda: len(run.dead_letters) >= sent["not-json"] + sent["newline-id"], timeout=60,
                            what="every unusable record dead-lettered")
            await asyncio.sleep(2.0)
            done.set()
            await watcher
            rss_growth = process.memory_info().rss - rss_before
        assert not_ready == [], "ready throughout"
        assert [i for i in valid_ids if finals(i) != 1] == [], "exactly one final result per valid command"
        acted = {e["data"].get("commandId") for e in run.events if e["data"].get("cause") == "command"}
        acted.discard(None)
        assert acted <= valid_ids, "no transition from a hostile or planted command"
        assert not {str(c.id) for c in planted} & acted
        posts = [r for r in run.sim.traffic.records if r.kind == "command"]
        requested = [e for e in run.events if e["data"].get("request")]
        assert len(posts) <= len(requested) + sum(1 for r in run.results if r.get("reason") == "PLATFORM_ERROR"), \
            "every POST belongs to a valid command's transition"
        assert rss_growth < 200 * 2**20, f"RSS grew {rss_growth / 2**20:.0f} MiB"
        print(f"hostile mix: RSS growth {rss_growth / 2**20:.1f} MiB, {len(run.results)} results, "
              f"{len(run.dead_letters)} dead letters, {len(posts)} POSTs for {len(valid)} valid commands, "
              f"hostile classes {dict(sent)}")


def _state_record(cid: str) -> dict[str, object]:
    return {"campaignId": cid, "state": "RUNNING", "dialerType": "POWER", "dialerId": "dialer-01",
            "contactListId": None, "sequence": 1, "enteredAt": 0.0, "deadline": None, "lastStable": "RUNNING",
            "commandId": None, "action": None, "platformStatus": "RUNNING", "held": None, "lastHash": None,
            "heldCommand": None, "heldCommandSent": False}
