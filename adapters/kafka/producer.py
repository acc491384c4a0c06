"""`Producer`: acks=all, idempotent where the broker supports it, key = campaign id, orjson values,
CloudEvents-style headers; `send` answers (partition, offset).

`KafkaSettings.enable_idempotence` is True by default; tansu needs False because aiokafka's
InitProducerId fails there. A record too large to produce, or one the broker refuses for what it
is, is named in `ProduceFailed.refused`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import BaseModel

from schemas.base import encode

from .config import KafkaSettings
from .errors import Lifecycle, NotStarted, ProduceFailed
from .records import Delivery, OutgoingRecord, record_headers

__all__ = ["Producer"]


# Errors about one record itself, not about the broker, the topic or the producer. Deliberately a
# list rather than "anything aiokafka marks non-retriable": aiokafka marks KafkaTimeoutError and
# authorization failures non-retriable too, and treating those as a bad record would move every
# record of a healthy outbox aside while the broker is merely away or misconfigured.
_RECORD_REFUSALS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
)


def _encode_value(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, BaseModel):
        return encode(value)
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise TypeError(f"cannot encode a {type(value).__name__} as JSON: {exc}") from None


def _headers(record: OutgoingRecord) -> list[tuple[str, bytes]]:
    return record_headers(record)


class Producer:
    """acks=all producer keyed by campaign id; `send` returns where the record landed.

    Per-key order holds because a key always maps to one partition and aiokafka keeps one batch
    in flight per partition. With `enable_idempotence` a retried batch is not duplicated either.
    """

    def __init__(self, config: KafkaSettings, *, client_id: str | None = None) -> None:
        self._config = config
        self._client_id = client_id or config.client_id
        self._producer: AIOKafkaProducer | None = None
        self._state = Lifecycle.UNOPENED

    async def start(self) -> None:
        if self._state is Lifecycle.OPENED:
            return
        if self._state is Lifecycle.CLOSED:
            raise NotStarted("this producer was stopped; make a new one")
        kwargs = self._config.client_kwargs()
        kwargs["client_id"] = self._client_id
        producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=self._config.enable_idempotence,
            linger_ms=self._config.linger_ms,
            max_request_size=self._config.max_request_size,
            **kwargs,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            hint = (" (if this broker has no idempotent producer, e.g. tansu, set enable_idempotence=False)"
                    if self._config.enable_idempotence else "")
            raise ProduceFailed(f"cannot start the producer on {self._config.bootstrap}: {exc!r}{hint}",
                                retriable=bool(getattr(exc, "retriable", False))) from exc
        self._producer = producer
        self._state = Lifecycle.OPENED

    async def stop(self) -> None:
        """Flush what is pending, then close. Idempotent."""
        if self._state is not Lifecycle.OPENED or self._producer is None:
            self._state = Lifecycle.CLOSED
            return
        self._state = Lifecycle.CLOSED
        producer, self._producer = self._producer, None
        try:
            await producer.flush()
        finally:
            await producer.stop()

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def send(
        self,
        topic: str,
        key: str | None,
        value: object,
        *,
        ce_type: str | None = None,
        ce_id: str | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        content_type: str = "application/json",
    ) -> Delivery:
        """Produce one record and wait for acks=all; returns (partition, offset)."""
        record = OutgoingRecord(topic, key, value, ce_type, ce_id, headers or {}, content_type)
        (delivery,) = await self.send_many([record])
        return delivery

    @property
    def max_record_bytes(self) -> int:
        """The largest record this producer sends (its max_request_size, as aiokafka estimates a record)."""
        return self._config.max_request_size

    async def send_many(self, records: Iterable[OutgoingRecord]) -> list[Delivery]:
        """Enqueue all records in order, then wait for every acknowledgement (batched, one round trip).

        A record too large to produce fails the call before anything is sent, with
        `ProduceFailed.refused` naming it; a record the broker refuses for what it is is named the
        same way (records around it may have landed: `acknowledged` counts those at the start).
        """
        producer = self._running()
        # Encode everything first, so a bad value fails before any record is on its way.
        prepared = [
            (record.topic, _encode_value(record.value),
             None if record.key is None else record.key.encode(), _headers(record))
            for record in records
        ]
        limit = self._config.max_request_size
        for index, (topic, value, key, headers) in enumerate(prepared):
            # aiokafka's own estimate, so this verdict is the one its send() would reach after the
            # records before this one were already on their way.
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
            if size > limit:
                raise ProduceFailed(f"record {index} for {topic} is {size} bytes, over the producer's "
                                    f"max_request_size of {limit}: it can never be produced",
                                    retriable=False, refused=index)
        futures: list[asyncio.Future[Any]] = []
        try:
            for topic, value, key, headers in prepared:
                futures.append(await producer.send(topic, value=value, key=key, headers=headers))
            results = await asyncio.gather(*futures)
        except KafkaError as exc:
            # Records already handed over may still land; wait for their verdicts so none is left dangling.
            verdicts = await asyncio.gather(*futures, return_exceptions=True)
            refused = next((i for i, v in enumerate(verdicts) if isinstance(v, _RECORD_REFUSALS)), None)
            if refused is None and len(futures) < len(prepared) and isinstance(exc, _RECORD_REFUSALS):
                refused = len(futures)  # send() itself refused the next record
            acknowledged = next((i for i, v in enumerate(verdicts) if isinstance(v, BaseException)),
                                len(verdicts))
            raise ProduceFailed(f"record not acknowledged by {self._config.bootstrap}: {exc!r}",
                                retriable=bool(getattr(exc, "retriable", False)) and refused is None,
                                refused=refused, acknowledged=acknowledged) from exc
        return [Delivery(metadata.partition, metadata.offset) for metadata in results]

    async def flush(self) -> None:
        await self._running().flush()

    def _running(self) -> AIOKafkaProducer:
        if self._state is not Lifecycle.OPENED or self._producer is None:
            raise NotStarted(f"producer is {self._state.value}: call start() first")
        return self._producer
