"""The composition root of `campaign-fsm run`: one lifespan wires every edge to the core.

Start-up, in order: topics exist; the producer and sink are up; the platform client and the
notification channels start; the orchestrator restores `campaign.state` and reads the platform's
truth for every campaign (drift becomes `reconcile` events) *before* any command is taken; then
the command consumer starts and `/readyz` turns green. It stays green only while the command
intake is healthy (its task runs and its fetches, batches and commits are not failing); `/healthz`
is liveness alone.

Shut-down is the reverse and is what SIGTERM triggers: stop taking commands (the batch in hand
finishes and is committed), let the orchestrator finish its in-flight bookkeeping, stop the
notification channels, flush the sink and the producer. Exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from fsm.machine import CampaignMachine
from fsm.orchestrator import Orchestrator
from fsm.ports import Clock, EventSink, Notification
from schemas.commands import CommandResult
from schemas.types import TRANSITIONAL_STATES

from ..clock import SystemClock
from ..kafka import (
    CommandConsumer,
    KafkaConfig,
    KafkaSecurity,
    Partition,
    Producer,
    TopicNames,
    ensure_topics,
    open_admin,
    partition_of,
    restore_latest,
)
from ..outbox import Outbox, OutboxError
from ..platform import ClientStats, NotificationChannels, PlatformClient
from .http import MetricsSource, build_app, serve_asgi
from .intake import CommandIntake

if TYPE_CHECKING:
    # Only a type here: adapters.settings imports this package (for HttpLimits), so importing it at
    # run time would be a cycle.
    from ..settings import Settings

__all__ = ["Service", "kafka_config_from"]

_log = logging.getLogger(__name__)


def kafka_config_from(settings: Settings, **overrides: Any) -> KafkaConfig:
    k = settings.kafka
    security = KafkaSecurity(
        security_protocol=k.security_protocol,
        sasl_mechanism=k.sasl_mechanism,
        username=k.sasl_username,
        password=k.sasl_password.get_secret_value() if k.sasl_password else None,
        ssl_cafile=k.ssl_cafile,
        ssl_certfile=k.ssl_certfile,
        ssl_keyfile=k.ssl_keyfile,
    )
    topics = k.topics.names()
    fields: dict[str, Any] = {
        "bootstrap": k.bootstrap, "topics": topics, "group_id": k.group_id, "client_id": k.client_id,
        "security": security, "enable_idempotence": k.enable_idempotence, "fetch_max_wait_ms": k.fetch_max_wait_ms,
        "session_timeout_ms": k.session_timeout_ms, "heartbeat_interval_ms": k.heartbeat_interval_ms,
        "partitions": k.partitions, "replication_factor": k.replication_factor,
    }
    fields.update(overrides)
    return KafkaConfig(**fields)


@dataclass
class _Parts:
    """What a running service holds, for tests and the demo to look at."""

    orchestrator: Orchestrator
    client: PlatformClient
    channels: NotificationChannels
    producer: Producer
    consumer: CommandConsumer
    intake: CommandIntake
    sink: _CountingSink
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
        sink_factory: Callable[[Producer, TopicNames], EventSink] | None = None,  # default: the outbox
        kafka_overrides: dict[str, Any] | None = None,
        serve_http: bool = True,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock(settings.time_scale)
        self._transport = platform_transport
        self._sink_factory = sink_factory
        self._kafka = kafka_config_from(settings, **(kafka_overrides or {}))
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
        producer = Producer(self._kafka)
        await producer.start()
        sink = _CountingSink(self._sink_factory(producer, self._kafka.topics) if self._sink_factory else Outbox(
            settings.outbox_path, producer, topics=self._kafka.topics))
        await _start(sink)
        # Rows a previous run left undelivered go out before this instance joins the group, so a
        # new owner never reads a campaign.state that is missing this instance's last word.
        await _drained(sink, 30.0)
        client = PlatformClient(
            settings.platform.url, settings.platform.client_id, settings.platform.client_secret.get_secret_value(),
            profile=settings.platform.profile, clock=clock, transport=self._transport,
            timeout=settings.platform.timeout_s, read_rate=settings.read_rate(),
            read_margin=settings.read_margin(),
            dialer_capacity=settings.platform.dialer_capacity,
            genesys_status_via_put=settings.platform.genesys_status_via_put,
        )
        machine = CampaignMachine(client.supported_actions, settings.tolerance_windows())
        holder: list[Orchestrator] = []

        async def on_notification(note: Notification) -> None:
            if holder:
                await holder[0].on_notification(note)

        state_tasks: set[asyncio.Task[None]] = set()

        def on_state_change(up: bool) -> None:
            if holder:
                task = asyncio.create_task(holder[0].on_notifications_state(up), name=f"notifications-{up}")
                state_tasks.add(task)
                task.add_done_callback(state_tasks.discard)
                task.add_done_callback(_log_death)

        channels = NotificationChannels(client, on_notification, clock=clock, on_state_change=on_state_change)
        follow = settings.platform.notifications
        authority = settings.command_authority()
        if authority is None:
            _log.warning("no auth.keys configured: commands are NOT authenticated; configure keys in production")
        orchestrator = Orchestrator(machine=machine, platform=client, sink=sink, clock=clock,
                                    notifications=channels if follow else None,
                                    config=settings.orchestrator_config(), authority=authority,
                                    auth_clock=time.time, owns=_nothing)
        holder.append(orchestrator)
        ownership = _Ownership(self._kafka, orchestrator, sink)
        consumer = CommandConsumer(self._kafka, hooks=ownership)
        ownership.consumer = consumer
        intake = CommandIntake(consumer, orchestrator, producer, self._kafka.topics.dead_letters,
                               owns=ownership.owns, sink_errors=(OutboxError,))
        parts = _Parts(orchestrator, client, channels, producer, consumer, intake, sink)
        parts.extra["ownership"] = ownership
        self.parts = parts
        self._alive = True
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self._serve_http:
                    # Ready means commands flow: the orchestrator has its campaigns and the intake is
                    # taking records (a dead or failing intake must take the instance out of rotation).
                    app = build_app(alive=lambda: self._alive, ready=lambda: orchestrator.ready and intake.healthy,
                                    metrics=self._metrics(parts))
                    parts.http_url = await stack.enter_async_context(
                        serve_asgi(app, host=settings.http.host, port=settings.http.port, name="metrics",
                                   limits=settings.http.limits()))
                if follow:
                    await channels.start()
                # Joining the group assigns partitions; the ownership hooks acquire their campaigns
                # (restore, read the platform, resume tracking) and only then mark the service ready.
                await consumer.start()
                intake.start()
                await ownership.first_assignment.wait()
                _log.info("ready: %d campaigns on partitions %s of %s", len(orchestrator.campaigns),
                          sorted(ownership.owned), self._kafka.topics.commands)
                try:
                    yield parts
                finally:
                    await intake.stop()
                    await consumer.stop()
                    await orchestrator.close()
                    await channels.stop()
                    for task in list(state_tasks):
                        task.cancel()
        finally:
            self._alive = False
            await _stop(sink)
            await producer.stop()
            await client.aclose()

    def _metrics(self, parts: _Parts) -> MetricsSource:
        orch, intake = parts.orchestrator, parts.intake

        def dialers() -> Iterable[tuple[dict[str, str], float]]:
            for stats in orch.gate.stats():
                yield {"dialer": stats.dialer_id}, float(stats.in_flight)

        def queue_depth() -> Iterable[tuple[dict[str, str], float]]:
            for stats in orch.gate.stats():
                yield {"dialer": stats.dialer_id}, float(stats.depth)

        def states() -> Iterable[tuple[dict[str, str], float]]:
            counts: dict[str, int] = {}
            for campaign in orch.campaigns.values():
                counts[campaign.state] = counts.get(campaign.state, 0) + 1
            for state, n in sorted(counts.items()):
                yield {"state": state}, float(n)

        def outbox() -> Iterable[tuple[dict[str, str], float]]:
            depth = getattr(parts.sink, "depth", None)
            if depth is not None:
                yield {}, float(depth)

        client_stats = parts.client.stats
        sink = parts.sink

        def results() -> Iterable[tuple[dict[str, str], float]]:
            for (outcome, reason), n in sorted(sink.results.items()):
                yield {"outcome": outcome, "reason": reason}, float(n)

        def transitions() -> Iterable[tuple[dict[str, str], float]]:
            for (source, dest), n in sorted(sink.transitions.items()):
                yield {"from": source, "to": dest}, float(n)

        def durations(index: int) -> Callable[[], Iterable[tuple[dict[str, str], float]]]:
            return lambda: [({"transition": k}, v[index]) for k, v in sorted(sink.durations.items())]

        def lag() -> Iterable[tuple[dict[str, str], float]]:
            if parts.consumer.assignment:
                for partition, n in sorted(parts.consumer.lag(intake.positions).items()):
                    yield {"partition": str(partition.partition)}, float(n)

        return {
            "campaign_fsm_command_results": ("Command results published, by outcome and reason", results),
            "campaign_fsm_state_changes": ("State changes published, by from and to state", transitions),
            "campaign_fsm_transition_seconds_count": ("Transitions finished, by type (for the mean duration)",
                                                      durations(0)),
            "campaign_fsm_transition_seconds_sum": ("Seconds spent in finished transitions, by type",
                                                    durations(1)),
            "campaign_fsm_reads_per_second": ("Platform reads in the last second (the limit is read_limit_per_s)",
                                              lambda: [({}, float(parts.client.limiter.recent(1.0)))]),
            "campaign_fsm_consumer_lag": ("Commands not yet fetched, per partition of the commands topic", lag),
            "campaign_fsm_campaigns": ("Campaigns by state", states),
            "campaign_fsm_in_flight": ("Transitions in flight per dialer", dialers),
            "campaign_fsm_dialer_queue_depth": ("Commands queued per dialer", queue_depth),
            "campaign_fsm_notifications_up": ("1 when the notification channel is up",
                                              lambda: [({}, 1.0 if parts.channels.up else 0.0)]),
            "campaign_fsm_ready": ("1 once startup reconciliation is done", lambda: [({}, float(orch.ready))]),
            "campaign_fsm_commands_consumed": ("Command records consumed", lambda: [({}, float(intake.consumed))]),
            "campaign_fsm_commands_malformed": ("Malformed command records", lambda: [({}, float(intake.malformed))]),
            "campaign_fsm_commands_misrouted": (
                "Command records refused before the core: KEY_MISMATCH, WRONG_PARTITION, NOT_OWNED",
                lambda: [({"reason": r}, float(n)) for r, n in sorted(intake.misrouted.items())]),
            "campaign_fsm_platform_requests": ("Platform requests by kind",
                                               lambda: [({"kind": k}, float(v)) for k, v in _counters(client_stats)]),
            "campaign_fsm_outbox_depth": ("Events and results waiting in the outbox", outbox),
            "campaign_fsm_commands_refused_auth": ("Commands refused by signature, freshness, replay or policy",
                                                   lambda: _by("reason", orch.auth_refusals)),
            "campaign_fsm_state_quarantined": ("campaign.state records (or their held or scheduled commands) set "
                                               "aside when restored", lambda: _by("what", orch.quarantined)),
            "campaign_fsm_notifications_mismatched": ("Campaign bodies on another campaign's topic, ignored",
                                                      lambda: [({}, float(parts.channels.mismatched))]),
            "campaign_fsm_outbox_undeliverable": ("Outbox rows set aside as undeliverable (dead-lettered, kept in "
                                                  "its undeliverable table)",
                                                  lambda: [({}, float(getattr(parts.sink, "undeliverable", 0)))]),
        }


def _counters(stats: ClientStats) -> list[tuple[str, float]]:
    return [(name, float(value)) for name, value in dataclasses.asdict(stats).items()]


class _CountingSink:
    """Counts what goes through the sink for /metrics: results by outcome and reason, state changes
    by type, and how long transitions took (from entering a transitional state to leaving it)."""

    def __init__(self, inner: EventSink) -> None:
        self.inner = inner
        self.results: Counter[tuple[str, str]] = Counter()
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.durations: dict[str, list[float]] = {}  # "FROM->TO" -> [count, sum of seconds]
        self._started: dict[str, tuple[str, float]] = {}

    def __getattr__(self, name: str) -> Any:  # start, stop, wait_drained, depth: the outbox's own
        return getattr(self.inner, name)

    async def state_changed(self, event: dict[str, Any], snapshot: dict[str, Any],
                            results: Sequence[CommandResult] = ()) -> None:
        await self.inner.state_changed(event, snapshot, results)
        self._count(results)
        data = event["data"]
        source, dest = str(data.get("from")), str(data["to"])
        self.transitions[(source, dest)] += 1
        at = float(snapshot.get("enteredAt") or 0.0)
        if dest in TRANSITIONAL_STATES and source != dest:  # StrEnum members equal their values
            self._started[event["subject"]] = (dest, at)
        elif dest not in TRANSITIONAL_STATES:
            began = self._started.pop(event["subject"], None)
            if began is not None:
                stats = self.durations.setdefault(f"{began[0]}->{dest}", [0.0, 0.0])
                stats[0] += 1
                stats[1] += max(0.0, at - began[1])

    async def state_saved(self, snapshot: dict[str, Any], results: Sequence[CommandResult] = ()) -> None:
        await self.inner.state_saved(snapshot, results)
        self._count(results)

    async def command_result(self, result: CommandResult) -> None:
        await self.inner.command_result(result)
        self._count((result,))

    def _count(self, results: Sequence[CommandResult]) -> None:
        for result in results:
            self.results[(result.outcome.value, result.reason.value if result.reason else "")] += 1


class _Ownership:
    """The consumer group decides which campaigns this instance drives: those whose campaign id
    hashes (murmur2) to one of its partitions of the commands topic.

    The protocol is eager: every member gives up everything (`on_revoked`), then receives its new
    share (`on_assigned`). So on revoke the orchestrator suspends (running looks finish, nothing
    new is sent or published) and the outbox drains; on assign it lets go of what moved away,
    restores and reconciles what arrived, and resumes. aiokafka awaits both hooks before the
    group moves on, which is what keeps two instances from driving one campaign.
    """

    def __init__(self, kafka: KafkaConfig, orchestrator: Orchestrator, sink: EventSink) -> None:
        self.kafka = kafka
        self.orchestrator = orchestrator
        self.sink = sink
        self.consumer: CommandConsumer | None = None
        self.owned: frozenset[int] = frozenset()
        self.generation: int | None = None
        self.first_assignment = asyncio.Event()
        self.rebalances = 0
        self._owns: Callable[[str], bool] = _nothing

    def owns(self, campaign_id: str) -> bool:
        """Whether this instance drives `campaign_id` under the assignment it holds or is taking."""
        return self._owns(campaign_id)

    def _predicate(self, owned: frozenset[int], count: int) -> Callable[[str], bool]:
        return lambda campaign_id: partition_of(campaign_id, count) in owned

    async def on_revoked(self, partitions: frozenset[Partition], generation: int | None) -> None:
        await self.orchestrator.suspend()
        await _drained(self.sink, 10.0)

    async def on_assigned(self, partitions: frozenset[Partition], generation: int | None) -> None:
        assert self.consumer is not None
        # Suspended until the new share is acquired, the first assignment included (no revoke comes
        # before it): a command fetched meanwhile must not adopt a campaign whose record is still
        # being restored (it would start a second sequence at 1).
        await self.orchestrator.suspend()
        self.rebalances += 1
        self.generation = generation
        self.owned = frozenset(p.partition for p in partitions if p.topic == self.kafka.topics.commands)
        owns = self._predicate(self.owned, self.consumer.partition_count())
        # At once, not after the acquisition: a command fetched meanwhile waits in the core (which is
        # suspended) rather than being refused as not owned.
        self._owns = owns
        gone = await self.orchestrator.release(owns)
        restored = await restore_latest(self.kafka, self.kafka.topics.state)
        await self.orchestrator.acquire(_records(r.value for r in restored.values()), owns)
        self.orchestrator.resume()
        self.orchestrator.mark_ready()
        self.first_assignment.set()
        _log.info("assignment generation %s: partitions %s, %d campaigns (%d handed over)", generation,
                  sorted(self.owned), len(self.orchestrator.campaigns), len(gone))


def _nothing(_: str) -> bool:
    return False


def _log_death(task: asyncio.Task[Any]) -> None:
    """A background task that ends by an exception says so, with its traceback, instead of vanishing."""
    if not task.cancelled() and (error := task.exception()) is not None:
        _log.error("background task %s died", task.get_name(), exc_info=error)


async def _drained(sink: object, seconds: float) -> None:
    wait = getattr(sink, "wait_drained", None)
    if wait is not None and not await wait(seconds):
        _log.warning("the outbox did not drain within %.0f s (is the broker reachable?)", seconds)


def _by(label: str, counts: Counter[Any]) -> list[tuple[dict[str, str], float]]:
    return [({label: str(key)}, float(n)) for key, n in sorted(counts.items())]


def _records(values: Iterable[bytes | None]) -> list[dict[str, Any]]:
    records = []
    for value in values:
        if value is None:
            continue
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            _log.warning("unreadable record on the state topic skipped")
            continue
        if isinstance(record, dict) and "campaignId" in record:
            records.append(record)
    return records


async def _start(sink: object) -> None:
    start = getattr(sink, "start", None)
    if start is not None:
        result = start()
        if asyncio.iscoroutine(result):
            await result


async def _stop(sink: object) -> None:
    stop = getattr(sink, "stop", None)
    if stop is not None:
        result = stop()
        if asyncio.iscoroutine(result):
            await result
