"""The Kafka edge: thin aiokafka wrappers for topics, producing, the command consumer and reading back.

No business rule lives here; the orchestrator decides what to send, when to commit and what a
record means. This module only makes the Kafka side behave the same on real Kafka and on the two
local emulators (see `adapters.brokers`):

- `TopicNames` / `ensure_topics`: the five topics, created idempotently; ``campaign.state`` is
  compacted (brokers that refuse or ignore the config still get the topic).
- `Producer`: acks=all, idempotent where the broker supports it (`KafkaConfig.enable_idempotence`,
  default True; tansu needs False because aiokafka's InitProducerId fails there), key = campaign
  id, orjson values, CloudEvents-style headers, `send` answers (partition, offset).
- `CommandConsumer`: a group member with manual commits only (commit offset + 1 once the
  caller's result is durable), `seek` to fetch unfinished records again, and rebalance hooks that
  see the group generation.
- `TopicReader` / `read_topic` / `restore_latest`: read a topic from the beginning (or a time)
  to its end as of the start, for restoring ``campaign.state`` and for replay.

Why the reader does not trust one end-offset snapshot: tansu answers ListOffsets(latest) with
"base offset of the last batch + 1", so after a batched produce it reports too small an end; a
reader that stopped there would silently drop the tail of the last batch. The high watermark in a
fetch response is right on every broker, so a partition is finished only once the reader has seen
a fetch answer for it and its position has reached max(ListOffsets end, first fetched high
watermark). On real Kafka the two agree; the extra fetch costs one round trip per partition.

Errors (everything raised here is a `KafkaEdgeError`; `retriable` says whether trying again may
help)::

    KafkaEdgeError            any failure at the Kafka edge
    ├── NotStarted            a client used before start() or after stop()
    ├── TopicSetupError       a topic could not be created, or is missing
    ├── ProduceFailed         a record was not acknowledged (retriable: the broker may be away;
    │                         refused: which record can never be produced, e.g. too large)
    ├── CommitRejected        the group moved on: this member no longer owns the partition (fenced)
    └── ReaderStalled         a reader made no progress towards the end offsets in time

Secrets: `KafkaSecurity.password` never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, NamedTuple, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as _AioTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.errors import (
    CommitFailedError,
    CorruptRecordException,
    IllegalStateError,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import BaseModel

from schemas.base import encode

__all__ = [
    "CommandConsumer",
    "CommitRejected",
    "Delivery",
    "KafkaConfig",
    "KafkaEdgeError",
    "KafkaSecurity",
    "NotStarted",
    "OutgoingRecord",
    "Partition",
    "ProduceFailed",
    "Producer",
    "ReaderStalled",
    "RebalanceHooks",
    "Record",
    "TopicNames",
    "TopicReader",
    "TopicSetupError",
    "TopicSpec",
    "ensure_topics",
    "open_admin",
    "partition_of",
    "read_topic",
    "restore_latest",
]

_log = logging.getLogger(__name__)

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_ADDRESS = re.compile(r"^[^\s:,]+:\d{1,5}$")

# Kafka error codes create_topics answers per topic.
_TOPIC_ALREADY_EXISTS = 36
_REQUEST_TIMED_OUT = 7
_CONFIG_REFUSED = frozenset({40, 42, 44})  # INVALID_CONFIG, INVALID_REQUEST, POLICY_VIOLATION


# --- errors --------------------------------------------------------------------------------------


class KafkaEdgeError(Exception):
    """Any failure at the Kafka edge."""

    retriable = False


class NotStarted(KafkaEdgeError):
    """A client was used before `start()` or after `stop()`."""


class TopicSetupError(KafkaEdgeError):
    """A topic could not be created or does not exist."""


class ProduceFailed(KafkaEdgeError):
    """The broker did not acknowledge a record. `retriable` mirrors aiokafka's verdict.

    `refused` is the index (in the records given to `send_many`) of the first record the client
    or the broker refused for what it is (too large, corrupt, bad timestamp): sending that record
    again can never succeed, whereas the others may. None when the failure is not one record's
    (broker away, timeout, authorization, producer state). `acknowledged` counts the records at
    the start of the batch the broker acknowledged before the failure.
    """

    def __init__(self, message: str, *, retriable: bool, refused: int | None = None,
                 acknowledged: int = 0) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.refused = refused
        self.acknowledged = acknowledged


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


class CommitRejected(KafkaEdgeError):
    """The commit was refused because the group rebalanced: another member may own the partition."""


class ReaderStalled(KafkaEdgeError):
    """A reader made no progress for its stall timeout (broker unreachable or frozen)."""

    retriable = True


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic to create: name, partition count, replication and topic configs."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The service's topics. Every name is configurable; `state` is the compacted one."""

    commands: str = "campaign.commands"
    results: str = "campaign.command-results"
    events: str = "campaign.events"
    state: str = "campaign.state"
    dead_letters: str = "campaign.commands.dlq"

    def __post_init__(self) -> None:
        names = self.all()
        for name in names:
            if not _TOPIC_NAME.match(name):
                raise ValueError(f"invalid Kafka topic name {name!r}: use 1-249 of [A-Za-z0-9._-]")
        if len(set(names)) != len(names):
            raise ValueError(f"topic names must be distinct, got {names}")

    def all(self) -> tuple[str, ...]:
        return (self.commands, self.results, self.events, self.state, self.dead_letters)

    @classmethod
    def with_prefix(cls, prefix: str) -> TopicNames:
        """The default names under `prefix` (e.g. per test, per environment)."""
        base = cls()
        return cls(*(f"{prefix}{name}" for name in base.all()))

    def specs(self, partitions: int, replication_factor: int = 1) -> list[TopicSpec]:
        """What `ensure_topics` creates. Dead letters get one partition: they are rare and read in order."""
        compact = {"cleanup.policy": "compact"}
        return [
            TopicSpec(self.commands, partitions, replication_factor),
            TopicSpec(self.results, partitions, replication_factor),
            TopicSpec(self.events, partitions, replication_factor),
            TopicSpec(self.state, partitions, replication_factor, compact),
            TopicSpec(self.dead_letters, 1, replication_factor),
        ]


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """TLS/SASL settings passed through to every aiokafka client. The password is never shown."""

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        if self.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"unknown security_protocol {self.security_protocol!r}")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
                raise ValueError(
                    f"{self.security_protocol} needs sasl_mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                )
            if not self.username or not self.password:
                raise ValueError(f"{self.security_protocol} needs a username and a password")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "password"
        )
        return f"KafkaSecurity({shown}, password={'***' if self.password else None})"

    def client_kwargs(self) -> dict[str, Any]:
        """The aiokafka keyword arguments for these settings."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password
        return kwargs


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Everything the Kafka edge needs. Defaults suit real Kafka; brokers.py supplies emulator quirks.

    `fetch_max_wait_ms` is how long a fetch may wait on the broker for new data: tansu does not
    wake a waiting fetch when data arrives, so it needs ~20 ms there or every command waits 500 ms.
    `max_request_size` is the producer's limit on one record (aiokafka's default, 1 MiB); a record
    over it is refused before anything of its batch is sent (`ProduceFailed.refused`).
    """

    bootstrap: str
    topics: TopicNames = field(default_factory=TopicNames)
    group_id: str = "campaign-fsm"
    client_id: str = "campaign-fsm"
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    enable_idempotence: bool = True
    linger_ms: int = 0
    request_timeout_ms: int = 30_000
    fetch_max_wait_ms: int = 500
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    max_request_size: int = 1_048_576
    partitions: int = 6
    replication_factor: int = 1

    def __post_init__(self) -> None:
        addresses = [a.strip() for a in self.bootstrap.split(",")]
        if not self.bootstrap.strip() or not all(_ADDRESS.match(a) for a in addresses):
            raise ValueError(f"bootstrap must be host:port[,host:port], got {self.bootstrap!r}")
        for name in ("request_timeout_ms", "session_timeout_ms", "heartbeat_interval_ms",
                     "max_poll_interval_ms", "max_request_size", "partitions", "replication_factor"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("linger_ms", "fetch_max_wait_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.group_id:
            raise ValueError("group_id must not be empty")

    def client_kwargs(self) -> dict[str, Any]:
        """Settings shared by every aiokafka client built from this config."""
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            **self.security.client_kwargs(),
        }


# --- values --------------------------------------------------------------------------------------


class Partition(NamedTuple):
    """A topic partition, without aiokafka's type leaking out of the edge."""

    topic: str
    partition: int


class Delivery(NamedTuple):
    """Where the broker stored an acknowledged record."""

    partition: int
    offset: int


class Record(NamedTuple):
    """A consumed record. `key` is the text key (None if absent); `value` None is a tombstone.

    A NamedTuple rather than a frozen dataclass: a replay builds one per record, and tuple
    construction is about four times cheaper (the replay bench's ratio depends on it).
    """

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    raw_key: bytes | None = None

    @property
    def tp(self) -> Partition:
        return Partition(self.topic, self.partition)

    def header(self, name: str) -> str | None:
        """The last header called `name`, as text (None if absent)."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to produce. `value` is bytes, a pydantic model (wire encoding), JSON data, or None."""

    topic: str
    key: str | None
    value: object
    ce_type: str | None = None
    ce_id: str | None = None
    headers: Mapping[str, str | bytes] = field(default_factory=dict)
    content_type: str = "application/json"


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
    out: list[tuple[str, bytes]] = []
    if record.value is not None:
        out.append(("content-type", record.content_type.encode()))
    if record.ce_type is not None:
        out.append(("ce_type", record.ce_type.encode()))
    if record.ce_id is not None:
        out.append(("ce_id", record.ce_id.encode()))
    for name, value in record.headers.items():
        out.append((name, value if isinstance(value, bytes) else value.encode()))
    return out


def _to_record(raw: Any) -> Record:
    key_bytes: bytes | None = raw.key
    return Record(raw.topic, raw.partition, raw.offset,
                  None if key_bytes is None else key_bytes.decode("utf-8", "replace"),
                  raw.value, tuple(raw.headers or ()), raw.timestamp, key_bytes)


class _Lifecycle(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


# --- topics --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_admin(config: KafkaConfig) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client for `config`, closed on the way out."""
    admin = AIOKafkaAdminClient(**config.client_kwargs())
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def ensure_topics(
    admin: AIOKafkaAdminClient,
    names: TopicNames | Iterable[TopicSpec],
    partitions: int = 6,
    *,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Idempotent: existing topics (also one created concurrently by another instance) are left as
    they are, partition count included. A broker that refuses a topic config (e.g. compaction) gets
    the topic without it and a warning; one that silently ignores configs is not detected here.
    Waits until every topic appears in the cluster metadata.
    """
    specs = names.specs(partitions, replication_factor) if isinstance(names, TopicNames) else list(names)
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created: list[str] = []
        if missing:
            created = await _create(admin, missing)
        await _wait_for_topics(admin, [spec.name for spec in specs], timeout_s)
    except KafkaError as exc:
        raise TopicSetupError(f"cannot set up topics: {exc!r}") from exc
    return created


async def _create(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> list[str]:
    by_name = {spec.name: spec for spec in specs}
    response = await admin.create_topics([_new_topic(spec, with_configs=True) for spec in specs])
    created: list[str] = []
    retry_bare: list[TopicSpec] = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code == 0:
            created.append(name)
        elif code in (_TOPIC_ALREADY_EXISTS, _REQUEST_TIMED_OUT):
            continue  # created meanwhile by someone else, or still being created: metadata will tell
        elif code in _CONFIG_REFUSED and by_name[name].configs:
            _log.warning("broker refused configs %s for topic %s (%s): creating it without them",
                         dict(by_name[name].configs), name, message)
            retry_bare.append(by_name[name])
        else:
            raise TopicSetupError(f"cannot create topic {name}: error {code} ({message})")
    if retry_bare:
        response = await admin.create_topics([_new_topic(spec, with_configs=False) for spec in retry_bare])
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            if code == 0:
                created.append(name)
            elif code not in (_TOPIC_ALREADY_EXISTS, _REQUEST_TIMED_OUT):
                raise TopicSetupError(f"cannot create topic {name}: error {code}")
    return created


def _new_topic(spec: TopicSpec, *, with_configs: bool) -> NewTopic:
    return NewTopic(
        spec.name,
        spec.partitions,
        spec.replication_factor,
        topic_configs=dict(spec.configs) if with_configs else {},
    )


async def _wait_for_topics(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        present = set(await admin.list_topics())
        absent = [name for name in names if name not in present]
        if not absent:
            return
        if time.monotonic() >= deadline:
            raise TopicSetupError(f"topics {absent} did not appear within {timeout_s:g} s")
        await asyncio.sleep(0.05)


# --- producing -----------------------------------------------------------------------------------


class Producer:
    """acks=all producer keyed by campaign id; `send` returns where the record landed.

    Per-key order holds because a key always maps to one partition and aiokafka keeps one batch
    in flight per partition. With `enable_idempotence` a retried batch is not duplicated either.
    """

    def __init__(self, config: KafkaConfig, *, client_id: str | None = None) -> None:
        self._config = config
        self._client_id = client_id or config.client_id
        self._producer: AIOKafkaProducer | None = None
        self._state = _Lifecycle.UNOPENED

    async def start(self) -> None:
        if self._state is _Lifecycle.OPENED:
            return
        if self._state is _Lifecycle.CLOSED:
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
        self._state = _Lifecycle.OPENED

    async def stop(self) -> None:
        """Flush what is pending, then close. Idempotent."""
        if self._state is not _Lifecycle.OPENED or self._producer is None:
            self._state = _Lifecycle.CLOSED
            return
        self._state = _Lifecycle.CLOSED
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
        if self._state is not _Lifecycle.OPENED or self._producer is None:
            raise NotStarted(f"producer is {self._state.value}: call start() first")
        return self._producer


# --- the command consumer ------------------------------------------------------------------------


class RebalanceHooks(Protocol):
    """Told when this member gains or loses partitions. `generation` is the group generation.

    `on_revoked` runs before partitions move away (and when the consumer stops): stop driving
    their campaigns and make pending results durable. `on_assigned` runs once the new assignment
    is known: restore state and reconcile before acting. The generation (None if unknown) can
    fence a stale owner: compare it with the one recorded alongside any side effect.

    Both run inside aiokafka's rebalance, which waits for them; an exception is logged by aiokafka
    and otherwise swallowed, so handle failures inside the hook.
    """

    async def on_assigned(self, partitions: frozenset[Partition], generation: int | None) -> None: ...

    async def on_revoked(self, partitions: frozenset[Partition], generation: int | None) -> None: ...


class _ListenerBridge(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: CommandConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[_AioTopicPartition]) -> None:
        await self._owner._revoked(frozenset(Partition(tp.topic, tp.partition) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Iterable[_AioTopicPartition]) -> None:
        await self._owner._assigned(frozenset(Partition(tp.topic, tp.partition) for tp in assigned))


class CommandConsumer:
    """A consumer-group member on the commands topic with manual commits only.

    Auto-commit is off: an offset is committed only when the caller says the record's result is
    durable (`commit`), so a crash redelivers every command not yet acted upon. A fresh group
    starts at the earliest offset. `stop()` leaves the group, so the partitions move at once
    rather than after the session timeout.
    """

    def __init__(
        self,
        config: KafkaConfig,
        *,
        topic: str | None = None,
        group_id: str | None = None,
        hooks: RebalanceHooks | None = None,
        client_id: str | None = None,
    ) -> None:
        self._config = config
        self._topic = topic or config.topics.commands
        self._group_id = group_id or config.group_id
        self._hooks = hooks
        self._client_id = client_id or config.client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._state = _Lifecycle.UNOPENED
        self._assignment: frozenset[Partition] = frozenset()

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def assignment(self) -> frozenset[Partition]:
        return self._assignment

    @property
    def generation(self) -> int | None:
        """The group generation this member last joined, if aiokafka exposes it (None otherwise)."""
        if self._consumer is None:
            return None
        coordinator = getattr(self._consumer, "_coordinator", None)
        generation = getattr(coordinator, "generation", None)
        return generation if isinstance(generation, int) and generation >= 0 else None

    def lag(self, positions: Mapping[Partition, int]) -> dict[Partition, int]:
        """Records not yet fetched per assigned partition, from the last high watermark seen and
        `positions` (the next offset the caller will handle)."""
        consumer = self._running()
        lags = {}
        for partition in self._assignment:
            high = consumer.highwater(_AioTopicPartition(partition.topic, partition.partition))
            if high is not None:
                lags[partition] = max(0, high - positions.get(partition, high))
        return lags

    def partition_count(self) -> int:
        """How many partitions the commands topic has (from the consumer's metadata)."""
        partitions = self._running().partitions_for_topic(self._topic)
        if not partitions:
            raise KafkaEdgeError(f"no metadata for topic {self._topic!r}")
        return len(partitions)

    @property
    def member_id(self) -> str | None:
        coordinator = getattr(self._consumer, "_coordinator", None)
        member = getattr(coordinator, "member_id", None)
        return member if isinstance(member, str) and member else None

    async def start(self) -> None:
        if self._state is _Lifecycle.OPENED:
            return
        if self._state is _Lifecycle.CLOSED:
            raise NotStarted("this consumer was stopped; make a new one")
        config = self._config
        kwargs = config.client_kwargs()
        kwargs["client_id"] = self._client_id
        consumer = AIOKafkaConsumer(
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=config.fetch_max_wait_ms,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            **kwargs,
        )
        try:
            await consumer.start()
            consumer.subscribe([self._topic], listener=_ListenerBridge(self))
        except KafkaError as exc:
            await consumer.stop()
            raise KafkaEdgeError(f"cannot start the consumer on {config.bootstrap}: {exc!r}") from exc
        self._consumer = consumer
        self._state = _Lifecycle.OPENED

    async def stop(self) -> None:
        """Tell the hooks the partitions are going, then leave the group. Idempotent. Commits nothing."""
        if self._state is not _Lifecycle.OPENED or self._consumer is None:
            self._state = _Lifecycle.CLOSED
            return
        self._state = _Lifecycle.CLOSED
        consumer = self._consumer
        coordinator = getattr(consumer, "_coordinator", None)
        try:
            # aiokafka does not call on_partitions_revoked on stop(); the hooks still need to know.
            if self._assignment:
                await self._revoked(self._assignment)
        finally:
            generation = getattr(coordinator, "generation", None)
            member_id = self.member_id
            coordinator_id = getattr(coordinator, "coordinator_id", None)
            await consumer.stop()
            if generation == 0 and member_id is not None and coordinator_id is not None:
                await self._leave_group(coordinator_id, member_id)

    async def _leave_group(self, coordinator_id: int, member_id: str) -> None:
        # aiokafka leaves the group on stop only when generation > 0, but tansu numbers generations
        # from 0 (Kafka from 1). Without a LeaveGroup the next member waits out the session
        # timeout. Best effort, like aiokafka's own attempt.
        client = AIOKafkaClient(**self._config.client_kwargs())
        try:
            await client.bootstrap()
            await client.send(coordinator_id, LeaveGroupRequest(self._group_id, member_id),
                              group=ConnectionGroup.COORDINATION)
        except KafkaError as exc:
            _log.warning("LeaveGroup for generation 0 of group %s failed: %r", self._group_id, exc)
        finally:
            await client.close()

    async def __aenter__(self) -> CommandConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def fetch(self, timeout_s: float = 1.0, max_records: int | None = None) -> list[Record]:
        """The next records (in offset order per partition); an empty list after `timeout_s`.

        Joining the group happens inside the first calls: keep calling it.
        """
        consumer = self._running()
        try:
            batches = await consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            error = KafkaEdgeError(f"fetch from {self._topic} failed: {exc!r}")
            error.retriable = bool(getattr(exc, "retriable", False))
            raise error from exc
        return [_to_record(raw) for batch in batches.values() for raw in batch]

    def seek(self, partition: Partition, offset: int) -> bool:
        """Make the next `fetch` of `partition` start at `offset` (records fetched past it are dropped).

        How a caller that could not finish a batch gets its records again: the consumer's position
        is already past everything `fetch` returned, committed or not. False when the partition is
        no longer assigned (a rebalance took it; its new owner starts from the committed offset).
        """
        consumer = self._running()
        try:
            consumer.seek(_AioTopicPartition(partition.topic, partition.partition), offset)
        except IllegalStateError:
            return False
        return True

    async def wait_for_assignment(self, timeout_s: float = 30.0) -> frozenset[Partition]:
        """Fetch (and keep what arrives) until the group gives this member partitions.

        Returns the assignment; records fetched meanwhile are not lost, they stay uncommitted and
        are seeked back so the next `fetch` returns them.
        """
        consumer = self._running()
        deadline = time.monotonic() + timeout_s
        while not self._assignment:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaEdgeError(f"no partitions of {self._topic} assigned within {timeout_s:g} s")
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 0.2) * 1000))
            for tp, batch in batches.items():
                if batch:
                    consumer.seek(tp, batch[0].offset)
        return self._assignment

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit `offsets` (next offset to read, i.e. last durable offset + 1) per partition.

        Raises CommitRejected when the group rebalanced or the partition is no longer ours: the
        new owner will process those records again, so the caller must not assume they are done.
        """
        consumer = self._running()
        native = {_AioTopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()}
        try:
            await consumer.commit(native)
        except (CommitFailedError, RebalanceInProgressError, IllegalStateError) as exc:
            raise CommitRejected(f"commit of {dict(offsets)} refused (group moved on): {exc}") from exc
        except KafkaError as exc:
            error = KafkaEdgeError(f"commit of {dict(offsets)} failed: {exc!r}")
            error.retriable = bool(getattr(exc, "retriable", False))
            raise error from exc

    async def commit_records(self, records: Iterable[Record]) -> None:
        """Commit past `records`: per partition, the highest offset + 1.

        Only pass records whose results are durable, and every earlier record of the same partition.
        """
        highest: dict[Partition, int] = {}
        for record in records:
            tp = record.tp
            highest[tp] = max(highest.get(tp, -1), record.offset + 1)
        if highest:
            await self.commit(highest)

    async def committed(self, partition: Partition) -> int | None:
        """The group's committed offset for `partition` (None when nothing was committed)."""
        consumer = self._running()
        native = _AioTopicPartition(partition.topic, partition.partition)
        try:
            result: int | None = await consumer.committed(native)
        except KafkaError as exc:
            error = KafkaEdgeError(f"reading the committed offset of {partition} failed: {exc!r}")
            error.retriable = bool(getattr(exc, "retriable", False))
            raise error from exc
        return result

    async def _assigned(self, partitions: frozenset[Partition]) -> None:
        self._assignment = partitions
        if self._hooks is not None:
            await self._hooks.on_assigned(partitions, self.generation)

    async def _revoked(self, partitions: frozenset[Partition]) -> None:
        generation = self.generation
        self._assignment = frozenset()
        # aiokafka revokes an empty set before the first join; nothing to tell the hooks then.
        if self._hooks is not None and partitions:
            await self._hooks.on_revoked(partitions, generation)

    def _running(self) -> AIOKafkaConsumer:
        if self._state is not _Lifecycle.OPENED or self._consumer is None:
            raise NotStarted(f"consumer is {self._state.value}: call start() first")
        return self._consumer


# --- reading a topic back ------------------------------------------------------------------------


class TopicReader:
    """Read one topic from the beginning (or from `since_ms`) to its end as of the start.

    `since_ms` / `until_ms` bound record timestamps (inclusive). The start offset comes from
    the broker's time index, but records outside the window are also filtered here: tansu answers
    a time past its last record with an early offset instead of the end.

    Use as ``async with TopicReader(config, topic) as reader: async for batch in reader: ...``.
    Batches are lists of records in offset order per partition. No consumer group is involved
    and nothing is committed. See the module docstring for how the end is found.
    """

    def __init__(
        self,
        config: KafkaConfig,
        topic: str,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        partitions: Iterable[int] | None = None,
        stall_timeout_s: float = 30.0,
        max_batch: int = 10_000,
        fetch_max_wait_ms: int = 50,
    ) -> None:
        self._config = config
        self._topic = topic
        self._since_ms = since_ms
        self._until_ms = until_ms
        self._only = None if partitions is None else frozenset(partitions)
        self._stall_timeout_s = stall_timeout_s
        self._max_batch = max_batch
        # A short wait matters for partitions already at their end: their confirming fetch
        # returns only when this wait expires.
        self._fetch_max_wait_ms = min(fetch_max_wait_ms, config.fetch_max_wait_ms or fetch_max_wait_ms)
        self._consumer: AIOKafkaConsumer | None = None
        self._targets: dict[_AioTopicPartition, int] = {}
        self._listed_end: dict[_AioTopicPartition, int] = {}
        self._pending: set[_AioTopicPartition] = set()
        self._state = _Lifecycle.UNOPENED

    @property
    def end_offsets(self) -> dict[Partition, int]:
        """The end each partition was read to (known once iteration has finished)."""
        return {Partition(tp.topic, tp.partition): offset for tp, offset in self._targets.items()}

    async def __aenter__(self) -> TopicReader:
        if self._state is not _Lifecycle.UNOPENED:
            raise NotStarted("a TopicReader reads once; make a new one")
        self._state = _Lifecycle.OPENED
        kwargs = self._config.client_kwargs()
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            **kwargs,
        )
        self._consumer = consumer
        try:
            await consumer.start()
            await self._position_at_start(consumer)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _close(self) -> None:
        self._state = _Lifecycle.CLOSED
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _position_at_start(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await consumer.topics()  # refreshes cluster metadata
            numbers = consumer.partitions_for_topic(self._topic)
        except KafkaError as exc:
            raise KafkaEdgeError(f"cannot read metadata of {self._topic}: {exc!r}") from exc
        if not numbers:
            raise TopicSetupError(f"topic {self._topic} does not exist on {self._config.bootstrap}")
        if self._only is not None:
            unknown = self._only - set(numbers)
            if unknown:
                raise TopicSetupError(f"topic {self._topic} has no partitions {sorted(unknown)}")
            numbers = self._only
        tps = [_AioTopicPartition(self._topic, n) for n in sorted(numbers)]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        self._listed_end = dict(end)
        starts = dict(begin)
        if self._since_ms is not None:
            found = await consumer.offsets_for_times({tp: self._since_ms for tp in tps})
            for tp in tps:
                hit = found.get(tp)
                starts[tp] = hit.offset if hit is not None else end[tp]
        for tp in tps:
            consumer.seek(tp, starts[tp])
            if end[tp] <= begin[tp]:
                # Empty on every broker we know (tansu's low end is still >= 1 once anything was written).
                self._targets[tp] = end[tp]
                consumer.pause(tp)
            else:
                self._pending.add(tp)

    def __aiter__(self) -> AsyncIterator[list[Record]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[Record]]:
        consumer = self._consumer
        if consumer is None:
            raise NotStarted("use TopicReader inside 'async with'")
        last_progress = time.monotonic()
        while self._pending:
            try:
                fetched = await consumer.getmany(
                    *self._pending,
                    timeout_ms=max(self._fetch_max_wait_ms * 4, 100),
                    max_records=self._max_batch,
                )
            except KafkaError as exc:
                raise KafkaEdgeError(f"reading {self._topic} failed: {exc!r}") from exc
            out: list[Record] = []
            for tp, raws in fetched.items():
                target = self._target(consumer, tp)
                for raw in raws:
                    if target is not None and raw.offset >= target:
                        break  # written after we started: not ours to read
                    if self._outside_window(raw.timestamp):
                        continue
                    out.append(_to_record(raw))
            progressed = bool(out)
            for tp in list(self._pending):
                target = self._target(consumer, tp)
                if target is not None and await consumer.position(tp) >= target:
                    self._pending.discard(tp)
                    consumer.pause(tp)
                    progressed = True
            if progressed:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self._stall_timeout_s:
                stuck = {f"{tp.topic}[{tp.partition}]": self._targets.get(tp) for tp in self._pending}
                raise ReaderStalled(
                    f"no progress reading {self._topic} for {self._stall_timeout_s:g} s; "
                    f"unfinished partitions (target end): {stuck}"
                )
            if out:
                yield out

    def _outside_window(self, timestamp_ms: int) -> bool:
        if self._since_ms is not None and timestamp_ms < self._since_ms:
            return True
        return self._until_ms is not None and timestamp_ms > self._until_ms

    def _target(self, consumer: AIOKafkaConsumer, tp: _AioTopicPartition) -> int | None:
        target = self._targets.get(tp)
        if target is None:
            highwater = consumer.highwater(tp)
            if highwater is None:
                return None  # no fetch answer yet: the listed end alone may be short (tansu)
            target = max(self._listed_end[tp], highwater)
            self._targets[tp] = target
        return target


def partition_of(key: str, partitions: int) -> int:
    """The partition a keyed record lands on with Kafka's default partitioner (murmur2, as the Java
    client and aiokafka use): how an instance knows which campaigns its partitions cover."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


async def read_topic(config: KafkaConfig, topic: str, **options: Any) -> list[Record]:
    """Every record of `topic` up to its end as of now (options as for TopicReader)."""
    records: list[Record] = []
    async with TopicReader(config, topic, **options) as reader:
        async for batch in reader:
            records.extend(batch)
    return records


async def restore_latest(config: KafkaConfig, topic: str, **options: Any) -> dict[str, Record]:
    """The latest record per key of a (compacted) topic; a tombstone (None value) deletes its key.

    Keyless records are skipped. Per-key order is partition order, which holds because a key
    always maps to one partition.
    """
    latest: dict[str, Record] = {}
    async with TopicReader(config, topic, **options) as reader:
        async for batch in reader:
            for record in batch:
                if record.key is None:
                    continue
                if record.value is None:
                    latest.pop(record.key, None)
                else:
                    latest[record.key] = record
    return latest
