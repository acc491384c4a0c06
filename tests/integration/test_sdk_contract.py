"""Contract: the public SDK PureCloudPlatformClientV2, pointed at the simulator in genesys profile.

The SDK is synchronous; it runs in a worker thread against the in-process server. It obtains its
token from the simulator's /oauth/token itself (`get_client_credentials_token`), then reads a
campaign and a contact list and must get typed objects with the fields the client relies on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.devtools.simulator import SimulatorConfig, parse_tenant, run_simulator
from adapters.devtools.simulator.engine import Timing

pytestmark = pytest.mark.integration

PureCloud = pytest.importorskip("PureCloudPlatformClientV2")

TENANT = {
    "dialers": [{"id": "edge-group-1", "licensedCapacity": 100}],
    "contactLists": [{"id": "list-ready", "name": "Ready list"},
                     {"id": "list-locked", "name": "Locked list", "state": "LOCKED"}],
    "campaigns": [
        {"id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "name": "Q3 Customer Retention", "dialerType": "PREDICTIVE",
         "dialerId": "edge-group-1", "contactListId": "list-ready", "state": "RUNNING", "activeCalls": 12},
        {"id": "progressive-1", "name": "Progressive", "dialerType": "PROGRESSIVE", "dialerId": "edge-group-1",
         "contactListId": "list-locked", "state": "STOPPED"},
    ],
}


def _read_with_sdk(url: str, client_id: str, client_secret: str) -> dict[str, Any]:
    api_client = PureCloud.ApiClient(host=url)
    api_client.get_client_credentials_token(client_id, client_secret)
    outbound = PureCloud.OutboundApi(api_client)
    return {
        "token": api_client.access_token,
        "running": outbound.get_outbound_campaign("a1b2c3d4-e5f6-7890-abcd-ef1234567890"),
        "stopped": outbound.get_outbound_campaign("progressive-1"),
        "ready": outbound.get_outbound_contactlist("list-ready"),
        "locked": outbound.get_outbound_contactlist("list-locked"),
    }


async def test_sdk_reads_typed_campaign_and_contact_list() -> None:
    config = SimulatorConfig(profile="genesys", client_id="sdk-client", client_secret="sdk-secret")
    async with run_simulator(parse_tenant(TENANT), config) as (url, sim):
        got = await asyncio.to_thread(_read_with_sdk, url, "sdk-client", "sdk-secret")
    assert got["token"] and sim.tokens.valid(f"Bearer {got['token']}")

    running = got["running"]
    assert isinstance(running, PureCloud.Campaign)
    assert running.id == "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
    assert running.name == "Q3 Customer Retention"
    assert running.campaign_status == "on"
    assert running.dialing_mode == "predictive"
    assert running.version == 1
    assert isinstance(running.contact_list, PureCloud.DomainEntityRef)
    assert running.contact_list.id == "list-ready" and running.contact_list.name == "Ready list"
    assert running.edge_group.id == "edge-group-1"
    assert running.self_uri == "/api/v2/outbound/campaigns/a1b2c3d4-e5f6-7890-abcd-ef1234567890"
    assert (got["stopped"].campaign_status, got["stopped"].dialing_mode) == ("off", "progressive")

    ready = got["ready"]
    assert isinstance(ready, PureCloud.ContactList)
    assert (ready.id, ready.name, ready.version, ready.size) == ("list-ready", "Ready list", 1, 1000)
    assert ready.import_status is None
    locked = got["locked"]
    assert isinstance(locked.import_status, PureCloud.ImportStatus)
    assert locked.import_status.state == "IN_PROGRESS"
    assert locked.import_status.percent_complete == 50

    reads = sim.traffic.select(kind="read")
    assert [r.status for r in reads] == [200, 200, 200, 200]
    assert sim.traffic.records[0].kind == "auth"


def _progress_with_sdk(url: str, client_id: str, client_secret: str, campaign_id: str) -> dict[str, Any]:
    api_client = PureCloud.ApiClient(host=url)
    api_client.get_client_credentials_token(client_id, client_secret)
    outbound = PureCloud.OutboundApi(api_client)
    before = outbound.get_outbound_campaign_progress(campaign_id)
    outbound.post_outbound_campaign_stop(campaign_id)  # our pause and our stop: Genesys' off
    recycled = outbound.delete_outbound_campaign_progress(campaign_id)
    after = outbound.get_outbound_campaign_progress(campaign_id)
    return {"before": before, "recycled": recycled, "after": after,
            "campaign": outbound.get_outbound_campaign(campaign_id)}


async def test_sdk_reads_progress_and_recycles() -> None:
    """Issue 14: GET .../progress deserialises into the SDK's CampaignProgress; the SDK's own
    delete_outbound_campaign_progress (recycle) and post_outbound_campaign_stop are served."""
    config = SimulatorConfig(profile="genesys", client_id="sdk-client", client_secret="sdk-secret",
                             timing=Timing(records_per_second=1000.0))
    campaign_id = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
    async with run_simulator(parse_tenant(TENANT), config, time_scale=1.0) as (url, sim):
        await asyncio.sleep(0.05)  # ~50 records dialled
        got = await asyncio.to_thread(_progress_with_sdk, url, "sdk-client", "sdk-secret", campaign_id)
        sim.force_off("progressive-1")
        forced = await asyncio.to_thread(_read_with_sdk, url, "sdk-client", "sdk-secret")
    before, after = got["before"], got["after"]
    assert isinstance(before, PureCloud.CampaignProgress) and isinstance(after, PureCloud.CampaignProgress)
    assert before.campaign.id == campaign_id and before.contact_list.id == "list-ready"
    assert before.total_number_of_contacts == 1000 and before.number_of_contacts_called > 0
    assert 0 <= before.percentage <= 100
    assert got["recycled"] is None
    assert after.number_of_contacts_called == 0, "recycled: back to record one"
    assert got["campaign"].campaign_status in ("stopping", "off")
    assert forced["stopped"].campaign_status == "forced_off"  # an allowed value of Campaign.campaign_status
    assert [r.status for r in sim.traffic.records if r.kind == "command"] == [202, 204]
