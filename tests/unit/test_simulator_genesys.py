"""The genesys profile as Genesys Cloud is (issue 14, item 9): no hidden state behind a visible status,
`version` only on visible changes, the channel list and HEAD, the 20-channel cap with its eviction,
per-topic subscription states and the contact-list importstatus topic."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from adapters.devtools.simulator import FaultConfig, Simulator, SimulatorConfig, parse_tenant
from adapters.devtools.simulator.channels import Connection
from fsm.testing import FakeClock
from schemas.types import CampaignState

S = CampaignState
BASE = "/api/v2/outbound"
CHANNELS = "/api/v2/notifications/channels"

TENANT = {
    "dialers": [{"id": "d1"}],
    "contactLists": [{"id": "l1", "name": "List one", "size": 200}],
    "campaigns": [
        {"id": f"c{i}", "dialerType": "PREDICTIVE", "dialerId": "d1", "contactListId": "l1"} for i in range(1, 6)
    ],
}


@pytest.fixture
def sim() -> Simulator:
    return Simulator(parse_tenant(TENANT), SimulatorConfig(profile="genesys", faults=FaultConfig(read_limit_per_s=0)),
                     clock=FakeClock())


@pytest.fixture
async def xc(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim",
                                 headers={"Authorization": f"Bearer {sim.mint_token()}"}) as client:
        yield client


def _messages(conn: Connection) -> list[dict[str, object]]:
    out = []
    while not conn.queue.empty():
        item = conn.queue.get_nowait()
        if isinstance(item, str):
            out.append(orjson.loads(item))
    return out


# --- no hidden state --------------------------------------------------------------------------------


async def test_a_stop_right_after_a_start_is_accepted_as_on_says(sim: Simulator, xc: httpx.AsyncClient) -> None:
    """The issue's failure 9: `on` right after a start, yet a stop was refused 400 ("cannot stop from STARTING")."""
    assert (await xc.post(f"{BASE}/campaigns/c1/start")).status_code == 202
    assert (await xc.get(f"{BASE}/campaigns/c1")).json()["campaignStatus"] == "on"
    stop = await xc.post(f"{BASE}/campaigns/c1/stop")
    assert stop.status_code == 202, stop.json()
    assert (await xc.get(f"{BASE}/campaigns/c1")).json()["campaignStatus"] == "stopping"
    sim.advance(200)
    assert (await xc.get(f"{BASE}/campaigns/c1")).json()["campaignStatus"] == "off"


async def test_a_put_reusing_its_own_answers_version_is_not_a_conflict(sim: Simulator, xc: httpx.AsyncClient) -> None:
    """The issue's failure 9: the start finishing behind `on` bumped `version`, so the next PUT got 409."""
    campaign = (await xc.get(f"{BASE}/campaigns/c2")).json()
    on = await xc.put(f"{BASE}/campaigns/c2", json={**campaign, "campaignStatus": "on"})
    assert on.status_code == 200 and on.json()["campaignStatus"] == "on"
    sim.advance(60)  # the predictive start (8 s) is long over
    assert (await xc.get(f"{BASE}/campaigns/c2")).json()["version"] == on.json()["version"]
    off = await xc.put(f"{BASE}/campaigns/c2", json={**on.json(), "campaignStatus": "off"})
    assert off.status_code == 200, off.json()
    assert off.json()["campaignStatus"] == "stopping" and off.json()["version"] == on.json()["version"] + 1


async def test_a_stop_cut_short_start_is_refused_nowhere_twice(sim: Simulator, xc: httpx.AsyncClient) -> None:
    await xc.post(f"{BASE}/campaigns/c1/start")
    assert (await xc.post(f"{BASE}/campaigns/c1/stop")).status_code == 202
    again = await xc.post(f"{BASE}/campaigns/c1/stop")  # `stopping`: Genesys refuses a second stop
    assert again.status_code == 400
    assert sim.engine.transitions["c1"].kind == "stop"  # the start's timer is gone, not finishing later
    sim.advance(200)
    assert sim.state_of("c1") is S.STOPPED


async def test_version_and_notifications_follow_only_visible_changes(sim: Simulator, xc: httpx.AsyncClient) -> None:
    channel = sim.hub.create()
    sim.hub.subscribe(channel.id, ["v2.outbound.campaigns.c3"], replace=True)
    conn = sim.hub.attach(channel)
    await xc.post(f"{BASE}/campaigns/c3/start")
    sim.advance(20)  # STARTING -> RUNNING, invisible
    await xc.post(f"{BASE}/campaigns/c3/stop")
    sim.advance(200)
    events = [m for m in _messages(conn) if m["topicName"] == "v2.outbound.campaigns.c3"]
    seen = [(e["eventBody"]["campaignStatus"], e["eventBody"]["version"]) for e in events]  # type: ignore[index]
    assert seen == [("on", 2), ("stopping", 3), ("off", 4)]
    assert sim.states("c3") == [S.STARTING, S.RUNNING, S.STOPPING, S.STOPPED]  # the admin history keeps all


async def test_the_dialer_limit_counts_only_visibly_changing_campaigns(sim: Simulator, xc: httpx.AsyncClient) -> None:
    for cid in ("c1", "c2", "c3", "c4"):  # four starts behind `on`: none is refused as "in progress"
        assert (await xc.post(f"{BASE}/campaigns/{cid}/start")).status_code == 202
    for cid in ("c1", "c2", "c3"):
        assert (await xc.post(f"{BASE}/campaigns/{cid}/stop")).status_code == 202
    refused = await xc.post(f"{BASE}/campaigns/c4/stop")  # three visibly `stopping` on d1
    assert refused.status_code == 409


# --- channels: list, HEAD, the cap --------------------------------------------------------------------


async def test_channel_list_and_head(sim: Simulator, xc: httpx.AsyncClient) -> None:
    assert (await xc.get(CHANNELS)).json() == {"entities": []}
    made = (await xc.post(CHANNELS)).json()
    listed = (await xc.get(CHANNELS)).json()["entities"]
    assert listed == [made] and set(made) == {"id", "connectUri", "expires"}
    head = await xc.head(f"{CHANNELS}/{made['id']}")
    assert head.status_code == 200 and head.content == b""
    assert (await xc.head(f"{CHANNELS}/nope")).status_code == 404
    sim.hub.expire(made["id"])
    assert (await xc.head(f"{CHANNELS}/{made['id']}")).status_code == 404


async def test_a_21st_channel_removes_the_least_recently_used_idle_one_first(sim: Simulator,
                                                                             xc: httpx.AsyncClient) -> None:
    ids = [(await xc.post(CHANNELS)).json()["id"] for _ in range(20)]
    connected = {ids[0]: sim.hub.attach(sim.hub.channels[ids[0]]), ids[1]: sim.hub.attach(sim.hub.channels[ids[1]])}
    await xc.get(f"{CHANNELS}/{ids[2]}/subscriptions")  # a use: ids[2] is no longer the oldest idle one
    assert (await xc.post(CHANNELS)).status_code == 200  # the 21st: silently, no error
    assert sim.hub.evicted == [ids[3]]  # ids[0], ids[1] are older but connected; ids[2] was used since
    assert (await xc.head(f"{CHANNELS}/{ids[3]}")).status_code == 404
    assert (await xc.get(f"{CHANNELS}/{ids[3]}/subscriptions")).status_code == 404
    assert len((await xc.get(CHANNELS)).json()["entities"]) == 20
    for channel in sim.hub.channels.values():  # now every channel has a live socket
        if channel.id not in connected:
            sim.hub.attach(channel)
    await xc.post(CHANNELS)  # no idle one left: the least recently used connected one goes
    assert sim.hub.evicted[-1] == ids[0]
    conn = connected[ids[0]]
    assert conn.closed
    closes = [conn.queue.get_nowait() for _ in range(conn.queue.qsize())]
    assert [(c.code, c.reason) for c in closes if not isinstance(c, str)] == [(1000, "channel removed")]
    assert not connected[ids[1]].closed


# --- per-topic states ---------------------------------------------------------------------------------


async def test_rejected_topics_are_answered_per_topic_or_fail_the_request(sim: Simulator,
                                                                          xc: httpx.AsyncClient) -> None:
    channel = (await xc.post(CHANNELS)).json()["id"]
    subs = f"{CHANNELS}/{channel}/subscriptions"
    rejected = ["v2.outbound.campaigns.c2", "v2.outbound.contactlists.*"]
    assert (await xc.post("/admin/notifications/reject", json={"topics": rejected})).status_code == 200
    topics = [{"id": "v2.outbound.campaigns.c1"}, {"id": "v2.outbound.campaigns.c2"},
              {"id": "v2.outbound.contactlists.l1.importstatus"}]
    strict = await xc.put(subs, json=topics)
    assert strict.status_code == 400 and "v2.outbound.campaigns.c2" in strict.json()["message"]
    assert sim.hub.channels[channel].topics == {}
    lenient = await xc.put(subs, params={"ignoreErrors": "true"}, json=topics)
    assert lenient.status_code == 200
    states = {e["id"]: e["state"] for e in lenient.json()["entities"]}
    assert states == {"v2.outbound.campaigns.c1": "Permitted", "v2.outbound.campaigns.c2": "Rejected",
                      "v2.outbound.contactlists.l1.importstatus": "Rejected"}
    assert all(e.get("rejectionReason") for e in lenient.json()["entities"] if e["state"] == "Rejected")
    assert list(sim.hub.channels[channel].topics) == ["v2.outbound.campaigns.c1"]
    assert (await xc.post("/admin/notifications/reject", json={"topics": "x"})).status_code == 400


# --- the importstatus topic ---------------------------------------------------------------------------


async def test_contact_list_imports_are_announced_on_their_importstatus_topic(sim: Simulator,
                                                                              xc: httpx.AsyncClient) -> None:
    channel = sim.hub.create()
    sim.hub.subscribe(channel.id, ["v2.outbound.contactlists.l1.importstatus"], replace=True)
    conn = sim.hub.attach(channel)
    await xc.post("/admin/contactlists/l1", json={"state": "IMPORTING", "importStatus": "IN_PROGRESS",
                                                  "releaseAfterSeconds": 30})
    await xc.post("/admin/contactlists/l1", json={"state": "IMPORTING", "releaseAfterSeconds": 30})  # same: nothing new
    sim.advance(31)
    await xc.post("/admin/contactlists/l1", json={"importStatus": "FAILED"})
    bodies = [m["eventBody"] for m in _messages(conn) if m["topicName"] == "v2.outbound.contactlists.l1.importstatus"]
    assert bodies == [
        {"importState": "IN_PROGRESS", "totalRecords": 200, "completedRecords": 100, "percentageComplete": 50},
        {"importState": "IN_PROGRESS", "totalRecords": 200, "completedRecords": 200, "percentageComplete": 100},
        {"importState": "FAILED", "totalRecords": 200, "completedRecords": 0, "percentageComplete": 0,
         "failureReason": "The import job failed."},
    ]
