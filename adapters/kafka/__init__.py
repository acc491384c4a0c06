"""The Kafka edge: thin aiokafka wrappers for topics, producing, the command consumer and reading back.

No business rule lives here; the orchestrator decides what to send, when to commit and what a
record means. This package only makes the Kafka side behave the same on real Kafka and on the two
local emulators (see `adapters.devtools.brokers`):

- `config`: `KafkaSettings`, everything the edge needs (TLS/SASL included); it is also the
  `kafka` section of the service's settings;
- `topics`: `TopicNames` / `ensure_topics`: the five topics, created idempotently; ``campaign.state``
  is compacted (brokers that refuse or ignore the config still get the topic); `partition_of`;
- `records`: `Record`, `OutgoingRecord`, `Partition`, `Delivery`, and `dead_letter_stand_in`;
- `mapping`: a state change as the service's records (`state_changed_records`, `state_saved_records`,
  `result_records`: events, state and results, as `ServiceRecord`s), and what they carry
  (`RESULT_TYPE`, `STATE_TYPE`, `EVENT_CONTENT_TYPE`, `result_id`), for the outbox and `KafkaSink`;
- `producer`: `Producer`: acks=all, idempotent where the broker supports it
  (`KafkaSettings.enable_idempotence`, default True; tansu needs False because aiokafka's
  InitProducerId fails there), key = campaign id, orjson values, CloudEvents-style headers, `send`
  answers (partition, offset);
- `consumer`: `CommandConsumer`: a group member with manual commits only (commit offset + 1 once
  the caller's result is durable), `seek` to fetch unfinished records again, and rebalance hooks
  that see the group generation;
- `reader`: `TopicReader` / `read_topic` / `restore_latest`: read a topic from the beginning (or a
  time) to its end as of the start, for restoring ``campaign.state`` and for replay (its docstring
  says why one end-offset snapshot is not trusted);
- `sink`: `KafkaSink`, an `EventSink` that produces straight to Kafka, without the outbox;
- `errors`: what is raised here.

Errors (everything raised here is a `KafkaEdgeError`; `retriable` says whether trying again may
help)::

    KafkaEdgeError            any failure at the Kafka edge
    ├── NotStarted            a client used before start() or after stop()
    ├── TopicSetupError       a topic could not be created, or is missing
    ├── ProduceFailed         a record was not acknowledged (retriable: the broker may be away;
    │                         refused: which record can never be produced, e.g. too large)
    ├── CommitRejected        the group moved on: this member no longer owns the partition (fenced)
    └── ReaderStalled         a reader made no progress towards the end offsets in time

Secrets: `KafkaSettings.sasl_password` never appears in a repr, a log line or an error message.
"""

from .config import KafkaSettings
from .consumer import CommandConsumer, RebalanceHooks
from .errors import CommitRejected, KafkaEdgeError, NotStarted, ProduceFailed, ReaderStalled, TopicSetupError
from .mapping import (
    EVENT_CONTENT_TYPE,
    RESULT_TYPE,
    STATE_TYPE,
    ServiceRecord,
    result_id,
    result_records,
    state_changed_records,
    state_saved_records,
)
from .producer import Producer
from .reader import TopicReader, read_topic, restore_latest
from .records import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    RECORD_SOURCE,
    STAND_IN_CONTENT_TYPE,
    STAND_IN_VALUE_BYTES,
    Delivery,
    OutgoingRecord,
    Partition,
    Record,
    dead_letter_stand_in,
    record_headers,
)
from .sink import KafkaSink
from .topics import TopicNames, TopicSpec, ensure_topics, open_admin, partition_of

__all__ = [
    "EVENT_CONTENT_TYPE",
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "RECORD_SOURCE",
    "RESULT_TYPE",
    "STAND_IN_CONTENT_TYPE",
    "STAND_IN_VALUE_BYTES",
    "STATE_TYPE",
    "CommandConsumer",
    "CommitRejected",
    "Delivery",
    "KafkaEdgeError",
    "KafkaSettings",
    "KafkaSink",
    "NotStarted",
    "OutgoingRecord",
    "Partition",
    "ProduceFailed",
    "Producer",
    "ReaderStalled",
    "RebalanceHooks",
    "Record",
    "ServiceRecord",
    "TopicNames",
    "TopicReader",
    "TopicSetupError",
    "TopicSpec",
    "dead_letter_stand_in",
    "ensure_topics",
    "open_admin",
    "partition_of",
    "read_topic",
    "record_headers",
    "restore_latest",
    "result_id",
    "result_records",
    "state_changed_records",
    "state_saved_records",
]
