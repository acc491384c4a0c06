"""Payloads of the dialing platform, for both API profiles.

`guide` is the API as the design guide shows it; `genesys` is the real Genesys Cloud Platform API
as its public SDK (PureCloudPlatformClientV2) models it. Both parse tolerantly: unknown fields are
ignored and Genesys' `campaignStatus` is kept as a plain string, so a value we do not know yet is
recorded rather than rejected (the platform is the truth).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import PlatformModel
from .events import PlatformErrorDetail
from .types import CampaignState, DialerType

__all__ = [
    "ChannelTopic",
    "ChannelTopicListing",
    "DialerStats",
    "EntityRef",
    "GenesysCampaign",
    "GenesysCampaignDiagnostics",
    "GenesysCampaignProgress",
    "GenesysCampaignStats",
    "GenesysContactList",
    "GenesysImportProgress",
    "GenesysImportStatus",
    "GenesysLineDistribution",
    "GenesysLinesUtilization",
    "GuideCampaign",
    "GuideCampaignErrors",
    "GuideContactList",
    "NotificationChannel",
    "NotificationEnvelope",
    "OAuthToken",
    "RestErrorDetail",
]


# --- guide profile -------------------------------------------------------------------------------


class GuideCampaign(PlatformModel):
    """GET /api/v2/outbound/campaigns/{id} (guide section 3). `dialerId` names the dialer instance.

    The guide's payload also carries `rules.dialerRules`; nothing here decides on them, so they are
    left unparsed (ignored like any unknown field), which keeps the notification hot path lean.
    """

    id: str
    name: str = ""
    state: CampaignState
    dialer_type: DialerType
    contact_list_id: str
    dialer_id: str | None = None
    errors: list[PlatformErrorDetail] = Field(default_factory=list)


class GuideCampaignErrors(PlatformModel):
    """GET /api/v2/outbound/campaigns/{id}/errors."""

    campaign_id: str | None = None
    errors: list[PlatformErrorDetail] = Field(default_factory=list)


class GuideContactList(PlatformModel):
    """GET /api/v2/outbound/contactlists/{id}: ready when ACTIVE and importStatus COMPLETED."""

    id: str
    name: str = ""
    state: str  # ACTIVE, IMPORTING, LOCKED, ...
    import_status: str  # COMPLETED, IN_PROGRESS, FAILED, ...


class DialerStats(PlatformModel):
    """GET /api/v2/outbound/dialers/{id}/stats."""

    id: str
    active_calls: int = Field(ge=0)
    licensed_capacity: int = Field(ge=0)


# --- genesys profile -----------------------------------------------------------------------------


class EntityRef(PlatformModel):
    id: str
    name: str | None = None
    self_uri: str | None = None


class RestErrorDetail(PlatformModel):
    error: str
    details: str | None = None


class GenesysCampaign(PlatformModel):
    """Genesys `Campaign`: `campaignStatus` is on/stopping/off/complete/invalid/forced_off/forced_stopping."""

    id: str
    name: str = ""
    version: int | None = None
    campaign_status: str
    dialing_mode: str | None = None
    contact_list: EntityRef | None = None
    edge_group: EntityRef | None = None
    site: EntityRef | None = None
    errors: list[RestErrorDetail] = Field(default_factory=list)
    self_uri: str | None = None


class GenesysImportStatus(PlatformModel):
    state: str | None = None  # IN_PROGRESS, FAILED
    total_records: int | None = None
    completed_records: int | None = None
    percent_complete: int | None = None
    failure_reason: str | None = None


class GenesysContactList(PlatformModel):
    id: str
    name: str = ""
    version: int | None = None
    import_status: GenesysImportStatus | None = None
    size: int | None = None


class GenesysCampaignDiagnostics(PlatformModel):
    """GET /api/v2/outbound/campaigns/{id}/diagnostics: `campaignErrors` explains a stuck campaign."""

    campaign_errors: list[RestErrorDetail] = Field(default_factory=list)
    outstanding_interactions_count: int | None = None
    scheduled_interactions_count: int | None = None
    idle_agents: int | None = None


class GenesysLinesUtilization(PlatformModel):
    """The SDK's `CampaignLinesUtilization`: lines assigned to the campaign, lines available in its
    edge group or site."""

    assigned_outbound_lines: int | None = None
    total_available_outbound_lines: int | None = None


class GenesysCampaignStats(PlatformModel):
    """GET /api/v2/outbound/campaigns/{id}/stats (SDK `CampaignStats`): `outstandingCalls` is this
    campaign's own calls; `linesUtilization` speaks for its whole edge group or site."""

    outstanding_calls: int | None = None
    scheduled_calls: int | None = None
    idle_agents: int | None = None
    adjusted_calls_per_agent: float | None = None
    lines_utilization: GenesysLinesUtilization | None = None


class GenesysLineDistribution(PlatformModel):
    """GET /api/v2/outbound/campaigns/{id}/linedistribution (SDK >= 207, `CampaignOutboundLinesDistribution`),
    for the campaign's edge group or site: `maxOutboundLineCount` the outbound calls it may place (its
    lines under Max Line Utilization), `availableOutboundLines` those not in use, `maxLineUtilization`
    the ratio itself. The per-campaign lists are not needed here and are ignored."""

    max_outbound_line_count: int | None = None
    max_line_utilization: float | None = None
    available_outbound_lines: int | None = None
    reserved_lines: int | None = None


class GenesysCampaignProgress(PlatformModel):
    """GET /api/v2/outbound/campaigns/{id}/progress (SDK model `CampaignProgress`): how far through its
    contact list the campaign is. `DELETE` of the same route resets it (a recycle)."""

    campaign: EntityRef | None = None
    contact_list: EntityRef | None = None
    number_of_contacts_called: int | None = None
    number_of_contacts_messaged: int | None = None
    total_number_of_contacts: int | None = None
    percentage: int | None = None
    number_of_contacts_skipped: dict[str, int] | None = None


# --- shared: auth and notifications --------------------------------------------------------------


class OAuthToken(PlatformModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(gt=0)


class NotificationChannel(PlatformModel):
    """POST /api/v2/notifications/channels."""

    id: str
    connect_uri: str
    expires: str | None = None


class GenesysImportProgress(PlatformModel):
    """The body of `v2.outbound.contactlists.{id}.importstatus` (the SDK's
    ContactlistImportStatusImportStatus): `importState` IN_PROGRESS or FAILED, `percentageComplete`."""

    import_state: str | None = None
    percentage_complete: int | None = None
    total_records: int | None = None
    completed_records: int | None = None
    failure_reason: str | None = None


class ChannelTopic(PlatformModel):
    """One topic of a subscription answer (the SDK's ChannelTopic): `state` Permitted or Rejected."""

    id: str
    state: str | None = None
    rejection_reason: str | None = None


class ChannelTopicListing(PlatformModel):
    """PUT/POST/GET .../channels/{id}/subscriptions (the SDK's ChannelTopicEntityListing)."""

    entities: list[ChannelTopic] = Field(default_factory=list)

    def rejected(self) -> dict[str, str]:
        """Rejected topics and why. A topic without a state (an older answer) counts as permitted."""
        return {t.id: t.rejection_reason or "rejected" for t in self.entities if t.state == "Rejected"}


class NotificationEnvelope(PlatformModel):
    """One WebSocket message: `{topicName, version, eventBody, metadata}`."""

    topic_name: str
    version: str | None = None
    event_body: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
