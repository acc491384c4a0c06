"""Replay throughput: `campaign-fsm replay`'s read path against a bare aiokafka consumer, same topic, same run.

1. Starts a broker (``CAMPAIGN_FSM_BROKER``: noida by default, tansu, or host:port) in a temp dir.
2. Writes `--events` events (default 1,000,000) for `--campaigns` campaigns (default 10,000) to a
   fresh topic: realistic histories out of `CampaignMachine`, hash-chained like the orchestrator,
   keyed by campaign id with the CloudEvents headers, produced in batches (acks=all).
3. Times, alternately and `--rounds` times each (best round counts, the machine is shared):
   - raw: an `AIOKafkaConsumer` (no group) assigned every partition, counting records to the end;
   - replay: `adapters.audit.read_events(strict=False)`, which is what `campaign-fsm replay` runs
     before printing: read through `TopicReader`, decode, check shape, de-duplicate by id, and
     order every campaign's timeline by sequence. Printing is timed separately (`render_s`:
     the JSON document of every timeline, encoded and discarded).

Prints a table, then one JSON object as the last line: `events`, `replay_events_per_s`,
`raw_consume_events_per_s`, `ratio` (target >= 0.5), and the details.
Usage: python bench/replay_bench.py [--events N] [--campaigns M] [--partitions P] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.audit import read_events, timelines_json
from adapters.devtools.brokers import BrokerHandle, broker_from_env
from adapters.kafka import (
    EVENT_CONTENT_TYPE,
    KafkaSettings,
    OutgoingRecord,
    Producer,
    TopicSpec,
    ensure_topics,
    open_admin,
)
from fsm.audit_history import HistoryGenerator
from schemas.events import STATE_CHANGED_TYPE

CHUNK = 20_000


async def produce(config: KafkaSettings, topic: str, events: int, campaigns: int, partitions: int) -> float:
    async with open_admin(config) as admin:
        await ensure_topics(admin, [TopicSpec(topic, partitions)])
    generator = HistoryGenerator(campaigns, seed=20240501)
    started = time.perf_counter()
    async with Producer(config, client_id="replay-bench") as producer:
        batch: list[OutgoingRecord] = []
        for event in generator.events(events):
            batch.append(OutgoingRecord(topic, event["subject"], orjson.dumps(event),
                                        ce_type=STATE_CHANGED_TYPE, ce_id=event["id"],
                          content_type=EVENT_CONTENT_TYPE))
            if len(batch) == CHUNK:
                await producer.send_many(batch)
                batch = []
        if batch:
            await producer.send_many(batch)
    return time.perf_counter() - started


async def raw_consume(config: KafkaSettings, topic: str, expected: int) -> float:
    """The floor: records fetched and handed over by aiokafka, nothing else done with them."""
    consumer = AIOKafkaConsumer(bootstrap_servers=config.bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                fetch_max_wait_ms=min(50, config.fetch_max_wait_ms))  # as TopicReader
    started = time.perf_counter()
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        seen = 0
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                seen += len(records)
    finally:
        await consumer.stop()
    return time.perf_counter() - started


async def replay(config: KafkaSettings, topic: str, expected: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds) of the read and rebuild, then the wall seconds of rendering."""
    started, cpu = time.perf_counter(), time.process_time()
    result = await read_events(config, topic, strict=False)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.events != expected or result.findings:
        raise SystemExit(f"replay read {result.events} events (expected {expected}) with "
                         f"{len(result.findings)} findings: the bench log is broken")
    started = time.perf_counter()
    orjson.dumps(timelines_json(result, topic))
    return elapsed, cpu, time.perf_counter() - started


async def run(broker: BrokerHandle, args: argparse.Namespace) -> dict[str, Any]:
    config = broker.kafka_config(linger_ms=5, partitions=args.partitions)
    topic = f"bench.campaign.events.{uuid.uuid4().hex[:8]}"  # fresh, also on a reused external broker
    produce_s = await produce(config, topic, args.events, args.campaigns, args.partitions)
    raw_times: list[float] = []
    replay_times: list[float] = []
    render_times: list[float] = []
    raw_cpu: list[float] = []
    replay_cpu: list[float] = []
    for _ in range(args.rounds):
        cpu = time.process_time()
        raw_times.append(await raw_consume(config, topic, args.events))
        raw_cpu.append(time.process_time() - cpu)
        elapsed, cpu_s, render = await replay(config, topic, args.events)
        replay_cpu.append(cpu_s)
        replay_times.append(elapsed)
        render_times.append(render)
    raw_best, replay_best = min(raw_times), min(replay_times)
    return {
        "events": args.events,
        "campaigns": args.campaigns,
        "partitions": args.partitions,
        "broker": broker.kind,
        "rounds": args.rounds,
        "produce_events_per_s": round(args.events / produce_s),
        "raw_consume_s": [round(t, 3) for t in raw_times],
        "replay_s": [round(t, 3) for t in replay_times],
        "render_s": round(min(render_times), 3),
        # This process's CPU per event (the broker's is not counted): a view less sensitive to
        # other load on a shared machine than wall-clock time.
        "raw_cpu_us_per_event": round(min(raw_cpu) / args.events * 1e6, 2),
        "replay_cpu_us_per_event": round(min(replay_cpu) / args.events * 1e6, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "replay_events_per_s": round(args.events / replay_best),
        "raw_consume_events_per_s": round(args.events / raw_best),
        "ratio": round(raw_best / replay_best, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.events < args.campaigns or args.campaigns < 1 or args.rounds < 1 or args.partitions < 1:
        parser.error("need events >= campaigns >= 1, rounds >= 1, partitions >= 1")
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as data_dir:
        broker = broker_from_env(data_dir)
        try:
            result = asyncio.run(run(broker, args))
        finally:
            broker.stop()
    rows = [
        ("events / campaigns / partitions", f"{result['events']:,} / {result['campaigns']:,} / {result['partitions']}"),
        ("broker", result["broker"]),
        ("produce (acks=all, batched)", f"{result['produce_events_per_s']:,} events/s"),
        ("raw aiokafka consume (best)",
         f"{result['raw_consume_events_per_s']:,} events/s  {result['raw_consume_s']} s"),
        ("replay read+rebuild (best)", f"{result['replay_events_per_s']:,} events/s  {result['replay_s']} s"),
        ("replay JSON rendering", f"{result['render_s']} s"),
        ("CPU per event raw / replay", f"{result['raw_cpu_us_per_event']} / "
                                              f"{result['replay_cpu_us_per_event']} us"),
        ("ratio replay/raw (target >= 0.5)", f"{result['ratio']}"),
        ("peak RSS", f"{result['peak_rss_mb']} MB"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
