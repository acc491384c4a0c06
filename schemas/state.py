"""`CampaignStateRecord`: one campaign's working state, the value on the compacted `campaign.state` topic.

The orchestrator writes it (`Orchestrator.snapshot`: `Campaign.snapshot()` from `fsm/machine.py`
plus the held command) after every change, keyed by campaign id; on start-up and on a partition
takeover the service reads the latest record per campaign back before it asks the platform for
the truth. `campaign-fsm replay --rebuild-state` writes the same shape from the events alone.

Like `CampaignStateChangedEvent`, the record is built on the hot path as a plain dict; this model
is its contract: it generates the JSON Schema and the AsyncAPI payload, and the tests prove the
dicts the code writes validate against it. Every key but `heldCommandSent` and `scheduledCommands` is
always present; "no value" is `null`.

Every instant is in the one timestamp format (RFC 3339, UTC, milliseconds, `Z`; `schemas/instants.py`
says how a float becomes one and which way the millisecond is rounded). Records written before that
carried epoch seconds (JSON numbers); they are still read (`StoredInstant`), so an upgrade keeps its held
commands and replay memory, and are written in the new format at the campaign's next change.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict, StringConstraints

from .base import StrictModel, Timestamp
from .commands import CampaignId, Command, KeyId
from .signed import SignedRecord
from .types import Action, CampaignState, DialerType, Intent

__all__ = ["CampaignStateRecord", "StoredCommand", "StoredInstant"]

_HASH = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


# An instant in a state record. The published schema is that of `Timestamp` (a string). Lax, unlike
# the rest of the record: a number is read as epoch seconds, the format of records written by versions
# before it (never written any more; `Campaign.restore` reads both alike).
StoredInstant = Annotated[Timestamp, Strict(False)]


class StoredCommand(StrictModel):
    """A held or scheduled command as its producer sent it, so it can be verified again on restore.

    The record key is the state record's `campaignId`; with `keyId` and `signature` the signature is
    checked exactly as on arrival (docs/signing.md), so a record planted on the state topic cannot
    forge a command.
    """

    value: str = Field(description="The command record's value exactly as sent (schema `command.json`), "
                       "as UTF-8 text.")
    key_id: KeyId | None = Field(description="Its `cfsm-key-id` header; null if it came unsigned.")
    signature: str | None = Field(max_length=256, description="Its `cfsm-signature` header (docs/signing.md); "
                                  "null if it came unsigned.")

    @classmethod
    def of(cls, command: Command) -> dict[str, str | None]:
        """What is stored for `command`: its signed record if it has one, else its wire JSON."""
        record = command.signed
        if record is None:
            return {"value": command.model_dump_json(by_alias=True, exclude_none=True), "keyId": None,
                    "signature": None}
        return {"value": record.value.decode("utf-8"), "keyId": record.key_id, "signature": record.signature}

    def command(self, campaign_id: str) -> Command:
        """The stored command with its record (key `campaign_id`) again (raises ContractError)."""
        return Command.from_record(SignedRecord(campaign_id.encode(), self.value.encode("utf-8"),
                                                self.key_id, self.signature))


class CampaignStateRecord(StrictModel):
    """The latest known state of one campaign (compacted topic: only the newest record per key counts)."""

    campaign_id: CampaignId = Field(description="The campaign; also the record key.")
    state: CampaignState = Field(description="The model's state now.")
    dialer_type: DialerType = Field(description="Chooses the tolerance windows.")
    dialer_id: str | None = Field(description="The dialer instance, when known (per-dialer gate and queue).")
    contact_list_id: str | None = Field(description="The campaign's contact list, when known (pre-flight).")
    sequence: int = Field(ge=0, description="`sequence` of the campaign's last event on `campaign.events`.")
    entered_at: StoredInstant = Field(description="When the current state was entered (millisecond cut).")
    deadline: StoredInstant | None = Field(
        description="While STARTING, PAUSING or STOPPING: when the tolerance window runs out (millisecond rounded "
        "up: a restore never shortens the window)."
    )
    last_stable: CampaignState = Field(
        description="The last STOPPED, RUNNING or PAUSED reached (where a request the platform did not take "
        "returns to)."
    )
    command_id: str | None = Field(description="The command whose transition is in flight.")
    action: Action | None = Field(description="The action of the transition in flight.")
    platform_status: str | None = Field(description="The platform's own word for the state, last reported.")
    intent: Intent | None = Field(
        default=None,
        description="Why we last turned the campaign off (pause or stop), while the platform shows a status "
        "that cannot tell (Genesys `off`, `stopping`); null once it dials again or the platform names its own "
        "reason. A restart or a new owner reads `off` by it: PAUSED after a pause, STOPPED after a stop.",
    )
    held: str | None = Field(
        description="Id of a command accepted but not yet sent (pre-flight, dialer queue): the state gate is closed."
    )
    last_hash: _HASH | None = Field(
        description="SHA-256 of the campaign's last event (canonical JSON): the next event's `prevHash`."
    )
    held_command: StoredCommand | None = Field(
        description="The held command itself, as its producer sent it (value and signing headers), so a "
        "restart resumes its pre-flight instead of losing it, after verifying its signature again."
    )
    held_command_sent: bool | None = Field(
        default=None,
        description="True once the held command's request may have left for the platform (written before the "
        "POST): a restart then only reads the campaign to learn whether it was executed, and never sends it "
        "again. False while it waits in pre-flight or the dialer queue; null (or absent, in records rebuilt from "
        "the events) when no command is held.",
    )
    scheduled_commands: list[StoredCommand] | None = Field(
        default=None,
        description="Commands waiting for their `notBefore` instant (DEFERRED with SCHEDULED), each as its "
        "producer sent it (like `heldCommand`); null (or absent, in records rebuilt from the events) when there "
        "are none.",
    )
    recent_commands: list[tuple[str, StoredInstant, str | None]] | None = Field(
        default=None,
        description="Replay memory: `[commandId, issuedAt, record origin or null]` of each command "
        "this campaign took within the freshness window, so a restart or a new owner still refuses a re-sent "
        "command (REPLAYED) and recognises a redelivered record (same origin: `topic:partition@offset`). "
        "Bounded per campaign; absent in records rebuilt from the events.",
    )
    replay_horizon: StoredInstant | None = Field(
        default=None,
        description="Set when the replay memory overflowed: a command issued at or before it can no longer be "
        "proven new and is refused STALE_COMMAND. Like each `issuedAt` in `recentCommands`, its millisecond is "
        "rounded up, so a command refused before a restore is refused after it.",
    )
