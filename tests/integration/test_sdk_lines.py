"""Contract: the simulator's genesys line distribution and campaign stats, read by the public SDK.

PureCloudPlatformClientV2 must deserialise them into its own models (`CampaignOutboundLinesDistribution`,
`CampaignStats` with `CampaignLinesUtilization`) with the values the client relies on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.devtools.simulator import SimulatorConfig, parse_tenant, run_simulator

pytestmark = pytest.mark.integration

PureCloud = pytest.importorskip("PureCloudPlatformClientV2")

TENANT = {
    "dialers": [{"id": "edge-group-1", "licensedCapacity": 300, "maxLineUtilization": 0.6}],
    "contactLists": [{"id": "list-1"}],
    "campaigns": [
        {"id": "busy", "dialerType": "PREDICTIVE", "dialerId": "edge-group-1", "contactListId": "list-1",
         "state": "RUNNING", "activeCalls": 120},
        {"id": "idle", "dialerType": "POWER", "dialerId": "edge-group-1", "contactListId": "list-1"},
    ],
}


def _read(url: str) -> dict[str, Any]:
    api_client = PureCloud.ApiClient(host=url)
    api_client.get_client_credentials_token("sdk-client", "sdk-secret")
    outbound = PureCloud.OutboundApi(api_client)
    return {
        "lines": outbound.get_outbound_campaign_linedistribution("idle", include_only_active_campaigns=True),
        "stats": outbound.get_outbound_campaign_stats("busy"),
    }


async def test_sdk_reads_line_distribution_and_lines_utilization() -> None:
    config = SimulatorConfig(profile="genesys", client_id="sdk-client", client_secret="sdk-secret")
    async with run_simulator(parse_tenant(TENANT), config) as (url, _sim):
        got = await asyncio.to_thread(_read, url)
    lines = got["lines"]
    assert isinstance(lines, PureCloud.CampaignOutboundLinesDistribution)
    assert (lines.max_outbound_line_count, lines.available_outbound_lines, lines.max_line_utilization) == (180, 60, 0.6)
    assert lines.campaign.id == "idle" and lines.reserved_lines == 0
    allocated = lines.campaigns_with_dynamically_allocated_lines
    assert [a.campaign.id for a in allocated] == ["busy"]
    assert isinstance(allocated[0], PureCloud.CampaignOutboundLinesAllocation) and allocated[0].lines_assigned == 120
    stats = got["stats"]
    assert isinstance(stats, PureCloud.CampaignStats) and stats.outstanding_calls == 120
    assert isinstance(stats.lines_utilization, PureCloud.CampaignLinesUtilization)
    assert (stats.lines_utilization.assigned_outbound_lines,
            stats.lines_utilization.total_available_outbound_lines) == (120, 60)
