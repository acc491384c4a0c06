"""The consumer group's rebalance hooks (`adapters.service.ownership.Ownership`), with no broker."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.kafka import KafkaSettings, Partition
from adapters.service import ownership as module
from adapters.service.ownership import Ownership


class _Core:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.campaigns: dict[str, Any] = {}

    async def suspend(self) -> None:
        self.calls.append("suspend")

    async def release(self, owns: Any) -> list[str]:
        return []

    async def acquire(self, records: Any, owns: Any) -> None:
        self.calls.append("acquire")

    def resume(self) -> None:
        self.calls.append("resume")

    def mark_ready(self) -> None:
        self.calls.append("ready")


class _Consumer:
    def partition_count(self) -> int:
        return 3


async def test_an_assignment_that_cannot_be_taken_is_logged_and_unhealthy_until_one_is(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12 item 5: aiokafka logs and swallows what a rebalance hook raises, which left the core
    suspended behind a green /readyz. The hook now catches it: logged with its traceback, `healthy`
    False (the service's /readyz 503) until an assignment is taken."""
    kafka = KafkaSettings(bootstrap="localhost:9092")
    core = _Core()
    ownership = Ownership(kafka, core, sink=None)  # type: ignore[arg-type]
    ownership.consumer = _Consumer()  # type: ignore[assignment]
    partitions = frozenset({Partition(kafka.topics.commands, 0)})

    async def restore_failing(*args: object) -> dict[str, Any]:
        raise RuntimeError("campaign.state could not be read back")

    async def restore_nothing(*args: object) -> dict[str, Any]:
        return {}

    monkeypatch.setattr(module, "restore_latest", restore_failing)
    with caplog.at_level(logging.ERROR, logger="adapters.service.ownership"):
        await ownership.on_assigned(partitions, 1)  # does not raise into aiokafka
    assert not ownership.healthy and ownership.first_assignment.is_set()
    assert core.calls == ["suspend"], "still suspended: nothing was taken on"
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None
    monkeypatch.setattr(module, "restore_latest", restore_nothing)
    await ownership.on_assigned(partitions, 2)
    assert ownership.healthy
    assert core.calls[-3:] == ["acquire", "resume", "ready"]
