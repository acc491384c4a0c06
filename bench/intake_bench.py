"""Commands per second one instance decides, end to end through Kafka.

A broker (started here, by PID), the simulator and one service instance; N commands that the
state machine decides without touching the platform (`start` on RUNNING campaigns: COMPLETED with
ALREADY_IN_STATE; `pause` on STOPPED ones: REFUSED with ILLEGAL_TRANSITION) are published at once,
and the clock runs until every one has its result on `campaign.command-results`. That is the
service's own ceiling (parse, gate, durable outbox, produce); commands that do reach the platform
are bound by the tenant's 10 reads per second instead (see docs/scale-out.md and storm_bench).

Prints a table, then one JSON object as the last line.
Usage: python bench/intake_bench.py [--commands N] [--campaigns M] [--broker noida|tansu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from adapters.devtools.brokers import start_broker
from adapters.devtools.simulator import Simulator, SimulatorConfig
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.devtools.stack import local_stack
from adapters.kafka import OutgoingRecord, TopicNames
from schemas.commands import Command
from schemas.types import Action, CampaignState


async def run(commands: int, campaigns: int, kind: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="intake-bench-") as tmp:
        broker = await asyncio.to_thread(start_broker, kind, Path(tmp) / "broker")
        try:
            running = generate_tenant(campaigns, max(1, campaigns // 50), state=CampaignState.RUNNING)
            sim = Simulator(running, SimulatorConfig(rate_clock="sim"))
            topics = TopicNames.with_prefix("bench.")
            async with local_stack(broker, topics, platform=sim, group="campaign-fsm", scale=1.0, partitions=6,
                                   data_dir=Path(tmp), service_options={"serve_http": False}) as stack:
                producer = stack.producer
                overrides = broker.client_overrides
                consumer = AIOKafkaConsumer(topics.results, bootstrap_servers=broker.bootstrap,
                                            auto_offset_reset="earliest", group_id=None,
                                            fetch_max_wait_ms=overrides.get("fetch_max_wait_ms", 100))
                await consumer.start()
                ids = sorted(running.campaigns)
                batch = []
                for i in range(commands):
                    cid = ids[i % len(ids)]
                    command = Command(id=uuid.uuid4(), campaign_id=cid,
                                      action=Action.START if i % 2 == 0 else Action.PAUSE,
                                      requested_by="bench", issued_at=datetime.now(UTC),
                                      expected_state=None if i % 2 == 0 else CampaignState.PAUSED)
                    batch.append(OutgoingRecord(topics.commands, cid, command))
                start = time.perf_counter()
                for i in range(0, len(batch), 500):
                    await producer.send_many(batch[i:i + 500])
                published = time.perf_counter() - start
                seen = 0
                while seen < commands:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        seen += len(records)
                    if time.perf_counter() - start > 600:
                        break
                elapsed = time.perf_counter() - start
                await consumer.stop()
        finally:
            await asyncio.to_thread(broker.stop)
    return {"commands": commands, "results": seen, "seconds": elapsed, "publish_seconds": published,
            "commands_per_s": seen / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--campaigns", type=int, default=500)
    parser.add_argument("--broker", default="noida", choices=("noida", "tansu"))
    args = parser.parse_args()
    figures = asyncio.run(run(args.commands, args.campaigns, args.broker))
    rows = [
        ("commands published", f"{figures['commands']:,} in {figures['publish_seconds']:.2f} s"),
        ("results received", f"{figures['results']:,}"),
        ("wall time to the last result", f"{figures['seconds']:.2f} s"),
        ("commands decided per second", f"{figures['commands_per_s']:,.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  value  ({args.broker}, {args.campaigns} campaigns)")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
