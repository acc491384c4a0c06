"""The five actions on the genesys profile end to end (issue 14, item 3): commands on Kafka, the
simulator serving the genesys profile over HTTP/WebSocket, events on Kafka.

Genesys has one `off`: pause and stop both turn a campaign off and keep its position; our recorded
intent tells them apart, in the events and across a restart. A start may recycle (begin again at
record one); `complete` and `forced_off` are the platform's own reasons, and the audit names each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator import SimulatorConfig, parse_tenant
from adapters.devtools.simulator.engine import Timing
from adapters.service import Service
from schemas.types import CampaignState, Priority
from tests.integration.harness import Run, e2e

pytestmark = pytest.mark.integration
S = CampaignState


def _tenant(count: int, *, size: int = 100_000, state: str = "RUNNING", sizes: dict[int, int] | None = None) -> Any:
    sizes = sizes or {}
    return parse_tenant({
        "dialers": [{"id": "eg-1"}],
        "contactLists": [{"id": f"list-{i}", "size": sizes.get(i, size)} for i in range(1, count + 1)],
        "campaigns": [{"id": f"campaign-{i:04d}", "dialerType": "POWER", "dialerId": "eg-1",
                       "contactListId": f"list-{i}", "state": state} for i in range(1, count + 1)],
    })


def _config(records_per_second: float = 1.0) -> SimulatorConfig:
    return SimulatorConfig(profile="genesys", rate_clock="sim", timing=Timing(records_per_second=records_per_second))


def _sent(run: Run, cid: str) -> list[tuple[str, str]]:
    return [(r.method, r.path.rsplit("/", 1)[-1]) for r in run.sim.traffic.records
            if r.kind == "command" and r.campaign_id == cid]


def _last(run: Run, cid: str) -> dict[str, Any]:
    return run.of(cid)[-1]


async def test_pause_keeps_the_position_and_resume_continues_from_it(broker: BrokerHandle,
                                                                     unique_name: Callable[[str], str]) -> None:
    async with e2e(broker, unique_name, tenant=_tenant(1), profile="genesys", sim_config=_config()) as run:
        cid = "campaign-0001"
        await run.until(lambda: run.sim.contacts_called(cid) >= 5, what="some records dialled")
        pause = await run.send(cid, "pause", Priority.HIGH)
        await run.until(lambda: "COMPLETED" in run.outcomes(pause), timeout=60, what="pause completed")
        paused = _last(run, cid)
        assert (paused["to"], paused["intent"], paused["halt"], paused["platformStatus"]) == (
            "PAUSED", "pause", "paused", "off")
        assert [e["to"] for e in run.of(cid)][1:] == ["PAUSING", "PAUSED"]
        position = run.sim.contacts_called(cid)
        assert position >= 5
        resume = await run.send(cid, "resume", Priority.HIGH)
        await run.until(lambda: "COMPLETED" in run.outcomes(resume), timeout=60, what="resume completed")
        assert _last(run, cid)["to"] == "RUNNING" and "intent" not in _last(run, cid)
        assert run.sim.contacts_called(cid) >= position, "resumed at the next record, not the first"
        assert _sent(run, cid) == [("POST", "stop"), ("POST", "start")], "Genesys: a pause is off, a resume on"


async def test_a_stop_is_an_off_our_intent_names_and_a_recycled_start_begins_at_record_one(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    async with e2e(broker, unique_name, tenant=_tenant(1), profile="genesys", sim_config=_config()) as run:
        cid = "campaign-0001"
        await run.until(lambda: run.sim.contacts_called(cid) >= 20, what="some records dialled")
        stop = await run.send(cid, "stop", Priority.HIGH)
        await run.until(lambda: "COMPLETED" in run.outcomes(stop), timeout=60, what="stop completed")
        stopped = _last(run, cid)
        assert (stopped["to"], stopped["intent"], stopped["halt"]) == ("STOPPED", "stop", "stopped")
        assert run.sim.contacts_called(cid) >= 20, "a stop keeps the position: Genesys cannot do otherwise"
        start = await run.send(cid, "start", Priority.HIGH, recycle=True)
        await run.until(lambda: "COMPLETED" in run.outcomes(start), timeout=60, what="recycled start completed")
        assert run.sim.contacts_called(cid) < 20, "recycled: dialing began again at record one"
        assert _sent(run, cid) == [("POST", "stop"), ("DELETE", "progress"), ("POST", "start")]


async def test_a_stop_of_a_paused_campaign_sends_nothing(broker: BrokerHandle,
                                                         unique_name: Callable[[str], str]) -> None:
    async with e2e(broker, unique_name, tenant=_tenant(1), profile="genesys", sim_config=_config()) as run:
        cid = "campaign-0001"
        pause = await run.send(cid, "pause", Priority.HIGH)
        await run.until(lambda: "COMPLETED" in run.outcomes(pause), timeout=60, what="pause completed")
        stop = await run.send(cid, "stop", Priority.HIGH)
        await run.until(lambda: "COMPLETED" in run.outcomes(stop), timeout=60, what="stop completed")
        assert [e["to"] for e in run.of(cid)][-2:] == ["STOPPING", "STOPPED"]
        assert _last(run, cid)["halt"] == "stopped"
        assert _sent(run, cid) == [("POST", "stop")], "the stop of an off campaign is our intent only"


async def test_recycle_is_refused_on_the_guide_profile(broker: BrokerHandle,
                                                       unique_name: Callable[[str], str]) -> None:
    async with e2e(broker, unique_name, tenant=_tenant(1, state="STOPPED")) as run:
        start = await run.send("campaign-0001", "start", Priority.HIGH, recycle=True)
        await run.until(lambda: run.outcomes(start) == ["REFUSED"], what="refused")
        assert run.reasons(start) == ["UNSUPPORTED_BY_PLATFORM"]
        assert _sent(run, "campaign-0001") == []


async def test_the_audit_tells_paused_stopped_exhausted_and_forced_off_apart(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    # campaign-0003's list has 400 records: it runs out on its own, 400 simulated seconds (8 s at the
    # harness' scale of 50) after the simulator starts, well after the service has read and subscribed
    # to it (an idle campaign is not polled: its `complete` comes by notification).
    tenant = _tenant(4, sizes={3: 400})
    async with e2e(broker, unique_name, tenant=tenant, profile="genesys", sim_config=_config()) as run:
        pause = await run.send("campaign-0001", "pause", Priority.HIGH)
        stop = await run.send("campaign-0002", "stop", Priority.HIGH)
        await run.until(lambda: all("COMPLETED" in run.outcomes(c) for c in (pause, stop)), timeout=60,
                        what="pause and stop completed")
        run.sim.force_off("campaign-0004")
        await run.until(lambda: all(run.of(f"campaign-{i:04d}") and run.of(f"campaign-{i:04d}")[-1]["to"]
                                    in ("PAUSED", "STOPPED") for i in range(1, 5)), timeout=60,
                        what="all four off")
        halts = {cid: (_last(run, cid)["to"], _last(run, cid)["halt"], _last(run, cid)["platformStatus"])
                 for cid in (f"campaign-{i:04d}" for i in range(1, 5))}
        assert halts == {
            "campaign-0001": ("PAUSED", "paused", "off"),
            "campaign-0002": ("STOPPED", "stopped", "off"),
            "campaign-0003": ("STOPPED", "contacts-exhausted", "complete"),
            "campaign-0004": ("STOPPED", "forced-off", "forced_off"),
        }


async def test_a_restart_keeps_the_intent_of_a_pause(broker: BrokerHandle,
                                                     unique_name: Callable[[str], str]) -> None:
    """The platform says `off` either way: only the stored intent lets a new instance see PAUSED."""
    async with e2e(broker, unique_name, tenant=_tenant(1), profile="genesys", sim_config=_config(),
                   start_service=False) as run:
        cid = "campaign-0001"
        async with Service(run.settings).running():
            pause = await run.send(cid, "pause", Priority.HIGH)
            await run.until(lambda: "COMPLETED" in run.outcomes(pause), timeout=60, what="pause completed")
        events = len(run.of(cid))
        async with Service(run.settings).running() as parts:
            await run.until(lambda: cid in parts.orchestrator.campaigns, what="campaign restored")
            assert parts.orchestrator.campaigns[cid].current is S.PAUSED
            resume = await run.send(cid, "resume", Priority.HIGH)
            await run.until(lambda: "COMPLETED" in run.outcomes(resume), timeout=60, what="resume completed")
        after = [e["to"] for e in run.of(cid)[events:]]
        assert after == ["STARTING", "RUNNING"], "no PAUSED -> STOPPED drift after the restart"
