"""The commands topic, read into the orchestrator: parse, submit, commit only once results are durable.

A record that does not parse never stops consumption. If it still names a usable command id and
campaign id it is answered with a REFUSED result (MALFORMED_COMMAND) like any other refusal;
otherwise it goes to the dead-letter topic with the parse error in its headers. Offsets are
committed per fetched batch, after every record of the batch has its first result published to a
durable sink (or its dead letter acknowledged): a crash redelivers exactly the commands not yet
acted upon, and the orchestrator's state gate makes a redelivered command harmless.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from uuid import UUID

import orjson

from fsm.orchestrator import Orchestrator
from schemas import Command, ContractError, decode
from schemas.commands import CAMPAIGN_ID_PATTERN

from .kafka import CommandConsumer, Partition, Producer, Record

__all__ = ["DEAD_LETTER_CONTENT_TYPE", "CommandIntake"]

_log = logging.getLogger(__name__)
_CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)
DEAD_LETTER_CONTENT_TYPE = "application/octet-stream"  # the record as it came, bytes untouched


class CommandIntake:
    """One named task (`command-intake`) draining the consumer into the orchestrator."""

    def __init__(self, consumer: CommandConsumer, orchestrator: Orchestrator, producer: Producer,
                 dead_letter_topic: str, *, fetch_timeout_s: float = 0.5, max_records: int = 500) -> None:
        self._consumer = consumer
        self._orchestrator = orchestrator
        self._producer = producer
        self._dead_letters = dead_letter_topic
        self._fetch_timeout = fetch_timeout_s
        self._max_records = max_records
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.consumed = 0
        self.malformed = 0
        self.dead_lettered = 0
        self.positions: dict[Partition, int] = {}  # next offset to handle, per partition (consumer lag)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="command-intake")

    async def stop(self) -> None:
        """Stop taking commands. A batch being handled finishes (its results are durable) first."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except TimeoutError:
                self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            records = await self._consumer.fetch(self._fetch_timeout, self._max_records)
            if not records:
                continue
            try:
                await self._handle(records)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing committed: the batch is redelivered to whoever owns the partition next.
                _log.exception("command batch failed; its offsets are not committed")
                await asyncio.sleep(1.0)
                continue
            await self._consumer.commit_records(records)
            for record in records:
                self.positions[record.tp] = max(self.positions.get(record.tp, 0), record.offset + 1)

    async def _handle(self, records: list[Record]) -> None:
        waits: list[asyncio.Future[Any]] = []
        for record in records:
            self.consumed += 1
            try:
                command = decode(Command, record.value or b"")
            except ContractError as exc:
                self.malformed += 1
                await self._malformed(record, exc)
                continue
            waits.append(self._orchestrator.submit(command))
        if waits:
            await asyncio.gather(*waits)

    async def _malformed(self, record: Record, error: ContractError) -> None:
        command_id, campaign_id = _salvage(record.value)
        if command_id is not None and campaign_id is not None:
            await self._orchestrator.refuse_malformed(command_id, campaign_id, str(error))
            return
        self.dead_lettered += 1
        _log.warning("unusable record at %s[%d]@%d sent to %s: %s", record.topic, record.partition,
                     record.offset, self._dead_letters, error)
        await self._producer.send(
            self._dead_letters, record.key, record.value,
            headers={
                "error": str(error)[:2000],
                "source-topic": record.topic,
                "source-partition": str(record.partition),
                "source-offset": str(record.offset),
            },
            content_type=DEAD_LETTER_CONTENT_TYPE,
        )


def _salvage(raw: bytes | None) -> tuple[UUID | None, str | None]:
    """The command id and campaign id of a record that failed to parse, if both are usable."""
    try:
        data = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    try:
        command_id = UUID(str(data.get("id")))
    except ValueError:
        command_id = None
    campaign_id = data.get("campaignId")
    if not isinstance(campaign_id, str) or not _CAMPAIGN_ID.match(campaign_id):
        campaign_id = None
    return command_id, campaign_id
