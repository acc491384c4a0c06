"""Replay: read `campaign.events` back into per-campaign timelines, and rebuild `campaign.state`.

The I/O half of `fsm.audit`: `read_events` streams the topic (from the beginning, or from a
time) through `adapters.kafka.TopicReader` into an `EventLog`; everything about what the records
mean lives in `fsm.audit`. `rebuilt_state_records` turns a replay into the `campaign.state`
records the orchestrator would hold (sorted by campaign id, encoded once, so the same events
always give byte-identical records) and `write_state_records` produces them with acks=all.

The ingest keeps one compact entry per event, millions of them; the cyclic garbage collector
would walk that growing heap over and over while nothing is garbage, so it runs rarely while a
topic is read (`_bulk_load`) and normally again afterwards.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

import orjson

from fsm.audit import CampaignHistory, EventLog, LogReplay, rebuild_state
from fsm.windows import ToleranceWindows

from ..kafka import (  # STATE_TYPE: the state records' type, as the service itself publishes them
    STATE_TYPE,
    KafkaSettings,
    OutgoingRecord,
    Producer,
    TopicReader,
    TopicSpec,
    ensure_topics,
    open_admin,
    restore_latest,
)

__all__ = [
    "read_events",
    "read_requesters",
    "read_state_records",
    "rebuilt_state_records",
    "render_timelines",
    "timelines_json",
    "write_state_records",
]

# Young-generation collections every this many container allocations while reading (default 700).
_BULK_GC_THRESHOLD = 200_000


@contextlib.contextmanager
def _bulk_load() -> Iterator[None]:
    previous = gc.get_threshold()
    gc.set_threshold(_BULK_GC_THRESHOLD, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


async def read_events(
    config: KafkaSettings,
    topic: str | None = None,
    *,
    strict: bool,
    campaign: str | None = None,
    since: float | None = None,
    until: float | None = None,
    stall_timeout_s: float = 30.0,
) -> LogReplay:
    """Read the events topic to its end (as of now) and return the ordered, de-duplicated log.

    `since`/`until` (epoch seconds) select events by `observedAt`; the reader starts at the first
    record written at or after `since` (a record is written after its event was observed).
    """
    log = EventLog(strict=strict, campaign=campaign, since=since, until=until)
    since_ms = None if since is None else int(since * 1000)
    with _bulk_load():
        async with TopicReader(config, topic or config.topics.events, since_ms=since_ms,
                               stall_timeout_s=stall_timeout_s) as reader:
            async for batch in reader:
                log.add(batch)
        return log.finish()


async def read_state_records(config: KafkaSettings, topic: str) -> dict[str, dict[str, Any]]:
    """The latest `campaign.state` record per campaign; records that are not JSON objects are skipped."""
    out: dict[str, dict[str, Any]] = {}
    for key, record in (await restore_latest(config, topic)).items():
        try:
            value = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out[key] = value
    return out


async def read_requesters(config: KafkaSettings, topic: str) -> dict[str, str]:
    """Command id -> `requestedBy`, from the commands topic (events do not carry who asked)."""
    found: dict[str, str] = {}
    async with TopicReader(config, topic) as reader:
        async for batch in reader:
            for record in batch:
                try:
                    command = orjson.loads(record.value or b"")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(command, dict) and isinstance(command.get("id"), str) \
                        and isinstance(command.get("requestedBy"), str):
                    found[command["id"]] = command["requestedBy"]
    return found


def rebuilt_state_records(replay: LogReplay, windows: ToleranceWindows | None = None
                          ) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(campaign id, encoded record) for every campaign, in campaign id order, and the campaigns
    that could not be rebuilt (a replayed `observedAt` that is not a time). Deterministic."""
    windows = windows or ToleranceWindows()
    records: list[tuple[str, bytes]] = []
    problems: list[str] = []
    for campaign_id, history in sorted(replay.histories.items()):
        try:
            records.append((campaign_id, orjson.dumps(rebuild_state(history, windows))))
        except (ValueError, TypeError) as exc:
            problems.append(f"{campaign_id}: not rebuilt: {exc}")
    return records, problems


async def write_state_records(config: KafkaSettings, topic: str, records: list[tuple[str, bytes]],
                              *, partitions: int | None = None, chunk: int = 5_000) -> int:
    """Produce the records keyed by campaign id (acks=all), creating the compacted topic if absent."""
    async with open_admin(config) as admin:
        await ensure_topics(admin, [TopicSpec(topic, partitions or config.partitions, config.replication_factor,
                                              {"cleanup.policy": "compact"})])
    async with Producer(config) as producer:
        for start in range(0, len(records), chunk):
            await producer.send_many(OutgoingRecord(topic, key, value, ce_type=STATE_TYPE)
                                     for key, value in records[start:start + chunk])
    return len(records)


# --- output --------------------------------------------------------------------------------------


def _entry_json(entry: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sequence": entry.sequence, "observedAt": entry.observed_at, "from": entry.from_state,
        "to": entry.to_state, "cause": entry.cause,
    }
    for name, value in (("action", entry.action), ("commandId", entry.command_id), ("reason", entry.reason),
                        ("anomaly", entry.anomaly), ("errors", entry.errors),
                        ("platformStatus", entry.platform_status), ("halt", entry.halt)):
        if value is not None:
            out[name] = value
    return out


def _history_json(history: CampaignHistory) -> dict[str, Any]:
    return {
        "campaignId": history.campaign_id,
        "dialerType": history.dialer_type,
        "dialerId": history.dialer_id,
        "state": history.current,
        "events": [_entry_json(e) for e in history.entries],
        "duplicatesDropped": history.duplicates,
    }


def timelines_json(replay: LogReplay, topic: str) -> dict[str, Any]:
    """The replay as one JSON document: every campaign's timeline and what looked wrong."""
    return {
        "topic": topic,
        "records": replay.records,
        "events": replay.events,
        "duplicatesDropped": replay.duplicates,
        "campaigns": [_history_json(h) for h in replay.histories.values()],
        "anomalies": [f.to_json() for f in replay.findings],
    }


def render_timelines(replay: LogReplay, topic: str) -> Iterator[str]:
    """Readable lines: per campaign its events in sequence order, then the totals."""
    for history in replay.histories.values():
        entries = history.entries
        yield (f"{history.campaign_id}  {history.dialer_type} {history.dialer_id or '-'}  "
               f"{len(entries)} events, now {history.current} since {entries[-1].observed_at}")
        for e in entries:
            commanded = ""
            if e.action is not None:
                commanded = f"  {e.action} {e.command_id or ''}"
            extra = "".join(f"  {x}" for x in (e.reason, e.anomaly and e.anomaly.get("kind")) if x)
            yield (f"  {e.sequence:>6}  {e.observed_at}  {e.cause:<12} {e.from_state or '(new)':>8} -> "
                   f"{e.to_state:<9}{commanded}{extra}")
    for finding in replay.findings:
        yield f"ANOMALY {finding}"
    yield (f"{topic}: {replay.records} records, {replay.events} events, {len(replay.histories)} campaigns, "
           f"{replay.duplicates} duplicate deliveries dropped, {len(replay.findings)} anomalies")
