"""The REST client over `httpx.MockTransport`: both profiles, status mapping, retries, no POST re-send."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson
import pytest

from adapters.platform import PlatformClient
from fsm.ports import (
    Platform,
    PlatformAuthError,
    PlatformConflict,
    PlatformError,
    PlatformNotFound,
    PlatformRateLimited,
    PlatformUnavailable,
)
from fsm.request_budget import RequestBudget
from fsm.testing import FakeClock
from schemas.types import Action, CampaignState, DialerType

T = TypeVar("T")
SECRET = "very-secret-client-secret"
Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]

GUIDE_CAMPAIGN = {
    "id": "c1", "name": "Q3", "state": "RUNNING", "dialerType": "PREDICTIVE",
    "contactListId": "l1", "dialerId": "d1", "rules": {}, "errors": [],
}
GENESYS_CAMPAIGN = {
    "id": "c1", "name": "Q3", "version": 4, "campaignStatus": "off", "dialingMode": "progressive",
    "contactList": {"id": "l1"}, "edgeGroup": {"id": "eg1"}, "errors": [],
}


class FakePlatform:
    """A scripted platform: an OAuth endpoint, bearer checks, and per-route queued answers."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.requests: list[tuple[float, httpx.Request]] = []
        self.tokens_issued = 0
        self.valid: set[str] = set()
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.defaults: dict[tuple[str, str], Reply] = {}

    def script(self, method: str, path: str, *replies: Reply) -> None:
        self.routes.setdefault((method, path), []).extend(replies)

    def always(self, method: str, path: str, reply: Reply) -> None:
        self.defaults[(method, path)] = reply

    def revoke_all(self) -> None:
        self.valid.clear()

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for _, r in self.requests if r.method == method and r.url.path == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            self.tokens_issued += 1
            token = f"token-{self.tokens_issued}"
            self.valid.add(token)
            return httpx.Response(200, json={"access_token": token, "expires_in": 3600})
        self.requests.append((self.clock.monotonic(), request))
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.valid:
            return httpx.Response(401, json={"message": "unauthorized", "code": "bad.credentials", "status": 401})
        key = (request.method, request.url.path)
        queue = self.routes.get(key)
        reply: Reply | None = queue.pop(0) if queue else self.defaults.get(key)
        if reply is None:
            return httpx.Response(404, json={"message": "no route", "code": "not.found", "status": 404})
        if isinstance(reply, Exception):
            raise reply
        if callable(reply) and not isinstance(reply, httpx.Response):
            return reply(request)
        return reply


def _error(status: int, code: str, message: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"message": message or code, "code": code, "status": status, "contextId": "ctx", "details": [],
            "errors": []}
    return httpx.Response(status, json=body, headers=headers)


def _client(fake: FakePlatform, profile: str = "guide", **kw: Any) -> PlatformClient:
    kw.setdefault("rng", random.Random(7))
    return PlatformClient(
        "http://platform.test", "client-1", SECRET, profile=profile, clock=fake.clock,
        transport=httpx.MockTransport(fake), **kw,
    )


async def _drive(clock: FakeClock, aw: Awaitable[T]) -> T:
    return await clock.run_until(asyncio.ensure_future(aw))


@pytest.fixture
def clock() -> FakeClock:
    # Auto-advance: the read limiter paces reads, so virtual time must move while tests await them.
    return FakeClock(start=1000.0, wall_start=1_700_001_000.0, auto_advance=True)


@pytest.fixture
def fake(clock: FakeClock) -> FakePlatform:
    return FakePlatform(clock)


# --- reads, both profiles --------------------------------------------------------------------------


async def test_client_is_a_platform(fake: FakePlatform) -> None:
    async with _client(fake) as client:
        assert isinstance(client, Platform)
        assert client.profile == "guide"


async def test_guide_reads(fake: FakePlatform) -> None:
    base = "/api/v2/outbound"
    fake.always("GET", f"{base}/campaigns/c1", httpx.Response(200, json=GUIDE_CAMPAIGN))
    fake.always("GET", f"{base}/campaigns/c1/errors",
                httpx.Response(200, json={"campaignId": "c1", "errors": [{"code": "lock", "message": "m"}]}))
    fake.always("GET", f"{base}/contactlists/l1",
                httpx.Response(200, json={"id": "l1", "state": "LOCKED", "importStatus": "COMPLETED"}))
    fake.always("GET", f"{base}/dialers/d1/stats",
                httpx.Response(200, json={"id": "d1", "activeCalls": 90, "licensedCapacity": 100}))
    async with _client(fake) as client:
        snap = await client.get_campaign("c1")
        assert (snap.state, snap.dialer_type, snap.dialer_id) == (CampaignState.RUNNING, DialerType.PREDICTIVE, "d1")
        assert await client.get_errors("c1") == [{"code": "lock", "message": "m"}]
        cl = await client.get_contact_list("l1")
        assert (cl.ready, cl.locked) == (False, True)
        load = await client.get_dialer_load("d1", "c1")
        assert (load.active_calls, load.capacity) == (90, 100)
    _, first = fake.requests[0]
    assert first.headers["Authorization"] == "Bearer token-1"
    assert first.headers["Accept"] == "application/json"


async def test_genesys_reads(fake: FakePlatform) -> None:
    base = "/api/v2/outbound"
    fake.always("GET", f"{base}/campaigns/c1", httpx.Response(200, json=GENESYS_CAMPAIGN))
    fake.always("GET", f"{base}/campaigns/c1/diagnostics",
                httpx.Response(200, json={"campaignErrors": [{"error": "no.agents", "details": "none idle"}]}))
    fake.always("GET", f"{base}/campaigns/c1/stats", httpx.Response(200, json={"outstandingCalls": 7}))
    fake.always("GET", f"{base}/contactlists/l1",
                httpx.Response(200, json={"id": "l1", "importStatus": {"state": "FAILED", "failureReason": "x"}}))
    async with _client(fake, "genesys", dialer_capacity={"eg1": 40}) as client:
        snap = await client.get_campaign("c1")
        assert (snap.state, snap.platform_status, snap.version) == (CampaignState.STOPPED, "off", 4)
        assert snap.dialer_type is DialerType.PROGRESSIVE and snap.dialer_id == "eg1"
        assert await client.get_errors("c1") == [{"code": "no.agents", "message": "none idle"}]
        load = await client.get_dialer_load("eg1", "c1")
        assert (load.dialer_id, load.active_calls, load.capacity) == ("eg1", 7, 40)
        cl = await client.get_contact_list("l1")
        assert (cl.ready, cl.locked) == (False, False)
        # Issue 14: pause and resume exist on Genesys (off keeps the position, on continues from it).
        assert client.supported_actions == {Action.START, Action.STOP, Action.PAUSE, Action.RESUME}


async def test_list_campaigns_walks_every_page_and_skips_bad_entities(
    fake: FakePlatform, caplog: pytest.LogCaptureFixture
) -> None:
    pages = {
        "1": {"entities": [GUIDE_CAMPAIGN, {"id": "broken"}], "pageNumber": 1, "pageCount": 2},
        "2": {"entities": [{**GUIDE_CAMPAIGN, "id": "c2"}], "pageNumber": 2, "pageCount": 2},
    }
    fake.always("GET", "/api/v2/outbound/campaigns",
                lambda r: httpx.Response(200, json=pages[r.url.params["pageNumber"]]))
    async with _client(fake, page_size=2) as client:
        found = await client.list_campaigns()
    assert [c.id for c in found] == ["c1", "c2"]
    assert "broken" not in [c.id for c in found] and "unusable" in caplog.text
    assert {r.url.params["pageSize"] for r in fake.sent("GET", "/api/v2/outbound/campaigns")} == {"2"}


async def test_ids_are_escaped_into_one_path_segment(fake: FakePlatform) -> None:
    async with _client(fake) as client:
        with pytest.raises(PlatformNotFound):
            await client.get_campaign("../oauth/token")
        with pytest.raises(ValueError, match="non-empty"):
            await client.get_campaign(" ")
    _, req = fake.requests[0]
    assert req.url.raw_path.decode().startswith("/api/v2/outbound/campaigns/..%2Foauth%2Ftoken")


# --- status mapping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (_error(404, "not.found"), PlatformNotFound),
        (_error(409, "campaign.state.conflict"), PlatformConflict),
        # Genesys words a refused status change in its message (issue 14); the code we once matched
        # (invalid.campaign.status.transition) appears nowhere public and no longer means anything.
        (_error(400, "bad.request", "Invalid transition from <COMPLETE> to <OFF>"), PlatformConflict),
        (_error(400, "invalid.campaign.status.transition"), PlatformError),
        (_error(400, "bad.request"), PlatformError),
        (_error(403, "missing.permissions"), PlatformAuthError),
        (httpx.Response(200, content=b"<html>"), PlatformError),
        (httpx.Response(200, json={"id": "c1", "state": "DANCING"}), PlatformError),
    ],
)
async def test_get_status_mapping(fake: FakePlatform, reply: httpx.Response, error: type[Exception]) -> None:
    fake.always("GET", "/api/v2/outbound/campaigns/c1", reply)
    async with _client(fake) as client:
        with pytest.raises(error) as info:
            await client.get_campaign("c1")
    assert type(info.value) is error
    assert len(fake.requests) == 1  # none of these is retried


async def test_get_retries_5xx_with_growing_jittered_backoff(fake: FakePlatform, clock: FakeClock) -> None:
    path = "/api/v2/outbound/campaigns/c1"
    fake.script("GET", path, _error(500, "internal"), _error(503, "unavailable"), _error(502, "bad.gateway"),
                httpx.Response(200, json=GUIDE_CAMPAIGN))
    async with _client(fake, backoff_base=1.0) as client:
        snap = await _drive(clock, client.get_campaign("c1"))
    assert snap.id == "c1"
    times = [t for t, _ in fake.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    for gap, nominal in zip(gaps, (1.0, 2.0, 4.0), strict=True):
        assert 0.8 * nominal <= gap <= 1.2 * nominal
    assert client.stats.http_5xx == 3 and client.stats.http_5xx_unretried == 0


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
)
async def test_get_retries_transport_failures(fake: FakePlatform, clock: FakeClock, failure: Exception) -> None:
    path = "/api/v2/outbound/campaigns/c1"
    fake.script("GET", path, failure, httpx.Response(200, json=GUIDE_CAMPAIGN))
    async with _client(fake) as client:
        assert (await _drive(clock, client.get_campaign("c1"))).id == "c1"
    assert len(fake.sent("GET", path)) == 2


async def test_get_gives_up_after_bounded_tries(fake: FakePlatform, clock: FakeClock) -> None:
    fake.always("GET", "/api/v2/outbound/campaigns/c1", _error(500, "internal"))
    async with _client(fake, max_get_attempts=4) as client:
        with pytest.raises(PlatformUnavailable, match="500"):
            await _drive(clock, client.get_campaign("c1"))
    assert len(fake.requests) == 4
    assert client.stats.http_5xx_unretried == 1


async def test_429_honours_retry_after(fake: FakePlatform, clock: FakeClock) -> None:
    path = "/api/v2/outbound/campaigns/c1"
    fake.script("GET", path, _error(429, "too.many.requests", headers={"Retry-After": "2"}),
                httpx.Response(200, json=GUIDE_CAMPAIGN))
    async with _client(fake) as client:
        await _drive(clock, client.get_campaign("c1"))
    (t1, _), (t2, _) = fake.requests
    assert t2 - t1 == pytest.approx(2.0)
    assert client.stats.http_429 == 1


async def test_429_takes_the_longer_of_retry_after_and_ratelimit_reset(fake: FakePlatform, clock: FakeClock) -> None:
    path = "/api/v2/outbound/campaigns/c1"
    headers = {"Retry-After": "1", "inin-ratelimit-count": "11", "inin-ratelimit-allowed": "10",
               "inin-ratelimit-reset": "3"}
    fake.script("GET", path, _error(429, "too.many.requests", headers=headers),
                httpx.Response(200, json=GUIDE_CAMPAIGN))
    async with _client(fake) as client:
        await _drive(clock, client.get_campaign("c1"))
    (t1, _), (t2, _) = fake.requests
    assert t2 - t1 == pytest.approx(3.0)


async def test_429_holds_back_every_key_of_the_tenant(fake: FakePlatform, clock: FakeClock) -> None:
    fake.script("GET", "/api/v2/outbound/campaigns/c1", _error(429, "too.many.requests", headers={"Retry-After": "5"}))
    fake.always("GET", "/api/v2/outbound/campaigns/c1", httpx.Response(200, json=GUIDE_CAMPAIGN))
    fake.always("GET", "/api/v2/outbound/campaigns/c2", httpx.Response(200, json={**GUIDE_CAMPAIGN, "id": "c2"}))
    async with _client(fake) as client:
        first = asyncio.ensure_future(client.get_campaign("c1"))
        await clock.settle()
        t0 = clock.monotonic()
        other = asyncio.ensure_future(client.get_campaign("c2"))
        await clock.run_until(asyncio.gather(first, other))
    c2_times = [t for t, r in fake.requests if r.url.path.endswith("/c2")]
    # Held back the full 5 s like every key, then served within one pacing interval (c1's retry
    # may take the first slot when the hold ends).
    assert 5.0 - 1e-9 <= c2_times[0] - t0 <= 5.0 + 1.05 / 10 + 1e-9


async def test_429_without_headers_backs_off_and_gives_up_after_bounded_waits(
    fake: FakePlatform, clock: FakeClock
) -> None:
    fake.always("GET", "/api/v2/outbound/campaigns/c1", _error(429, "too.many.requests"))
    async with _client(fake, max_rate_limit_waits=3) as client:
        with pytest.raises(PlatformRateLimited):
            await _drive(clock, client.get_campaign("c1"))
    times = [t for t, _ in fake.requests]
    assert len(times) == 4
    assert all(b > a for a, b in itertools.pairwise(times))


async def test_429_asking_for_too_long_a_wait_raises_at_once(fake: FakePlatform, clock: FakeClock) -> None:
    fake.always("GET", "/api/v2/outbound/campaigns/c1",
                _error(429, "too.many.requests", headers={"Retry-After": "600"}))
    async with _client(fake, max_retry_after=60.0) as client:
        with pytest.raises(PlatformRateLimited) as info:
            await _drive(clock, client.get_campaign("c1"))
    assert info.value.retry_after == 600.0
    assert len(fake.requests) == 1


async def test_get_reauthenticates_once_on_401(fake: FakePlatform) -> None:
    fake.always("GET", "/api/v2/outbound/campaigns/c1", httpx.Response(200, json=GUIDE_CAMPAIGN))
    async with _client(fake) as client:
        await client.get_campaign("c1")
        fake.revoke_all()  # the platform forgot our token
        assert (await client.get_campaign("c1")).id == "c1"
        assert fake.tokens_issued == 2
        fake.valid.clear()

        def always_refuse(request: httpx.Request) -> httpx.Response:
            fake.valid.clear()
            return _error(401, "bad.credentials")

        fake.always("GET", "/api/v2/outbound/campaigns/c1", always_refuse)
        fake.valid.add("unused")
        with pytest.raises(PlatformAuthError):
            await client.get_campaign("c1")


async def test_every_get_goes_through_the_tenant_limiter(fake: FakePlatform, clock: FakeClock) -> None:
    for i in range(5):
        fake.always("GET", f"/api/v2/outbound/campaigns/c{i}",
                    httpx.Response(200, json={**GUIDE_CAMPAIGN, "id": f"c{i}"}))
    async with _client(fake, request_margin=0.0) as client:
        reads = [client.get_campaign(f"c{i % 5}") for i in range(45)]
        await clock.run_until(asyncio.gather(*reads))
    times = sorted(t for t, _ in fake.requests)
    assert len(times) == 45
    worst = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    assert worst == 10


async def test_a_shared_limiter_spans_clients(fake: FakePlatform, clock: FakeClock) -> None:
    limiter = RequestBudget(clock, limit=3)
    fake.always("GET", "/api/v2/outbound/campaigns/c1", httpx.Response(200, json=GUIDE_CAMPAIGN))
    async with _client(fake, budget=limiter) as one, _client(fake, budget=limiter) as two:
        await clock.run_until(asyncio.gather(*(c.get_campaign("c1") for c in (one, two, one, two, one, two))))
    times = sorted(t for t, _ in fake.requests)
    assert times[3] - times[0] >= 1.0
    await limiter.aclose()


# --- transitions -------------------------------------------------------------------------------------


async def test_guide_post_returns_an_accepted_receipt(fake: FakePlatform, clock: FakeClock) -> None:
    path = "/api/v2/outbound/campaigns/c1/pause"
    fake.always("POST", path, httpx.Response(202, json={}, headers={"Location": "/api/v2/outbound/campaigns/c1"}))
    async with _client(fake) as client:
        receipt = await client.send_action("c1", Action.PAUSE)
    assert (receipt.campaign_id, receipt.action, receipt.status) == ("c1", Action.PAUSE, 202)
    assert receipt.location == "/api/v2/outbound/campaigns/c1"
    assert receipt.sent_at == clock.now() and receipt.answered_at == clock.now()
    (req,) = fake.sent("POST", path)
    assert orjson.loads(req.content) == {}
    assert req.headers["Content-Type"] == "application/json"


async def test_genesys_post_start_has_no_body(fake: FakePlatform) -> None:
    path = "/api/v2/outbound/campaigns/c1/start"
    fake.always("POST", path, httpx.Response(202))
    async with _client(fake, "genesys") as client:
        receipt = await client.send_action("c1", Action.START)
    assert receipt.status == 202 and receipt.location is None
    (req,) = fake.sent("POST", path)
    assert req.content == b""


@pytest.mark.parametrize(
    ("action", "source", "route"),
    [(Action.PAUSE, CampaignState.RUNNING, "stop"), (Action.STOP, CampaignState.RUNNING, "stop"),
     (Action.RESUME, CampaignState.PAUSED, "start"), (Action.START, CampaignState.STOPPED, "start")],
)
async def test_genesys_pause_and_stop_turn_off_resume_and_start_turn_on(
        fake: FakePlatform, action: Action, source: CampaignState, route: str) -> None:
    path = f"/api/v2/outbound/campaigns/c1/{route}"
    fake.always("POST", path, httpx.Response(202))
    async with _client(fake, "genesys") as client:
        receipt = await client.send_action("c1", action, source=source)
    assert (receipt.method, receipt.path, receipt.status) == ("POST", path, 202)
    assert [(r.method, r.url.path) for _, r in fake.requests if r.url.path != "/oauth/token"] == [("POST", path)]


async def test_genesys_stop_of_a_paused_campaign_sends_nothing(fake: FakePlatform) -> None:
    """The campaign is off already: the stop only changes our intent, so no request leaves."""
    async with _client(fake, "genesys") as client:
        receipt = await client.send_action("c1", Action.STOP, source=CampaignState.PAUSED)
    assert receipt.method is None and receipt.action is Action.STOP
    assert [r for _, r in fake.requests if r.url.path != "/oauth/token"] == []


async def test_genesys_start_with_recycle_resets_progress_then_starts(fake: FakePlatform) -> None:
    base = "/api/v2/outbound/campaigns/c1"
    fake.always("DELETE", f"{base}/progress", httpx.Response(204))
    fake.always("POST", f"{base}/start", httpx.Response(202))
    async with _client(fake, "genesys") as client:
        await client.send_action("c1", Action.START, source=CampaignState.STOPPED, recycle=True)
    assert [(r.method, r.url.path) for _, r in fake.requests if r.url.path != "/oauth/token"] == [
        ("DELETE", f"{base}/progress"), ("POST", f"{base}/start")]


async def test_a_failed_recycle_turns_nothing_on(fake: FakePlatform) -> None:
    base = "/api/v2/outbound/campaigns/c1"
    fake.always("DELETE", f"{base}/progress", _error(400, "bad.request", "recycle at most every 5 seconds"))
    async with _client(fake, "genesys") as client:
        with pytest.raises(PlatformError, match="5 seconds"):
            await client.send_action("c1", Action.START, source=CampaignState.STOPPED, recycle=True)
    assert fake.sent("POST", f"{base}/start") == []


async def test_recycle_is_refused_where_it_does_not_exist(fake: FakePlatform) -> None:
    async with _client(fake, "guide") as client:
        with pytest.raises(ValueError, match="recycle"):
            await client.send_action("c1", Action.START, recycle=True)
    async with _client(fake, "genesys") as client:
        with pytest.raises(ValueError, match="recycle"):
            await client.send_action("c1", Action.STOP, recycle=True)
    assert [r for _, r in fake.requests if r.url.path != "/oauth/token"] == []


@pytest.mark.parametrize("action", [Action.RESET])
async def test_genesys_refuses_actions_it_lacks_without_a_request(fake: FakePlatform, action: Action) -> None:
    async with _client(fake, "genesys") as client:
        with pytest.raises(ValueError, match=f"no '{action.value}' action"):
            await client.send_action("c1", action)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (_error(500, "internal.server.error"), PlatformUnavailable),
        (_error(503, "service.unavailable"), PlatformUnavailable),
        (_error(429, "too.many.requests", headers={"Retry-After": "1"}), PlatformRateLimited),
        (_error(409, "campaign.state.conflict"), PlatformConflict),
        (_error(400, "bad.request", "Invalid transition from <ON> to <ON>"), PlatformConflict),
        (_error(404, "not.found"), PlatformNotFound),
        (httpx.ReadTimeout("no answer"), PlatformUnavailable),
        (httpx.WriteTimeout("stuck"), PlatformUnavailable),
        (httpx.ConnectError("refused"), PlatformUnavailable),
        (httpx.RemoteProtocolError("peer closed"), PlatformUnavailable),
    ],
)
@pytest.mark.parametrize("profile", ["guide", "genesys"])
async def test_post_is_never_resent(
    fake: FakePlatform, clock: FakeClock, profile: str, reply: Reply, error: type[Exception]
) -> None:
    path = "/api/v2/outbound/campaigns/c1/stop"
    fake.script("POST", path, reply)
    fake.always("POST", path, httpx.Response(202))  # a re-send would succeed: it must not happen
    async with _client(fake, profile) as client:
        task = asyncio.ensure_future(client.send_action("c1", Action.STOP))
        for _ in range(20):  # give any hidden retry loop time to fire
            await clock.advance(10.0)
        with pytest.raises(error) as info:
            await task
    assert type(info.value) is error
    assert len(fake.sent("POST", path)) == 1
    if error is not PlatformRateLimited:
        assert info.value.sent_at == pytest.approx(clock.now() - 200.0)


async def test_post_rate_limited_carries_retry_after(fake: FakePlatform) -> None:
    path = "/api/v2/outbound/campaigns/c1/start"
    fake.always("POST", path, _error(429, "too.many.requests", headers={"Retry-After": "4"}))
    async with _client(fake) as client:
        with pytest.raises(PlatformRateLimited) as info:
            await client.send_action("c1", Action.START)
    assert info.value.retry_after == 4.0


async def test_post_after_401_reauthenticates_and_sends_once_more(fake: FakePlatform) -> None:
    path = "/api/v2/outbound/campaigns/c1/start"
    fake.always("POST", path, httpx.Response(202))
    async with _client(fake) as client:
        await client.tokens.token()
        fake.revoke_all()
        receipt = await client.send_action("c1", Action.START)
    assert receipt.status == 202
    posts = fake.sent("POST", path)
    assert [p.headers["Authorization"] for p in posts] == ["Bearer token-1", "Bearer token-2"]


async def test_post_refused_twice_is_an_auth_error_after_two_sends(fake: FakePlatform) -> None:
    path = "/api/v2/outbound/campaigns/c1/start"

    def refuse(request: httpx.Request) -> httpx.Response:
        return _error(401, "bad.credentials")

    fake.always("POST", path, refuse)
    async with _client(fake) as client:
        with pytest.raises(PlatformAuthError):
            await client.send_action("c1", Action.START)
    assert len(fake.sent("POST", path)) == 2


async def test_genesys_put_with_version(fake: FakePlatform) -> None:
    path = "/api/v2/outbound/campaigns/c1"
    fake.always("GET", path, httpx.Response(200, json=GENESYS_CAMPAIGN))
    fake.always("PUT", path, lambda r: httpx.Response(
        200, json={**orjson.loads(r.content), "version": orjson.loads(r.content)["version"] + 1}))
    async with _client(fake, "genesys") as client:
        snap = await client.set_campaign_status_put("c1", "on")
    assert (snap.state, snap.version) == (CampaignState.RUNNING, 5)
    (put,) = fake.sent("PUT", path)
    body = orjson.loads(put.content)
    assert (body["version"], body["campaignStatus"], body["dialingMode"]) == (4, "on", "progressive")


async def test_genesys_send_action_can_use_put(fake: FakePlatform) -> None:
    path = "/api/v2/outbound/campaigns/c1"
    fake.always("GET", path, httpx.Response(200, json=GENESYS_CAMPAIGN))
    fake.always("PUT", path, lambda r: httpx.Response(200, json=orjson.loads(r.content)))
    async with _client(fake, "genesys", genesys_status_via_put=True) as client:
        receipt = await client.send_action("c1", Action.STOP)
    assert receipt.status == 200 and receipt.action is Action.STOP
    assert orjson.loads(fake.sent("PUT", path)[0].content)["campaignStatus"] == "off"
    assert fake.sent("POST", f"{path}/stop") == []


async def test_genesys_put_with_stale_version_is_a_conflict_without_a_second_put(fake: FakePlatform) -> None:
    path = "/api/v2/outbound/campaigns/c1"
    fake.always("GET", path, httpx.Response(200, json=GENESYS_CAMPAIGN))
    fake.always("PUT", path, _error(409, "conflict", "version 4 is stale"))
    async with _client(fake, "genesys") as client:
        with pytest.raises(PlatformConflict, match="stale"):
            await client.set_campaign_status_put("c1", "off")
        with pytest.raises(ValueError, match="'on' or 'off'"):
            await client.set_campaign_status_put("c1", "paused")
    assert len(fake.sent("PUT", path)) == 1


async def test_put_is_genesys_only(fake: FakePlatform) -> None:
    async with _client(fake, "guide") as client:
        with pytest.raises(ValueError, match="genesys"):
            await client.set_campaign_status_put("c1", "on")


# --- notification channel REST ----------------------------------------------------------------------


async def test_channel_creation_and_subscriptions(fake: FakePlatform) -> None:
    fake.always("POST", "/api/v2/notifications/channels",
                httpx.Response(200, json={"id": "ch1", "connectUri": "ws://x/ch1", "expires": "2030-01-01T00:00:00Z"}))
    fake.always("PUT", "/api/v2/notifications/channels/ch1/subscriptions", httpx.Response(200, json={}))
    fake.always("POST", "/api/v2/notifications/channels/ch1/subscriptions",
                _error(400, "too.many.topics"))
    async with _client(fake) as client:
        channel = await client.create_notification_channel()
        assert (channel.id, channel.connect_uri) == ("ch1", "ws://x/ch1")
        await client.set_channel_topics("ch1", ["v2.outbound.campaigns.c1"], replace=True)
        with pytest.raises(PlatformError, match=r"too\.many\.topics"):
            await client.set_channel_topics("ch1", ["v2.outbound.campaigns.c2"], replace=False)
    (put,) = fake.sent("PUT", "/api/v2/notifications/channels/ch1/subscriptions")
    assert orjson.loads(put.content) == [{"id": "v2.outbound.campaigns.c1"}]


# --- hygiene -------------------------------------------------------------------------------------------


async def test_secret_and_token_stay_out_of_logs_errors_and_reprs(
    fake: FakePlatform, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script("GET", "/api/v2/outbound/campaigns/c1", _error(500, "x"), httpx.Response(200, json=GUIDE_CAMPAIGN))
    fake.always("POST", "/api/v2/outbound/campaigns/c1/start", httpx.ReadTimeout("slow"))
    errors: list[BaseException] = []
    async with _client(fake) as client:
        await _drive(clock, client.get_campaign("c1"))
        try:
            await client.send_action("c1", Action.START)
        except PlatformError as exc:
            errors.append(exc)
        texts = [caplog.text, repr(client), str(client), repr(client.tokens), repr(vars(client))]
    texts += [str(e) for e in errors] + [repr(e) for e in errors] + [repr(e.__cause__) for e in errors]
    assert errors
    for text in texts:
        assert SECRET not in text
        assert "token-1" not in text


async def test_auth_failure_keeps_the_secret_out(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client"})

    client = PlatformClient("http://p.test", "client-1", SECRET, clock=clock, transport=httpx.MockTransport(handler))
    async with client:
        with pytest.raises(PlatformAuthError) as info:
            await client.get_campaign("c1")
    for text in (str(info.value), repr(info.value), caplog.text, repr(client)):
        assert SECRET not in text


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown platform profile 'purecloud'"):
        PlatformClient("http://p.test", "id", "secret", profile="purecloud")
