"""Start-up that fails part-way leaves nothing running (issue 12: one lifespan, exception-safe)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import psutil
import pytest

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.kafka import CommandConsumer
from adapters.outbox import Outbox
from adapters.platform import NotificationChannels
from adapters.service import Service
from adapters.service.intake import CommandIntake
from schemas.types import CampaignState
from tests.integration.harness import e2e

pytestmark = pytest.mark.integration


def _broker_connections(port: int) -> int:
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


@pytest.mark.parametrize("failing", ["outbox", "consumer", "intake"],
                         ids=["right-after-the-producer", "joining-the-group", "after-joining"])
async def test_a_failure_during_start_up_leaves_no_task_or_socket_behind(
        broker: BrokerHandle, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch,
        failing: str) -> None:
    tenant = generate_tenant(1, 1, state=CampaignState.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, start_service=False) as run:
        port = int(broker.bootstrap.rsplit(":", 1)[1])
        await asyncio.sleep(0.5)  # the harness's own clients settle
        tasks_before = set(asyncio.all_tasks())
        connections_before = _broker_connections(port)
        channels_started: list[NotificationChannels] = []
        original_start = NotificationChannels.start

        async def start_channels(self: NotificationChannels) -> None:
            channels_started.append(self)
            await original_start(self)

        async def fail(self: object) -> None:
            raise RuntimeError(f"{failing} failed to start (injected)")

        monkeypatch.setattr(NotificationChannels, "start", start_channels)
        def fail_now(self: object) -> None:  # the intake's start is not a coroutine
            raise RuntimeError(f"{failing} failed to start (injected)")

        failing_part = {"outbox": Outbox, "consumer": CommandConsumer, "intake": CommandIntake}[failing]
        monkeypatch.setattr(failing_part, "start", fail_now if failing == "intake" else fail)
        service = Service(run.settings)
        with pytest.raises(RuntimeError, match="injected"):
            async with service.running():
                pytest.fail("started although a part failed")
        await asyncio.sleep(1.0)
        # The harness's own collector (a consumer) starts short-lived fetch tasks all along; the
        # service's consumer, where it started, was stopped before this point, so those are not its.
        left = [f"{t.get_name()} {t.get_coro()!r}" for t in asyncio.all_tasks() - tasks_before
                if not t.done() and "Fetcher._proc_fetch_request" not in repr(t.get_coro())]
        assert left == [], f"tasks left running: {left}"
        assert _broker_connections(port) <= connections_before, "the service's Kafka connections are closed"
        if service.parts is not None and service.parts.http_url is not None:
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient() as http:
                    await http.get(f"{service.parts.http_url}/healthz", timeout=2.0)
        if failing != "outbox":
            assert channels_started and not channels_started[0].up, "the notification channels were stopped"


async def test_a_first_assignment_that_cannot_be_taken_fails_the_start_up(
        broker: BrokerHandle, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 item 5: the rebalance hook runs inside aiokafka, which logs and swallows what it
    raises. Taking the first assignment failing (here: reading campaign.state back) used to leave
    the start-up waiting for good behind a 503; it now fails, so the process exits non-zero."""
    from adapters.service import ownership as ownership_module

    async def restore_failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("campaign.state could not be read back (injected)")

    tenant = generate_tenant(1, 1, state=CampaignState.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, start_service=False) as run:
        monkeypatch.setattr(ownership_module, "restore_latest", restore_failing)
        service = Service(run.settings)
        with pytest.raises(RuntimeError, match="first assignment could not be taken") as failed:
            async with asyncio.timeout(60):
                async with service.running():
                    pytest.fail("started although its first assignment was not taken")
        assert "injected" in repr(failed.value.__cause__)
