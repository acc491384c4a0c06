"""A state change as records: what the service writes for an event, a saved state and a result.

One mapping for every sink (the outbox stores these records and publishes them later; `KafkaSink`
produces them at once): the event goes to ``events`` (CloudEvents content type), the campaign's
snapshot to the compacted ``state``, each result to ``results``, all keyed by campaign id, in that
order. A `ServiceRecord` names its topic by kind, so the outbox's rows follow the topic names of
the run that publishes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson

from schemas.base import encode
from schemas.commands import CommandResult

from .records import EVENT_CONTENT_TYPE, OutgoingRecord
from .topics import TopicNames

__all__ = [
    "EVENT_CONTENT_TYPE",
    "RESULT_TYPE",
    "STATE_TYPE",
    "RecordKind",
    "ServiceRecord",
    "result_id",
    "result_records",
    "state_changed_records",
    "state_saved_records",
]

RESULT_TYPE = "com.campaign-fsm.command.result.v1"
STATE_TYPE = "com.campaign-fsm.campaign.state.v1"
_JSON = "application/json"

RecordKind = Literal["events", "state", "results"]


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One of the service's records, its topic named by kind."""

    kind: RecordKind
    key: str
    value: bytes
    ce_type: str
    ce_id: str | None
    content_type: str

    def outgoing(self, topics: TopicNames) -> OutgoingRecord:
        return OutgoingRecord(topic_of(self.kind, topics), self.key, self.value, self.ce_type, self.ce_id, {},
                              self.content_type)


def topic_of(kind: str, topics: TopicNames) -> str:
    """The topic of records of `kind` ("events", "state" or "results")."""
    by_kind: Mapping[str, str] = {"events": topics.events, "state": topics.state, "results": topics.results}
    return by_kind[kind]


def result_id(result: CommandResult, value: bytes) -> str:
    """A result's record id: stable across re-deliveries, distinct for each result of one command
    (several DEFERRED results of one command differ in content, hence the digest)."""
    return f"{result.command_id}:{result.outcome.value}:{hashlib.blake2b(value, digest_size=6).hexdigest()}"


def state_changed_records(event: Mapping[str, object], snapshot: Mapping[str, object],
                          results: Sequence[CommandResult] = ()) -> list[ServiceRecord]:
    """The event, the snapshot, then the results it decides."""
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        raise ValueError("a state-changed event needs string 'id' and 'type' fields")
    return [ServiceRecord("events", _event_campaign(event), orjson.dumps(event), event_type, event_id,
                          EVENT_CONTENT_TYPE),
            *state_saved_records(snapshot, results)]


def state_saved_records(snapshot: Mapping[str, object], results: Sequence[CommandResult] = ()) -> list[ServiceRecord]:
    """The snapshot, then the results it decides."""
    key = snapshot.get("campaignId")
    if not isinstance(key, str) or not key:
        raise ValueError("a campaign snapshot needs a non-empty string 'campaignId'")
    return [ServiceRecord("state", key, orjson.dumps(snapshot), STATE_TYPE, None, _JSON), *result_records(results)]


def result_records(results: Sequence[CommandResult]) -> list[ServiceRecord]:
    records = []
    for result in results:
        value = encode(result)
        records.append(ServiceRecord("results", result.campaign_id, value, RESULT_TYPE, result_id(result, value),
                                     _JSON))
    return records


def _event_campaign(event: Mapping[str, object]) -> str:
    subject = event.get("subject")
    if isinstance(subject, str) and subject:
        return subject
    data = event.get("data")
    if isinstance(data, dict) and isinstance(data.get("campaignId"), str) and data["campaignId"]:
        return str(data["campaignId"])
    raise ValueError("a state-changed event needs its campaign id in 'subject' or 'data.campaignId'")
