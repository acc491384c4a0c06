"""Notification channels against the simulator over a real WebSocket, both profiles, with its faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters.clock import SystemClock
from adapters.devtools.simulator.app import Simulator, SimulatorConfig
from adapters.devtools.simulator.faults import FaultConfig
from adapters.devtools.simulator.server import run_simulator
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.platform import NotificationChannels, PlatformClient
from fsm.ports import Notification
from fsm.request_budget import RequestBudget
from schemas.types import Action, CampaignState, DialerType

pytestmark = pytest.mark.integration

SCALE = 50.0  # heartbeat every 30 simulated s = 0.6 s real; client ping 15 s = 0.3 s


class Session:
    def __init__(self, client: PlatformClient, sim: Simulator, channels: NotificationChannels) -> None:
        self.client, self.sim, self.channels = client, sim, channels
        self.received: list[Notification] = []
        self.states: list[bool] = []

    async def listener(self, note: Notification) -> None:
        self.received.append(note)

    def campaign_states(self, campaign_id: str) -> list[CampaignState | None]:
        return [n.campaign.state for n in self.received if n.campaign is not None and n.campaign.id == campaign_id]


@asynccontextmanager
async def session(
    profile: str, *, campaigns: int = 3, faults: FaultConfig | None = None, **channel_kw: Any
) -> AsyncIterator[Session]:
    config = SimulatorConfig(profile=profile, faults=faults or FaultConfig())  # type: ignore[arg-type]
    tenant = generate_tenant(campaigns, 1, dialer_types=(DialerType.POWER,))
    async with run_simulator(tenant, config, time_scale=SCALE) as (url, sim):
        clock = SystemClock(SCALE)
        limiter = RequestBudget(SystemClock(), limit=10, margin=0.05)
        client = PlatformClient(url, config.client_id, config.client_secret, profile=profile, clock=clock,
                                budget=limiter)
        holder: list[Session] = []

        async def listener(note: Notification) -> None:
            await holder[0].listener(note)

        channels = NotificationChannels(client, listener, **channel_kw)
        s = Session(client, sim, channels)
        holder.append(s)
        channels.add_state_listener(s.states.append)
        try:
            yield s
        finally:
            await channels.stop()
            await client.aclose()
            await limiter.aclose()


async def eventually(pred: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait for a condition the system reaches on its own; `limit` only bounds a failure."""
    async with asyncio.timeout(limit):
        while not pred():  # noqa: ASYNC110 - polling observable state across a real socket
            await asyncio.sleep(0.02)


async def _started(s: Session, campaign_ids: list[str], list_ids: tuple[str, ...] = ()) -> None:
    await s.channels.subscribe_campaigns(campaign_ids)
    if list_ids:
        await s.channels.subscribe_contact_lists(list(list_ids))
    await s.channels.start()
    await eventually(lambda: s.channels.up)


@pytest.mark.parametrize("profile", ["guide", "genesys"])
async def test_state_changes_arrive_as_parsed_notifications(profile: str) -> None:
    async with session(profile) as s:
        cid = sorted(s.sim.tenant.campaigns)[0]
        lid = s.sim.campaign(cid).contact_list_id
        await _started(s, [cid], (lid,))
        await s.client.send_action(cid, Action.START)
        await eventually(lambda: CampaignState.RUNNING in s.campaign_states(cid))
        if profile == "guide":
            assert s.campaign_states(cid)[:2] == [CampaignState.STARTING, CampaignState.RUNNING]
        s.sim.set_contact_list(lid, state="LOCKED")
        await eventually(lambda: any(n.contact_list_id == lid for n in s.received))
        note = next(n for n in s.received if n.contact_list_id == lid)
        assert note.topic == f"v2.outbound.contactlists.{lid}" and note.body["id"] == lid
        assert s.states == [True]


async def test_heartbeats_and_pongs_keep_the_channel_up() -> None:
    async with session("guide") as s:
        await _started(s, sorted(s.sim.tenant.campaigns))
        await asyncio.sleep(3.0)  # 150 simulated seconds: five heartbeats, ten pings
        assert s.states == [True] and s.channels.up
        assert s.channels.channel_count == 1 and len(s.sim.hub.channels) == 1


async def test_socket_closing_is_bridged_without_going_down_or_losing_events() -> None:
    async with session("guide") as s:
        cid = sorted(s.sim.tenant.campaigns)[0]
        await _started(s, [cid])
        (channel_id,) = s.channels.channel_ids()
        assert channel_id is not None
        assert s.sim.hub.announce_close(channel_id, grace=5.0) == 1
        await eventually(lambda: s.channels._workers[0].sessions == 2)
        await s.client.send_action(cid, Action.START)
        await eventually(lambda: CampaignState.RUNNING in s.campaign_states(cid))
        await asyncio.sleep(0.3)  # past the 5 simulated s grace: the old socket is gone
        assert s.states == [True]
        assert s.channels.channel_ids() == [channel_id]  # same channel, new socket
        outcomes = {r.outcome for r in s.sim.hub.log if r.topic.endswith(cid)}
        assert outcomes == {"delivered"}


@pytest.mark.parametrize("profile", ["guide", "genesys"])
async def test_a_closed_socket_means_down_then_up_and_resubscribed(profile: str) -> None:
    async with session(profile) as s:
        cid = sorted(s.sim.tenant.campaigns)[0]
        await _started(s, [cid])
        s.sim.hub.close_now()
        await eventually(lambda: s.states == [True, False, True])
        await s.client.send_action(cid, Action.START)
        await eventually(lambda: CampaignState.RUNNING in s.campaign_states(cid))


async def test_an_expired_channel_is_replaced_and_topics_subscribed_again() -> None:
    async with session("guide") as s:
        cid = sorted(s.sim.tenant.campaigns)[0]
        await _started(s, [cid])
        (old,) = s.channels.channel_ids()
        assert old is not None and s.sim.hub.expire(old)
        await eventually(lambda: s.channels.up and s.channels.channel_ids() != [old])
        (new,) = s.channels.channel_ids()
        assert new is not None
        assert list(s.sim.hub.channels[new].topics) == [f"v2.outbound.campaigns.{cid}"]
        await s.client.send_action(cid, Action.START)
        await eventually(lambda: CampaignState.RUNNING in s.campaign_states(cid))


async def test_channel_lifetime_is_renewed_before_it_ends() -> None:
    async with session("guide", channel_lifetime=200.0, renew_before=100.0) as s:
        cid = sorted(s.sim.tenant.campaigns)[0]
        await _started(s, [cid])
        (first,) = s.channels.channel_ids()
        await eventually(lambda: s.channels.channel_ids() != [first] and s.channels.up)
        assert s.states == [True]
        await s.client.send_action(cid, Action.START)
        await eventually(lambda: CampaignState.RUNNING in s.campaign_states(cid))


async def test_dropped_notifications_are_invisible_so_polling_finds_the_change() -> None:
    async with session("guide") as s:
        cid = sorted(s.sim.tenant.campaigns)[0]
        await _started(s, [cid])
        s.sim.faults.drop_next = 100
        await s.client.send_action(cid, Action.START)
        snap = await s.client.get_campaign(cid)
        async with asyncio.timeout(10):
            while snap.state is not CampaignState.RUNNING:
                await asyncio.sleep(0.05)
                snap = await s.client.get_campaign(cid)
        assert s.campaign_states(cid) == []
        assert {r.outcome for r in s.sim.hub.log if r.topic.endswith(cid)} == {"dropped"}
        assert s.channels.up  # a drop cannot be seen on the socket: that is why polling stays on


async def test_more_than_1000_topics_use_two_platform_channels() -> None:
    async with session("genesys") as s:
        ids = [f"extra-{i}" for i in range(1200)]
        await _started(s, ids)
        assert s.channels.channel_count == 2
        assert sorted(len(ch.topics) for ch in s.sim.hub.channels.values()) == [200, 1000]


async def test_probabilistic_socket_closing_keeps_delivering() -> None:
    faults = FaultConfig(socket_close_probability=0.5, socket_close_grace_seconds=5.0)
    async with session("guide", faults=faults) as s:
        ids = sorted(s.sim.tenant.campaigns)
        await _started(s, ids)
        await eventually(lambda: s.channels._workers[0].sessions >= 2)  # a heartbeat announced a close
        for cid in ids:
            await s.client.send_action(cid, Action.START)
        await eventually(lambda: all(CampaignState.RUNNING in s.campaign_states(c) for c in ids))


# --- within the platform's caps (issue 14, item 6) ------------------------------------------------


async def test_a_rejected_topic_is_dropped_counted_and_its_campaign_polled() -> None:
    async with session("genesys") as s:
        first, second, third = sorted(s.sim.tenant.campaigns)
        s.sim.hub.rejected = [f"v2.outbound.campaigns.{second}", f"v2.outbound.campaigns.{third}"]
        await _started(s, [first, second])  # subscribed by the connect's PUT
        assert s.channels.live(first) and not s.channels.live(second)
        assert s.channels.rejections == 1 and f"v2.outbound.campaigns.{second}" in s.channels.rejected
        (channel_id,) = s.channels.channel_ids()
        assert channel_id is not None
        assert list(s.sim.hub.channels[channel_id].topics) == [f"v2.outbound.campaigns.{first}"]
        await s.channels.subscribe_campaigns([third])  # added later, by POST: that answer is read too
        assert not s.channels.live(third) and s.channels.rejections == 2
        await s.client.send_action(first, Action.START)
        await eventually(lambda: CampaignState.RUNNING in s.campaign_states(first))
        assert s.channels.up and s.states == [True]  # a rejection is no outage


async def test_topics_beyond_max_channels_wait_and_get_the_room_an_unsubscribe_makes() -> None:
    async with session("guide", campaigns=5, max_topics_per_channel=2, max_channels=2) as s:
        ids = sorted(s.sim.tenant.campaigns)
        await _started(s, ids)
        assert s.channels.channel_count == 2 and len(s.sim.hub.channels) == 2
        assert [s.channels.live(i) for i in ids] == [True, True, True, True, False]
        assert list(s.channels.unplaced) == [f"v2.outbound.campaigns.{ids[4]}"]
        await s.channels.unsubscribe_campaigns([ids[1]])  # given away on a rebalance
        assert not s.channels.live(ids[1]) and s.channels.live(ids[4]) and not s.channels.unplaced
        subscribed = {t for ch in s.sim.hub.channels.values() for t in ch.topics}
        assert subscribed == {f"v2.outbound.campaigns.{i}" for i in (ids[0], ids[2], ids[3], ids[4])}
        await s.client.send_action(ids[4], Action.START)
        await eventually(lambda: CampaignState.RUNNING in s.campaign_states(ids[4]))


async def test_contact_list_import_progress_is_followed_on_genesys() -> None:
    async with session("genesys") as s:
        cid = sorted(s.sim.tenant.campaigns)[0]
        lid = s.sim.campaign(cid).contact_list_id
        await _started(s, [cid], (lid,))
        (channel_id,) = s.channels.channel_ids()
        assert channel_id is not None
        assert f"v2.outbound.contactlists.{lid}.importstatus" in s.sim.hub.channels[channel_id].topics
        s.sim.set_contact_list(lid, state="IMPORTING", import_status="IN_PROGRESS")
        topic = f"v2.outbound.contactlists.{lid}.importstatus"
        await eventually(lambda: any(n.topic == topic for n in s.received))
        note = next(n for n in s.received if n.topic == topic)
        assert note.contact_list_id == lid  # the list gate's hint, not a list named "<id>.importstatus"
        assert (note.body["importState"], note.body["percentageComplete"]) == ("IN_PROGRESS", 50)
        await s.channels.unsubscribe_contact_lists([lid])
        assert s.sim.hub.channels[channel_id].topics == {f"v2.outbound.campaigns.{cid}": None}


async def test_a_channel_evicted_by_the_cap_is_replaced_by_a_fresh_one() -> None:
    async with session("genesys") as s:
        cid = sorted(s.sim.tenant.campaigns)[0]
        await _started(s, [cid])
        (ours,) = s.channels.channel_ids()
        # Another instance on the same OAuth client opens a channel past the cap (1 here, so ours is
        # the least recently used whatever its pings): ours is removed and its socket closed.
        s.sim.hub.max_channels = 1
        other = s.sim.hub.create()
        assert s.sim.hub.evicted == [ours]
        await eventually(lambda: s.channels.up and s.channels.channel_ids() != [ours])
        (fresh,) = s.channels.channel_ids()
        assert fresh in s.sim.hub.channels
        assert other.id in s.sim.hub.evicted  # and ours, created again, pushed the other one out in turn
        await s.client.send_action(cid, Action.START)
        await eventually(lambda: CampaignState.RUNNING in s.campaign_states(cid))
