"""The platform client as Genesys Cloud has it (issue 14): the login host per region, one request
budget for every method, resynchronised by `inin-ratelimit-*`, PUT as compare-and-set, batch reads."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from adapters.platform import PlatformClient
from adapters.platform.oauth import login_url_for
from adapters.settings import Settings
from fsm.ports import PlatformConflict, PlatformRateLimited
from fsm.testing import FakeClock
from tests.unit.test_platform_client import GENESYS_CAMPAIGN, SECRET, FakePlatform, _error

CAMPAIGNS = "/api/v2/outbound/campaigns"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0, wall_start=1_700_001_000.0, auto_advance=True)


@pytest.fixture
def fake(clock: FakeClock) -> FakePlatform:
    return FakePlatform(clock)


def _genesys(fake: FakePlatform, base: str = "http://platform.test", **kw: Any) -> PlatformClient:
    return PlatformClient(base, "client-1", SECRET, profile="genesys", clock=fake.clock,
                          transport=httpx.MockTransport(fake), **kw)


# --- 1. the login host per region ---------------------------------------------------------------


REGIONS = ["mypurecloud.com", "mypurecloud.ie", "mypurecloud.de", "mypurecloud.jp", "mypurecloud.com.au",
           "usw2.pure.cloud", "use2.us-gov-pure.cloud", "cac1.pure.cloud", "euw2.pure.cloud", "euc2.pure.cloud",
           "aps1.pure.cloud", "apne2.pure.cloud", "apne3.pure.cloud", "sae1.pure.cloud", "mec1.pure.cloud"]


@pytest.mark.parametrize("region", REGIONS)
async def test_tokens_come_from_the_login_host_of_the_region(region: str, clock: FakeClock) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return httpx.Response(200, json=GENESYS_CAMPAIGN)

    settings = Settings(platform={"profile": "genesys", "region": region, "client_id": "a", "client_secret": "b"})
    assert settings.platform.url == f"https://api.{region}" and settings.platform.token_host is None
    async with PlatformClient(settings.platform.url, "a", "b", profile="genesys", clock=clock,
                              login_url=settings.platform.token_host, transport=httpx.MockTransport(handler)) as client:
        assert client.login_url == f"https://login.{region}"
        await client.get_campaign("c1")
    assert seen == [f"https://login.{region}/oauth/token", f"https://api.{region}{CAMPAIGNS}/c1"]


def test_login_url_derivation_is_the_sdks() -> None:
    # PureCloudPlatformClientV2 api_client.py: re.sub(r'\/\/(api)\.', '//login.', base_path)
    assert login_url_for("https://api.mypurecloud.ie/") == "https://login.mypurecloud.ie"
    assert login_url_for("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert login_url_for("https://apigee.example.com") == "https://apigee.example.com"


async def test_a_configured_login_url_is_used(clock: FakeClock) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return httpx.Response(200, json=GENESYS_CAMPAIGN)

    settings = Settings(platform={"profile": "genesys", "base_url": "https://api.mypurecloud.ie",
                                  "login_url": "http://127.0.0.1:9000/", "client_id": "a", "client_secret": "b"})
    async with PlatformClient(settings.platform.url, "a", "b", profile="genesys", clock=clock,
                              login_url=settings.platform.token_host, transport=httpx.MockTransport(handler)) as client:
        await client.get_campaign("c1")
    assert seen[0] == "http://127.0.0.1:9000/oauth/token"
    # The guide profile, a test host: tokens from the API host itself.
    async with PlatformClient("http://sim.test", "a", "b", clock=clock, transport=httpx.MockTransport(handler)) as g:
        assert g.login_url == "http://sim.test"


# --- 2. one budget for every method, resynchronised by the platform's headers ------------------


def test_settings_budget_by_profile() -> None:
    genesys = Settings(platform={"profile": "genesys", "base_url": "http://x", "instances": 3})
    assert genesys.platform.budget() == (300, 60.0) and genesys.request_share() == 100
    tuned = Settings(platform={"profile": "genesys", "base_url": "http://x", "request_limit": 600})
    assert tuned.platform.budget() == (600, 60.0)
    guide = Settings(platform={"base_url": "http://x"})
    assert guide.platform.budget() == (10, 1.0) and guide.request_share() == 10


async def test_genesys_writes_and_channel_calls_spend_from_the_same_budget(fake: FakePlatform) -> None:
    fake.always("GET", f"{CAMPAIGNS}/c1", httpx.Response(200, json=GENESYS_CAMPAIGN))
    fake.always("POST", f"{CAMPAIGNS}/c1/start", httpx.Response(202))
    fake.always("POST", "/api/v2/notifications/channels",
                httpx.Response(200, json={"id": "ch1", "connectUri": "ws://x/ch1", "expires": "2030-01-01T00:00:00Z"}))
    fake.always("PUT", "/api/v2/notifications/channels/ch1/subscriptions", httpx.Response(200, json={}))
    async with _genesys(fake) as client:
        assert (client.budget.limit, client.budget.window) == (300, 60.0)
        await client.get_campaign("c1")
        await client.send_action("c1", "start")  # type: ignore[arg-type]
        await client.create_notification_channel()
        await client.set_channel_topics("ch1", ["v2.outbound.campaigns.c1"], replace=True)
        assert client.budget.granted == 4


async def test_guide_writes_do_not_spend_the_read_budget(fake: FakePlatform) -> None:
    fake.always("POST", f"{CAMPAIGNS}/c1/start", httpx.Response(202, json={}))
    async with PlatformClient("http://platform.test", "client-1", SECRET, clock=fake.clock,
                              transport=httpx.MockTransport(fake)) as client:
        assert (client.budget.limit, client.budget.window) == (10, 1.0)
        await client.send_action("c1", "start")  # type: ignore[arg-type]
        assert client.budget.granted == 0


async def test_ratelimit_headers_resynchronise_the_budget(fake: FakePlatform, clock: FakeClock) -> None:
    # The platform counted 299 of 300 (other instances of this OAuth client): one more, then the reset.
    counted = iter([299, 300, 1])

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"inin-ratelimit-count": str(next(counted)), "inin-ratelimit-allowed": "300",
                   "inin-ratelimit-reset": "40"}
        return httpx.Response(200, json=GENESYS_CAMPAIGN, headers=headers)

    fake.always("GET", f"{CAMPAIGNS}/c1", answer)
    async with _genesys(fake) as client:
        start = clock.monotonic()
        for _ in range(3):
            await client.get_campaign("c1")
    times = [t - start for t, _ in fake.requests]
    assert times[1] < 1.0, "one left in the platform's window"
    assert times[2] >= 40.0, "then nothing until the platform's window resets"


async def test_a_429_on_a_write_holds_the_whole_budget_back(fake: FakePlatform, clock: FakeClock) -> None:
    fake.always("POST", f"{CAMPAIGNS}/c1/start",
                _error(429, "too.many.requests", "Rate limit exceeded the maximum [300] requests within [60] seconds",
                       headers={"Retry-After": "7"}))
    fake.always("GET", f"{CAMPAIGNS}/c2", httpx.Response(200, json={**GENESYS_CAMPAIGN, "id": "c2"}))
    async with _genesys(fake) as client:
        with pytest.raises(PlatformRateLimited):
            await client.send_action("c1", "start")  # type: ignore[arg-type]
        sent = clock.monotonic()
        await client.get_campaign("c2")
    assert fake.requests[-1][0] - sent >= 7.0
    assert len(fake.sent("POST", f"{CAMPAIGNS}/c1/start")) == 1, "a write is never re-sent by the client"


async def test_a_429_retry_after_code_on_a_read_is_waited_out(fake: FakePlatform, clock: FakeClock) -> None:
    path = f"{CAMPAIGNS}/c1"
    fake.script("GET", path, _error(429, "too.many.requests.retry.after", "Retry the request in [3] seconds",
                                    headers={"Retry-After": "3"}))
    fake.always("GET", path, httpx.Response(200, json=GENESYS_CAMPAIGN))
    async with _genesys(fake) as client:
        snap = await client.get_campaign("c1")
    assert snap.id == "c1" and client.stats.http_429 == 1
    (t1, _), (t2, _) = fake.requests
    assert t2 - t1 >= 3.0


# --- 3. PUT as compare-and-set -------------------------------------------------------------------


async def test_a_stale_version_is_reported_with_the_fresh_campaign_never_re_put(fake: FakePlatform) -> None:
    path = f"{CAMPAIGNS}/c1"
    fake.script("GET", path, httpx.Response(200, json=GENESYS_CAMPAIGN),
                httpx.Response(200, json={**GENESYS_CAMPAIGN, "version": 5, "campaignStatus": "on"}))
    fake.always("PUT", path, _error(409, "conflict", "The version number of the modified resource must match"))
    async with _genesys(fake) as client:
        with pytest.raises(PlatformConflict) as raised:
            await client.set_campaign_status_put("c1", "on")
    assert raised.value.stale and raised.value.current is not None
    assert (raised.value.current.version, raised.value.current.platform_status) == (5, "on")
    assert len(fake.sent("PUT", path)) == 1 and len(fake.sent("GET", path)) == 2
    assert fake.sent("PUT", path)[0].read().count(b'"version":4') == 1


async def test_an_invalid_transition_in_genesys_words_is_a_conflict_not_stale(fake: FakePlatform) -> None:
    path = f"{CAMPAIGNS}/c1"
    fake.always("GET", path, httpx.Response(200, json={**GENESYS_CAMPAIGN, "campaignStatus": "complete"}))
    fake.always("PUT", path, _error(400, "bad.request", "Invalid transition from <COMPLETE> to <OFF>"))
    async with _genesys(fake) as client:
        with pytest.raises(PlatformConflict, match="Invalid transition") as raised:
            await client.set_campaign_status_put("c1", "off")
    assert not raised.value.stale and raised.value.current is not None
    assert raised.value.current.platform_status == "complete"


# --- 4. batch reads ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["guide", "genesys"])
async def test_get_campaigns_reads_up_to_100_per_request(fake: FakePlatform, profile: str) -> None:
    def listing(request: httpx.Request) -> httpx.Response:
        ids = request.url.params.get_list("id")
        body = GENESYS_CAMPAIGN if profile == "genesys" else {
            "id": "x", "name": "n", "state": "STOPPED", "dialerType": "PREDICTIVE", "contactListId": "l1",
            "errors": []}
        return httpx.Response(200, json={"entities": [{**body, "id": i} for i in ids if i != "gone"],
                                         "pageCount": 1})

    fake.always("GET", CAMPAIGNS, listing)
    wanted = [f"c{i}" for i in range(250)] + ["gone", "c3"]
    async with PlatformClient("http://platform.test", "client-1", SECRET, profile=profile, clock=fake.clock,
                              transport=httpx.MockTransport(fake)) as client:
        snaps = await client.get_campaigns(wanted)
        with pytest.raises(ValueError):
            await client.get_campaigns(["ok", ""])
    sent = fake.sent("GET", CAMPAIGNS)
    assert len(sent) == math.ceil(251 / 100)
    assert [len(r.url.params.get_list("id")) for r in sent] == [100, 100, 51]
    assert {r.url.params["pageSize"] for r in sent} == {"100", "51"}
    assert [s.id for s in snaps] == [f"c{i}" for i in range(250)]
