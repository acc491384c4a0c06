"""What `/metrics` exports (`metrics_table`, read from the running parts at scrape time) and
`CountingSink`, the sink wrapper that counts results, state changes and transition durations."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fsm.orchestrator import Orchestrator
from fsm.ports import ManagedSink
from schemas.commands import CommandResult
from schemas.instants import epoch_of
from schemas.types import TRANSITIONAL_STATES

from ..kafka import CommandConsumer
from ..platform import ClientStats, NotificationChannels, PlatformClient
from .http import MetricsSource
from .intake import CommandIntake

__all__ = ["CountingSink", "metrics_table"]


def metrics_table(orch: Orchestrator, client: PlatformClient, channels: NotificationChannels,
                  consumer: CommandConsumer, intake: CommandIntake, sink: CountingSink) -> MetricsSource:
    """What `/metrics` exports: name -> (help, samples read at scrape time) of the running service."""

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
        yield {}, float(sink.depth)

    client_stats = client.stats

    def results() -> Iterable[tuple[dict[str, str], float]]:
        for (outcome, reason), n in sorted(sink.results.items()):
            yield {"outcome": outcome, "reason": reason}, float(n)

    def transitions() -> Iterable[tuple[dict[str, str], float]]:
        for (source, dest), n in sorted(sink.transitions.items()):
            yield {"from": source, "to": dest}, float(n)

    def durations(index: int) -> Callable[[], Iterable[tuple[dict[str, str], float]]]:
        return lambda: [({"transition": k}, v[index]) for k, v in sorted(sink.durations.items())]

    def lag() -> Iterable[tuple[dict[str, str], float]]:
        if consumer.assignment:
            for partition, n in sorted(consumer.lag(intake.positions).items()):
                yield {"partition": str(partition.partition)}, float(n)

    return {
        "campaign_fsm_command_results": ("Command results published, by outcome and reason", results),
        "campaign_fsm_state_changes": ("State changes published, by from and to state", transitions),
        "campaign_fsm_transition_seconds_count": ("Transitions finished, by type (for the mean duration)",
                                                  durations(0)),
        "campaign_fsm_transition_seconds_sum": ("Seconds spent in finished transitions, by type",
                                                durations(1)),
        "campaign_fsm_reads_per_second": ("Platform reads in the last second (the limit is read_limit_per_s)",
                                          lambda: [({}, float(client.budget.recent(1.0)))]),
        "campaign_fsm_request_budget": ("This instance's share of the OAuth client's request budget "
                                        "(requests per window; the window is the profile's)",
                                        lambda: [({}, float(client.budget.limit))]),
        "campaign_fsm_consumer_lag": ("Commands not yet fetched, per partition of the commands topic", lag),
        "campaign_fsm_campaigns": ("Campaigns by state", states),
        "campaign_fsm_in_flight": ("Transitions in flight per dialer", dialers),
        "campaign_fsm_dialer_queue_depth": ("Commands queued per dialer", queue_depth),
        "campaign_fsm_notifications_up": ("1 when the notification channel is up",
                                          lambda: [({}, 1.0 if channels.up else 0.0)]),
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
                                                  lambda: [({}, float(channels.mismatched))]),
        "campaign_fsm_notification_topics_rejected": ("Topic subscriptions the platform answered Rejected "
                                                      "(those campaigns are polled)",
                                                      lambda: [({}, float(channels.rejections))]),
        "campaign_fsm_notification_topics_unplaced": ("Topics wanted but beyond platform.max_channels channels "
                                                      "(those campaigns are polled)",
                                                      lambda: [({}, float(len(channels.unplaced)))]),
        "campaign_fsm_outbox_undeliverable": ("Outbox rows set aside as undeliverable (dead-lettered, kept in "
                                              "its undeliverable table)",
                                              lambda: [({}, float(sink.undeliverable))]),
    }


def _counters(stats: ClientStats) -> list[tuple[str, float]]:
    return [(name, float(value)) for name, value in dataclasses.asdict(stats).items()]


def _by(label: str, counts: Counter[Any]) -> list[tuple[dict[str, str], float]]:
    return [({label: str(key)}, float(n)) for key, n in sorted(counts.items())]


class CountingSink:
    """Counts what goes through the sink for /metrics: results by outcome and reason, state changes
    by type, and how long transitions took (from entering a transitional state to leaving it)."""

    def __init__(self, inner: ManagedSink) -> None:
        self.inner = inner
        self.results: Counter[tuple[str, str]] = Counter()
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.durations: dict[str, list[float]] = {}  # "FROM->TO" -> [count, sum of seconds]
        self._started: dict[str, tuple[str, float]] = {}

    @property
    def depth(self) -> int:
        return self.inner.depth

    @property
    def undeliverable(self) -> int:
        return self.inner.undeliverable

    @property
    def healthy(self) -> bool:
        return self.inner.healthy

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def __aenter__(self) -> CountingSink:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_drained(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        return await self.inner.wait_drained(timeout)

    async def state_changed(self, event: dict[str, Any], snapshot: dict[str, Any],
                            results: Sequence[CommandResult] = ()) -> None:
        await self.inner.state_changed(event, snapshot, results)
        self._count(results)
        data = event["data"]
        source, dest = str(data.get("from")), str(data["to"])
        self.transitions[(source, dest)] += 1
        at = epoch_of(snapshot["enteredAt"]) if snapshot.get("enteredAt") is not None else 0.0
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
