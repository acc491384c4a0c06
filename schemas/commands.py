"""Commands published by downstream services, and the results we publish for each."""

from __future__ import annotations

import re
from typing import Annotated
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PrivateAttr,
    StringConstraints,
    field_serializer,
    field_validator,
    model_validator,
)

from .base import ContractError, OmittedWhenUnset, StrictModel, Timestamp, decode, truncate_text
from .signed import KEY_ID_HEADER, SIGNATURE_HEADER, SignedRecord
from .types import Action, CampaignState, Outcome, Priority, ReasonCode

__all__ = ["CAMPAIGN_ID_PATTERN", "COMMAND_ID_PATTERN", "MESSAGE_MAX_CHARS", "CampaignId", "Command",
           "CommandId", "CommandResult", "KeyId", "id_key"]

# Ids end up in REST paths and topic keys: a conservative alphabet keeps both safe (no '/', no '..').
CAMPAIGN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CampaignId = Annotated[str, StringConstraints(pattern=CAMPAIGN_ID_PATTERN)]
# Key ids are names in configuration and in logs: the same kind of conservative alphabet.
KeyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
# A result's message often quotes what it answers (a parse error, the platform's own errors); that
# text is the sender's and may be huge. 2,000 characters (at most ~12 kB of JSON) keeps every
# result far below the producer's 1 MiB record limit, so no result can stop the outbox.
MESSAGE_MAX_CHARS = 2000

# A command id is a UUID in its hyphenated form (JSON Schema's `format: uuid`), in either case. It is
# kept as the text that came and echoed so in every result: a producer matches results by its own
# string. Memories that must treat two spellings of one UUID as one id compare `id_key`s.
COMMAND_ID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"


_COMMAND_ID = re.compile(COMMAND_ID_PATTERN)


def _uuid_text(value: object) -> object:
    return str(value) if isinstance(value, UUID) else value  # code builds commands from uuid4()


def _a_uuid(value: str) -> str:
    if not _COMMAND_ID.fullmatch(value):
        raise ValueError("must be a UUID: 32 hex digits in groups 8-4-4-4-12 with hyphens, either case")
    return value


CommandId = Annotated[str, BeforeValidator(_uuid_text), AfterValidator(_a_uuid),
                      Field(json_schema_extra={"format": "uuid", "pattern": COMMAND_ID_PATTERN})]


def id_key(command_id: str) -> str:
    """The form two spellings of one command id share (replay and redelivery memories)."""
    return command_id.lower()


_SIGNING_DOC = "docs/signing.md"


class Command(StrictModel):
    """A request to move one campaign: the value of a record keyed by `campaignId` on the commands topic,
    signed in the record's headers `cfsm-key-id` and `cfsm-signature` over the value exactly as sent
    (the rule and a worked example: docs/signing.md)."""

    id: CommandId = Field(
        description="Unique per command (a UUID, either case; results echo it exactly as sent). A re-sent "
        "command with the same id, in any case, is refused REPLAYED.")
    campaign_id: CampaignId
    action: Action
    priority: Priority = Priority.STANDARD
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    issued_at: AwareDatetime
    expected_state: CampaignState | None = Field(
        default=None,
        description="Refuse unless the campaign is in this state when the command is considered.",
    )
    not_before: AwareDatetime | None = Field(
        default=None,
        description="Hold the command (DEFERRED, reason SCHEDULED) and execute it at this instant.",
    )
    recycle: bool | None = Field(
        default=None,
        description="Only with `start`: begin again at the contact list's first record (Genesys: "
        "`DELETE /api/v2/outbound/campaigns/{id}/progress`, then the start). Without it a start continues "
        "where the campaign was turned off. A profile without progress refuses it UNSUPPORTED_BY_PLATFORM.",
    )

    @model_validator(mode="after")
    def _recycle_only_with_start(self) -> Command:
        if self.recycle and self.action is not Action.START:
            raise ValueError(f"recycle is an option of start only, not of {self.action.value}")
        return self

    # The record it was parsed from (bytes as sent, signing headers): what its signature covers.
    # Not a field: never on the wire, never in the schema.
    _signed: SignedRecord | None = PrivateAttr(default=None)

    @classmethod
    def from_record(cls, record: SignedRecord) -> Command:
        """The command in a record's value, keeping the record (raises ContractError)."""
        try:
            command = decode(cls, record.value)
        except ContractError as exc:
            raise _legacy_hint(exc) from None
        command._signed = record
        return command

    @property
    def signed(self) -> SignedRecord | None:
        """The record this command was parsed from or signed as (None: built in code, unsigned)."""
        return self._signed

    @property
    def key_id(self) -> str | None:
        """The key id its record was signed with (header cfsm-key-id), if any."""
        return self._signed.key_id if self._signed is not None else None


def _legacy_hint(error: ContractError) -> ContractError:
    """The 0.1 rule put keyId and signature in the body: say so rather than "extra field"."""
    def hint(field: str) -> str:
        header = KEY_ID_HEADER if field == "keyId" else SIGNATURE_HEADER
        return (f"no longer accepted in the command body (the 0.1 signing rule): sign the record and send it "
                f"as the header {header} (see {_SIGNING_DOC})")

    errors = [{**e, "message": hint(e["field"])}
              if e.get("type") == "extra_forbidden" and e["field"] in ("keyId", "signature") else e
              for e in error.errors]
    return ContractError(error.model, errors) if errors != error.errors else error


class CommandResult(OmittedWhenUnset):
    """One step in a command's life: ACCEPTED, then COMPLETED or FAILED; or REFUSED; or DEFERRED."""

    command_id: CommandId = Field(description="The command's `id`, exactly as it was sent.")
    campaign_id: CampaignId
    outcome: Outcome
    reason: ReasonCode | None = None
    message: Annotated[str, StringConstraints(max_length=MESSAGE_MAX_CHARS)] = Field(
        description=f"What happened, for people. At most {MESSAGE_MAX_CHARS} characters: a "
        "longer text is cut and ends with a marker such as \"… [truncated, 1589400 characters in all]\".",
    )
    state: CampaignState | None = Field(default=None, description="The campaign's state when decided.")
    legal_actions: list[Action] | None = Field(
        default=None, description="With ILLEGAL_TRANSITION: the actions the campaign accepts now."
    )
    next_attempt_at: Timestamp | None = Field(
        default=None, description="With DEFERRED: when it is tried again (on the clock of `platformTime` when that "
        "is present).")
    at: Timestamp = Field(description="When the result was decided (wall clock).")
    platform_time: Timestamp | None = Field(
        default=None,
        description="Only where the service runs on a scaled clock (`time_scale`, the simulator): the same "
        "instant on that clock. Absent in production.",
    )

    # Cut on the way in rather than refused: a too-long text must not turn the answer into an
    # exception (a lost result), and results already on the topic must still parse.
    @field_validator("message", mode="before")
    @classmethod
    def _bounded_message(cls, value: object) -> object:
        return truncate_text(value, MESSAGE_MAX_CHARS) if isinstance(value, str) else value

    # model_copy(update=...) skips validation; serialising goes through here whatever built the result.
    @field_serializer("message")
    def _bounded_on_the_wire(self, value: str) -> str:
        return truncate_text(value, MESSAGE_MAX_CHARS)
