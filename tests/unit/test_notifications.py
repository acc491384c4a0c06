"""Notification channels against a tiny local WebSocket server (port 0) and a mock REST transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from adapters.clock import SystemClock
from adapters.platform import NotificationChannels, PlatformClient
from fsm.ports import Notification
from schemas.types import CampaignState

PING = {"message": "ping"}


class RecordingClock(SystemClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


class FakeHub:
    """The platform's side: channel REST endpoints (mock transport) and the WebSocket server."""

    def __init__(self) -> None:
        self.port = 0
        self.channels: dict[str, set[str]] = {}
        self.subscription_calls: list[tuple[str, str, list[str]]] = []
        self.connections: list[tuple[str, ServerConnection]] = []
        self.from_clients: list[tuple[int, Any]] = []
        self.answer_pings = True
        self.create_failures = 0
        self.created = 0

    def rest(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 3600})
        if path == "/api/v2/notifications/channels" and request.method == "POST":
            if self.create_failures:
                self.create_failures -= 1
                return httpx.Response(503, json={"message": "busy", "code": "service.unavailable"})
            self.created += 1
            cid = f"ch{self.created}"
            self.channels[cid] = set()
            return httpx.Response(200, json={"id": cid, "connectUri": f"ws://127.0.0.1:{self.port}/{cid}",
                                             "expires": "2099-01-01T00:00:00.000Z"})
        parts = path.split("/")
        if path.endswith("/subscriptions") and len(parts) == 7:
            cid = parts[5]
            if cid not in self.channels:
                return httpx.Response(404, json={"message": "gone", "code": "not.found"})
            topics = [t["id"] for t in orjson.loads(request.content)]
            self.subscription_calls.append((request.method, cid, topics))
            if request.method == "PUT":
                self.channels[cid] = set(topics)
            else:
                self.channels[cid] |= set(topics)
            if len(self.channels[cid]) > 1000:
                return httpx.Response(400, json={"message": "too many", "code": "too.many.topics"})
            return httpx.Response(200, json={"entities": [{"id": t} for t in topics]})
        return httpx.Response(404, json={"message": "no route", "code": "not.found"})

    async def handler(self, ws: ServerConnection) -> None:
        cid = ws.request.path.strip("/") if ws.request is not None else "?"
        self.connections.append((cid, ws))
        index = len(self.connections) - 1
        async for message in ws:
            data = orjson.loads(message)
            self.from_clients.append((index, data))
            if data == PING and self.answer_pings:
                await ws.send(orjson.dumps({"topicName": "channel.metadata", "eventBody": {"message": "pong"}})
                              .decode())

    def open_connections(self) -> list[tuple[str, ServerConnection]]:
        from websockets.protocol import State

        return [(c, ws) for c, ws in self.connections if ws.state is State.OPEN]

    async def push(self, topic: str, body: Any, *, conn: int = -1) -> None:
        await self.connections[conn][1].send(orjson.dumps({"topicName": topic, "version": "2", "eventBody": body,
                                                           "metadata": {"CorrelationId": "x"}}).decode())


async def eventually(pred: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll a condition the system under test reaches on its own; `limit` only bounds a failure."""
    async with asyncio.timeout(limit):
        while not pred():  # noqa: ASYNC110 - polling observable state of a real socket exchange
            await asyncio.sleep(0.01)


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    hub = FakeHub()
    server: Server = await serve(hub.handler, "127.0.0.1", 0)
    hub.port = server.sockets[0].getsockname()[1]
    try:
        yield hub
    finally:
        server.close()
        await server.wait_closed()


class Harness:
    def __init__(self, hub: FakeHub, profile: str = "guide", **kw: Any) -> None:
        self.received: list[Notification] = []
        self.states: list[bool] = []
        self.clock = RecordingClock()
        self.client = PlatformClient("http://platform.test", "cid", "secret", profile=profile, clock=self.clock,
                                     transport=httpx.MockTransport(hub.rest))
        defaults: dict[str, Any] = {"ping_interval": 0.05, "silence_timeout": 0.5, "reconnect_base": 0.05,
                                    "reconnect_cap": 0.2}
        defaults.update(kw)
        self.channels = NotificationChannels(self.client, self.listener, on_state_change=self.states.append,
                                             **defaults)

    async def listener(self, note: Notification) -> None:
        self.received.append(note)

    async def close(self) -> None:
        await self.channels.stop()
        await self.client.aclose()


@pytest.fixture
async def harness(hub: FakeHub) -> AsyncIterator[Harness]:
    h = Harness(hub)
    try:
        yield h
    finally:
        await h.close()


GUIDE_CAMPAIGN = {"id": "c1", "state": "STOPPING", "dialerType": "PROGRESSIVE", "contactListId": "l1",
                  "dialerId": "d1", "errors": []}


async def test_subscribes_connects_and_delivers_parsed_notifications(hub: FakeHub, harness: Harness) -> None:
    await harness.channels.subscribe_campaigns(["c1"])
    await harness.channels.subscribe_contact_lists(["l1"])
    await harness.channels.start()
    await eventually(lambda: harness.channels.up)
    assert hub.subscription_calls == [("PUT", "ch1", ["v2.outbound.campaigns.c1", "v2.outbound.contactlists.l1"])]
    await hub.push("v2.outbound.campaigns.c1", GUIDE_CAMPAIGN)
    await hub.push("v2.outbound.contactlists.l1", {"id": "l1", "state": "LOCKED", "importStatus": "COMPLETED"})
    await eventually(lambda: len(harness.received) == 2)
    camp, cl = harness.received
    assert camp.topic == "v2.outbound.campaigns.c1" and camp.campaign is not None
    assert camp.campaign.state is CampaignState.STOPPING and camp.campaign.dialer_id == "d1"
    assert cl.contact_list_id == "l1" and cl.body["state"] == "LOCKED" and cl.campaign is None
    assert harness.states == [True]


async def test_genesys_campaign_bodies_are_translated(hub: FakeHub) -> None:
    h = Harness(hub, profile="genesys")
    try:
        await h.channels.subscribe_campaigns(["g1"])
        await h.channels.start()
        await eventually(lambda: h.channels.up)
        await hub.push("v2.outbound.campaigns.g1", {"id": "g1", "campaignStatus": "forced_stopping",
                                                   "dialingMode": "power", "edgeGroup": {"id": "eg"}})
        await eventually(lambda: len(h.received) == 1)
        snap = h.received[0].campaign
        assert snap is not None and snap.state is CampaignState.STOPPING and snap.platform_status == "forced_stopping"
    finally:
        await h.close()


async def test_malformed_messages_are_logged_and_skipped(
    hub: FakeHub, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    await harness.channels.subscribe_campaigns(["c1"])
    await harness.channels.start()
    await eventually(lambda: harness.channels.up)
    ws = hub.connections[-1][1]
    await ws.send("{not json")
    await ws.send("[1, 2]")
    await ws.send(orjson.dumps({"eventBody": {}}).decode())
    await hub.push("v2.outbound.campaigns.c1", {"id": "c1", "state": "DANCING"})
    await hub.push("v2.outbound.campaigns.c1", GUIDE_CAMPAIGN)
    await eventually(lambda: len(harness.received) == 1)
    assert harness.received[0].campaign is not None
    assert harness.channels.up and len(hub.connections) == 1
    assert caplog.text.count("skipping") == 4


async def test_a_campaign_body_on_another_campaigns_topic_is_ignored(hub: FakeHub, harness: Harness) -> None:
    # Issue 10, finding 8: a body for c1 on c2's topic must move neither campaign.
    await harness.channels.subscribe_campaigns(["c1", "c2"])
    await harness.channels.start()
    await eventually(lambda: harness.channels.up)
    await hub.push("v2.outbound.campaigns.c2", GUIDE_CAMPAIGN)  # GUIDE_CAMPAIGN is c1
    await hub.push("v2.outbound.campaigns.c1", GUIDE_CAMPAIGN)
    await eventually(lambda: len(harness.received) == 1)
    assert harness.received[0].topic == "v2.outbound.campaigns.c1"
    assert harness.channels.mismatched == 1


async def test_a_failing_listener_does_not_stop_the_channel(hub: FakeHub) -> None:
    h = Harness(hub)
    seen: list[str] = []

    async def flaky(note: Notification) -> None:
        seen.append(note.topic)
        if len(seen) == 1:
            raise RuntimeError("listener bug")

    h.channels._listener = flaky
    try:
        await h.channels.subscribe_contact_lists(["l1"])
        await h.channels.start()
        await eventually(lambda: h.channels.up)
        await hub.push("v2.outbound.contactlists.l1", {"id": "l1"})
        await hub.push("v2.outbound.contactlists.l1", {"id": "l1"})
        await eventually(lambda: len(seen) == 2)
        assert h.channels.up
    finally:
        await h.close()


async def test_topics_added_while_connected_are_posted(hub: FakeHub, harness: Harness) -> None:
    await harness.channels.subscribe_campaigns(["c1"])
    await harness.channels.start()
    await eventually(lambda: harness.channels.up)
    await harness.channels.subscribe_campaigns(["c1", "c2"])  # c1 is known: only c2 is new
    assert hub.subscription_calls[-1] == ("POST", "ch1", ["v2.outbound.campaigns.c2"])
    assert hub.channels["ch1"] == {"v2.outbound.campaigns.c1", "v2.outbound.campaigns.c2"}


async def test_more_than_1000_topics_open_a_second_channel(hub: FakeHub, harness: Harness) -> None:
    await harness.channels.subscribe_campaigns([f"c{i}" for i in range(1500)])
    await harness.channels.start()
    await eventually(lambda: harness.channels.up)
    assert harness.channels.channel_count == 2
    assert harness.channels.topics_per_channel() == [1000, 500]
    assert sorted(len(v) for v in hub.channels.values()) == [500, 1000]
    assert len(hub.open_connections()) == 2
    assert {t.get_name() for t in asyncio.all_tasks()} >= {"notifications-channel-0", "notifications-channel-1"}


async def test_pings_are_sent_and_pongs_keep_it_up(hub: FakeHub, harness: Harness) -> None:
    await harness.channels.subscribe_campaigns(["c1"])
    await harness.channels.start()
    await eventually(lambda: sum(1 for _, d in hub.from_clients if d == PING) >= 12)
    # Twelve pings span well past the silence timeout: the pongs alone kept the one socket alive.
    assert len(hub.connections) == 1 and harness.states == [True]


async def test_silence_means_down_then_a_new_socket(hub: FakeHub, harness: Harness) -> None:
    hub.answer_pings = False
    await harness.channels.subscribe_campaigns(["c1"])
    await harness.channels.start()
    await eventually(lambda: len(hub.connections) >= 2)
    assert harness.states[:2] == [True, False]
    hub.answer_pings = True
    await eventually(lambda: harness.channels.up)
    # Every reconnect subscribes again.
    assert [m for m, _, _ in hub.subscription_calls].count("PUT") >= 2


async def test_closed_socket_reports_down_then_up_and_resubscribes(hub: FakeHub, harness: Harness) -> None:
    await harness.channels.subscribe_campaigns(["c1"])
    await harness.channels.start()
    await eventually(lambda: harness.channels.up)
    await hub.connections[0][1].close()
    await eventually(lambda: harness.states == [True, False, True])
    assert len(hub.connections) == 2
    assert hub.subscription_calls[-1] == ("PUT", "ch1", ["v2.outbound.campaigns.c1"])
    await hub.push("v2.outbound.campaigns.c1", GUIDE_CAMPAIGN)
    await eventually(lambda: len(harness.received) == 1)


async def test_socket_closing_opens_the_next_socket_before_the_old_closes(hub: FakeHub, harness: Harness) -> None:
    await harness.channels.subscribe_campaigns(["c1"])
    await harness.channels.start()
    await eventually(lambda: harness.channels.up)
    old = hub.connections[0][1]
    await hub.push("v2.system.socket_closing", {"message": "closing soon"}, conn=0)
    await hub.push("v2.outbound.campaigns.c1", GUIDE_CAMPAIGN, conn=0)  # already on its way: still read
    await eventually(lambda: len(hub.connections) == 2)
    await eventually(lambda: old.state.name == "CLOSED")
    assert hub.connections[1][0] == "ch1"  # same channel, new socket
    assert harness.states == [True]  # never down: the new socket was up before the old one went
    assert hub.created == 1
    await hub.push("v2.outbound.campaigns.c1", GUIDE_CAMPAIGN, conn=1)
    await eventually(lambda: len(harness.received) == 2)


async def test_channel_is_renewed_before_its_lifetime_ends(hub: FakeHub) -> None:
    h = Harness(hub, channel_lifetime=0.6, renew_before=0.3)
    try:
        await h.channels.subscribe_campaigns(["c1"])
        await h.channels.start()
        await eventually(lambda: hub.created >= 2 and h.channels.channel_ids() == ["ch2"] and h.channels.up)
        assert ("PUT", "ch2", ["v2.outbound.campaigns.c1"]) in hub.subscription_calls
        await eventually(lambda: [c for c, _ in hub.open_connections()] == ["ch2"])
        assert h.states == [True]
    finally:
        await h.close()


async def test_reconnect_backs_off_and_a_gone_channel_is_recreated(hub: FakeHub, harness: Harness) -> None:
    await harness.channels.subscribe_campaigns(["c1"])
    await harness.channels.start()
    await eventually(lambda: harness.channels.up)
    del hub.channels["ch1"]  # the channel expired on the platform side
    hub.create_failures = 2
    before = len(harness.clock.sleeps)
    await hub.connections[0][1].close()
    await eventually(lambda: harness.channels.up and harness.channels.channel_ids() == ["ch2"])
    assert harness.states == [True, False, True]
    backoff = [s for s in harness.clock.sleeps[before:] if s > 0.03]
    assert len(backoff) >= 3
    assert backoff[2] > backoff[0]  # grows


async def test_start_is_idempotent_and_stop_cancels_the_tasks(hub: FakeHub, harness: Harness) -> None:
    await harness.channels.subscribe_campaigns(["c1"])
    await harness.channels.start()
    await harness.channels.start()
    await eventually(lambda: harness.channels.up)
    assert len([t for t in asyncio.all_tasks() if t.get_name() == "notifications-channel-0"]) == 1
    await harness.channels.stop()
    assert not harness.channels.up and harness.states == [True, False]
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("notifications-channel")]
    await eventually(lambda: not hub.open_connections())


async def test_no_channel_no_up(hub: FakeHub, harness: Harness) -> None:
    await harness.channels.start()
    assert not harness.channels.up and harness.channels.channel_count == 0


@pytest.mark.parametrize("bad", ["", " ", "a b"])
async def test_bad_ids_are_refused(harness: Harness, bad: str) -> None:
    with pytest.raises(ValueError, match="non-empty string without spaces"):
        await harness.channels.subscribe_campaigns([bad])


def test_bad_configuration_is_refused() -> None:
    client = PlatformClient("http://p.test", "cid", "secret")

    async def noop(note: Notification) -> None:
        return None

    with pytest.raises(ValueError, match="max_topics_per_channel"):
        NotificationChannels(client, noop, max_topics_per_channel=1001)
    with pytest.raises(ValueError, match="ping_interval"):
        NotificationChannels(client, noop, ping_interval=70.0, silence_timeout=65.0)


class SlowCancelClock(RecordingClock):
    """A clock whose sleeps take a moment to end when cancelled, as any cleanup may."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelling = 0

    async def sleep(self, seconds: float) -> None:
        try:
            await super().sleep(seconds)
        except asyncio.CancelledError:
            self.cancelling += 1
            try:
                await asyncio.sleep(0.05)
            finally:
                self.cancelling -= 1
            raise


async def test_stop_lands_while_the_channel_ends_a_timer_and_still_stops(hub: FakeHub) -> None:
    # The channel cancels its wake-up timer after every message and waits for it to end. A stop that
    # lands in that wait used to be swallowed with the timer's cancellation: the loop went on and
    # stop() never returned (CI hung 300 s in a channel test's teardown).
    clock = SlowCancelClock()
    h = Harness(hub, ping_interval=0.01, clock=clock)
    try:
        await h.channels.subscribe_campaigns(["c1"])
        await h.channels.start()
        await eventually(lambda: h.channels.up and clock.cancelling > 0)
        # Bounded by asyncio.wait, not a timeout: a timeout's cancellation could be swallowed the same way.
        stopping = asyncio.create_task(h.channels.stop())
        await asyncio.wait({stopping}, timeout=5)
        assert stopping.done(), "stop() did not return: the channel's loop swallowed its cancellation"
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("notifications-channel")]
    finally:
        await h.close()


async def test_a_channel_task_that_dies_is_logged_and_restarted_with_backoff(
        hub: FakeHub, harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12 item 5: a defect that ends a channel's task (socket failures are retried inside it)
    is logged with its traceback and the task restarted with backoff; its campaigns are not left
    to polling for good."""
    await harness.channels.subscribe_campaigns(["c1"])
    await harness.channels.start()
    await eventually(lambda: harness.channels.up)
    deliver = harness.channels._deliver
    crashes = 0

    async def crash_once(raw: str | bytes) -> Any:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("a defect in delivery")
        return await deliver(raw)

    harness.channels._deliver = crash_once  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="adapters.platform.notifications"):
        await hub.push("v2.outbound.campaigns.c1", GUIDE_CAMPAIGN)
        await eventually(lambda: harness.states[-1:] == [False])
        await eventually(lambda: harness.channels.up)  # restarted
    died = [r for r in caplog.records if "notifications-channel-0 died" in r.getMessage()]
    assert died and died[0].exc_info is not None and "restarting it in" in died[0].getMessage()
    await hub.push("v2.outbound.campaigns.c1", GUIDE_CAMPAIGN)
    await eventually(lambda: len(harness.received) == 1)
    assert harness.states == [True, False, True]
