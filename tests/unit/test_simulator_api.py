"""The simulator's HTTP API through httpx.ASGITransport (no socket), with a manual clock."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.devtools.simulator import FaultConfig, Simulator, SimulatorConfig, parse_tenant
from fsm.testing import FakeClock
from schemas.platform import (
    DialerStats,
    GenesysCampaign,
    GenesysCampaignDiagnostics,
    GenesysCampaignStats,
    GenesysContactList,
    GuideCampaign,
    GuideCampaignErrors,
    GuideContactList,
)
from schemas.types import CampaignState

S = CampaignState
BASE = "/api/v2/outbound"

TENANT = {
    "dialers": [{"id": "d1", "licensedCapacity": 150}, {"id": "d2"}],
    "contactLists": [{"id": "l1", "name": "List one"}, {"id": "l2"}],
    "campaigns": [
        {"id": "pred", "dialerType": "PREDICTIVE", "dialerId": "d1", "contactListId": "l1", "state": "RUNNING",
         "activeCalls": 40},
        {"id": "prog", "dialerType": "PROGRESSIVE", "dialerId": "d1", "contactListId": "l1", "activeCalls": 10},
        {"id": "pow", "dialerType": "POWER", "dialerId": "d1", "contactListId": "l2"},
        {"id": "c4", "dialerType": "POWER", "dialerId": "d1", "contactListId": "l2"},
        {"id": "c5", "dialerType": "POWER", "dialerId": "d1", "contactListId": "l2"},
        {"id": "other", "dialerType": "POWER", "dialerId": "d2", "contactListId": "l2"},
    ],
}


def _make(profile: str, token_ttl: float = 1e6, **faults: float) -> Simulator:
    # The fake clock is also the wall clock here, so reads all land in one instant: no read limit
    # unless a test asks for it.
    faults.setdefault("read_limit_per_s", 0)
    return Simulator(parse_tenant(TENANT), SimulatorConfig(profile=profile, token_ttl=token_ttl,  # type: ignore[arg-type]
                                                           faults=FaultConfig(**faults)),
                     clock=FakeClock())


@pytest.fixture
def guide() -> Simulator:
    return _make("guide")


@pytest.fixture
def genesys() -> Simulator:
    return _make("genesys")


async def _client(sim: Simulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=sim.transport(), base_url="http://sim",
                             headers={"Authorization": f"Bearer {sim.mint_token()}"})


@pytest.fixture
async def gc(guide: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(guide) as client:
        yield client


@pytest.fixture
async def xc(genesys: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(genesys) as client:
        yield client


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


# --- auth -----------------------------------------------------------------------------------------


async def test_token_endpoint_grants_bearer_tokens_that_expire() -> None:
    guide = _make("guide", token_ttl=60)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(guide.app), base_url="http://sim") as client:
        form = {"grant_type": "client_credentials"}
        bad = await client.post("/oauth/token", data=form, headers=_basic("campaign-fsm-sim", "wrong"))
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
        wrong_grant = await client.post("/oauth/token", data={"grant_type": "password"},
                                        headers=_basic("campaign-fsm-sim", "campaign-fsm-sim-secret"))
        assert wrong_grant.status_code == 400
        ok = await client.post("/oauth/token", data=form, headers=_basic("campaign-fsm-sim", "campaign-fsm-sim-secret"))
        assert ok.status_code == 200
        body = ok.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 60
        auth = {"Authorization": f"Bearer {body['access_token']}"}
        assert (await client.get(f"{BASE}/campaigns/pred")).status_code == 401
        assert (await client.get(f"{BASE}/campaigns/pred", headers=auth)).status_code == 200
        guide.advance(60)
        expired = await client.get(f"{BASE}/campaigns/pred", headers=auth)
        assert expired.status_code == 401 and expired.json()["code"] == "bad.credentials"
    assert "secret" not in repr(guide.tokens) and "secret" not in repr(guide.config)
    assert [r.kind for r in guide.traffic.records][:3] == ["auth", "auth", "auth"]


async def test_revoked_tokens_get_401(guide: Simulator, gc: httpx.AsyncClient) -> None:
    assert (await gc.get(f"{BASE}/campaigns/pred")).status_code == 200
    assert (await gc.post("/admin/tokens/revoke")).json() == {"revoked": 1}
    assert (await gc.get(f"{BASE}/campaigns/pred")).status_code == 401


# --- guide profile --------------------------------------------------------------------------------


async def test_guide_campaign_contact_list_dialer_and_errors(guide: Simulator, gc: httpx.AsyncClient) -> None:
    campaign = GuideCampaign.model_validate((await gc.get(f"{BASE}/campaigns/pred")).json())
    assert (campaign.state, campaign.dialer_type.value, campaign.contact_list_id, campaign.dialer_id) == (
        S.RUNNING, "PREDICTIVE", "l1", "d1")
    raw = (await gc.get(f"{BASE}/campaigns/pred")).json()
    assert raw["rules"]["dialerRules"]["dialRatio"] == 10
    contact_list = GuideContactList.model_validate((await gc.get(f"{BASE}/contactlists/l1")).json())
    assert (contact_list.state, contact_list.import_status) == ("ACTIVE", "COMPLETED")
    stats = DialerStats.model_validate((await gc.get(f"{BASE}/dialers/d1/stats")).json())
    assert (stats.active_calls, stats.licensed_capacity) == (40, 150)
    errors = GuideCampaignErrors.model_validate((await gc.get(f"{BASE}/campaigns/pred/errors")).json())
    assert errors.campaign_id == "pred" and errors.errors == []
    missing = await gc.get(f"{BASE}/campaigns/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "not.found"
    assert (await gc.get(f"{BASE}/dialers/nope/stats")).status_code == 404


async def test_guide_post_is_accepted_not_done(guide: Simulator, gc: httpx.AsyncClient) -> None:
    response = await gc.post(f"{BASE}/campaigns/prog/start", json={})
    assert response.status_code == 202
    assert response.headers["location"] == f"{BASE}/campaigns/prog"
    assert response.json() == {}
    assert (await gc.get(f"{BASE}/campaigns/prog")).json()["state"] == "STARTING"
    guide.advance(4)
    assert (await gc.get(f"{BASE}/campaigns/prog")).json()["state"] == "RUNNING"


async def test_guide_start_while_stopping_is_a_409_conflict(guide: Simulator, gc: httpx.AsyncClient) -> None:
    assert (await gc.post(f"{BASE}/campaigns/pred/stop", json={})).status_code == 202
    trap = await gc.post(f"{BASE}/campaigns/pred/start", json={})
    body = trap.json()
    assert trap.status_code == 409 and body["code"] == "campaign.state.conflict" and body["status"] == 409
    assert set(body) == {"message", "code", "status", "contextId", "details", "errors"}
    assert guide.state_of("pred") is S.STOPPING
    again = await gc.post(f"{BASE}/campaigns/pred/resume", json={})
    assert again.status_code == 409
    commands = guide.traffic.commands_while_in_flight()
    assert [(r.action, r.campaign_state, r.status) for r in commands] == [
        ("start", "STOPPING", 409), ("resume", "STOPPING", 409)]
    unknown = await gc.post(f"{BASE}/campaigns/pred/explode", json={})
    assert unknown.status_code == 404


async def test_guide_listing_is_paged(gc: httpx.AsyncClient) -> None:
    page = (await gc.get(f"{BASE}/campaigns", params={"pageSize": 4, "pageNumber": 2})).json()
    assert [e["id"] for e in page["entities"]] == ["c5", "other"]
    assert (page["pageNumber"], page["pageSize"], page["total"], page["pageCount"]) == (2, 4, 6, 2)
    bad = await gc.get(f"{BASE}/campaigns", params={"pageSize": "many"})
    assert bad.status_code == 400 and "pageSize" in bad.json()["message"]


async def test_dialer_overload_refuses_the_fourth_transition(guide: Simulator, gc: httpx.AsyncClient) -> None:
    for cid in ("prog", "pow", "c4"):
        assert (await gc.post(f"{BASE}/campaigns/{cid}/start", json={})).status_code == 202
    refused = await gc.post(f"{BASE}/campaigns/c5/start", json={})
    assert refused.status_code == 409 and "dialer d1" in refused.json()["message"]
    assert (await gc.post(f"{BASE}/campaigns/other/start", json={})).status_code == 202  # another dialer
    await gc.post("/admin/faults", json={"overload500Probability": 1})
    assert (await gc.post(f"{BASE}/campaigns/c5/start", json={})).status_code == 500
    assert guide.traffic.max_in_flight() == {"d1": 3, "d2": 1}
    assert [r.dialer_in_flight for r in guide.traffic.select(kind="command", campaign_id="c5")] == [3, 3]


async def test_reads_above_ten_per_second_get_429_with_rate_limit_headers() -> None:
    guide = _make("guide", read_limit_per_s=10)
    async with await _client(guide) as gc:
        await _read_limit_scenario(guide, gc)


async def _read_limit_scenario(guide: Simulator, gc: httpx.AsyncClient) -> None:
    for _ in range(10):
        assert (await gc.get(f"{BASE}/campaigns/pred")).status_code == 200
        guide.advance(0.05)
    limited = await gc.get(f"{BASE}/contactlists/l1")
    assert limited.status_code == 429 and limited.json()["code"] == "too.many.requests"
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["inin-ratelimit-allowed"] == "10"
    assert limited.headers["inin-ratelimit-count"] == "10"
    assert int(limited.headers["inin-ratelimit-reset"]) >= 1
    assert (await gc.post(f"{BASE}/campaigns/prog/start", json={})).status_code == 202  # commands not limited
    guide.advance(0.6)  # the first read leaves the window
    assert (await gc.get(f"{BASE}/campaigns/pred")).status_code == 200
    assert guide.traffic.reads_per_second_peak() == 11  # ten, then the 429 within the same second
    assert guide.traffic.summary()["http429"] == 1


async def test_contact_list_lock_is_visible_and_holds_start(guide: Simulator, gc: httpx.AsyncClient) -> None:
    locked = await gc.post("/admin/contactlists/l1", json={"state": "LOCKED"})
    assert locked.json()["state"] == "LOCKED"
    await gc.post(f"{BASE}/campaigns/prog/start", json={})
    guide.advance(400)
    campaign = (await gc.get(f"{BASE}/campaigns/prog")).json()
    assert (campaign["state"], campaign["errors"]) == ("STARTING", [])
    assert (await gc.get(f"{BASE}/campaigns/prog/errors")).json()["errors"] == []
    await gc.post("/admin/contactlists/l1", json={"state": "ACTIVE"})
    guide.advance(1)
    assert guide.state_of("prog") is S.RUNNING


async def test_failed_transition_errors_are_readable(guide: Simulator, gc: httpx.AsyncClient) -> None:
    armed = await gc.post("/admin/campaigns/pow/transition",
                          json={"outcome": "fail", "errors": [{"code": "dialer.no.agents", "message": "none"}]})
    assert armed.json() == {"appliedTo": "next"}
    await gc.post(f"{BASE}/campaigns/pow/start", json={})
    guide.advance(2)
    campaign = (await gc.get(f"{BASE}/campaigns/pow")).json()
    assert campaign["state"] == "FAILED"
    assert campaign["errors"] == [{"code": "dialer.no.agents", "message": "none"}]
    assert (await gc.get(f"{BASE}/campaigns/pow/errors")).json()["errors"] == campaign["errors"]
    reset = await gc.post("/admin/campaigns/pow/state", json={"state": "STOPPED", "errors": []})
    assert reset.json()["state"] == "STOPPED" and reset.json()["errors"] == []


async def test_admin_stall_and_release(guide: Simulator, gc: httpx.AsyncClient) -> None:
    await gc.post(f"{BASE}/campaigns/pred/stop", json={})
    applied = await gc.post("/admin/campaigns/pred/transition", json={"outcome": "stall"})
    assert applied.json() == {"appliedTo": "current"}
    guide.advance(1000)
    state = (await gc.get("/admin/state")).json()
    pred = next(c for c in state["campaigns"] if c["id"] == "pred")
    assert pred["state"] == "STOPPING"
    assert pred["transition"]["outcome"] == "stall" and pred["transition"]["due"] is None
    assert (await gc.post("/admin/campaigns/pred/release")).json() == {"released": True}
    assert guide.state_of("pred") is S.STOPPED
    assert (await gc.post("/admin/campaigns/pred/release")).json() == {"released": False}


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/admin/faults", {"stallProbability": 3}, 400, "within 0..1"),
        ("/admin/faults", {"nope": 1}, 400, "unknown fault setting"),
        ("/admin/campaigns/pred/state", {"state": "DANCING"}, 400, "state must be one of"),
        ("/admin/campaigns/nope/state", {"state": "STOPPED"}, 404, "not found"),
        ("/admin/campaigns/pred/transition", {"outcome": "explode"}, 400, "outcome must be one of"),
        ("/admin/campaigns/pred/transition", {"durationSeconds": -1}, 400, "durationSeconds"),
        ("/admin/contactlists/l1", {"state": "GONE"}, 400, "state must be one of"),
        ("/admin/contactlists/nope", {"state": "LOCKED"}, 404, "not found"),
        ("/admin/notifications/drop", {}, 400, "count is required"),
        ("/admin/notifications/close", {"code": 5}, 400, "close code"),
        ("/admin/dialers/d1", {"licensedCapacity": "lots"}, 400, "licensedCapacity"),
        ("/admin/clock/advance", {"seconds": -2}, 400, "seconds"),
    ],
)
async def test_admin_bad_input_is_a_clear_4xx(
    gc: httpx.AsyncClient, path: str, body: dict[str, object], status: int, fragment: str
) -> None:
    response = await gc.post(path, json=body)
    assert response.status_code == status
    assert fragment in response.json()["message"]
    assert (await gc.post("/admin/faults", content=b"[1,")).status_code == 400


async def test_admin_traffic_and_clock(guide: Simulator, gc: httpx.AsyncClient) -> None:
    await gc.get(f"{BASE}/campaigns/pred")
    await gc.post(f"{BASE}/campaigns/prog/start", json={})
    assert (await gc.post("/admin/clock/advance", json={"seconds": 4})).json()["simTime"] == 4.0
    traffic = (await gc.get("/admin/traffic")).json()
    assert [(r["method"], r["kind"], r["status"], r["campaignId"]) for r in traffic["requests"]] == [
        ("GET", "read", 200, "pred"), ("POST", "command", 202, "prog")]
    assert traffic["requests"][1]["dialerId"] == "d1" and traffic["requests"][1]["action"] == "start"
    assert traffic["summary"]["maxInFlightPerDialer"] == {"d1": 1}
    assert [s["inFlight"] for s in traffic["inFlight"]] == [1, 0]
    assert (await gc.delete("/admin/traffic")).status_code == 204
    assert (await gc.get("/admin/traffic")).json()["requests"] == []


# --- genesys profile ------------------------------------------------------------------------------


async def test_genesys_campaign_shape_and_status(genesys: Simulator, xc: httpx.AsyncClient) -> None:
    raw = (await xc.get(f"{BASE}/campaigns/pred")).json()
    campaign = GenesysCampaign.model_validate(raw)
    assert (campaign.campaign_status, campaign.dialing_mode, campaign.version) == ("on", "predictive", 1)
    assert campaign.contact_list is not None and campaign.contact_list.id == "l1"
    assert campaign.contact_list.name == "List one"
    assert campaign.edge_group is not None and campaign.edge_group.id == "d1"
    assert campaign.self_uri == f"{BASE}/campaigns/pred"
    assert "state" not in raw and "dialerType" not in raw
    stats = GenesysCampaignStats.model_validate((await xc.get(f"{BASE}/campaigns/pred/stats")).json())
    assert stats.outstanding_calls == 40
    diagnostics = GenesysCampaignDiagnostics.model_validate((await xc.get(f"{BASE}/campaigns/pred/diagnostics")).json())
    assert diagnostics.campaign_errors == []
    assert (await xc.get(f"{BASE}/campaigns/pred/errors")).status_code == 404
    assert (await xc.get(f"{BASE}/dialers/d1/stats")).status_code == 404


async def test_genesys_start_shows_on_at_once_and_stop_shows_stopping(
    genesys: Simulator, xc: httpx.AsyncClient
) -> None:
    started = await xc.post(f"{BASE}/campaigns/prog/start")
    assert started.status_code == 202 and started.content == b""
    assert (await xc.get(f"{BASE}/campaigns/prog")).json()["campaignStatus"] == "on"
    assert genesys.state_of("prog") is S.STARTING
    stop = await xc.post(f"{BASE}/campaigns/pred/stop")
    assert stop.status_code == 202
    assert (await xc.get(f"{BASE}/campaigns/pred")).json()["campaignStatus"] == "stopping"
    invalid = await xc.post(f"{BASE}/campaigns/pred/start")
    # Genesys' words (issue 14): the status it shows and the one asked for, in angle brackets.
    assert invalid.status_code == 400 and invalid.json()["message"] == "Invalid transition from <STOPPING> to <ON>"
    genesys.advance(120)
    assert (await xc.get(f"{BASE}/campaigns/pred")).json()["campaignStatus"] == "off"
    for route in ("pause", "resume"):
        assert (await xc.post(f"{BASE}/campaigns/pred/{route}")).status_code == 404


async def test_genesys_put_with_version(genesys: Simulator, xc: httpx.AsyncClient) -> None:
    campaign = (await xc.get(f"{BASE}/campaigns/pow")).json()
    stale = await xc.put(f"{BASE}/campaigns/pow", json={**campaign, "version": 0, "campaignStatus": "on"})
    assert stale.status_code == 409 and stale.json()["code"] == "conflict"
    ok = await xc.put(f"{BASE}/campaigns/pow", json={**campaign, "campaignStatus": "on"})
    assert ok.status_code == 200
    assert ok.json()["version"] == campaign["version"] + 1 and ok.json()["campaignStatus"] == "on"
    assert genesys.state_of("pow") is S.STARTING
    missing = await xc.put(f"{BASE}/campaigns/pow", json={"campaignStatus": "off"})
    assert missing.status_code == 400 and "version" in missing.json()["message"]
    current = ok.json()
    weird = await xc.put(f"{BASE}/campaigns/pow", json={**current, "campaignStatus": "complete"})
    assert weird.status_code == 400 and weird.json()["message"] == "Invalid transition from <ON> to <COMPLETE>"
    assert [r.action for r in genesys.traffic.select(kind="command")] == ["put"] * 4


async def test_genesys_contact_list_import_status(genesys: Simulator, xc: httpx.AsyncClient) -> None:
    ready = (await xc.get(f"{BASE}/contactlists/l1")).json()
    assert "importStatus" not in ready
    await xc.post("/admin/contactlists/l1", json={"state": "LOCKED"})
    locked = GenesysContactList.model_validate((await xc.get(f"{BASE}/contactlists/l1")).json())
    assert locked.import_status is not None and locked.import_status.state == "IN_PROGRESS"
    await xc.post("/admin/contactlists/l1", json={"state": "ACTIVE", "importStatus": "FAILED"})
    failed = GenesysContactList.model_validate((await xc.get(f"{BASE}/contactlists/l1")).json())
    assert failed.import_status is not None and failed.import_status.state == "FAILED"


async def test_genesys_raw_status_override_and_failed_is_invalid(genesys: Simulator, xc: httpx.AsyncClient) -> None:
    await xc.post("/admin/campaigns/pow/state", json={"campaignStatus": "some_new_status"})
    assert (await xc.get(f"{BASE}/campaigns/pow")).json()["campaignStatus"] == "some_new_status"
    await xc.post("/admin/campaigns/pow/state", json={"state": "FAILED", "errors": [{"code": "e", "message": "m"}]})
    campaign = (await xc.get(f"{BASE}/campaigns/pow")).json()
    assert campaign["campaignStatus"] == "invalid" and campaign["errors"] == [{"error": "e", "details": "m"}]
    diagnostics = (await xc.get(f"{BASE}/campaigns/pow/diagnostics")).json()
    assert diagnostics["campaignErrors"] == [{"error": "e", "details": "m"}]


# --- notifications (hub, without sockets) ---------------------------------------------------------


async def test_channel_subscriptions_and_topic_limit(guide: Simulator, gc: httpx.AsyncClient) -> None:
    channel = (await gc.post("/api/v2/notifications/channels")).json()
    assert channel["connectUri"] == f"ws://sim/channels/{channel['id']}"
    assert channel["expires"].endswith("Z")
    subs = f"/api/v2/notifications/channels/{channel['id']}/subscriptions"
    topics = [{"id": f"v2.outbound.campaigns.c{i}"} for i in range(1000)]
    assert len((await gc.put(subs, json=topics)).json()["entities"]) == 1000
    over = await gc.post(subs, json=[{"id": "v2.outbound.contactlists.l1"}])
    assert over.status_code == 400 and over.json()["code"] == "too.many.topics"
    replaced = await gc.put(subs, json=[{"id": "v2.outbound.campaigns.pred"}])
    # Each topic's state is part of the answer, as the SDK's ChannelTopic has it (issue 14).
    assert replaced.json() == {"entities": [{"id": "v2.outbound.campaigns.pred", "state": "Permitted"}]}
    added = await gc.post(subs, json=[{"id": "v2.outbound.contactlists.l1"}])
    assert [e["id"] for e in added.json()["entities"]] == ["v2.outbound.campaigns.pred", "v2.outbound.contactlists.l1"]
    assert (await gc.get(subs)).json() == added.json()
    assert (await gc.post(subs, json={"id": "x"})).status_code == 400
    assert (await gc.post(subs, json=[{"id": "bogus"}])).status_code == 400
    assert (await gc.get("/api/v2/notifications/channels/nope/subscriptions")).status_code == 404


async def test_notifications_are_pushed_dropped_and_channels_expire(guide: Simulator, gc: httpx.AsyncClient) -> None:
    channel = guide.hub.create()
    guide.hub.subscribe(channel.id, ["v2.outbound.campaigns.prog", "v2.outbound.contactlists.l1"], replace=True)
    conn = guide.hub.attach(channel)
    await gc.post(f"{BASE}/campaigns/prog/start", json={})
    message = conn.queue.get_nowait()
    assert isinstance(message, str)
    envelope = __import__("orjson").loads(message)
    assert envelope["topicName"] == "v2.outbound.campaigns.prog" and envelope["version"] == "2"
    assert GuideCampaign.model_validate(envelope["eventBody"]).state is S.STARTING
    assert envelope["metadata"]["CorrelationId"]
    await gc.post("/admin/notifications/drop", json={"count": 1})
    guide.advance(4)  # RUNNING: dropped
    assert conn.queue.empty()
    await gc.post("/admin/contactlists/l1", json={"state": "LOCKED"})
    body = __import__("orjson").loads(conn.queue.get_nowait())["eventBody"]
    assert body == {"id": "l1", "name": "List one", "state": "LOCKED", "importStatus": "COMPLETED"}
    assert [r.outcome for r in guide.hub.log] == ["delivered", "dropped", "delivered"]
    guide.advance(30)
    assert __import__("orjson").loads(conn.queue.get_nowait())["eventBody"] == {"message": "WebSocket Heartbeat"}
    assert (await gc.post(f"/admin/channels/{channel.id}/expire")).json() == {"expired": channel.id}
    gone = await gc.get(f"/api/v2/notifications/channels/{channel.id}/subscriptions")
    assert gone.status_code == 404


async def test_socket_closing_is_announced_then_closed(guide: Simulator, gc: httpx.AsyncClient) -> None:
    channel = guide.hub.create()
    guide.hub.subscribe(channel.id, ["v2.outbound.campaigns.prog"], replace=True)
    old = guide.hub.attach(channel)
    assert (await gc.post("/admin/notifications/close", json={"graceSeconds": 5})).json() == {"sockets": 1}
    warning = __import__("orjson").loads(old.queue.get_nowait())
    assert warning["topicName"] == "v2.system.socket_closing"
    new = guide.hub.attach(channel)
    await gc.post(f"{BASE}/campaigns/prog/start", json={})
    assert old.queue.empty() and not new.queue.empty()  # the warned socket no longer gets events
    guide.advance(5)
    assert old.closed and not new.closed
