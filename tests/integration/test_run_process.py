"""`campaign-fsm run` as a process: it gets ready against the simulator, serves metrics, and a
SIGTERM stops it cleanly (commands stop, bookkeeping finishes, the producer flushes, exit 0)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator import Simulator, SimulatorConfig, run_simulator
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.kafka import TopicNames

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_gets_ready_serves_metrics_and_exits_0_on_sigterm(
        broker: BrokerHandle, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    sim = Simulator(generate_tenant(3, 1), SimulatorConfig())
    topics = TopicNames.with_prefix(unique_name("run") + ".")
    port = _free_port()
    async with run_simulator(simulator=sim) as (url, sim):
        env = dict(os.environ)
        env.update({
            "CAMPAIGN_FSM_PLATFORM__BASE_URL": url,
            "CAMPAIGN_FSM_PLATFORM__CLIENT_ID": sim.config.client_id,
            "CAMPAIGN_FSM_PLATFORM__CLIENT_SECRET": sim.config.client_secret,
            "CAMPAIGN_FSM_KAFKA__BOOTSTRAP": broker.bootstrap,
            "CAMPAIGN_FSM_KAFKA__GROUP_ID": unique_name("group"),
            "CAMPAIGN_FSM_KAFKA__PARTITIONS": "3",
            "CAMPAIGN_FSM_KAFKA__TOPICS__COMMANDS": topics.commands,
            "CAMPAIGN_FSM_KAFKA__TOPICS__RESULTS": topics.results,
            "CAMPAIGN_FSM_KAFKA__TOPICS__EVENTS": topics.events,
            "CAMPAIGN_FSM_KAFKA__TOPICS__STATE": topics.state,
            "CAMPAIGN_FSM_KAFKA__TOPICS__DEAD_LETTERS": topics.dead_letters,
            "CAMPAIGN_FSM_HTTP__PORT": str(port),
            "CAMPAIGN_FSM_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
        })
        for name, value in broker.client_overrides.items():
            env[f"CAMPAIGN_FSM_KAFKA__{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "adapters.cli", "run", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                ready = False
                for _ in range(300):
                    try:
                        ready = (await http.get("/readyz")).status_code == 200
                    except httpx.TransportError:
                        ready = False
                    if ready or process.returncode is not None:
                        break
                    await asyncio.sleep(0.1)
                assert ready, "the service never became ready"
                assert (await http.get("/healthz")).status_code == 200
                metrics = (await http.get("/metrics")).text
                assert 'campaign_fsm_campaigns{state="STOPPED"} 3.0' in metrics
                assert "campaign_fsm_ready 1.0" in metrics
                assert "campaign_fsm_platform_requests" in metrics
                assert "campaign_fsm_reads_per_second " in metrics and "campaign_fsm_consumer_lag{" in metrics
                assert 'campaign_fsm_state_changes{from="None",to="STOPPED"} 3.0' in metrics
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=30)
            _, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0, stderr.decode()[-2000:]
    log = stderr.decode()
    assert '"msg":"ready: 3 campaigns' in log.replace(", ", ",").replace('": "', '":"') or "ready: 3 campaigns" in log
    assert sim.config.client_secret not in log, "the client secret must never be logged"
    assert "Traceback" not in log
