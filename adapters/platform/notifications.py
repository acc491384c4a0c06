"""The platform's notification channels over WebSocket: the `Notifications` port (fsm/ports.py).

A channel is created with `POST /api/v2/notifications/channels`, which answers a `connectUri`; its
topics are set with `PUT .../channels/{id}/subscriptions`. One channel holds at most 1,000 topics,
so `NotificationChannels` opens as many channels as the topics need, filling each before opening
the next. Topics: `v2.outbound.campaigns.{id}` (the body is the campaign in the profile's format,
translated by adapters/platform/profiles.py into a `CampaignSnapshot`) and `v2.outbound.contactlists.{id}`
(delivered with `contact_list_id` and the raw body).

Delivery: every notification is handed to one async listener callback (`NotificationListener`),
awaited in the channel's own task, in arrival order per channel. The listener should only enqueue
(the service's keyed queue); an exception it raises is logged and the next message is read.

Each channel has one named background task (`notifications-channel-N`), started by an idempotent
`start()`; `stop()` cancels and awaits them. One that dies (a defect: the task retries socket failures
itself) is logged with its traceback and restarted with backoff. The task keeps its channel alive:

- liveness: every message counts as a sign of life (the platform sends a `channel.metadata`
  heartbeat every 30 s); the client sends `{"message":"ping"}` every `ping_interval` and expects a
  `pong`. Silence longer than `silence_timeout` means the socket is dead even if TCP says nothing:
  it is closed and reopened;
- `v2.system.socket_closing`: the platform will close the socket soon. A second socket on the same
  channel is opened and subscribed *before* the old one closes; what the old one already received
  is still read, then it is closed;
- lifetime: a channel lives 24 h. `renew_before` its end a new channel is created, subscribed and
  connected, then the old socket is closed;
- failures: reconnect with exponential backoff and jitter (injected clock). After two failed tries,
  or when the channel is gone (404), a new channel is created and every topic subscribed again.

Within the platform's caps: at most `max_channels` channels (Genesys: 20 per OAuth client; a 21st
silently removes the least recently used one, maybe another instance's, so instances sharing a
client split them: `Settings.notification_channels`). A topic without room ("unplaced") or answered
Rejected (ChannelTopic `state`; sent with `ignoreErrors=true`) is not followed: `live()` is False
and the core polls that campaign. A rebalance's losses are unsubscribed, making room for unplaced
topics. Lists are followed on `v2.outbound.contactlists.{id}` and, on genesys, its `.importstatus`;
both reach the core with `contact_list_id`, so the list gate reads the list again.

"Down" and "up": `up` is True only while every channel has a subscribed, live socket. Any gap
(before the first connect, during a reconnect, after `stop()`) is "down": notifications may have
been missed, and the service polls instead. Listeners added with `add_state_listener` (or the
`on_state_change` argument) are called synchronously with the new value on every change.

Malformed messages are logged and skipped, never fatal. Times are clock seconds (`Clock`), so a
service and simulator sharing a time scale agree on heartbeats and lifetimes; the only real-time
wait is the short drain of a socket being replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fsm.backoff import Backoff
from fsm.ports import Clock, Notification, NotificationListener, PlatformNotFound
from fsm.tasks import cancel_and_wait
from schemas.base import ContractError, decode
from schemas.platform import GenesysImportProgress, NotificationChannel, NotificationEnvelope

from .client import PlatformClient
from .profiles import campaign_from_payload

__all__ = [
    "CAMPAIGN_TOPIC",
    "CONTACT_LIST_TOPIC",
    "IMPORT_STATUS_TOPIC",
    "MAX_CHANNELS",
    "MAX_TOPICS_PER_CHANNEL",
    "NotificationChannels",
    "StateListener",
]

_log = logging.getLogger(__name__)

CAMPAIGN_TOPIC = "v2.outbound.campaigns.{}"
CONTACT_LIST_TOPIC = "v2.outbound.contactlists.{}"
IMPORT_STATUS_TOPIC = "v2.outbound.contactlists.{}.importstatus"
MAX_TOPICS_PER_CHANNEL = 1000
MAX_CHANNELS = 20  # per OAuth client (SDK: post_notifications_channels)
_IMPORT_SUFFIX = ".importstatus"
_CAMPAIGN_PREFIX = "v2.outbound.campaigns."
_LIST_PREFIX = "v2.outbound.contactlists."
_METADATA = "channel.metadata"
_SOCKET_CLOSING = "v2.system.socket_closing"
_PING = orjson.dumps({"message": "ping"}).decode()

StateListener = Callable[[bool], None]


class _Signal(enum.Enum):
    NONE = enum.auto()
    CLOSING = enum.auto()


class _Silent(Exception):
    """No heartbeat, pong or event for longer than the silence timeout."""


class NotificationChannels:
    """Every notification channel of one OAuth client, opened as topics require."""

    def __init__(
        self,
        client: PlatformClient,
        listener: NotificationListener,
        *,
        clock: Clock | None = None,
        on_state_change: StateListener | None = None,
        max_topics_per_channel: int = MAX_TOPICS_PER_CHANNEL,
        max_channels: int = MAX_CHANNELS,
        ping_interval: float = 15.0,
        silence_timeout: float = 65.0,
        channel_lifetime: float = 24 * 3600.0,
        renew_before: float = 600.0,
        reconnect_base: float = 1.0,
        reconnect_cap: float = 60.0,
        open_timeout: float = 10.0,
        drain_seconds: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= max_topics_per_channel <= MAX_TOPICS_PER_CHANNEL:
            raise ValueError(f"max_topics_per_channel must be within 1..{MAX_TOPICS_PER_CHANNEL}")
        if not 1 <= max_channels <= MAX_CHANNELS:
            raise ValueError(f"max_channels must be within 1..{MAX_CHANNELS} (the platform's cap per OAuth client)")
        if not 0 < ping_interval < silence_timeout:
            raise ValueError("ping_interval must be > 0 and shorter than silence_timeout")
        if not 0 <= renew_before < channel_lifetime:
            raise ValueError("renew_before must be >= 0 and shorter than channel_lifetime")
        self._client = client
        self._listener = listener
        self._clock = clock if clock is not None else client.clock
        self._max_topics = max_topics_per_channel
        self.max_channels = max_channels
        self.ping_interval = ping_interval
        self.silence_timeout = silence_timeout
        self.channel_lifetime = channel_lifetime
        self.renew_before = renew_before
        self._reconnect = Backoff(reconnect_base, 2.0, reconnect_cap, max_tries=None, jitter=0.2)
        self.open_timeout = open_timeout
        self.drain_seconds = drain_seconds
        self._rng = rng if rng is not None else random.Random()
        self._workers: list[_ChannelWorker] = []
        self._assigned: dict[str, _ChannelWorker] = {}
        self._state_listeners: list[StateListener] = [on_state_change] if on_state_change else []
        self._started = False
        self._up = False
        self.mismatched = 0  # campaign bodies on another campaign's topic, ignored (metrics)
        self.rejected: dict[str, str] = {}  # topic -> the platform's reason (not subscribed)
        self.rejections = 0  # topics answered Rejected, ever (metrics)
        self.unplaced: dict[str, None] = {}  # topics wanted but beyond max_channels (not subscribed)

    # --- the Notifications port ------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up

    async def subscribe_campaigns(self, campaign_ids: list[str]) -> None:
        await self.subscribe_topics(CAMPAIGN_TOPIC.format(_valid_id(i)) for i in campaign_ids)

    async def subscribe_contact_lists(self, contact_list_ids: list[str]) -> None:
        await self.subscribe_topics(self._list_topics(contact_list_ids))

    async def unsubscribe_campaigns(self, campaign_ids: list[str]) -> None:
        await self.unsubscribe_topics(CAMPAIGN_TOPIC.format(_valid_id(i)) for i in campaign_ids)

    async def unsubscribe_contact_lists(self, contact_list_ids: list[str]) -> None:
        await self.unsubscribe_topics(self._list_topics(contact_list_ids))

    def live(self, campaign_id: str) -> bool:
        """Whether the campaign's changes are pushed to us: its topic is subscribed (not rejected, not
        beyond the channel cap). `up` says whether the channels themselves are connected."""
        return CAMPAIGN_TOPIC.format(campaign_id) in self._assigned

    def _list_topics(self, contact_list_ids: list[str]) -> list[str]:
        topics = []
        for list_id in contact_list_ids:
            topics.append(CONTACT_LIST_TOPIC.format(_valid_id(list_id)))
            if self._client.profile == "genesys":
                topics.append(IMPORT_STATUS_TOPIC.format(list_id))
        return topics

    # --- lifecycle and introspection -------------------------------------------------------------

    @property
    def profile(self) -> str:
        return self._client.profile

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def channel_count(self) -> int:
        return len(self._workers)

    def topics_per_channel(self) -> list[int]:
        return [len(w.topics) for w in self._workers]

    def channel_ids(self) -> list[str | None]:
        return [w.channel.id if w.channel is not None else None for w in self._workers]

    def add_state_listener(self, listener: StateListener) -> None:
        self._state_listeners.append(listener)

    async def start(self) -> None:
        """Open every channel's task. Idempotent."""
        if self._started:
            return
        self._started = True
        for worker in self._workers:
            worker.start()

    async def stop(self) -> None:
        """Cancel and await every channel's task; the channels report down."""
        self._started = False
        await asyncio.gather(*(w.stop() for w in self._workers))
        self._refresh()

    async def __aenter__(self) -> NotificationChannels:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def subscribe_topics(self, topics: Iterable[str]) -> None:
        """Add topics, filling existing channels before opening new ones (at most `max_channels`).
        Known topics are ignored; one that finds no room waits in `unplaced` (and is polled)."""
        touched: dict[int, _ChannelWorker] = {}
        for topic in topics:
            if topic in self._assigned:
                continue
            self.rejected.pop(topic, None)  # asked again: the platform may permit it now
            worker = next((w for w in self._workers if len(w.topics) < self._max_topics), None)
            if worker is None and len(self._workers) < self.max_channels:
                worker = _ChannelWorker(self, len(self._workers))
                self._workers.append(worker)
                if self._started:
                    worker.start()
            if worker is None:
                if topic not in self.unplaced:
                    _log.warning("no room for %s within %d channels of %d topics: polled instead", topic,
                                 self.max_channels, self._max_topics)
                self.unplaced[topic] = None
                continue
            self.unplaced.pop(topic, None)
            worker.topics[topic] = None
            self._assigned[topic] = worker
            touched[id(worker)] = worker
        self._refresh()
        await asyncio.gather(*(w.sync_topics() for w in touched.values()))

    async def unsubscribe_topics(self, topics: Iterable[str]) -> None:
        """Stop following topics (a campaign given away): each channel that held one is subscribed
        again with what it keeps; the room made goes to topics that had none."""
        touched: dict[int, _ChannelWorker] = {}
        for topic in topics:
            self.unplaced.pop(topic, None)
            self.rejected.pop(topic, None)
            worker = self._assigned.pop(topic, None)
            if worker is not None:
                worker.topics.pop(topic, None)
                touched[id(worker)] = worker
        await asyncio.gather(*(w.resync() for w in touched.values()))
        if self.unplaced and touched:
            await self.subscribe_topics(list(self.unplaced))

    def _rejected_by_platform(self, worker: _ChannelWorker, rejected: dict[str, str]) -> None:
        """Topics the platform refused: no longer ours to wait for (polled instead), logged, counted."""
        for topic, reason in rejected.items():
            if self._assigned.get(topic) is worker:
                del self._assigned[topic]
            worker.topics.pop(topic, None)
            worker.synced.discard(topic)
            if topic not in self.rejected:
                self.rejections += 1
                _log.warning("the platform rejected the subscription to %s (%s): polled instead", topic, reason)
            self.rejected[topic] = reason

    # --- internals shared with the workers -------------------------------------------------------

    def _refresh(self) -> None:
        up = self._started and bool(self._workers) and all(w.up for w in self._workers)
        if up == self._up:
            return
        self._up = up
        _log.info("notifications %s", "up" if up else "down (polling should take over)")
        for listener in list(self._state_listeners):
            try:
                listener(up)
            except Exception:
                _log.exception("notification state listener failed")

    def _backoff(self, strikes: int) -> float:
        """The delay before reconnecting after `strikes` failed tries in a row (0 and 1: the first step)."""
        return self._reconnect.delay(max(0, strikes - 1), self._rng)

    async def _deliver(self, raw: str | bytes) -> _Signal:
        try:
            envelope = decode(NotificationEnvelope, raw)
        except ContractError as exc:
            _log.warning("skipping a malformed notification message: %s", exc)
            return _Signal.NONE
        topic = envelope.topic_name
        if topic == _METADATA:
            return _Signal.NONE  # heartbeat or pong: the sign of life is already counted
        if topic == _SOCKET_CLOSING:
            return _Signal.CLOSING
        body = envelope.event_body
        note = Notification(topic=topic, received_at=self._clock.now(), body=body)
        rest = topic[len(_CAMPAIGN_PREFIX):] if topic.startswith(_CAMPAIGN_PREFIX) else None
        if rest and "." not in rest:
            try:
                campaign = campaign_from_payload(self._client.profile, body)
            except ContractError as exc:
                _log.warning("skipping a notification on %s with an unusable campaign body: %s", topic, exc)
                return _Signal.NONE
            if campaign.id != rest:
                # A body for another campaign is not an observation of this topic's campaign, nor
                # (arriving here) of its own: applying it would let one topic move any campaign.
                self.mismatched += 1
                _log.warning("notification on %s carries campaign %r: ignored", topic, campaign.id)
                return _Signal.NONE
            note = Notification(topic=topic, received_at=note.received_at, campaign=campaign, body=body)
        elif topic.startswith(_LIST_PREFIX) and topic[len(_LIST_PREFIX):]:
            list_id = topic[len(_LIST_PREFIX):]
            if list_id.endswith(_IMPORT_SUFFIX):
                # Import progress: the list is about to change readiness; the gate reads it again.
                list_id = list_id[: -len(_IMPORT_SUFFIX)]
                try:
                    progress = GenesysImportProgress.model_validate(body)
                except ValueError as exc:
                    _log.warning("skipping a notification on %s with an unusable import status: %s", topic, exc)
                    return _Signal.NONE
                _log.info("contact list %s import %s, %s %%", list_id, progress.import_state,
                          progress.percentage_complete)
            note = Notification(topic=topic, received_at=note.received_at, contact_list_id=list_id, body=body)
        try:
            await self._listener(note)
        except Exception:
            _log.exception("notification listener failed on %s", topic)
        return _Signal.NONE


class _ChannelWorker:
    """One channel: its topics, its socket, its background task."""

    def __init__(self, owner: NotificationChannels, index: int) -> None:
        self.owner = owner
        self.name = f"notifications-channel-{index}"
        self.topics: dict[str, None] = {}
        self.synced: set[str] = set()
        self.channel: NotificationChannel | None = None
        self.born = 0.0
        self.ws: ClientConnection | None = None
        self.up = False
        self.task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.last_seen = 0.0
        self.sessions = 0
        self.deaths = 0  # task deaths in a row, each after a short life
        self._began = 0.0
        self._restart: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.owner._started and (self.task is None or self.task.done()):
            self._began = self.owner.clock.monotonic()
            self.task = asyncio.get_running_loop().create_task(self._run(), name=self.name)
            self.task.add_done_callback(self._task_done)

    async def stop(self) -> None:
        if self._restart is not None:
            self._restart.cancel()
        task, self.task = self.task, None
        if task is not None:
            await cancel_and_wait(task)
        self._set_up(False)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (error := task.exception()) is None:
            return
        self._set_up(False)
        # A defect (the loop retries socket failures itself); restarted, else its campaigns are polled for good.
        self.deaths = 1 if self.owner.clock.monotonic() - self._began >= self.owner.silence_timeout else self.deaths + 1
        delay = self.owner._backoff(self.deaths)
        _log.error("%s died; restarting it in %.1f s", self.name, delay, exc_info=error)
        self._restart = task.get_loop().call_later(delay, self.start)

    def _set_up(self, up: bool) -> None:
        if self.up != up:
            self.up = up
            self.owner._refresh()

    async def sync_topics(self) -> None:
        """Subscribe topics added since the last sync, if connected; otherwise the next connect will."""
        # Under the lock: a connect in progress reads the topics and sets `ws` under it too, so a
        # topic is either in its PUT or seen as unsynced here, never lost between the two.
        async with self.lock:
            new = [t for t in self.topics if t not in self.synced]
            if not new or self.ws is None or self.channel is None:
                return
            try:
                rejected = await self.owner._client.set_channel_topics(self.channel.id, new, replace=False)
            except Exception as exc:
                # The channel no longer matches what we want: reconnect, which subscribes everything.
                _log.warning("%s: adding %d topics failed (%s); reconnecting", self.name, len(new), exc)
                self._set_up(False)
                await self.ws.close()
                return
            self.synced.update(new)
            self.owner._rejected_by_platform(self, rejected)

    async def resync(self) -> None:
        """Topics were taken away: subscribe the channel to exactly what it keeps, if connected."""
        async with self.lock:
            if self.ws is None or self.channel is None:
                self.synced &= set(self.topics)
                return
            topics = list(self.topics)
            try:
                rejected = await self.owner._client.set_channel_topics(self.channel.id, topics, replace=True)
            except Exception as exc:
                _log.warning("%s: unsubscribing failed (%s); reconnecting", self.name, exc)
                self._set_up(False)
                await self.ws.close()
                return
            self.synced = set(topics)
            self.owner._rejected_by_platform(self, rejected)

    # --- the background task ---------------------------------------------------------------------

    async def _run(self) -> None:
        clock = self.owner.clock
        strikes = 0
        fresh = self.channel is None
        while True:
            try:
                ws = await self._open(fresh=fresh or strikes >= 2 or self._renewal_due())
            except Exception as exc:
                strikes += 1
                if isinstance(exc, PlatformNotFound) or (
                    isinstance(exc, InvalidStatus) and exc.response.status_code in (403, 404, 410)
                ):
                    fresh = True
                delay = self.owner._backoff(strikes)
                _log.warning("%s: connecting failed (%s: %s); retry in %.1fs", self.name, type(exc).__name__,
                             exc, delay)
                self._set_up(False)
                await clock.sleep(delay)
                continue
            fresh = False
            began = clock.monotonic()
            self._set_up(True)
            try:
                await self._serve(ws)
            except (ConnectionClosed, _Silent, OSError) as exc:
                _log.warning("%s: socket lost (%s: %s)", self.name, type(exc).__name__, exc)
            finally:
                self._set_up(False)
                current, self.ws = self.ws, None
                for sock in {ws, current}:
                    if sock is not None:
                        await _close_quietly(sock)
            # A socket that dies at once again and again must not be reopened in a tight loop.
            strikes = 0 if clock.monotonic() - began >= self.owner.silence_timeout else strikes + 1
            if strikes:
                await clock.sleep(self.owner._backoff(strikes))

    def _renewal_due(self) -> bool:
        if self.channel is None:
            return False
        age = self.owner.clock.monotonic() - self.born
        return age >= self.owner.channel_lifetime - self.owner.renew_before

    async def _open(self, *, fresh: bool) -> ClientConnection:
        """A connected socket on this (or a new) channel with every topic subscribed."""
        client = self.owner._client
        channel = self.channel
        if fresh or channel is None:
            channel = await client.create_notification_channel()
            born = self.owner.clock.monotonic()
        else:
            born = self.born
        ws = await connect(channel.connect_uri, ping_interval=None, open_timeout=self.owner.open_timeout,
                           close_timeout=2.0)
        try:
            async with self.lock:
                topics = list(self.topics)
                try:
                    rejected = await client.set_channel_topics(channel.id, topics, replace=True)
                except PlatformNotFound:
                    self.channel = None
                    raise
                self.synced = set(topics)
                self.owner._rejected_by_platform(self, rejected)
                self.channel, self.born = channel, born
                self.ws = ws
        except BaseException:
            await _close_quietly(ws)
            raise
        self.sessions += 1
        self.last_seen = self.owner.clock.monotonic()
        _log.info("%s: connected to channel %s with %d topics", self.name, channel.id, len(topics))
        return ws

    async def _serve(self, ws: ClientConnection) -> None:
        owner, clock = self.owner, self.owner.clock
        next_ping = clock.monotonic() + owner.ping_interval
        recv: asyncio.Task[Any] | None = None
        renew_retry_at = 0.0
        try:
            while True:
                now = clock.monotonic()
                if now - self.last_seen > owner.silence_timeout:
                    raise _Silent(f"nothing heard for {now - self.last_seen:.1f}s")
                if self._renewal_due() and now >= renew_retry_at:
                    swapped = await self._replace(ws, recv, fresh=True)
                    if swapped is None:
                        renew_retry_at = now + owner._backoff(1)
                    else:
                        ws, recv = swapped, None
                        next_ping = clock.monotonic() + owner.ping_interval
                    continue
                if now >= next_ping:
                    await ws.send(_PING)
                    next_ping = now + owner.ping_interval
                renew_at = self.born + owner.channel_lifetime - owner.renew_before
                wake = min(next_ping, self.last_seen + owner.silence_timeout + 1e-3,
                           max(renew_at, renew_retry_at))
                if recv is None:
                    recv = asyncio.get_running_loop().create_task(ws.recv(), name=f"{self.name}-recv")
                tick = asyncio.get_running_loop().create_task(clock.sleep(max(0.0, wake - now)),
                                                              name=f"{self.name}-tick")
                try:
                    await asyncio.wait({recv, tick}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await cancel_and_wait(tick)
                if not recv.done():
                    continue
                raw, recv = recv.result(), None
                self.last_seen = clock.monotonic()
                if await owner._deliver(raw) is _Signal.CLOSING:
                    _log.info("%s: socket_closing announced; opening the next socket first", self.name)
                    swapped = await self._replace(ws, None, fresh=False)
                    if swapped is not None:
                        ws = swapped
                        next_ping = clock.monotonic() + owner.ping_interval
        finally:
            await cancel_and_wait(recv)

    async def _replace(
        self, old: ClientConnection, pending: asyncio.Task[Any] | None, *, fresh: bool
    ) -> ClientConnection | None:
        """Open the next socket before dropping `old`; None (and `old` kept) if that fails."""
        try:
            new = await self._open(fresh=fresh)
        except Exception as exc:
            _log.warning("%s: could not open the next socket (%s: %s); keeping the old one",
                         self.name, type(exc).__name__, exc)
            await cancel_and_wait(pending)
            return None
        await self._drain(old, pending)
        return new

    async def _drain(self, old: ClientConnection, pending: asyncio.Task[Any] | None) -> None:
        """Read what the old socket already holds (briefly, real time), then close it."""
        try:
            async with asyncio.timeout(self.owner.drain_seconds):
                while True:
                    raw = await pending if pending is not None else await old.recv()
                    pending = None
                    await self.owner._deliver(raw)
        except (TimeoutError, ConnectionClosed):
            pass
        finally:
            await cancel_and_wait(pending)
            await _close_quietly(old)


async def _close_quietly(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await ws.close()


def _valid_id(value: str) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"an id to subscribe must be a non-empty string without spaces, got {value!r}")
    return value
