"""`CampaignStateChanged`, carried in a CloudEvents 1.0 envelope (structured JSON mode).

The event is built on the hot path (one per observed change), so `state_changed_event` builds the
wire dict directly; `CampaignStateChangedEvent` is the same shape as a pydantic model, used to
parse the topic, to generate the JSON Schema and, in the tests, to prove the two never drift apart.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Literal
from uuid import UUID

import orjson
from pydantic import Field

from .base import OmittedWhenUnset, PlatformModel, StrictModel, Timestamp
from .commands import CampaignId
from .instants import epoch_stamp
from .types import Action, Anomaly, CampaignState, Cause, DialerType, Halt, Intent, ReasonCode

__all__ = [
    "EVENT_SOURCE",
    "STATE_CHANGED_TYPE",
    "AnomalyReport",
    "CampaignStateChanged",
    "CampaignStateChangedEvent",
    "PlatformErrorDetail",
    "PlatformRequest",
    "canonical_bytes",
    "event_hash",
    "event_id",
    "rfc3339",
    "state_changed_event",
]

EVENT_SOURCE = "urn:campaign-fsm"
STATE_CHANGED_TYPE: Final = "com.campaign-fsm.campaign.state-changed.v1"


class PlatformErrorDetail(PlatformModel):
    """An error the platform reported for a campaign (guide `/errors`, Genesys `/diagnostics`)."""

    code: str
    message: str = ""


class AnomalyReport(OmittedWhenUnset):
    """Where an observation disagreed with the model. The observation still wins."""

    kind: Anomaly
    expected: list[CampaignState] = Field(description="States the model expected next from `from`.")
    observed: CampaignState
    skipped: list[CampaignState] = Field(default_factory=list, description="States never seen in between.")
    detail: str | None = None


class PlatformRequest(StrictModel):
    """The platform request behind a commanded change: when it was sent and answered (latency, audit)."""

    method: str
    path: str
    status: int
    sent_at: Timestamp
    answered_at: Timestamp


class CampaignStateChanged(OmittedWhenUnset):
    campaign_id: CampaignId
    sequence: int = Field(ge=1, description="Per campaign, 1, 2, 3, ... with no gaps.")
    from_: CampaignState | None = Field(alias="from", description="None only for a campaign's first event.")
    to: CampaignState
    cause: Cause
    action: Action | None = Field(default=None, description="The command action this change belongs to.")
    command_id: UUID | None = None
    dialer_type: DialerType
    dialer_id: str | None = None
    anomaly: AnomalyReport | None = None
    reason: ReasonCode | None = None
    errors: list[PlatformErrorDetail] | None = None
    platform_status: str | None = Field(default=None, description="The platform's own word for the state.")
    intent: Intent | None = Field(
        default=None,
        description="Our recorded reason for the campaign being off (a pause or a stop we sent), kept because "
        "the platform may show both alike (Genesys `off`).",
    )
    halt: Halt | None = Field(
        default=None,
        description="With STOPPED, PAUSED (and a forced STOPPING): why the campaign is not dialing: paused, "
        "stopped (by us), contacts-exhausted, forced-off, or off (not by a pause or stop of ours).",
    )
    request: PlatformRequest | None = None
    prev_hash: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 (hex) of the previous event of this campaign in canonical form; absent on the first.",
    )
    observed_at: Timestamp = Field(description="When the service observed the change (wall clock).")
    platform_time: Timestamp | None = Field(
        default=None,
        description="Only where the service runs on a scaled clock (`time_scale`, the simulator): the same "
        "instant on that clock, which the tolerance windows and deadlines run on. Absent in production.",
    )


class CampaignStateChangedEvent(StrictModel):
    """The CloudEvents 1.0 envelope. `subject` is the campaign id; `id` is `{campaignId}:{sequence}`.

    Every attribute is required: CloudEvents requires `specversion`, `id`, `source` and `type`, and we
    always write the others (no defaults here, so the published schema says so too)."""

    specversion: Literal["1.0"]
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: Literal["com.campaign-fsm.campaign.state-changed.v1"]
    subject: CampaignId
    time: Timestamp = Field(description="Equals `data.observedAt` (wall clock).")
    datacontenttype: Literal["application/json"]
    data: CampaignStateChanged


def canonical_bytes(event: dict[str, Any]) -> bytes:
    """The form an event is hashed in: its JSON with keys sorted, no whitespace, UTF-8."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def event_hash(event: dict[str, Any]) -> str:
    """The hash the *next* event of the same campaign carries as `prevHash` (the audit chain)."""
    return hashlib.sha256(canonical_bytes(event)).hexdigest()


def rfc3339(ts: float) -> str:
    """UTC RFC 3339 with milliseconds (cut, after taking `ts` to the microsecond: schemas/instants.py)."""
    return epoch_stamp(ts)


def event_id(campaign_id: str, sequence: int) -> str:
    """Deterministic, so a re-delivered event is recognisable by id alone."""
    return f"{campaign_id}:{sequence}"


def state_changed_event(
    campaign_id: str,
    sequence: int,
    from_state: str | None,
    to_state: str,
    cause: str,
    at: float,
    dialer_type: str,
    *,
    dialer_id: str | None = None,
    action: str | None = None,
    command_id: str | None = None,
    anomaly: dict[str, Any] | None = None,
    reason: str | None = None,
    errors: list[dict[str, str]] | None = None,
    platform_status: str | None = None,
    request: dict[str, Any] | None = None,
    intent: str | None = None,
    halt: str | None = None,
    source: str = EVENT_SOURCE,
    wall: float | None = None,
) -> dict[str, Any]:
    """The wire dict of one CampaignStateChangedEvent; encode it with orjson. What every event has
    may be given by position (`StateChange.event` does, on the hot path).

    `at` is the instant on the service's clock. `wall`, given only when that clock is scaled, is the
    same instant on the wall clock: it becomes `time`/`observedAt`, and `at` becomes `platformTime`.
    """
    stamp = epoch_stamp(at if wall is None else wall)
    data: dict[str, Any] = {
        "campaignId": campaign_id,
        "sequence": sequence,
        "from": from_state,
        "to": to_state,
        "cause": cause,
        "dialerType": dialer_type,
        "observedAt": stamp,
    }
    if dialer_id is not None:
        data["dialerId"] = dialer_id
    if action is not None:
        data["action"] = action
    if command_id is not None:
        data["commandId"] = command_id
    if anomaly is not None:
        data["anomaly"] = anomaly
    if reason is not None:
        data["reason"] = reason
    if errors is not None:
        data["errors"] = errors
    if platform_status is not None:
        data["platformStatus"] = platform_status
    if intent is not None:
        data["intent"] = intent
    if halt is not None:
        data["halt"] = halt
    if request is not None:
        data["request"] = request
    if wall is not None:
        data["platformTime"] = epoch_stamp(at)
    return {
        "specversion": "1.0",
        "id": event_id(campaign_id, sequence),
        "source": source,
        "type": STATE_CHANGED_TYPE,
        "subject": campaign_id,
        "time": stamp,
        "datacontenttype": "application/json",
        "data": data,
    }
