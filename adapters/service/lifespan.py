"""The composition root of `campaign-fsm run`: one lifespan wires every edge to the core.

Start-up, in order: topics exist; the producer and sink are up; the platform client and the
notification channels start; the orchestrator restores `campaign.state` and reads the platform's
truth for every campaign (drift becomes `reconcile` events) *before* any command is taken; then
the command consumer starts and `/readyz` turns green. It stays green only while the command
intake is healthy (its task runs and its fetches, batches and commits are not failing) and the
notifications relay and the sink (the outbox's writer and drainer) run; `/healthz` is liveness
alone. Every part is an async context manager entered on one exit stack, so shut-down, and a
start-up that fails part-way, leave them in reverse.

Shut-down is the reverse and is what SIGTERM triggers: stop taking commands (the batch in hand
finishes and is committed), let the orchestrator finish its in-flight bookkeeping, stop the
notification channels, flush the sink and the producer. Exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from fsm.machine import CampaignMachine
from fsm.orchestrator import Orchestrator
from fsm.ports import Clock, ManagedSink, Notification
from fsm.request_budget import share_of
from fsm.tasks import cancel_and_wait

from ..clock import SystemClock
from ..kafka import CommandConsumer, Producer, TopicNames, ensure_topics, open_admin
from ..outbox import Outbox, OutboxError
from ..platform import NotificationChannels, PlatformClient
from .http import build_app, serve_asgi
from .intake import CommandIntake
from .metrics import CountingSink, metrics_table
from .ownership import Ownership, drained, owns_nothing

if TYPE_CHECKING:
    # Only a type here: adapters.settings imports this package (for HttpLimits), so importing it at
    # run time would be a cycle.
    from ..settings import Settings

__all__ = ["Service"]

_log = logging.getLogger(__name__)


@dataclass
class _Parts:
    """What a running service holds, for tests and the demo to look at."""

    orchestrator: Orchestrator
    client: PlatformClient
    channels: NotificationChannels
    producer: Producer
    consumer: CommandConsumer
    intake: CommandIntake
    sink: CountingSink
    http_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Service:
    """`async with Service(settings).running() as parts: ...` or `await Service(settings).run(stop)`."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        platform_transport: httpx.AsyncBaseTransport | None = None,
        sink_factory: Callable[[Producer, TopicNames], ManagedSink] | None = None,  # default: the outbox
        kafka_overrides: dict[str, Any] | None = None,
        serve_http: bool = True,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock(settings.time_scale)
        self._transport = platform_transport
        self._sink_factory = sink_factory
        self._kafka = settings.kafka.but(**(kafka_overrides or {}))
        self._serve_http = serve_http
        self.parts: _Parts | None = None
        self._alive = False

    async def run(self, stop: asyncio.Event) -> int:
        async with self.running():
            await stop.wait()
            _log.info("stopping: no more commands are taken")
        return 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[_Parts]:
        settings, clock = self.settings, self.clock
        async with open_admin(self._kafka) as admin:
            await ensure_topics(admin, self._kafka.topics, self._kafka.partitions,
                                replication_factor=self._kafka.replication_factor)
        # One exit stack from the first part started, every part an async context manager entered
        # on it: whatever fails during start-up, every part already up is left again, in reverse
        # order (no producer, socket or task left behind).
        async with contextlib.AsyncExitStack() as stack:
            producer = await stack.enter_async_context(Producer(self._kafka))
            sink = await stack.enter_async_context(CountingSink(
                self._sink_factory(producer, self._kafka.topics) if self._sink_factory else Outbox(
                    settings.outbox_path, producer, topics=self._kafka.topics)))
            # Rows a previous run left undelivered go out before this instance joins the group, so a
            # new owner never reads a campaign.state that is missing this instance's last word.
            await drained(sink, 30.0)
            client = await stack.enter_async_context(PlatformClient(
                settings.platform.url, settings.platform.client_id, settings.platform.client_secret.get_secret_value(),
                profile=settings.platform.profile, clock=clock, transport=self._transport,
                timeout=settings.platform.timeout_s, request_limit=settings.request_share(),
                request_window=settings.platform.budget()[1], request_margin=settings.read_margin(),
                login_url=settings.platform.token_host,
                dialer_capacity=settings.platform.dialer_capacity,
                genesys_status_via_put=settings.platform.genesys_status_via_put,
            ))
            machine = CampaignMachine(client.supported_actions, settings.tolerance_windows())
            # Notifications (and the channel going down or up) reach the core through a queue that
            # one supervised task drains in order: no construction cycle between channels and core.
            queue: asyncio.Queue[Notification | bool] = asyncio.Queue()

            async def on_notification(note: Notification) -> None:
                queue.put_nowait(note)

            channels = NotificationChannels(client, on_notification, clock=clock, on_state_change=queue.put_nowait,
                                            max_channels=settings.notification_channels())
            follow = settings.platform.notifications
            authority = settings.command_authority()
            if authority is None:
                _log.warning("no auth.keys configured: commands are NOT authenticated; configure keys in production")
            orchestrator = Orchestrator(machine=machine, platform=client, sink=sink, clock=clock,
                                        notifications=channels if follow else None,
                                        config=settings.orchestrator_config(), authority=authority,
                                        auth_clock=time.time, owns=owns_nothing,
                                        stamp_clock=time.time if settings.time_scale != 1.0 else None)
            whole_budget = settings.platform.budget()[0]
            # Instances sharing one OAuth client split its budget by their shares of the partitions:
            # a dead instance's partitions, and with them its share, come back on the rebalance.
            ownership = Ownership(self._kafka, orchestrator, sink, on_share=lambda owned, total:
                                  client.budget.set_limit(share_of(whole_budget, owned, total)))
            consumer = CommandConsumer(self._kafka, hooks=ownership)
            ownership.consumer = consumer
            intake = CommandIntake(consumer, orchestrator, producer, self._kafka.topics.dead_letters,
                                   owns=ownership.owns, sink_errors=(OutboxError,))
            parts = _Parts(orchestrator, client, channels, producer, consumer, intake, sink)
            parts.extra["ownership"] = ownership
            self.parts = parts
            stack.enter_context(self._living())
            relay = await stack.enter_async_context(_Relay(queue, orchestrator))
            if self._serve_http:
                # Ready means commands flow: the orchestrator has its campaigns (the last assignment
                # was taken), the intake is taking records, notifications still reach the core and
                # what it publishes goes out; anything else takes the instance out of rotation.
                app = build_app(alive=lambda: self._alive,
                                ready=lambda: (orchestrator.ready and intake.healthy and relay.running and sink.healthy
                                               and ownership.healthy),
                                metrics=metrics_table(orchestrator, client, channels, consumer, intake, sink))
                parts.http_url = await stack.enter_async_context(
                    serve_asgi(app, host=settings.http.host, port=settings.http.port, name="metrics",
                               limits=settings.http.limits()))
            if follow:
                await stack.enter_async_context(channels)
            await stack.enter_async_context(orchestrator)
            # Joining the group assigns partitions; the ownership hooks acquire their campaigns
            # (restore, read the platform, resume tracking) and only then mark the service ready.
            await stack.enter_async_context(consumer)
            await stack.enter_async_context(intake)
            await ownership.first_assignment.wait()
            if ownership.failed is not None:
                # Nothing was taken on: fail the start (the process exits non-zero) rather than sit unready.
                raise RuntimeError("the first assignment could not be taken (see the log)") from ownership.failed
            _log.info("ready: %d campaigns on partitions %s of %s", len(orchestrator.campaigns),
                      sorted(ownership.owned), self._kafka.topics.commands)
            yield parts

    @contextlib.contextmanager
    def _living(self) -> Iterator[None]:
        """`/healthz` answers alive from here until shut-down leaves this point again."""
        self._alive = True
        try:
            yield
        finally:
            self._alive = False


class _Relay:
    """The named task (`notifications-relay`) that hands notifications to the core, in order.

    Its death is logged with its traceback and `running` turns False, which takes `/readyz` to 503.
    """

    def __init__(self, queue: asyncio.Queue[Notification | bool], orchestrator: Orchestrator) -> None:
        self._queue = queue
        self._orchestrator = orchestrator
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def __aenter__(self) -> _Relay:
        self._task = asyncio.create_task(self._run(), name="notifications-relay")
        self._task.add_done_callback(_log_death)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, bool):
                    await self._orchestrator.on_notifications_state(item)
                else:
                    await self._orchestrator.on_notification(item)
            except Exception:
                _log.exception("a notification could not be handed to the core")  # the next one still is


def _log_death(task: asyncio.Task[Any]) -> None:
    """A background task that ends by an exception says so, with its traceback, instead of vanishing."""
    if not task.cancelled() and (error := task.exception()) is not None:
        _log.error("background task %s died", task.get_name(), exc_info=error)
