"""The durable local outbox: an `EventSink` that makes every output durable on local disk first.

A state change the service observed must reach ``campaign.events`` even if the broker is away for
a while or the process is killed right after the observation. So the sink does not talk to Kafka
at all: `state_changed`, `state_saved` and `command_result` append rows to an embedded SQLite
database and return once the transaction holding them is committed. A background task, the
*drainer* (``outbox-drain``), publishes the rows in insertion order through a `Publisher` (the
acks=all `adapters.kafka.Producer`) and deletes them only after the broker acknowledged them.

Order. Rows carry an AUTOINCREMENT sequence number, assigned in the order the calls reach the
store; the drainer sends a batch (the oldest rows, by sequence) with one `send_many` and deletes
``seq <= last`` only after every record of the batch was acknowledged. A failed batch is retried
from its first row, so nothing is ever sent ahead of an earlier row. The orchestrator awaits each
call of one campaign before the next, and a key always maps to one partition, so the order of one
campaign's events on the topic is the order of its calls. AUTOINCREMENT (not a plain rowid)
because a rowid may be reused once the highest row is gone, and ``seq <= last`` would then delete
a row that was never sent.

At least once, never lost. A crash between the broker's acknowledgement and the local delete, a
batch that failed half way, or a send cut short by `stop()` re-sends rows on the next attempt or
the next start. Event and result records carry an idempotent id header (events: ``event-id``, the
event id ``<campaignId>:<sequence>``, which is also the CloudEvents ``id`` in the value; results: ``ce_id``,
``<commandId>:<outcome>:<digest of the value>``), so consumers drop a re-delivery by id. After
dropping repeats (keeping the first occurrence), every campaign's events are in sequence order.
State records need no id: the topic is compacted by key and a repeat only restates the latest.

Coalescing. ``campaign.state`` is compacted: only the latest record per campaign matters. A new
snapshot row therefore replaces a snapshot row of the same campaign still waiting in the outbox
(events and results are never coalesced). During a long outage the outbox holds one snapshot per
campaign, not one per change.

Durability trade-off. The database runs in WAL mode with ``synchronous=FULL`` by default: the WAL
is fsynced at every commit, so a row whose call returned survives a power loss or an OS crash,
not only a killed process. Each fsync costs a few milliseconds, which the *group commit* hides:
a single writer thread takes every call waiting in its queue and commits them in one transaction
(one fsync), then answers each caller. ``synchronous="NORMAL"`` skips that fsync: still safe when
the process is killed (SIGKILL), but the last commits may be lost when the machine itself goes
down. The event loop never waits on the disk; only the writer thread touches the database.

One process per file. The database is opened with an exclusive lock: a second outbox (another
instance pointed at the same file) gets `OutboxUnavailable` rather than racing the first one's
drainer and reordering its rows. The lock dies with the process, so a restart after SIGKILL
reopens the file and delivers what was left, first and in order.

A record that can never be produced. The broker (or the producer, before sending) may refuse a
record for what it is: too large, corrupt. Retrying it would wedge the outbox for good, since
nothing behind it may overtake it. Such a row (`ProduceFailed.refused` names it) is set aside
instead: the rows ahead of it are delivered first, then a small stand-in record goes to the
dead-letter topic (headers ``error``, ``original-topic``, ``original-key``, ``original-size``,
``original-ce-type``, ``original-ce-id``, ``outbox-seq``; the value is at most the first
`adapters.kafka.STAND_IN_VALUE_BYTES` of the original), the row moves to the ``undeliverable``
table of the same database (kept, never deleted by the service: nothing is lost; a newer set-aside
snapshot of a campaign replaces an older one, as on the compacted topic), and the drainer goes on
with the rows behind it, in order. If the stand-in cannot be produced either, the row is set aside all the
same (``dead_lettered = 0``). `undeliverable` counts the rows set aside (the alarm). The rest of
the row's change (its event, snapshot or results) is still delivered: holding those back would
repeat the wedge for the results a producer waits for. Failures that are not one record's (broker
away, timeouts, authorization) are retried in order, as above.

Errors::

    OutboxError               any failure of the outbox
    ├── OutboxUnavailable     the database file cannot be used (path, permissions, lock, not ours)
    ├── OutboxClosed          used before `open()`/`start()` or after `stop()`
    └── OutboxWriteFailed     a row could not be made durable (the call did not take effect)

While the broker is unreachable the drainer retries with capped, jittered exponential backoff and
the outbox keeps accepting rows; `depth`, `oldest_age` and `last_error` say how far behind it is.
Nothing here logs record values or client credentials: log lines name the row counts, the path and
the publisher's error.

Modules: `outbox` (`Outbox`, the sink and its drainer; `Publisher`, the port it publishes
through), `writer` (the writer thread and its group commit), `store` (the SQLite schema, rows and
operations), `errors`. The records' types, ids and dead-letter stand-ins are the Kafka edge's
(`adapters.kafka.records`), shared with the direct `adapters.kafka.KafkaSink`.
"""

from .errors import OutboxClosed, OutboxError, OutboxUnavailable, OutboxWriteFailed
from .outbox import Outbox, Publisher

__all__ = ["Outbox", "OutboxClosed", "OutboxError", "OutboxUnavailable", "OutboxWriteFailed", "Publisher"]
