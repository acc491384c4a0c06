"""The values that cross the Kafka edge: a consumed `Record`, an `OutgoingRecord` to produce, the
`Partition` a record is on and the `Delivery` (partition, offset) of an acknowledged one.

Also the dead-letter stand-in for a record the broker refuses for good, wherever it is produced
from (the outbox, the direct `KafkaSink`). What the service's own records carry is in `mapping`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schemas.base import truncate_text

__all__ = [
    "EVENT_CONTENT_TYPE",
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "RECORD_SOURCE",
    "STAND_IN_CONTENT_TYPE",
    "STAND_IN_VALUE_BYTES",
    "Delivery",
    "OutgoingRecord",
    "Partition",
    "Record",
    "dead_letter_stand_in",
    "record_headers",
    "to_record",
]


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


# --- the service's records ------------------------------------------------------------------------

EVENT_CONTENT_TYPE = "application/cloudevents+json"
# A structured-mode CloudEvent (content type EVENT_CONTENT_TYPE) repeats its id and type under
# these names, never as `ce_id`/`ce_type`: in the CloudEvents Kafka binding a `ce_` header means
# binary mode, and readers that detect the mode by it (the CloudEvents SDKs' `from_kafka`) would
# then look for every attribute in headers and fail on our events.
EVENT_ID_HEADER = "event-id"
EVENT_TYPE_HEADER = "event-type"
# A record with both `ce_type` and `ce_id` (results, commands from `campaign-fsm send`) is a complete
# binary-mode CloudEvent with these two as well: CloudEvents readers take it whole.
RECORD_SOURCE = "urn:campaign-fsm"


def record_headers(record: OutgoingRecord) -> list[tuple[str, bytes]]:
    """The headers `record` is produced with: its content type, its type and id, then its own."""
    out: list[tuple[str, bytes]] = []
    if record.value is not None:
        out.append(("content-type", record.content_type.encode()))
    structured = record.content_type == EVENT_CONTENT_TYPE
    if record.ce_type is not None:
        out.append((EVENT_TYPE_HEADER if structured else "ce_type", record.ce_type.encode()))
    if record.ce_id is not None:
        out.append((EVENT_ID_HEADER if structured else "ce_id", record.ce_id.encode()))
        if not structured and record.ce_type is not None:
            out += [("ce_specversion", b"1.0"), ("ce_source", RECORD_SOURCE.encode())]
    for name, value in record.headers.items():
        out.append((name, value if isinstance(value, bytes) else value.encode()))
    return out


# --- the dead-letter stand-in --------------------------------------------------------------------

# A stand-in is small whatever it stands for: enough of the value to recognise it, never the
# size that got the original refused.
STAND_IN_VALUE_BYTES = 1024
STAND_IN_CONTENT_TYPE = "application/octet-stream"  # the head of a value, cut at any byte
_STAND_IN_ERROR_CHARS = 500


def dead_letter_stand_in(record: OutgoingRecord, value: bytes, error: str, dead_letters: str,
                         extra: Mapping[str, str] | None = None) -> OutgoingRecord:
    """What goes to the dead-letter topic for `record` (whose encoded value is `value`) when the
    broker refuses it for good: the same key, the head of the value, and headers saying what it was."""
    headers: dict[str, str] = {
        "error": truncate_text(error, _STAND_IN_ERROR_CHARS),
        "original-topic": record.topic,
        "original-size": str(len(value)),
    }
    if record.key is not None:
        headers["original-key"] = truncate_text(record.key, 200)
    if record.ce_type is not None:
        headers["original-ce-type"] = record.ce_type
    if record.ce_id is not None:
        headers["original-ce-id"] = record.ce_id
    headers.update(extra or {})
    return OutgoingRecord(dead_letters, record.key, value[:STAND_IN_VALUE_BYTES], headers=headers,
                          content_type=STAND_IN_CONTENT_TYPE)
