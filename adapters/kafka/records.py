"""The values that cross the Kafka edge: a consumed `Record`, an `OutgoingRecord` to produce, the
`Partition` a record is on and the `Delivery` (partition, offset) of an acknowledged one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["Delivery", "OutgoingRecord", "Partition", "Record", "to_record"]


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


def to_record(raw: Any) -> Record:
    """An aiokafka ConsumerRecord as a `Record`."""
    key_bytes: bytes | None = raw.key
    return Record(raw.topic, raw.partition, raw.offset,
                  None if key_bytes is None else key_bytes.decode("utf-8", "replace"),
                  raw.value, tuple(raw.headers or ()), raw.timestamp, key_bytes)
