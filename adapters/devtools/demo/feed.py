"""The stream of what happens: every line of the run (`Feed`) and the reader of the results and
events topics as they are written (`Observer`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer

from adapters.kafka import KafkaSettings, TopicNames
from fsm.tasks import cancel_and_wait

from ..tui import StreamLine

__all__ = ["Feed", "Observer"]


class Feed:
    """Every line of the run: kept for the live view, printed at once in plain mode."""

    def __init__(self, out: TextIO, *, echo: bool, keep: int = 400) -> None:
        self._out = out
        self.echo = echo
        self.lines: deque[StreamLine] = deque(maxlen=keep)
        self._t0 = time.monotonic()

    def emit(self, kind: str, text: str) -> None:
        self.lines.append(StreamLine(kind, text))
        if self.echo:
            self._out.write(f"[{time.monotonic() - self._t0:6.1f}s] {kind:<7} {text}\n")
            self._out.flush()

    def print(self, text: str = "") -> None:
        """A line of the final summary: always printed."""
        self._out.write(text + "\n")
        self._out.flush()


def _event_text(event: Mapping[str, Any]) -> str:
    d = event.get("data") or {}
    how = str(d.get("cause", "?")) + (f" {d['action']}" if d.get("action") else "")
    extra = ""
    anomaly = d.get("anomaly")
    if isinstance(anomaly, dict):
        extra += f"  anomaly {anomaly.get('kind')}"
    if d.get("reason"):
        extra += f"  reason {d['reason']}"
    if d.get("errors"):
        extra += "  errors " + ", ".join(str(e.get("code")) for e in d["errors"] if isinstance(e, dict))
    arrow = f"{d.get('from') or '(new)'} -> {d.get('to')}"
    return f"{d.get('campaignId', '?'):<18} #{d.get('sequence', '?'):<3} {arrow:<22} {how}{extra}"


class Observer:
    """Reads the results and events topics as they are written (no consumer group)."""

    def __init__(self, config: KafkaSettings, topics: TopicNames, feed: Feed,
                 describe: Callable[[Mapping[str, Any]], str]) -> None:
        self._config = config
        self._topics = topics
        self._feed = feed
        self._describe = describe
        self.results: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.last_result: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Observer]:
        consumer = AIOKafkaConsumer(
            self._topics.results, self._topics.events, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=min(self._config.fetch_max_wait_ms, 100),
            **self._config.client_kwargs())
        await consumer.start()
        task = asyncio.create_task(self._pump(consumer), name="demo-observer")
        try:
            yield self
        finally:
            await cancel_and_wait(task)
            await consumer.stop()

    async def _pump(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                for record in records:
                    try:
                        value = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(value, dict):
                        continue
                    if tp.topic == self._topics.events:
                        self.events.append(value)
                        self._feed.emit("event", _event_text(value))
                    else:
                        self.results.append(value)
                        self.last_result[str(value.get("campaignId"))] = value
                        self._feed.emit("result", self._describe(value))
            if batches:
                self.changed.set()
