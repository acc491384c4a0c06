"""The guide's rules as the platform sees them (issue 11), over a real broker and the simulator.

Each test reads the simulator's request record (`sim.traffic`: what was sent, when, on what facts)
rather than only the service's own word.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator.tenant import generate_tenant
from schemas.types import CampaignState, DialerType, Priority
from tests.integration.harness import Run, e2e

pytestmark = pytest.mark.integration
S = CampaignState


@pytest.fixture(params=["guide", "genesys"])
def profile(request: pytest.FixtureRequest) -> str:
    """Each rule that a Genesys campaign can break runs on both profiles (issue 14)."""
    value: str = request.param
    return value


def _commands(run: Run, campaign_id: str | None = None) -> list[tuple[float, str, str]]:
    return [(r.sim_time, r.action or "", r.campaign_id or "") for r in run.sim.traffic.records
            if r.kind == "command" and (campaign_id is None or r.campaign_id == campaign_id)]


async def test_a_held_stop_makes_a_start_wait_not_complete(broker: BrokerHandle,
                                                           unique_name: Callable[[str], str],
        profile: str) -> None:
    # Rule 1: stop and start together; the stop is held for the 15 s spacing behind another STANDARD.
    tenant = generate_tenant(2, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING, max_active_calls=0)
    async with e2e(broker, unique_name, tenant=tenant, profile=profile, scale=10) as run:
        first = await run.send("campaign-0002", "stop")
        await run.until(lambda: bool(_commands(run, "campaign-0002")), what="the first STANDARD POST")
        stop = await run.send("campaign-0001", "stop")
        start = await run.send("campaign-0001", "start")
        await run.until(lambda: bool(run.outcomes(start)), what="the start answered")
        assert (run.outcomes(start), run.reasons(start)) == (["REFUSED"], ["TRANSITION_IN_FLIGHT"])
        await run.until(lambda: "COMPLETED" in run.outcomes(stop), timeout=60, what="the stop completed")
        assert run.sim.state_of("campaign-0001") is S.STOPPED
        assert "COMPLETED" in run.outcomes(first)


async def test_a_list_that_locks_while_the_command_queues_defers_its_post(
        broker: BrokerHandle, unique_name: Callable[[str], str],
        profile: str) -> None:
    # Rule 2: the list becomes LOCKED after the stop is accepted, before its POST.
    tenant = generate_tenant(2, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING, max_active_calls=0)
    async with e2e(broker, unique_name, tenant=tenant, profile=profile, scale=10) as run:
        await run.send("campaign-0002", "stop")
        await run.until(lambda: bool(_commands(run, "campaign-0002")), what="the first STANDARD POST")
        stop = await run.send("campaign-0001", "stop")
        await run.until(lambda: run.outcomes(stop) == ["ACCEPTED"], what="the stop accepted and queued")
        list_id = run.sim.campaign("campaign-0001").contact_list_id
        run.sim.set_contact_list(list_id, state="LOCKED", release_after=60)
        locked_at = run.sim.clock.monotonic()
        await run.until(lambda: "COMPLETED" in run.outcomes(stop), timeout=60, what="the stop after the lock")
        sent = _commands(run, "campaign-0001")
        assert len(sent) == 1 and sent[0][0] >= locked_at + 60 - 1, (sent, locked_at)
        assert "CONTACT_LIST_NOT_READY" in run.reasons(stop)


async def test_a_dialer_that_fills_up_while_the_command_queues_defers_a_standard_post(
        broker: BrokerHandle, unique_name: Callable[[str], str],
        profile: str) -> None:
    # Rule 2: the dialer goes to 131 % of its capacity after the stop is accepted, before its POST.
    tenant = generate_tenant(3, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING, max_active_calls=0)
    async with e2e(broker, unique_name, tenant=tenant, profile=profile, scale=10) as run:
        await run.send("campaign-0002", "stop")
        await run.until(lambda: bool(_commands(run, "campaign-0002")), what="the first STANDARD POST")
        stop = await run.send("campaign-0001", "stop")
        await run.until(lambda: run.outcomes(stop) == ["ACCEPTED"], what="the stop accepted and queued")
        run.sim.set_state("campaign-0003", S.RUNNING, active_calls=131)
        await run.until(lambda: "DEFERRED" in run.outcomes(stop), timeout=60, what="deferred for capacity")
        assert run.reasons(stop)[-1] == "DIALER_OVER_CAPACITY"
        assert _commands(run, "campaign-0001") == [], "no STANDARD POST with the dialer over 80 %"
        run.sim.set_state("campaign-0003", S.RUNNING, active_calls=0)
        await run.until(lambda: "COMPLETED" in run.outcomes(stop), timeout=90, what="sent once capacity is back")


@pytest.mark.parametrize("notifications", [True, False], ids=["notifications", "polling"])
async def test_a_reset_publishes_only_states_the_platform_reported(
        broker: BrokerHandle, unique_name: Callable[[str], str],
        profile: str, notifications: bool) -> None:
    # Rules 3 and 4: a reset with the platform still FAILED, then the runbook's order.
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, profile=profile, notifications=notifications) as run:
        cid = "campaign-0001"
        run.sim.next_transition(cid, "fail")
        pause = await run.send(cid, "pause", Priority.HIGH)
        await run.until(lambda: "FAILED" in run.outcomes(pause), timeout=60, what="the pause failed")
        early = await run.send(cid, "reset")
        await run.until(lambda: bool(run.outcomes(early)), what="the early reset answered")
        assert run.outcomes(early) == ["FAILED"], "the platform still says FAILED: nothing to adopt"
        assert "RUNNING" not in [e["to"] for e in run.of(cid)[2:]], "no state the platform never had"
        run.sim.set_state(cid, S.STOPPED)  # fixed on the platform, as the runbook says
        if notifications:
            await run.until(lambda: run.of(cid)[-1]["to"] == "STOPPED", what="the fix observed")
        reset = await run.send(cid, "reset")
        await run.until(lambda: "COMPLETED" in run.outcomes(reset), timeout=60, what="the reset completed")
        tos = [e["to"] for e in run.of(cid)]
        assert tos[-1] == "STOPPED" and "RUNNING" not in tos[2:], tos
        if not notifications:
            last = run.of(cid)[-1]
            assert (last["from"], last["cause"], last["action"]) == ("FAILED", "command", "reset")


async def test_standard_posts_on_one_dialer_leave_15_s_apart(broker: BrokerHandle,
                                                             unique_name: Callable[[str], str],
        profile: str) -> None:
    # Rule 5: the spacing measured between the POSTs as the platform received them.
    tenant = generate_tenant(5, 1, dialer_types=(DialerType.POWER,), state=S.RUNNING, max_active_calls=0)
    async with e2e(broker, unique_name, tenant=tenant, profile=profile, scale=10, notifications=False) as run:
        stops = [await run.send(f"campaign-000{i}", "stop") for i in range(1, 6)]
        await run.until(lambda: all("COMPLETED" in run.outcomes(s) for s in stops), timeout=90, what="five stops")
        times = sorted(t for t, _, _ in _commands(run))
        assert len(times) == 5
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 15.0, gaps  # simulated seconds, as the platform received them
