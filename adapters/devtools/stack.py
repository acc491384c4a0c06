"""One local stack: the simulator, the service and a producer of commands, on a broker's topics.

    async with local_stack(broker, topics, platform=simulator, scale=20.0, group="g") as stack:
        await stack.producer.send(topics.commands, campaign_id, command)

The tests' harness (tests/integration/harness.py), the demo (`adapters.devtools.demo`) and the
storm bench (bench/_storm_runs.py) all run this, each with its own options. The simulator is either
a `Simulator` served here over real HTTP/WebSocket, or a `Platform` already running elsewhere (the
storm bench's simulator process). Everything entered is left in reverse order, whatever happens.
The broker is the caller's: it is neither started nor stopped here.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.kafka import Producer, TopicNames, ensure_topics, open_admin
from adapters.service import Service
from adapters.settings import Settings

from .brokers import BrokerHandle
from .simulator import Simulator, run_simulator

__all__ = ["Platform", "Stack", "local_stack", "stack_settings"]


@dataclass(frozen=True, slots=True)
class Platform:
    """A platform (a simulator) already running: where it is and the service's OAuth client there."""

    url: str
    client_id: str
    client_secret: str


@dataclass(slots=True)
class Stack:
    """What `local_stack` runs. `service.parts` is set while the service runs (not with
    `start_service=False`); `simulator` is the in-process one, None for a `Platform` given."""

    topics: TopicNames
    platform: Platform
    settings: Settings
    service: Service
    producer: Producer
    simulator: Simulator | None
    startup_s: float = 0.0  # real seconds `service.running()` took to be ready


def stack_settings(broker: BrokerHandle, topics: TopicNames, platform: Platform, *, group: str, scale: float,
                   partitions: int = 3, outbox_path: str | None = None, profile: str = "guide",
                   notifications: bool = True, auth: Mapping[str, Any] | None = None,
                   dispatch: Mapping[str, Any] | None = None, ignore_environment: bool = False) -> Settings:
    """The service's settings on this broker and platform, HTTP on a free port, time scaled."""
    fields: dict[str, Any] = {
        "platform": {"profile": profile, "base_url": platform.url, "client_id": platform.client_id,
                     "client_secret": platform.client_secret, "notifications": notifications},
        # As plain values, so CAMPAIGN_FSM_KAFKA__* variables still go over them one by one.
        "kafka": broker.service_kafka_settings(topics, group_id=group, partitions=partitions).model_dump(),
        "auth": dict(auth or {}),
        "dispatch": dict(dispatch or {}),
        "http": {"port": 0},
        "time_scale": scale,
    }
    if outbox_path is not None:
        fields["outbox_path"] = outbox_path
    if ignore_environment:
        # Self-contained (the demo): CAMPAIGN_FSM_* variables meant for `run` must not reach it.
        fields["_env_prefix"] = "CAMPAIGN_FSM_LOCAL_STACK_IGNORES_THE_ENVIRONMENT__"
    return Settings(**fields)


@contextlib.asynccontextmanager
async def local_stack(
    broker: BrokerHandle,
    topics: TopicNames,
    *,
    platform: Simulator | Platform,
    group: str,
    scale: float,
    partitions: int = 3,
    data_dir: Path | None = None,
    start_service: bool = True,
    client_id: str = "campaign-fsm",
    service_options: Mapping[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[Stack]:
    """Serve the simulator (if given one), start the service (or only create the topics, with
    `start_service=False`, for a caller that runs services itself), then a producer.

    The outbox is in `data_dir` (a temporary directory if None). `settings` go to `stack_settings`
    (profile, notifications, auth, dispatch, ignore_environment); `service_options` to `Service`.
    """
    async with contextlib.AsyncExitStack() as exits:
        simulator: Simulator | None = None
        if isinstance(platform, Simulator):
            url, served = await exits.enter_async_context(run_simulator(simulator=platform))
            platform, simulator = Platform(url, served.config.client_id, served.config.client_secret), served
        if data_dir is None:
            data_dir = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="campaign-fsm-outbox-")))
        config = stack_settings(broker, topics, platform, group=group, scale=scale, partitions=partitions,
                                outbox_path=str(data_dir / "outbox.sqlite3"), **settings)
        service = Service(config, **(service_options or {}))
        booted = time.monotonic()
        if start_service:
            await exits.enter_async_context(service.running())
        else:
            async with open_admin(config.kafka) as admin:
                await ensure_topics(admin, topics, partitions)
        startup_s = time.monotonic() - booted
        producer = await exits.enter_async_context(Producer(broker.kafka_config(topics=topics, client_id=client_id)))
        yield Stack(topics, platform, config, service, producer, simulator, startup_s)
