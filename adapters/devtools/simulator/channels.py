"""Notification channels: subscriptions, the WebSocket per channel, heartbeats, closing and expiry.

A client creates a channel (POST /api/v2/notifications/channels), subscribes topics (at most
`max_topics`, 1,000, per channel) and connects a WebSocket to its `connectUri`. Every change to a
subscribed campaign or contact list is pushed as `{topicName, version, eventBody, metadata}`.

Timers (simulated seconds, so scaled): a `channel.metadata` heartbeat every `heartbeat_seconds` on
each socket; `v2.system.socket_closing` followed `grace` seconds later by the close; the channel's
lifetime (`channel_ttl`, 24 h), after which its sockets close and it is gone (404).

A socket that was warned (`socket_closing`) stops receiving events as soon as a newer socket on the
same channel is connected, so a client that reconnects within the grace period misses nothing and
sees nothing twice. `log` records every notification's fate per channel (delivered, dropped, or
no_socket), so tests can tell a dropped notification from one never sent.

The channel cap (the SDK's `post_notifications_channels` docstring): at most `max_channels`, 20,
per user/app combination (here: the one OAuth client); creating one more removes the channel with
the oldest last use, channels without a live socket first. The removed channel's sockets close
at once (code 1000, reason "channel removed"; no `socket_closing` first: Genesys documents no
warning) and its id answers 404 afterwards. "Used" means created, subscribed, checked (HEAD) or
connected, or a message received from its socket.

A subscription answers each topic's state as the SDK's `ChannelTopic` has it (`state` Permitted or
Rejected, `rejectionReason`). Topics matching a `rejected` pattern (admin API; a trailing `*` is a
prefix) are refused: with `ignoreErrors=true` the others are subscribed and the answer lists each
topic's state; without it the whole request fails with 400 and nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic.alias_generators import to_camel
from starlette.websockets import WebSocket, WebSocketDisconnect

from fsm.tasks import cancel_and_wait

from .clock import Scheduler, Timer, wall_deadline
from .faults import FaultInjector

__all__ = [
    "MAX_CHANNELS",
    "Channel",
    "ChannelError",
    "Connection",
    "Hub",
    "NotificationRecord",
    "TopicState",
    "heartbeat_message",
    "websocket_endpoint",
]

_log = logging.getLogger(__name__)

PONG = {"topicName": "channel.metadata", "eventBody": {"message": "pong"}}
MAX_CHANNELS = 20
PERMITTED, REJECTED = "Permitted", "Rejected"


def heartbeat_message() -> dict[str, Any]:
    return {"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}}


class ChannelError(Exception):
    """A subscription request the platform refuses: `status` and `code` go into the error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    sim_time: float
    topic: str
    channel_id: str
    outcome: Literal["delivered", "dropped", "no_socket"]

    def to_json(self) -> dict[str, Any]:
        return {to_camel(k): v for k, v in asdict(self).items()}


@dataclass(eq=False, slots=True)
class Connection:
    """One connected WebSocket. Messages go through `queue`; the endpoint's sender task drains it."""

    id: int
    channel_id: str
    queue: asyncio.Queue[str | _Close] = field(default_factory=asyncio.Queue)
    draining: bool = False
    closed: bool = False
    heartbeat: Timer | None = None

    def send(self, message: dict[str, Any]) -> None:
        if not self.closed:
            self.queue.put_nowait(orjson.dumps(message).decode())

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(_Close(code, reason))


@dataclass(eq=False, slots=True)
class Channel:
    id: str
    expires_wall: float
    topics: dict[str, None] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)
    expiry: Timer | None = None
    connect_uri: str = ""
    last_used: float = 0.0

    @property
    def expires_rfc3339(self) -> str:
        return datetime.fromtimestamp(self.expires_wall, UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")

    @property
    def idle(self) -> bool:
        return not any(not c.closed for c in self.connections)

    def to_json(self) -> dict[str, Any]:
        """The SDK's `Channel` (connectUri, id, expires)."""
        return {"id": self.id, "connectUri": self.connect_uri, "expires": self.expires_rfc3339}


@dataclass(frozen=True, slots=True)
class TopicState:
    """One topic of a subscription answer: the SDK's `ChannelTopic`."""

    id: str
    state: str = PERMITTED
    rejection_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "state": self.state}
        if self.rejection_reason is not None:
            body["rejectionReason"] = self.rejection_reason
        return body


class Hub:
    """Every channel of the tenant. All methods are synchronous and run on the event loop."""

    def __init__(
        self,
        scheduler: Scheduler,
        faults: FaultInjector,
        *,
        heartbeat_seconds: float = 30.0,
        channel_ttl: float = 86_400.0,
        max_topics: int = 1000,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self.scheduler = scheduler
        self.faults = faults
        self.heartbeat_seconds = heartbeat_seconds
        self.channel_ttl = channel_ttl
        self.max_topics = max_topics
        self.max_channels = max_channels
        self.channels: dict[str, Channel] = {}
        self.log: list[NotificationRecord] = []
        self.evicted: list[str] = []  # channel ids removed by the cap, in order
        self.rejected: list[str] = []  # topic patterns refused to subscribers (admin API)
        self._conn_ids = itertools.count(1)
        self._uses = itertools.count(1)  # a strictly growing "last used" stamp: ties are never left to chance

    # --- channels and subscriptions ----------------------------------------------------------------

    def create(self, connect_base: str = "ws://sim") -> Channel:
        """A new channel; at the cap, the least recently used one (idle first) is removed to make room."""
        while len(self.channels) >= self.max_channels:
            self._evict()
        channel = Channel(uuid.uuid4().hex, wall_deadline(self.scheduler.clock, self.channel_ttl))
        channel.connect_uri = f"{connect_base}/channels/{channel.id}"
        channel.expiry = self.scheduler.call_later(self.channel_ttl, functools.partial(self._expire, channel.id),
                                                   name=f"expire-channel-{channel.id}")
        self.channels[channel.id] = channel
        self.touch(channel)
        return channel

    def _evict(self) -> None:
        victim = min(self.channels.values(), key=lambda ch: (not ch.idle, ch.last_used))
        _log.info("channel cap (%d) reached: removing channel %s (%s)", self.max_channels, victim.id,
                  "idle" if victim.idle else "connected")
        self.evicted.append(victim.id)
        self._remove(victim.id, 1000, "channel removed")

    def touch(self, channel: Channel) -> None:
        channel.last_used = float(next(self._uses))

    def get(self, channel_id: str) -> Channel | None:
        return self.channels.get(channel_id)

    def channel(self, channel_id: str) -> Channel:
        """The channel, or the platform's 404 (`ChannelError`)."""
        channel = self.channels.get(channel_id)
        if channel is None:
            raise ChannelError(404, "not.found", f"channel {channel_id} not found")
        self.touch(channel)
        return channel

    def is_rejected(self, topic: str) -> bool:
        return any(topic.startswith(p[:-1]) if p.endswith("*") else topic == p for p in self.rejected)

    def subscribe(self, channel_id: str, topics: list[str], *, replace: bool,
                  ignore_errors: bool = False) -> list[TopicState]:
        """Set (replace) or add topics; the answer is every topic of the channel plus the rejected ones."""
        channel = self.channel(channel_id)
        for topic in topics:
            if not topic.startswith("v2."):
                raise ChannelError(400, "bad.request", f"invalid topic name {topic!r}")
        refused = [t for t in dict.fromkeys(topics) if self.is_rejected(t)]
        if refused and not ignore_errors:
            raise ChannelError(400, "notification.subscription.rejected",
                               f"not permitted to subscribe to {', '.join(refused)}")
        accepted = [t for t in topics if t not in refused]
        wanted = dict.fromkeys(accepted) if replace else {**channel.topics, **dict.fromkeys(accepted)}
        if len(wanted) > self.max_topics:
            raise ChannelError(400, "too.many.topics",
                               f"a channel holds at most {self.max_topics} topics; {len(wanted)} were requested")
        channel.topics = wanted
        return [TopicState(t) for t in wanted] + [
            TopicState(t, REJECTED, "the client is not permitted to subscribe to this topic") for t in refused]

    def topic_states(self, channel_id: str) -> list[TopicState]:
        return [TopicState(t) for t in self.channel(channel_id).topics]

    def unsubscribe_all(self, channel_id: str) -> None:
        self.channel(channel_id).topics = {}

    # --- delivery ----------------------------------------------------------------------------------

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        now = self.scheduler.clock.monotonic()
        for channel in self.channels.values():
            if topic not in channel.topics:
                continue
            if self.faults.should_drop(topic):
                self.log.append(NotificationRecord(now, topic, channel.id, "dropped"))
                continue
            live = [c for c in channel.connections if not c.closed]
            targets = [c for c in live if not c.draining] or live
            if not targets:
                self.log.append(NotificationRecord(now, topic, channel.id, "no_socket"))
                continue
            message = {"topicName": topic, "version": "2", "eventBody": body,
                       "metadata": {"CorrelationId": str(uuid.uuid4())}}
            for conn in targets:
                conn.send(message)
            self.log.append(NotificationRecord(now, topic, channel.id, "delivered"))

    def attach(self, channel: Channel) -> Connection:
        conn = Connection(next(self._conn_ids), channel.id)
        conn.heartbeat = self.scheduler.call_every(self.heartbeat_seconds, lambda: self._beat(conn),
                                                   name=f"heartbeat-{channel.id}-{conn.id}")
        channel.connections.append(conn)
        return conn

    def detach(self, conn: Connection) -> None:
        conn.closed = True
        if conn.heartbeat is not None:
            conn.heartbeat.cancel()
        channel = self.channels.get(conn.channel_id)
        if channel is not None and conn in channel.connections:
            channel.connections.remove(conn)

    def _beat(self, conn: Connection) -> None:
        conn.send(heartbeat_message())
        if not conn.draining and self.faults.roll(self.faults.config.socket_close_probability):
            self._announce(conn, self.faults.config.socket_close_grace_seconds, 1001)

    # --- closing -----------------------------------------------------------------------------------

    def _connections(self, channel_id: str | None) -> list[Connection]:
        channels = [self.channel(channel_id)] if channel_id is not None else list(self.channels.values())
        return [c for ch in channels for c in ch.connections if not c.closed]

    def _announce(self, conn: Connection, grace: float, code: int) -> None:
        conn.send({"topicName": "v2.system.socket_closing",
                   "eventBody": {"message": f"This WebSocket will close in {grace:g} seconds; reconnect now."}})
        conn.draining = True
        self.scheduler.call_later(grace, lambda: conn.close(code, "socket closing"),
                                  name=f"close-socket-{conn.channel_id}-{conn.id}")

    def announce_close(self, channel_id: str | None = None, *, grace: float | None = None, code: int = 1001) -> int:
        """Send `v2.system.socket_closing`, then close after `grace` simulated seconds. Returns sockets hit."""
        grace = self.faults.config.socket_close_grace_seconds if grace is None else grace
        conns = [c for c in self._connections(channel_id) if not c.draining]
        for conn in conns:
            self._announce(conn, grace, code)
        return len(conns)

    def close_now(self, channel_id: str | None = None, *, code: int = 1011, reason: str = "server error") -> int:
        """Close sockets without warning (an abrupt drop as the client sees it)."""
        conns = self._connections(channel_id)
        for conn in conns:
            conn.close(code, reason)
        return len(conns)

    def expire(self, channel_id: str) -> bool:
        """The channel's lifetime ends: its sockets close and it is gone (404 afterwards)."""
        return self._remove(channel_id, 1000, "channel expired")

    def _remove(self, channel_id: str, code: int, reason: str) -> bool:
        channel = self.channels.pop(channel_id, None)
        if channel is None:
            return False
        if channel.expiry is not None:
            channel.expiry.cancel()
        for conn in channel.connections:
            conn.close(code, reason)
            if conn.heartbeat is not None:
                conn.heartbeat.cancel()
        return True

    def _expire(self, channel_id: str) -> None:
        self.expire(channel_id)

    def close_all(self) -> None:
        for channel in self.channels.values():
            for conn in channel.connections:
                conn.close(1001, "server shutting down")


async def websocket_endpoint(websocket: WebSocket, hub: Hub) -> None:
    """Serve one channel's socket: queued messages out, text pings in. Unknown channel: refused (403)."""
    channel = hub.get(websocket.path_params["channel_id"])
    if channel is None:
        await websocket.close(code=1008)
        return
    await websocket.accept()
    conn = hub.attach(channel)
    hub.touch(channel)
    sender = asyncio.create_task(_send_loop(websocket, conn), name=f"ws-send-{channel.id}-{conn.id}")
    receiver = asyncio.create_task(_receive_loop(websocket, conn, hub), name=f"ws-recv-{channel.id}-{conn.id}")
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(sender, receiver)
        hub.detach(conn)


async def _send_loop(websocket: WebSocket, conn: Connection) -> None:
    while True:
        item = await conn.queue.get()
        try:
            if isinstance(item, _Close):
                await websocket.close(code=item.code, reason=item.reason)
                return
            await websocket.send_text(item)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return


async def _receive_loop(websocket: WebSocket, conn: Connection, hub: Hub) -> None:
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if not text:
            continue
        channel = hub.get(conn.channel_id)
        if channel is not None:
            hub.touch(channel)
        with contextlib.suppress(orjson.JSONDecodeError):
            data = orjson.loads(text)
            if isinstance(data, dict) and data.get("message") == "ping":
                conn.send(dict(PONG))
