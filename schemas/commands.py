"""Commands published by downstream services, and the results we publish for each."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, Field, StringConstraints, field_serializer, field_validator, model_validator

from .base import StrictModel, truncate_text
from .types import Action, CampaignState, Outcome, Priority, ReasonCode

__all__ = ["CAMPAIGN_ID_PATTERN", "MESSAGE_MAX_CHARS", "CampaignId", "Command", "CommandResult", "KeyId"]

# Ids end up in REST paths and topic keys: a conservative alphabet keeps both safe (no '/', no '..').
CAMPAIGN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CampaignId = Annotated[str, StringConstraints(pattern=CAMPAIGN_ID_PATTERN)]
# Key ids are names in configuration and in logs: the same kind of conservative alphabet.
KeyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
# A result's message often quotes what it answers (a parse error, the platform's own errors); that
# text is the sender's and may be huge. 2,000 characters (at most ~12 kB of JSON) keeps every
# result far below the producer's 1 MiB record limit, so no result can stop the outbox.
MESSAGE_MAX_CHARS = 2000


class Command(StrictModel):
    """A request to move one campaign. Keyed by `campaignId` on the commands topic."""

    id: UUID = Field(description="Unique per command; a re-sent command with the same id is a replay.")
    campaign_id: CampaignId
    action: Action
    priority: Priority = Priority.STANDARD
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    issued_at: AwareDatetime
    expected_state: CampaignState | None = Field(
        default=None,
        description="Refuse unless the campaign is in this state when the command is considered.",
    )
    key_id: KeyId | None = Field(
        default=None, description="Which configured key signed this command (see `signature`)."
    )
    # Deliberately loose: a signature that is not 64 lowercase hex digits is refused as
    # BAD_SIGNATURE by the authority, not as a malformed message, so it is counted as what it is.
    signature: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="HMAC-SHA256 of the canonical body (this command's wire JSON without `signature`, "
        "keys sorted, compact, UTF-8) under the key named by `keyId`, as 64 lowercase hex digits.",
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


class CommandResult(StrictModel):
    """One step in a command's life: ACCEPTED, then COMPLETED or FAILED; or REFUSED; or DEFERRED."""

    command_id: UUID
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
    next_attempt_at: datetime | None = Field(default=None, description="With DEFERRED: when it is tried again.")
    at: AwareDatetime

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
