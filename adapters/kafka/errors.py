"""Everything raised at the Kafka edge is a `KafkaEdgeError`; `retriable` says whether trying again may help.

Also the lifecycle every client of the edge goes through (unopened, opened, closed): `NotStarted`
is what using one outside its opened state raises.
"""

from __future__ import annotations

import enum

__all__ = [
    "CommitRejected",
    "KafkaEdgeError",
    "Lifecycle",
    "NotStarted",
    "ProduceFailed",
    "ReaderStalled",
    "TopicSetupError",
]


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


class CommitRejected(KafkaEdgeError):
    """The commit was refused because the group rebalanced: another member may own the partition."""


class ReaderStalled(KafkaEdgeError):
    """A reader made no progress for its stall timeout (broker unreachable or frozen)."""

    retriable = True


class Lifecycle(enum.Enum):
    """Where a producer, consumer or reader is: a client opens once and, once closed, stays closed."""

    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"
