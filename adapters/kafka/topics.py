"""The five topics: their names (`TopicNames`), what is created (`TopicSpec`), creating them
idempotently (`ensure_topics`, with an admin client from `open_admin`), and the partition a keyed
record lands on (`partition_of`).

``campaign.state`` is compacted; brokers that refuse or ignore the config still get the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from pydantic import BaseModel, ConfigDict, model_validator

from .errors import TopicSetupError

if TYPE_CHECKING:  # config.py imports this module (TopicNames is part of the KafkaSettings)
    from .config import KafkaSettings

__all__ = ["TopicNames", "TopicSpec", "ensure_topics", "open_admin", "partition_of"]

_log = logging.getLogger(__name__)

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

# Kafka error codes create_topics answers per topic.
_TOPIC_ALREADY_EXISTS = 36
_REQUEST_TIMED_OUT = 7
_CONFIG_REFUSED = frozenset({40, 42, 44})  # INVALID_CONFIG, INVALID_REQUEST, POLICY_VIOLATION


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic to create: name, partition count, replication and topic configs."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


class TopicNames(BaseModel):
    """The service's topics. Every name is configurable; `state` is the compacted one.

    A pydantic model: the `kafka.topics` section of the settings is this very value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commands: str = "campaign.commands"
    results: str = "campaign.command-results"
    events: str = "campaign.events"
    state: str = "campaign.state"
    dead_letters: str = "campaign.commands.dlq"

    @model_validator(mode="after")
    def _valid_names(self) -> TopicNames:
        names = self.all()
        for name in names:
            if not _TOPIC_NAME.match(name):
                raise ValueError(f"invalid Kafka topic name {name!r}: use 1-249 of [A-Za-z0-9._-]")
        if len(set(names)) != len(names):
            raise ValueError(f"topic names must be distinct, got {names}")
        return self

    def all(self) -> tuple[str, ...]:
        return (self.commands, self.results, self.events, self.state, self.dead_letters)

    @classmethod
    def with_prefix(cls, prefix: str) -> TopicNames:
        """The default names under `prefix` (e.g. per test, per environment)."""
        return cls(**{name: f"{prefix}{value}" for name, value in cls().model_dump().items()})

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


@contextlib.asynccontextmanager
async def open_admin(config: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
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


def partition_of(key: str, partitions: int) -> int:
    """The partition a keyed record lands on with Kafka's default partitioner (murmur2, as the Java
    client and aiokafka use): how an instance knows which campaigns its partitions cover."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions
