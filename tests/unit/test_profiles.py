"""Both profiles' payloads translated into the core's value types."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.platform.profiles import (
    GENESYS_TURN,
    SUPPORTED_ACTIONS,
    SUPPORTS_RECYCLE,
    UNKNOWN_DIALER_ID,
    Profile,
    campaign_from_payload,
    contact_list_from_payload,
    dialer_load_from_payload,
    errors_from_payload,
    genesys_state,
)
from fsm.table import COMMAND_EDGES
from schemas.base import ContractError
from schemas.types import Action, CampaignState, DialerType, Halt


def _genesys_campaign(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "c1",
        "name": "Q3",
        "version": 7,
        "campaignStatus": "on",
        "dialingMode": "predictive",
        "contactList": {"id": "l1", "name": "List", "selfUri": "/api/v2/outbound/contactlists/l1"},
        "edgeGroup": {"id": "eg1", "name": "Edge"},
        "errors": [],
        "selfUri": "/api/v2/outbound/campaigns/c1",
        "someFieldWeDoNotKnow": {"x": 1},
    }
    body.update(over)
    return body


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("on", CampaignState.RUNNING),
        ("off", CampaignState.STOPPED),
        ("complete", CampaignState.STOPPED),
        ("forced_off", CampaignState.STOPPED),
        ("stopping", CampaignState.STOPPING),
        ("forced_stopping", CampaignState.STOPPING),
        ("invalid", CampaignState.FAILED),
        ("ON", CampaignState.RUNNING),
        ("paused_by_magic", None),
        ("", None),
    ],
)
def test_genesys_campaign_status_maps_to_the_seven_states(status: str, state: CampaignState | None) -> None:
    assert genesys_state(status) == state
    snap = campaign_from_payload("genesys", _genesys_campaign(campaignStatus=status))
    assert snap.state == state
    assert snap.platform_status == status  # recorded as sent, even when unknown


@pytest.mark.parametrize(
    ("mode", "dialer_type"),
    [
        ("predictive", DialerType.PREDICTIVE),
        ("progressive", DialerType.PROGRESSIVE),
        ("power", DialerType.POWER),
        ("Power", DialerType.POWER),
        ("preview", DialerType.PROGRESSIVE),
        ("agentless", DialerType.PREDICTIVE),
        (None, DialerType.PREDICTIVE),
    ],
)
def test_genesys_dialing_mode_maps_to_a_dialer_type(mode: str | None, dialer_type: DialerType) -> None:
    assert campaign_from_payload(Profile.GENESYS, _genesys_campaign(dialingMode=mode)).dialer_type is dialer_type


def test_genesys_campaign_fields() -> None:
    snap = campaign_from_payload(
        "genesys", _genesys_campaign(errors=[{"error": "contact.list.locked", "details": "import running"}])
    )
    assert (snap.id, snap.dialer_id, snap.contact_list_id, snap.version) == ("c1", "eg1", "l1", 7)
    assert snap.errors == ({"code": "contact.list.locked", "message": "import running"},)


def test_genesys_campaign_without_edge_group_uses_site_then_unknown() -> None:
    with_site = _genesys_campaign(edgeGroup=None, site={"id": "site9"})
    assert campaign_from_payload("genesys", with_site).dialer_id == "site9"
    bare = _genesys_campaign(edgeGroup=None, contactList=None)
    snap = campaign_from_payload("genesys", bare)
    assert snap.dialer_id == UNKNOWN_DIALER_ID
    assert snap.contact_list_id is None


def test_guide_campaign_fields() -> None:
    body = {
        "id": "a1", "name": "Q3", "state": "STARTING", "dialerType": "PREDICTIVE",
        "contactListId": "list-9", "dialerId": "d1",
        "rules": {"dialerRules": {"abandonRate": 0.03}},
        "errors": [{"code": "x", "message": "y"}],
    }
    snap = campaign_from_payload("guide", body)
    assert snap.state is CampaignState.STARTING
    assert snap.platform_status == "STARTING"
    assert (snap.dialer_type, snap.dialer_id, snap.contact_list_id) == (DialerType.PREDICTIVE, "d1", "list-9")
    assert snap.errors == ({"code": "x", "message": "y"},)
    assert snap.version is None


def test_guide_campaign_without_dialer_id_groups_under_unknown() -> None:
    body = {"id": "a1", "state": "STOPPED", "dialerType": "POWER", "contactListId": "l"}
    assert campaign_from_payload("guide", body).dialer_id == UNKNOWN_DIALER_ID


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"id": "a1", "state": "DANCING", "dialerType": "POWER", "contactListId": "l"}, "state"),
        ({"id": "a1", "state": "STOPPED", "contactListId": "l"}, "dialerType"),
        ({"state": "STOPPED", "dialerType": "POWER", "contactListId": "l"}, "id"),
    ],
)
def test_bad_guide_payload_names_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(ContractError) as info:
        campaign_from_payload("guide", payload)
    assert field in str(info.value)


def test_non_object_payload_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match="expected a JSON object"):
        campaign_from_payload("genesys", ["not", "an", "object"])


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="purecloud"):
        campaign_from_payload("purecloud", {})


@pytest.mark.parametrize(
    ("state", "import_status", "ready", "locked"),
    [
        ("ACTIVE", "COMPLETED", True, False),
        ("IMPORTING", "IN_PROGRESS", False, True),
        ("LOCKED", "COMPLETED", False, True),
        ("ACTIVE", "IN_PROGRESS", False, True),
        ("ACTIVE", "FAILED", False, False),
        ("ARCHIVED", "COMPLETED", False, False),
    ],
)
def test_guide_contact_list_readiness(state: str, import_status: str, ready: bool, locked: bool) -> None:
    snap = contact_list_from_payload("guide", {"id": "l1", "state": state, "importStatus": import_status})
    assert (snap.ready, snap.locked) == (ready, locked)
    assert state in snap.detail and import_status in snap.detail


@pytest.mark.parametrize(
    ("import_status", "ready", "locked"),
    [
        (None, True, False),
        ({"state": "IN_PROGRESS", "percentComplete": 40}, False, True),
        ({"state": "FAILED", "failureReason": "bad csv"}, False, False),
        ({"state": "COMPLETE"}, True, False),
        ({}, True, False),
    ],
)
def test_genesys_contact_list_readiness(import_status: dict[str, Any] | None, ready: bool, locked: bool) -> None:
    body: dict[str, Any] = {"id": "l1", "name": "L", "version": 2, "size": 10}
    if import_status is not None:
        body["importStatus"] = import_status
    snap = contact_list_from_payload("genesys", body)
    assert (snap.ready, snap.locked) == (ready, locked)
    if import_status and import_status.get("failureReason"):
        assert "bad csv" in snap.detail


def test_errors_from_both_profiles() -> None:
    guide = errors_from_payload("guide", {"campaignId": "c", "errors": [{"code": "lock", "message": "held"}]})
    assert guide == [{"code": "lock", "message": "held"}]
    genesys = errors_from_payload("genesys", {"campaignErrors": [{"error": "no.agents"}], "idleAgents": 0})
    assert genesys == [{"code": "no.agents", "message": ""}]


def test_dialer_load_from_both_profiles() -> None:
    guide = dialer_load_from_payload("guide", {"id": "d1", "activeCalls": 85, "licensedCapacity": 100},
                                     dialer_id="d1")
    assert (guide.dialer_id, guide.active_calls, guide.capacity) == ("d1", 85, 100)
    zero = dialer_load_from_payload("guide", {"id": "d1", "activeCalls": 3, "licensedCapacity": 0}, dialer_id="d1")
    assert zero.capacity is None
    genesys = dialer_load_from_payload("genesys", {"outstandingCalls": 12}, dialer_id="eg1", capacity=50)
    assert (genesys.dialer_id, genesys.active_calls, genesys.capacity) == ("eg1", 12, 50)
    unknown = dialer_load_from_payload("genesys", {}, dialer_id="eg1")
    assert (unknown.active_calls, unknown.capacity) == (0, None)


def test_supported_actions_per_profile() -> None:
    # Issue 14: Genesys' off is its pause, so pause and resume exist there (turned off / on again).
    assert SUPPORTED_ACTIONS[Profile.GUIDE] == {Action.START, Action.STOP, Action.PAUSE, Action.RESUME}
    assert SUPPORTED_ACTIONS[Profile.GENESYS] == {Action.START, Action.STOP, Action.PAUSE, Action.RESUME}
    assert SUPPORTS_RECYCLE == {Profile.GUIDE: False, Profile.GENESYS: True}


@pytest.mark.parametrize(
    ("status", "decides", "halt"),
    [
        ("on", False, None),
        ("off", True, None),
        ("stopping", True, None),
        ("complete", False, Halt.CONTACTS_EXHAUSTED),
        ("forced_off", False, Halt.FORCED_OFF),
        ("forced_stopping", False, Halt.FORCED_OFF),
        ("invalid", False, None),
    ],
)
def test_genesys_off_and_stopping_are_read_by_our_intent(status: str, decides: bool, halt: Halt | None) -> None:
    """Only `off` and `stopping` cannot tell a pause from a stop; complete and forced_* name their reason."""
    snap = campaign_from_payload("genesys", _genesys_campaign(campaignStatus=status))
    assert (snap.intent_decides, snap.halt) == (decides, halt)
    guide = campaign_from_payload("guide", {"id": "c1", "state": "STOPPED", "dialerType": "POWER",
                                            "contactListId": "l1", "dialerId": "d1"})
    assert (guide.intent_decides, guide.halt) == (False, None)


def test_genesys_turn_covers_every_command_edge_of_the_table() -> None:
    """Each (action, source) the table allows is sent somehow on Genesys: on, off, or nothing."""
    edges = {(e.action, e.source) for e in COMMAND_EDGES if e.action is not Action.RESET}
    assert set(GENESYS_TURN) == edges
    assert GENESYS_TURN[(Action.PAUSE, CampaignState.RUNNING)] == GENESYS_TURN[(Action.STOP, CampaignState.RUNNING)] \
        == "off"
    assert GENESYS_TURN[(Action.RESUME, CampaignState.PAUSED)] == GENESYS_TURN[(Action.START, CampaignState.STOPPED)] \
        == "on"
    assert GENESYS_TURN[(Action.STOP, CampaignState.PAUSED)] is None  # already off: only our intent changes
