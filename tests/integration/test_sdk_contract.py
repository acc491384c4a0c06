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
