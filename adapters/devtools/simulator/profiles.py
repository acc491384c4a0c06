"""The two API profiles' payloads: the same simulated campaign, seen as the guide or as Genesys Cloud.

`guide` shows the seven states directly (`state`, `dialerType`, `contactListId`, `dialerId`).
`genesys` shows `campaignStatus` as PureCloudPlatformClientV2 models it. Genesys has no starting or
pausing status, so the simulator shows (state -> campaignStatus):

    STOPPED -> off      STARTING -> on      RUNNING -> on      STOPPING -> stopping
    PAUSING -> stopping PAUSED -> off       FAILED -> invalid

and a client maps back (docs/platform-profiles.md): on->RUNNING, off/complete/forced_off->STOPPED,
stopping/forced_stopping->STOPPING, invalid->FAILED, anything else unknown. A contact list that is
IMPORTING or LOCKED shows `importStatus.state` IN_PROGRESS in genesys; a ready list has no
`importStatus` at all (the SDK's ImportStatus.state knows only IN_PROGRESS and FAILED).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from schemas.types import CampaignState

from .tenant import SimCampaign, SimContactList, SimDialer

__all__ = [
    "GENESYS_STATUS_OF_STATE",
    "Profile",
    "campaign_errors",
    "campaign_payload",
    "contact_list_payload",
    "error_body",
    "genesys_status",
]

Profile = Literal["guide", "genesys"]

S = CampaignState

GENESYS_STATUS_OF_STATE: dict[CampaignState, str] = {
    S.STOPPED: "off", S.STARTING: "on", S.RUNNING: "on", S.STOPPING: "stopping",
    S.PAUSING: "stopping", S.PAUSED: "off", S.FAILED: "invalid",
}


def genesys_status(campaign: SimCampaign) -> str:
    if campaign.status_override:
        return campaign.status_override
    if campaign.state is S.STOPPED and campaign.halt:
        return campaign.halt  # complete, forced_off
    return GENESYS_STATUS_OF_STATE[campaign.state]


def _ref(entity_id: str, name: str, self_uri: str) -> dict[str, Any]:
    return {"id": entity_id, "name": name, "selfUri": self_uri}


def campaign_payload(
    profile: Profile, campaign: SimCampaign, contact_list: SimContactList | None, dialer: SimDialer | None,
) -> dict[str, Any]:
    if profile == "guide":
        return {
            "id": campaign.id,
            "name": campaign.name,
            "state": campaign.state.value,
            "dialerType": campaign.dialer_type.value,
            "contactListId": campaign.contact_list_id,
            "dialerId": campaign.dialer_id,
            "rules": campaign.rules,
            "errors": [{"code": e["code"], "message": e.get("message", "")} for e in campaign.errors],
        }
    return {
        "id": campaign.id,
        "name": campaign.name,
        "version": campaign.version,
        "campaignStatus": genesys_status(campaign),
        "dialingMode": campaign.dialer_type.value.lower(),
        "contactList": _ref(campaign.contact_list_id, contact_list.name if contact_list else campaign.contact_list_id,
                            f"/api/v2/outbound/contactlists/{campaign.contact_list_id}"),
        "edgeGroup": _ref(campaign.dialer_id, dialer.id if dialer else campaign.dialer_id,
                          f"/api/v2/telephony/providers/edges/edgegroups/{campaign.dialer_id}"),
        "errors": [{"error": e["code"], "details": e.get("message", "")} for e in campaign.errors],
        "selfUri": f"/api/v2/outbound/campaigns/{campaign.id}",
    }


def campaign_errors(profile: Profile, campaign: SimCampaign) -> dict[str, Any]:
    """Guide `/errors` or Genesys `/diagnostics`."""
    if profile == "guide":
        return {"campaignId": campaign.id,
                "errors": [{"code": e["code"], "message": e.get("message", "")} for e in campaign.errors]}
    return {
        "campaignErrors": [{"error": e["code"], "details": e.get("message", "")} for e in campaign.errors],
        "outstandingInteractionsCount": campaign.current_calls,
        "scheduledInteractionsCount": 0,
        "idleAgents": 0,
    }


def contact_list_payload(profile: Profile, contact_list: SimContactList) -> dict[str, Any]:
    if profile == "guide":
        return {"id": contact_list.id, "name": contact_list.name, "state": contact_list.state,
                "importStatus": contact_list.import_status}
    payload: dict[str, Any] = {
        "id": contact_list.id, "name": contact_list.name, "version": contact_list.version,
        "size": contact_list.size, "selfUri": f"/api/v2/outbound/contactlists/{contact_list.id}",
    }
    if contact_list.import_status == "FAILED":
        payload["importStatus"] = {"state": "FAILED", "totalRecords": contact_list.size, "completedRecords": 0,
                                   "percentComplete": 0, "failureReason": "The import job failed."}
    elif contact_list.blocking:
        payload["importStatus"] = {"state": "IN_PROGRESS", "totalRecords": contact_list.size,
                                   "completedRecords": contact_list.size // 2, "percentComplete": 50}
    return payload


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The Genesys-style error body both profiles use."""
    return {"message": message, "code": code, "status": status, "contextId": str(uuid.uuid4()),
            "details": [], "errors": []}
