"""Shared fixtures: the Kafka-protocol broker the integration suite talks to, and unique names.

``CAMPAIGN_FSM_BROKER`` picks the broker: ``noida`` (default) or ``tansu`` start a local broker
for the whole session on a free port with a temporary data dir; ``host:port[,host:port]`` uses an
existing one and starts nothing. The broker is stopped by PID at the end of the session (SIGTERM,
then SIGKILL), and the fixture checks that the process is really gone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import psutil
import pytest

from adapters.devtools.brokers import BrokerError, BrokerHandle, broker_from_env
from adapters.kafka import KafkaSettings, TopicNames


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    """The session's broker: `.bootstrap`, `.kind` (noida|tansu|external), `.pid`, `.kafka_config()`."""
    data_dir = tmp_path_factory.mktemp("broker")
    try:
        handle = broker_from_env(data_dir)
    except BrokerError as exc:
        pytest.fail(f"cannot get a Kafka-protocol broker for the integration tests: {exc}", pytrace=False)
    try:
        yield handle
    finally:
        handle.stop()
        if handle.pid is not None and _alive(handle.pid):
            pytest.fail(f"{handle.kind} broker pid {handle.pid} is still alive after stop()", pytrace=False)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A factory of names no other test (or earlier run on the same broker) uses: topics, groups."""
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60].strip("-")

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def kafka_config(broker: BrokerHandle, unique_name: Callable[[str], str]) -> KafkaSettings:
    """A KafkaSettings for the session broker with this test's own topic names and group id."""
    return broker.kafka_config(
        topics=TopicNames.with_prefix(unique_name("t") + "."),
        group_id=unique_name("g"),
        partitions=3,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that talks to the broker is marked `kafka`, so CI can rerun exactly those on tansu."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
