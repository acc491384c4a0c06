"""The REST client against the simulator over real HTTP, both profiles, with the guide's faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from adapters.clock import SystemClock
from adapters.devtools.simulator.app import Simulator, SimulatorConfig
from adapters.devtools.simulator.faults import FaultConfig
from adapters.devtools.simulator.server import run_simulator
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.platform import PlatformClient
from fsm.ports import CampaignSnapshot, PlatformConflict, PlatformUnavailable
from fsm.request_budget import RequestBudget
from schemas.types import Action, CampaignState, DialerType

pytestmark = pytest.mark.integration

PROFILES = ["guide", "genesys"]


@asynccontextmanager
async def platform(
    profile: str,
    *,
    campaigns: int = 4,
    dialers: int = 1,
    time_scale: float = 50.0,
    faults: FaultConfig | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    read_rate: int = 10,
    dialer_types: tuple[DialerType, ...] = (DialerType.PREDICTIVE,),
) -> AsyncIterator[tuple[PlatformClient, Simulator]]:
    config = SimulatorConfig(profile=profile, faults=faults or FaultConfig())  # type: ignore[arg-type]
    tenant = generate_tenant(campaigns, dialers, dialer_types=dialer_types)
    async with run_simulator(tenant, config, time_scale=time_scale) as (url, sim):
        # The platform's rate limit and token lifetime are in real seconds; only physics is scaled.
        limiter = RequestBudget(SystemClock(), limit=read_rate, margin=0.05)
        client = PlatformClient(url, config.client_id, config.client_secret, profile=profile,
                                clock=SystemClock(time_scale), budget=limiter, transport=transport)
        try:
            yield client, sim
        finally:
            await client.aclose()
            await limiter.aclose()


async def poll_until(read: Callable[[], Awaitable[CampaignSnapshot]], pred: Callable[[CampaignSnapshot], bool],
                     limit: float = 20.0) -> CampaignSnapshot:
    """Poll (through the limiter) until `pred`; `limit` only bounds a failure."""
    async with asyncio.timeout(limit):
        while True:
            snap = await read()
            if pred(snap):
                return snap
            await asyncio.sleep(0.05)


def _posts(sim: Simulator, campaign_id: str) -> list[int]:
    return [r.status for r in sim.traffic.select(kind="command", campaign_id=campaign_id)]


@pytest.mark.parametrize("profile", PROFILES)
async def test_reads_and_a_start_end_to_end(profile: str) -> None:
    async with platform(profile) as (client, sim):
        campaigns = await client.list_campaigns()
        assert [c.id for c in campaigns] == sorted(sim.tenant.campaigns)
        first = campaigns[0]
        assert first.state is CampaignState.STOPPED and first.dialer_id == "dialer-01"
        receipt = await client.send_action(first.id, Action.START)
        assert receipt.status == 202 and receipt.answered_at >= receipt.sent_at
        running = await poll_until(lambda: client.get_campaign(first.id), lambda s: s.state is CampaignState.RUNNING)
        assert running.platform_status == ("RUNNING" if profile == "guide" else "on")
        contact_list = await client.get_contact_list(first.contact_list_id or "")
        assert contact_list.ready and not contact_list.locked
        load = await client.get_dialer_load(first.dialer_id, first.id)
        assert load.dialer_id == "dialer-01" and load.active_calls >= 0
        # genesys: the edge group's outbound lines from /linedistribution (issue 14), no longer unknown.
        assert load.capacity == 100
        assert await client.get_errors(first.id) == []
    assert _posts(sim, first.id) == [202]
    assert sim.traffic.summary()["http429"] == 0


@pytest.mark.parametrize("profile", PROFILES)
async def test_reads_through_the_limiter_never_meet_429(profile: str) -> None:
    async with platform(profile, campaigns=8) as (client, sim):
        ids = sorted(sim.tenant.campaigns)
        await asyncio.gather(*(client.get_campaign(ids[i % len(ids)]) for i in range(35)))
    reads = sim.traffic.select(kind="read")
    assert len(reads) == 35
    assert all(r.status == 200 for r in reads)
    assert sim.traffic.reads_per_second_peak() <= 10


async def test_a_burst_past_the_platform_limit_is_waited_out_via_retry_after() -> None:
    # Control: a limiter allowing 40/s lets the simulator's 10/s limit bite; the client honours its 429s.
    async with platform("guide", campaigns=8, read_rate=40) as (client, sim):
        ids = sorted(sim.tenant.campaigns)
        snaps = await asyncio.gather(*(client.get_campaign(ids[i % len(ids)]) for i in range(20)))
    assert len(snaps) == 20
    assert client.stats.http_429 > 0
    assert len(sim.traffic.select(kind="read", status=429)) == client.stats.http_429
    assert len(sim.traffic.select(kind="read", status=200)) == 20


@pytest.mark.parametrize("profile", PROFILES)
async def test_dialer_overload_409_is_a_conflict_and_is_not_resent(profile: str) -> None:
    async with platform(profile, time_scale=1.0) as (client, sim):
        ids = sorted(sim.tenant.campaigns)
        action, before = _overload_setup(profile, sim, ids[:4])
        for cid in ids[:3]:
            await client.send_action(cid, action)
        with pytest.raises(PlatformConflict):
            await client.send_action(ids[3], action)
        await asyncio.sleep(0.3)
        assert _posts(sim, ids[3]) == [409]
        assert sim.state_of(ids[3]) is before


def _overload_setup(profile: str, sim: Simulator, ids: list[str]) -> tuple[Action, CampaignState]:
    """The action that keeps a dialer busy: on genesys a start is over behind `on` at once (nothing
    visible is in progress, issue 14), so there three visible `stopping`s fill the dialer."""
    if profile == "guide":
        return Action.START, CampaignState.STOPPED
    for cid in ids:
        sim.set_state(cid, CampaignState.RUNNING)
    return Action.STOP, CampaignState.RUNNING


@pytest.mark.parametrize("profile", PROFILES)
async def test_dialer_overload_500_is_unavailable_and_is_not_resent(profile: str) -> None:
    faults = FaultConfig(overload_500_probability=1.0)
    async with platform(profile, time_scale=1.0, faults=faults) as (client, sim):
        ids = sorted(sim.tenant.campaigns)
        action, _ = _overload_setup(profile, sim, ids[:4])
        for cid in ids[:3]:
            await client.send_action(cid, action)
        with pytest.raises(PlatformUnavailable) as info:
            await client.send_action(ids[3], action)
        assert info.value.status == 500 and info.value.sent_at is not None
        await asyncio.sleep(0.3)
        assert _posts(sim, ids[3]) == [500]
    assert client.stats.http_5xx_unretried == 1


@pytest.mark.parametrize("profile", PROFILES)
async def test_invalid_transition_is_a_conflict(profile: str) -> None:
    async with platform(profile) as (client, sim):
        cid = sorted(sim.tenant.campaigns)[0]
        with pytest.raises(PlatformConflict) as info:
            await client.send_action(cid, Action.STOP)  # already STOPPED
        assert info.value.status == (409 if profile == "guide" else 400)
        assert _posts(sim, cid) == [info.value.status]


@pytest.mark.parametrize("profile", PROFILES)
async def test_a_locked_list_holds_the_start_with_empty_errors(profile: str) -> None:
    async with platform(profile, time_scale=50.0) as (client, sim):
        first = sim.tenant.campaigns[sorted(sim.tenant.campaigns)[0]]
        sim.set_contact_list(first.contact_list_id, state="LOCKED")
        listed = await client.get_contact_list(first.contact_list_id)
        assert not listed.ready and listed.locked
        await client.send_action(first.id, Action.START)
        await asyncio.sleep(0.5)  # 25 simulated seconds: far past the 8 s predictive start
        snap = await client.get_campaign(first.id)
        # Genesys has no starting status: the held campaign shows "on" (see docs/platform-profiles.md).
        expected = CampaignState.STARTING if profile == "guide" else CampaignState.RUNNING
        assert snap.state is expected and sim.state_of(first.id) is CampaignState.STARTING
        assert snap.errors == () and await client.get_errors(first.id) == []
        sim.set_contact_list(first.contact_list_id, state="ACTIVE")
        assert (await client.get_contact_list(first.contact_list_id)).ready
        await poll_until(lambda: client.get_campaign(first.id), lambda s: s.state is CampaignState.RUNNING)
        assert sim.state_of(first.id) is CampaignState.RUNNING


@pytest.mark.parametrize("profile", PROFILES)
async def test_a_transition_ending_in_failed_reports_its_errors(profile: str) -> None:
    errors = [{"code": "dialer.compliance.blocked", "message": "compliance throttling is active"}]
    async with platform(profile, time_scale=50.0) as (client, sim):
        cid = sorted(sim.tenant.campaigns)[0]
        sim.next_transition(cid, "fail", errors=errors)
        await client.send_action(cid, Action.START)
        failed = await poll_until(lambda: client.get_campaign(cid), lambda s: s.state is CampaignState.FAILED)
        assert failed.platform_status == ("FAILED" if profile == "guide" else "invalid")
        assert await client.get_errors(cid) == errors


@pytest.mark.parametrize("profile", PROFILES)
async def test_revoked_token_reauthenticates_and_a_post_is_sent_at_most_twice(profile: str) -> None:
    async with platform(profile) as (client, sim):
        cid = sorted(sim.tenant.campaigns)[0]
        await client.get_campaign(cid)
        sim.tokens.revoke_all()
        assert (await client.get_campaign(cid)).id == cid
        sim.tokens.revoke_all()
        receipt = await client.send_action(cid, Action.START)
        assert receipt.status == 202
        assert _posts(sim, cid) == [401, 202]
        assert len(sim.traffic.select(kind="auth")) == 3


class _RaceTransport(httpx.AsyncBaseTransport):
    """A real transport that lets the test act on the platform just before a PUT goes out."""

    def __init__(self, before_put: Callable[[], Any]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._before_put = before_put

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self._before_put()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_genesys_put_with_version_and_the_stale_version_conflict() -> None:
    holder: dict[str, Simulator] = {}
    race = {"on": False}

    def bump() -> None:
        if race["on"]:
            sim = holder["sim"]
            cid = sorted(sim.tenant.campaigns)[1]
            sim.set_state(cid, CampaignState.STOPPED)  # someone else edits the campaign: version + 1

    async with platform("genesys", transport=_RaceTransport(bump)) as (client, sim):
        holder["sim"] = sim
        first, second = sorted(sim.tenant.campaigns)[:2]
        snap = await client.set_campaign_status_put(first, "on")
        assert snap.state is CampaignState.RUNNING
        race["on"] = True
        with pytest.raises(PlatformConflict):
            await client.set_campaign_status_put(second, "on")
        puts = [r.status for r in sim.traffic.select(method="PUT", campaign_id=second)]
        assert puts == [409]
