"""The AsyncAPI 3.1 document of every Kafka topic campaign-fsm reads or writes, generated from the models.

One channel per topic (commands, command results, state-change events, the compacted state, dead
letters), one operation per direction, from the service's point of view (`receive` commands, `send`
everything else). Message payloads are the JSON Schemas pydantic generates from the same models the
code parses and writes with (`schemas/commands.py`, `schemas/events.py`, `schemas/state.py`), hoisted
into `components.schemas` so the document is self-contained; every example is built through those
models, so an example that no longer fits its schema fails to render.

What the wire looks like beyond the payload (topic names, partition counts, topic configs, the
CloudEvents `ce_type` values, content types) is decided by the Kafka adapter; the caller passes it
in as a `KafkaContract` (`adapters/cli/docs.py` builds one from the adapter's own constants), so
this module stays inside the contract layer. `campaign-fsm schema` writes the document to
`docs/asyncapi.json`; a test regenerates it in memory and fails when the file is stale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .base import ContractError, decode, encode
from .commands import CAMPAIGN_ID_PATTERN, Command, CommandResult
from .events import CampaignStateChangedEvent, state_changed_event
from .signed import EXAMPLE, KEY_ID_HEADER, SIGNATURE_HEADER
from .state import CampaignStateRecord
from .types import Action, CampaignState, Cause, DialerType, Outcome, ReasonCode

__all__ = ["ASYNCAPI_VERSION", "KAFKA_BINDING_VERSION", "KafkaContract", "Topic", "render_asyncapi"]

# The latest 3.x the official parser (@asyncapi/parser 3.6, what `.ci/run` validates with) knows.
ASYNCAPI_VERSION = "3.1.0"
KAFKA_BINDING_VERSION = "0.5.0"
_REF = "#/components/schemas/{model}"
# How a record's partition follows from its key. Producers of commands must use it: the service
# answers a command found on another partition REFUSED WRONG_PARTITION (naming the right one).
PARTITIONER = "murmur2"
PARTITIONING = (
    "Partition = (murmur2(key bytes) & 0x7fffffff) % partitions: the default partitioner of the Java "
    "client (and of aiokafka, kafka-python, franz-go's Kafka-compatible mode). librdkafka's default "
    "(`consistent_random`, CRC32) is not it: set `partitioner=murmur2_random` (confluent-kafka, kcat "
    "`-X partitioner=murmur2_random`). A command on any other partition is answered REFUSED "
    "WRONG_PARTITION, its message naming the partition murmur2 gives."
)
_CAMPAIGN_KEY = {
    "type": "string",
    "pattern": CAMPAIGN_ID_PATTERN,
    "description": "The campaign id, UTF-8: every record of one campaign lands in one partition, in order. "
    + PARTITIONING,
}


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic as the adapter creates it: name, partitions and topic-level configs."""

    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KafkaContract:
    """What the Kafka adapter decides about the wire, beyond the payload models."""

    version: str
    bootstrap: str
    group_id: str
    replication_factor: int
    commands: Topic
    results: Topic
    events: Topic
    state: Topic
    dead_letters: Topic
    command_type: str
    result_type: str
    event_type: str
    state_type: str
    event_content_type: str
    # The headers repeating an event's id and type (not `ce_`-prefixed: that means binary mode).
    event_id_header: str
    event_type_header: str
    record_source: str  # `ce_source` of the binary-mode records (results)
    dead_letter_content_type: str
    # How the sink names a result record (`ce_id`), from the result and its encoded value.
    result_id: Callable[[CommandResult, bytes], str]


def render_asyncapi(contract: KafkaContract) -> bytes:
    """The document as JSON bytes (two-space indent, stable order, trailing newline)."""
    return orjson.dumps(_document(contract), option=orjson.OPT_INDENT_2) + b"\n"


# --- the document --------------------------------------------------------------------------------


def _document(c: KafkaContract) -> dict[str, Any]:
    schemas = _component_schemas()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:campaign-fsm",
        "info": {
            "title": "campaign-fsm",
            "version": c.version,
            "description": (
                "Kafka interface of campaign-fsm, the service that runs outbound dialing campaigns' lifecycle: "
                "downstream services publish commands, the service gates each through a state machine per "
                "campaign, drives the dialing platform and publishes results, every state change, and each "
                "campaign's latest state. Every record is keyed by campaign id, so per-campaign order is "
                "partition order. Produced with acks=all; delivery is at least once, and every record a "
                "consumer may see twice carries an id (`ce_id` header) to drop the repeat by. Generated by "
                "`campaign-fsm schema` from the pydantic models in `schemas/`; do not edit. Topic names are "
                "the defaults (configurable, see docs/configuration.md). Reading campaign.events without our "
                "code: docs/events.md. " + PARTITIONING
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": c.bootstrap,
                "protocol": "kafka",
                "description": (
                    "The Kafka cluster (`kafka.bootstrap`). TLS and SASL (PLAIN, SCRAM-SHA-256/512) are chosen "
                    "by `kafka.security_protocol` and `kafka.sasl_*`; topics are created on start-up with "
                    f"replication factor `kafka.replication_factor` (default {c.replication_factor})."
                ),
            }
        },
        "channels": {
            "commands": _channel(c.commands, c, "Commands", "Command", _COMMANDS_TEXT),
            "commandResults": _channel(c.results, c, "Command results", "CommandResult", _RESULTS_TEXT),
            "campaignEvents": _channel(c.events, c, "Campaign state changes", "CampaignStateChanged",
                                       _EVENTS_TEXT),
            "campaignState": _channel(c.state, c, "Campaign state (compacted)", "CampaignStateRecord",
                                      _STATE_TEXT),
            "deadLetters": _channel(c.dead_letters, c, "Dead letters of the commands topic", "DeadLetter",
                                    _DEAD_LETTERS_TEXT),
        },
        "operations": {
            "receiveCommand": _operation("receive", "commands", "Command", c,
                                         "Consume commands (consumer group, manual commits)."),
            "sendCommandResult": _operation("send", "commandResults", "CommandResult", c,
                                            "Publish each step of a command's life."),
            "sendCampaignStateChanged": _operation("send", "campaignEvents", "CampaignStateChanged", c,
                                                   "Publish every observed state change, in sequence order."),
            "sendCampaignState": _operation("send", "campaignState", "CampaignStateRecord", c,
                                            "Publish a campaign's latest working state after each change."),
            "sendDeadLetter": _operation("send", "deadLetters", "DeadLetter", c,
                                         "Set aside a command record that names no usable command or campaign."),
        },
        "components": {
            "messages": {
                "Command": _command_message(c),
                "CommandResult": _result_message(c),
                "CampaignStateChanged": _event_message(c),
                "CampaignStateRecord": _state_message(c),
                "DeadLetter": _dead_letter_message(c),
            },
            "schemas": schemas,
        },
    }


def _channel(topic: Topic, c: KafkaContract, title: str, message: str, text: str) -> dict[str, Any]:
    binding: dict[str, Any] = {"topic": topic.name, "partitions": topic.partitions, "replicas": c.replication_factor}
    if topic.configs:
        binding["topicConfiguration"] = _topic_configuration(topic.configs)
    binding["bindingVersion"] = KAFKA_BINDING_VERSION
    binding["x-partitioner"] = PARTITIONER  # the binding has no field for it: an extension
    return {
        "address": topic.name,
        "title": title,
        "description": text,
        "messages": {_lower_first(message): {"$ref": f"#/components/messages/{message}"}},
        "bindings": {"kafka": binding},
    }


def _topic_configuration(configs: Mapping[str, str]) -> dict[str, Any]:
    # The binding spells cleanup.policy as a list; the broker takes a comma-separated string.
    out: dict[str, Any] = {}
    for name, value in sorted(configs.items()):
        out[name] = [v.strip() for v in value.split(",")] if name == "cleanup.policy" else value
    return out


def _operation(action: str, channel: str, message: str, c: KafkaContract, summary: str) -> dict[str, Any]:
    op: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{_lower_first(message)}"}],
    }
    if action == "receive":
        op["bindings"] = {"kafka": {"groupId": {"type": "string", "enum": [c.group_id]},
                                    "bindingVersion": KAFKA_BINDING_VERSION}}
    return op


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _component_schemas() -> dict[str, Any]:
    """Every payload model's JSON Schema and the definitions they share, under `components.schemas`."""
    models: list[type[BaseModel]] = [Command, CommandResult, CampaignStateChangedEvent, CampaignStateRecord]
    _, top = models_json_schema([(m, "validation") for m in models], by_alias=True, ref_template=_REF)
    defs: dict[str, Any] = top.get("$defs", {})
    return {name: defs[name] for name in sorted(defs)}


def _key_binding(description: str | None = None) -> dict[str, Any]:
    key = dict(_CAMPAIGN_KEY)
    if description:
        key["description"] = description + " " + PARTITIONING
    return {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}}


def _headers(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _const(value: str, description: str) -> dict[str, Any]:
    return {"type": "string", "const": value, "description": description}


def _json(model: BaseModel) -> Any:
    return orjson.loads(encode(model))


# --- the messages --------------------------------------------------------------------------------

_COMMANDS_TEXT = (
    "Commands from downstream services (`campaign-fsm send` and `campaign-fsm schedule` publish them too). "
    "Several instances in one consumer group share the partitions, so one campaign is driven by one "
    "instance. Offsets are committed only once every command of a fetched batch has its first result "
    "durable: a crash redelivers exactly the commands not yet acted upon, and the state gate makes a "
    "redelivery harmless. A record that does not parse never stops consumption: if it still names a "
    "usable `id` and `campaignId` it is answered REFUSED with MALFORMED_COMMAND, otherwise it goes to the "
    "dead-letter topic. Keyed by campaign id and partitioned by murmur2 of the key: a command on another "
    "partition is REFUSED WRONG_PARTITION (see the key's schema)."
)
_RESULTS_TEXT = (
    "One or more results per command, keyed by campaign id, joined to the command by `commandId`: "
    "ACCEPTED (the state gate let it through; pre-flight next), DEFERRED with a reason and `nextAttemptAt` "
    "(contact list not ready, dialer over capacity, `notBefore` ahead), REFUSED with a reason (state "
    "gate, signature, authorisation, expired deferral), then COMPLETED once the target state is observed "
    "or FAILED with the platform's errors. A command for a campaign already in its target state is "
    "COMPLETED at once with ALREADY_IN_STATE."
)
_EVENTS_TEXT = (
    "Every state change the service observes, as a CloudEvents 1.0 structured-mode event. Per campaign, "
    "`data.sequence` goes 1, 2, 3, ... without gaps, each event's `from` is the previous event's `to`, and "
    "`data.prevHash` chains each event to the previous one of its campaign (see events.md). The topic is "
    "the audit log: the service never deletes or compacts it. A 202 from the platform is never an event "
    "by itself: a transitional state is entered when the platform accepted the request and left only when "
    "the platform is observed in a terminal state (or a tolerance window ran out)."
)
_STATE_TEXT = (
    "Each campaign's latest working state, written after every change (and when a command is held), "
    "on a compacted topic: only the newest record per key matters, and a record with a null value "
    "(tombstone) forgets the campaign. The service reads it back on start-up and on a partition "
    "takeover before it asks the platform for the truth; `campaign-fsm replay --rebuild-state` rewrites "
    "it from the events."
)
_DEAD_LETTERS_TEXT = (
    "Records of the commands topic that could not be parsed and name no usable command id and campaign "
    "id (so no REFUSED result can be addressed). The original key and bytes are kept; headers say why "
    "and where the record came from. One partition: dead letters are rare and read in order."
)

_EXAMPLE_COMMAND_ID = "5B0C3A4E-3F1D-4F7E-9A51-0C2D6F3B9E10"  # as in the command example: echoed as sent
_EXAMPLE_AT = datetime(2024, 5, 1, 9, 30, 12, tzinfo=UTC)


def _command_message(c: KafkaContract) -> dict[str, Any]:
    return {
        "name": "Command",
        "title": "Command",
        "summary": "A request to start, stop, pause, resume or reset one campaign.",
        "description": (
            f"Signed in two headers: `{KEY_ID_HEADER}` names the shared key, `{SIGNATURE_HEADER}` is the "
            "HMAC-SHA256 under it, as 64 hex digits, of `keyId + \"\\n\" + recordKey + \"\\n\" + value`: the "
            "record's key (the campaign id) and value exactly as produced, so the signature covers the bytes "
            "sent, whatever their formatting, and cannot be moved to another campaign. The rule, a worked "
            "example and an `openssl` command that reproduces it: docs/signing.md. `requestedBy` is the "
            "principal the authorisation policy checks. A command that is unsigned, badly signed, issued too "
            "long ago (or too far ahead), re-sent with an id already taken, or not allowed for its principal "
            "is REFUSED with UNSIGNED, BAD_SIGNATURE, STALE_COMMAND, REPLAYED or NOT_AUTHORISED. "
            "`expectedState` makes the command conditional; `notBefore` holds it (DEFERRED, SCHEDULED) until "
            "that instant. The example is docs/signing.md's worked example (its key: "
            f"`{EXAMPLE['key']}`)."
        ),
        "contentType": "application/json",
        "headers": _headers({
            KEY_ID_HEADER: {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                            "description": "The id of the key that signed the record (docs/signing.md)."},
            SIGNATURE_HEADER: {"type": "string", "pattern": "^[0-9A-Fa-f]{64}$",
                               "description": "HMAC-SHA256 of keyId, record key and value (docs/signing.md)."},
            "content-type": _const("application/json", "Optional: the service reads the value only."),
            "ce_type": _const(c.command_type, "Optional, set by `campaign-fsm send` and `schedule`."),
            "ce_id": {"type": "string", "format": "uuid", "description": "Optional: the command id."},
        }, []),
        "payload": {"$ref": _REF.format(model="Command")},
        "correlationId": {"description": "The command id, repeated exactly as sent in every result's "
                          "`commandId`.", "location": "$message.payload#/id"},
        "bindings": _key_binding(),
        "examples": [{
            "name": "signedPause",
            "summary": f"A HIGH-priority pause, signed with key {EXAMPLE['keyId']} (docs/signing.md).",
            "headers": {KEY_ID_HEADER: EXAMPLE["keyId"], SIGNATURE_HEADER: EXAMPLE["signature"],
                        "content-type": "application/json", "ce_type": c.command_type},
            "payload": orjson.loads(EXAMPLE["value"]),
        }],
    }


def _result_message(c: KafkaContract) -> dict[str, Any]:
    def example(name: str, summary: str, result: CommandResult) -> dict[str, Any]:
        return {
            "name": name,
            "summary": summary,
            "headers": {"content-type": "application/json", "ce_type": c.result_type,
                        "ce_id": c.result_id(result, encode(result)), "ce_specversion": "1.0",
                        "ce_source": c.record_source},
            "payload": _json(result),
        }

    def result(outcome: Outcome, state: CampaignState, message: str, reason: ReasonCode | None = None,
               next_attempt_at: datetime | None = None) -> CommandResult:
        return CommandResult(command_id=_EXAMPLE_COMMAND_ID, campaign_id="campaign-7", outcome=outcome,
                             reason=reason, message=message, state=state, next_attempt_at=next_attempt_at,
                             at=_EXAMPLE_AT)

    return {
        "name": "CommandResult",
        "title": "Command result",
        "summary": "One step in a command's life: ACCEPTED, DEFERRED, REFUSED, COMPLETED or FAILED.",
        "description": (
            "`reason` is a stable code consumers switch on; `message` is for people. With "
            "ILLEGAL_TRANSITION, `legalActions` lists what the campaign accepts now; with DEFERRED, "
            "`nextAttemptAt` says when the command is looked at again (earlier if the awaited contact list "
            "or dialer notifies)."
        ),
        "contentType": "application/json",
        "headers": _headers({
            "content-type": _const("application/json", "The value is JSON."),
            "ce_type": _const(c.result_type, "The kind of record."),
            "ce_id": {
                "type": "string",
                "pattern": r"^[0-9A-Fa-f-]{36}:[A-Z]+:[0-9a-f]+$",
                "description": "`{commandId}:{outcome}:{digest of the value}`: each result of a command has its "
                "own id (several DEFERRED results differ in content), a re-delivered result the same one; drop "
                "repeats by it.",
            },
            "ce_specversion": _const("1.0", "With `ce_source`, `ce_type` and `ce_id`: the record is a CloudEvent "
                                     "in binary mode (the value its data), so CloudEvents readers take it whole."),
            "ce_source": _const(c.record_source, "The CloudEvents source."),
        }, ["content-type", "ce_type", "ce_id", "ce_specversion", "ce_source"]),
        "payload": {"$ref": _REF.format(model="CommandResult")},
        "correlationId": {"description": "The command this result answers.",
                          "location": "$message.payload#/commandId"},
        "bindings": _key_binding(),
        "examples": [
            example("accepted", "The state gate let the command through.", result(
                Outcome.ACCEPTED, CampaignState.RUNNING, "pause accepted; pre-flight next")),
            example("deferred", "The contact list is locked: the command waits for it (edge case 1).", result(
                Outcome.DEFERRED, CampaignState.RUNNING, "contact list list-7 is LOCKED",
                ReasonCode.CONTACT_LIST_NOT_READY, datetime(2024, 5, 1, 9, 31, 12, tzinfo=UTC))),
            example("refused", "The campaign is still STOPPING: the state gate refuses until it is terminal.",
                    result(Outcome.REFUSED, CampaignState.STOPPING, "campaign-7 is STOPPING: a transition is in "
                           "flight", ReasonCode.TRANSITION_IN_FLIGHT)),
            example("completed", "The target state was observed on the platform.", result(
                Outcome.COMPLETED, CampaignState.PAUSED, "campaign-7 is PAUSED")),
        ],
    }


def _example_event() -> dict[str, Any]:
    event = state_changed_event(
        campaign_id="campaign-7", sequence=4, from_state="RUNNING", to_state="PAUSING", cause=Cause.COMMAND.value,
        at=_EXAMPLE_AT.timestamp() + 0.25, dialer_type=DialerType.PREDICTIVE.value, dialer_id="dialer-1",
        action=Action.PAUSE.value, command_id=str(_EXAMPLE_COMMAND_ID),
        request={"method": "POST", "path": "/api/v2/outbound/campaigns/campaign-7/pause", "status": 202,
                 "sentAt": "2024-05-01T09:30:12.101Z", "answeredAt": "2024-05-01T09:30:12.240Z"},
    )
    event["data"]["prevHash"] = "9f2c0e4b2d8a1c7e5f3b6a9d0e8c7b6a5f4e3d2c1b0a99887766554433221100"
    CampaignStateChangedEvent.model_validate_json(orjson.dumps(event))  # the example fits its schema
    return event


def _event_message(c: KafkaContract) -> dict[str, Any]:
    event = _example_event()
    return {
        "name": "CampaignStateChanged",
        "title": "Campaign state changed (CloudEvents 1.0)",
        "summary": "One observed state change of one campaign, in a CloudEvents structured-mode envelope.",
        "description": (
            "`id` is `{campaignId}:{sequence}`, `subject` the campaign id, `time` equals `data.observedAt`. "
            "Optional `data` fields are absent when they do not apply (never null), except `from`, which is "
            "null only on a campaign's first event. `cause` says what made the change happen; `anomaly` says "
            "when an observation disagreed with the transition table (SKIPPED_STATES, UNEXPECTED_TRANSITION) "
            "or when a tolerance window ran out while the platform names a lock (TRANSITION_DELAYED: `from` "
            "equals `to`, the deadline was extended). The headers repeat the envelope's `id` and `type` so a "
            "router can filter or de-duplicate without parsing JSON; the value is authoritative. No header "
            "starts with `ce_`: in the CloudEvents Kafka binding that marks binary mode, so CloudEvents SDKs "
            "(automatic mode detection included) read these records as the structured events they are. "
            "`time`, `observedAt` and every other instant are RFC 3339, UTC, milliseconds, `Z`, on the wall "
            "clock; `platformTime` appears only where the service runs on a scaled clock (the simulator)."
        ),
        "contentType": c.event_content_type,
        "headers": _headers({
            "content-type": _const(c.event_content_type, "CloudEvents structured mode, JSON."),
            c.event_type_header: _const(c.event_type, "Equals the envelope's `type`."),
            c.event_id_header: {
                "type": "string", "pattern": CAMPAIGN_ID_PATTERN.removesuffix("$") + r":[1-9][0-9]*$",
                "description": "Equals the envelope's `id`, `{campaignId}:{sequence}`: a re-delivered event has the "
                "same id and the same content."},
        }, ["content-type", c.event_type_header, c.event_id_header]),
        "payload": {"$ref": _REF.format(model="CampaignStateChangedEvent")},
        "correlationId": {"description": "The command this change belongs to, when there is one.",
                          "location": "$message.payload#/data/commandId"},
        "bindings": _key_binding("The campaign id (also the envelope's `subject`): one campaign's events are in "
                                 "one partition, in sequence order."),
        "examples": [{
            "name": "pausing",
            "summary": "A pause the platform accepted (202): the campaign is PAUSING, not yet PAUSED.",
            "headers": {"content-type": c.event_content_type, c.event_type_header: c.event_type,
                        c.event_id_header: event["id"]},
            "payload": event,
        }],
    }


def _example_state() -> dict[str, Any]:
    record = CampaignStateRecord(
        campaign_id="campaign-7", state=CampaignState.PAUSING, dialer_type=DialerType.PREDICTIVE,
        dialer_id="dialer-1", contact_list_id="list-7", sequence=4, entered_at=_EXAMPLE_AT + timedelta(seconds=0.25),
        deadline=_EXAMPLE_AT + timedelta(seconds=180.25), last_stable=CampaignState.RUNNING,
        command_id=str(_EXAMPLE_COMMAND_ID), action=Action.PAUSE, platform_status="PAUSING", held=None,
        last_hash="4d1e0c9b8a7f6e5d4c3b2a19f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b", held_command=None,
    )
    # Every key is present (null included): the record is the orchestrator's snapshot, key for key.
    data: dict[str, Any] = orjson.loads(orjson.dumps(record.model_dump(mode="json", by_alias=True)))
    return data


def _state_message(c: KafkaContract) -> dict[str, Any]:
    return {
        "name": "CampaignStateRecord",
        "title": "Campaign state record",
        "summary": "The latest working state of one campaign: what a restarted or new owner resumes from.",
        "description": (
            "Every key but `scheduledCommands` is always present; no value is null. Times (`enteredAt`, "
            "`deadline`, ...) are RFC 3339 UTC with milliseconds (records from earlier versions, with epoch "
            "seconds, are still read). `held`/`heldCommand` carry a command accepted but not yet "
            "sent (in pre-flight or the dialer queue), `scheduledCommands` those waiting for `notBefore`, "
            "so a restart resumes them rather than losing them; `lastHash` lets an audit check the last "
            "event of the campaign, which has no successor to vouch for it."
        ),
        "contentType": "application/json",
        "headers": _headers({
            "content-type": _const("application/json", "The value is JSON (absent on a tombstone)."),
            "ce_type": _const(c.state_type, "The kind of record."),
        }, ["ce_type"]),
        "payload": {"$ref": _REF.format(model="CampaignStateRecord")},
        "bindings": _key_binding(),
        "examples": [{
            "name": "pausing",
            "summary": "A predictive campaign pausing, its 180 s tolerance window running.",
            "headers": {"content-type": "application/json", "ce_type": c.state_type},
            "payload": _example_state(),
        }],
    }


_EXAMPLE_GARBAGE = b"start campaign-7 please"


def _parse_error(raw: bytes) -> str:
    """The `error` header the intake writes for `raw`: the parser's own message, not a copy of it."""
    try:
        decode(Command, raw)
    except ContractError as exc:
        return str(exc)
    raise AssertionError("the dead-letter example must not parse")


def _dead_letter_message(c: KafkaContract) -> dict[str, Any]:
    return {
        "name": "DeadLetter",
        "title": "Dead-lettered command record",
        "summary": "A commands-topic record that could not be parsed, kept byte for byte.",
        "contentType": c.dead_letter_content_type,
        "headers": _headers({
            "content-type": _const(c.dead_letter_content_type, "The value is the original bytes, unparsed."),
            "error": {"type": "string", "maxLength": 2000,
                      "description": "Why it did not parse (the contract error, naming each bad field)."},
            "source-topic": {"type": "string", "description": "The topic the record was read from."},
            "source-partition": {"type": "string", "pattern": "^[0-9]+$", "description": "Its partition."},
            "source-offset": {"type": "string", "pattern": "^[0-9]+$", "description": "Its offset."},
        }, ["error", "source-topic", "source-partition", "source-offset"]),
        "payload": {"type": "string", "format": "binary",
                    "description": "The original record value, exactly as consumed (possibly empty)."},
        "bindings": {"kafka": {"key": {"type": "string", "description": "The original record key, if any."},
                               "bindingVersion": KAFKA_BINDING_VERSION}},
        "examples": [{
            "name": "notJson",
            "summary": "A record whose value is not JSON.",
            "headers": {"content-type": c.dead_letter_content_type,
                        "error": _parse_error(_EXAMPLE_GARBAGE),
                        "source-topic": c.commands.name, "source-partition": "3", "source-offset": "1812"},
            "payload": _EXAMPLE_GARBAGE.decode(),
        }],
    }
