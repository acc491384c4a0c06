"""Local broker processes: started on a free port, answering metadata, frozen, thawed, stopped by PID."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

import psutil
import pytest

from adapters.devtools.brokers import (
    BrokerError,
    BrokerHandle,
    parse_broker_choice,
    probe_kafka,
    running_broker,
    start_broker,
)
from adapters.kafka import Producer, TopicSpec, ensure_topics, open_admin, read_topic

pytestmark = pytest.mark.integration


def _kind(broker: BrokerHandle) -> Literal["noida", "tansu"]:
    # Tests that start their own broker start the session's kind (noida for an external address).
    return "tansu" if broker.kind == "tansu" else "noida"


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_session_broker_answers_metadata_with_its_own_address(broker: BrokerHandle) -> None:
    nodes = probe_kafka(broker.bootstrap)
    assert nodes
    if broker.kind != "external":
        host, _, port = broker.bootstrap.rpartition(":")
        assert (host, int(port)) in {(h, p) for _, h, p in nodes}
        assert broker.pid is not None and psutil.pid_exists(broker.pid)


def test_stop_ends_the_process_and_is_idempotent(broker: BrokerHandle, tmp_path: Path) -> None:
    handle = start_broker(_kind(broker), tmp_path)
    assert handle.pid is not None
    process = psutil.Process(handle.pid)
    assert process.is_running()
    assert process.children(recursive=True) == []  # nothing else to clean up behind it
    code = handle.stop()
    assert _gone(handle.pid)
    assert not handle.running
    assert handle.stop() == code
    with pytest.raises(OSError):
        probe_kafka(handle.bootstrap, timeout=1.0)


def test_freeze_silences_the_broker_and_thaw_brings_it_back(broker: BrokerHandle, tmp_path: Path) -> None:
    with running_broker(_kind(broker), tmp_path) as handle:
        handle.freeze()
        assert handle.frozen
        with pytest.raises(TimeoutError):
            probe_kafka(handle.bootstrap, timeout=0.5)
        handle.thaw()
        assert not handle.frozen
        assert probe_kafka(handle.bootstrap)
        handle.freeze()
        pid = handle.pid
    # Stopping a frozen broker still ends it (SIGTERM waits for SIGCONT otherwise).
    assert pid is not None and _gone(pid)


async def test_noida_keeps_its_data_across_a_graceful_restart(tmp_path: Path) -> None:
    with running_broker("noida", tmp_path) as first:
        port = int(first.bootstrap.rpartition(":")[2])
        config = first.kafka_config()
        async with open_admin(config) as admin:
            await ensure_topics(admin, [TopicSpec("kept", 1)])
        async with Producer(config) as producer:
            for n in range(5):
                await producer.send("kept", "k", {"n": n})
    with running_broker("noida", tmp_path, port=port) as second:
        records = await read_topic(second.kafka_config(), "kept")
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]


def test_a_taken_port_or_a_missing_binary_fails_clearly(
    broker: BrokerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(BrokerError, match="already in use"):
            start_broker(_kind(broker), tmp_path / "taken", port=port, startup_timeout=10)
    monkeypatch.setenv("CAMPAIGN_FSM_NOIDA_BIN", str(tmp_path / "nope"))
    with pytest.raises(BrokerError, match="no broker binary"):
        start_broker("noida", tmp_path / "missing")


def test_the_environment_variable_names_a_kind_or_an_address() -> None:
    assert parse_broker_choice(None).kind == "noida"
    assert parse_broker_choice("").kind == "noida"
    assert parse_broker_choice("tansu").kind == "tansu"
    choice = parse_broker_choice("k1:9092, k2:9093")
    assert (choice.kind, choice.bootstrap) == ("external", "k1:9092,k2:9093")
    for bad in ("kafka", "k1", "k1:port", "k1:9092,", ":9092", "k1:70000"):
        with pytest.raises(BrokerError, match="CAMPAIGN_FSM_BROKER"):
            parse_broker_choice(bad)
