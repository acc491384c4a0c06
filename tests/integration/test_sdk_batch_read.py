"""The SDK itself as the oracle (issue 14, items 1 and 8): its login-host rewrite equals ours for every
region, and its `get_outbound_campaigns(id=[...], page_size=100)` reads typed campaigns by id from
the simulator (the SDK joins the ids with commas; our client repeats `id=`: both are served)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.devtools.simulator import SimulatorConfig, generate_tenant, run_simulator
from adapters.platform.oauth import login_url_for
from tests.unit.test_platform_client_genesys import REGIONS

pytestmark = pytest.mark.integration

PureCloud = pytest.importorskip("PureCloudPlatformClientV2")


@pytest.mark.parametrize("region", REGIONS)
def test_our_login_host_is_the_sdks(region: str) -> None:
    api = f"https://api.{region}"
    sdk = PureCloud.ApiClient(host=api)
    assert login_url_for(api) == sdk.get_conf_url("login", api) == f"https://login.{region}"


def _list_with_sdk(url: str, client_id: str, client_secret: str, ids: list[str]) -> Any:
    api_client = PureCloud.ApiClient(host=url)
    api_client.get_client_credentials_token(client_id, client_secret)
    return PureCloud.OutboundApi(api_client).get_outbound_campaigns(id=ids, page_size=100, page_number=1)


async def test_sdk_reads_campaigns_by_id_in_one_request() -> None:
    config = SimulatorConfig(profile="genesys", client_id="sdk-client", client_secret="sdk-secret")
    async with run_simulator(generate_tenant(12, 2), config) as (url, sim):
        wanted = sorted(sim.tenant.campaigns)[3:8]
        listing = await asyncio.to_thread(_list_with_sdk, url, "sdk-client", "sdk-secret", wanted)
    assert isinstance(listing, PureCloud.CampaignEntityListing)
    assert all(isinstance(c, PureCloud.Campaign) for c in listing.entities)
    assert [c.id for c in listing.entities] == wanted and listing.total == 5
    reads = sim.traffic.select(kind="read")
    assert [(r.path, r.status) for r in reads] == [("/api/v2/outbound/campaigns", 200)]
