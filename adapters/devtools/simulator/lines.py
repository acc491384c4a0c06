"""Lines and places, genesys profile: line distribution and campaign stats, and the active-campaign cap.

Genesys has no dialer object: a campaign runs on an edge group or a site (the simulator's dialer),
whose Edges carry the lines (`licensedCapacity` here); Max Line Utilization caps the share outbound
may use. Both answers below are computed from that group's lines and the calls of *all* its
campaigns, shaped as the SDK's models (PureCloudPlatformClientV2 269):

- `GET /api/v2/outbound/campaigns/{id}/linedistribution` -> `CampaignOutboundLinesDistribution`:
  `maxOutboundLineCount` = floor(lines x maxLineUtilization), `availableOutboundLines` = that less
  the calls in progress on the group, `maxLineUtilization`, `reservedLines` 0, and each campaign of
  the group under `campaignsWithDynamicallyAllocatedLines` (only the active ones with
  `includeOnlyActiveCampaigns=true`);
- `GET /api/v2/outbound/campaigns/{id}/stats` -> `CampaignStats`: the campaign's own
  `outstandingCalls`, and `linesUtilization` {`assignedOutboundLines`: its own calls,
  `totalAvailableOutboundLines`: the group's available lines}.

Reading "available" as "not in use now" is our interpretation of the SDK's words ("Number of
available outbound lines in Campaign's Edge Group or Site"); Genesys does not say more in public.

The cap: Genesys runs at most 50 voice campaigns at once per organisation (on, stopping and
forced_stopping count). With `SimulatorConfig.active_campaign_cap` set, a start or resume that would
make one more is refused; the words of that refusal are not public, so `CAP_CODE` / `cap_message`
are a guess (400, like Genesys' other refusals of a campaign change).
"""

from __future__ import annotations

import math
from typing import Any

from .profiles import genesys_status
from .tenant import SimCampaign, SimDialer, Tenant

__all__ = ["ACTIVE_STATUSES", "CAP_CODE", "active_campaigns", "campaign_stats", "cap_message", "line_distribution"]

ACTIVE_STATUSES = frozenset({"on", "stopping", "forced_stopping"})
CAP_CODE = "outbound.campaign.active.limit.exceeded"


def active_campaigns(tenant: Tenant) -> list[str]:
    """The campaigns holding a place under the organisation's cap, as Genesys counts them."""
    return [c.id for c in tenant.campaigns.values() if genesys_status(c) in ACTIVE_STATUSES]


def cap_message(active: int, cap: int) -> str:
    return (f"Unable to start campaign: the organization has reached its maximum of {cap} active campaigns "
            f"({active} active).")


def _group_calls(tenant: Tenant, dialer_id: str) -> int:
    return sum(c.current_calls for c in tenant.campaigns.values() if c.dialer_id == dialer_id)


def _max_lines(dialer: SimDialer | None) -> int:
    if dialer is None:
        return 0
    return math.floor(dialer.licensed_capacity * dialer.max_line_utilization + 1e-9)


def _ref(campaign: SimCampaign, *, named: bool) -> dict[str, Any]:
    ref: dict[str, Any] = {"id": campaign.id, "selfUri": f"/api/v2/outbound/campaigns/{campaign.id}"}
    if named:
        ref["name"] = campaign.name
    return ref


def line_distribution(tenant: Tenant, campaign: SimCampaign, *, only_active: bool = False) -> dict[str, Any]:
    dialer = tenant.dialers.get(campaign.dialer_id)
    most = _max_lines(dialer)
    group = [c for c in tenant.campaigns.values() if c.dialer_id == campaign.dialer_id
             and (not only_active or genesys_status(c) in ACTIVE_STATUSES)]
    return {
        "campaign": _ref(campaign, named=False),
        "maxOutboundLineCount": most,
        "maxLineUtilization": dialer.max_line_utilization if dialer is not None else 1.0,
        "availableOutboundLines": max(0, most - _group_calls(tenant, campaign.dialer_id)),
        "reservedLines": 0,
        "campaignsWithReservedLines": [],
        "campaignsWithDynamicallyAllocatedLines": [
            {"campaign": _ref(c, named=True), "campaignWeight": 1, "linesAssigned": c.current_calls,
             "legacyWeight": False} for c in group],
    }


def campaign_stats(tenant: Tenant, campaign: SimCampaign) -> dict[str, Any]:
    most = _max_lines(tenant.dialers.get(campaign.dialer_id))
    return {
        "outstandingCalls": campaign.current_calls, "scheduledCalls": 0, "idleAgents": 0,
        "adjustedCallsPerAgent": 1.0,
        "linesUtilization": {
            "assignedOutboundLines": campaign.current_calls,
            "totalAvailableOutboundLines": max(0, most - _group_calls(tenant, campaign.dialer_id)),
        },
    }
