"""The service end to end: commands on Kafka, the simulator over HTTP/WebSocket, events on Kafka.

One test per trap and edge case of the design guide, named after it.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable

import pytest

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator import SimulatorConfig
from adapters.devtools.simulator.faults import FaultConfig
from adapters.devtools.simulator.tenant import generate_tenant
from adapters.service import Service
from fsm.backoff import Backoff
from schemas.types import CampaignState, DialerType, Priority
from tests.integration.harness import e2e

pytestmark = pytest.mark.integration
S = CampaignState
# Where each profile answers with a campaign's errors: guide `/errors`, genesys `/diagnostics`.
_ERRORS = {"guide": "errors", "genesys": "diagnostics"}


@pytest.fixture(params=["guide", "genesys"])
def profile(request: pytest.FixtureRequest) -> str:
    """Every trap of the guide that a Genesys campaign can fall into runs on both profiles (issue 14)."""
    value: str = request.param
    return value


async def test_start_right_after_stop_is_refused_until_stopped(broker: BrokerHandle,
                                                               unique_name: Callable[[str], str], profile: str) -> None:
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.PREDICTIVE,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, profile=profile) as run:
        cid = "campaign-0001"
        stop = await run.send(cid, "stop")
        await run.until(lambda: run.outcomes(stop) == ["ACCEPTED"], what="stop accepted")
        await run.until(lambda: run.sim.state_of(cid) is S.STOPPING, what="platform stopping")
        start = await run.send(cid, "start")
        await run.until(lambda: run.outcomes(start) == ["REFUSED"], what="start refused")
        assert run.reasons(start) == ["TRANSITION_IN_FLIGHT"]
        await run.until(lambda: "COMPLETED" in run.outcomes(stop), timeout=60, what="stop completed")
        again = await run.send(cid, "start")
        await run.until(lambda: "COMPLETED" in run.outcomes(again), timeout=60, what="start completed")
        commands = [r for r in run.sim.traffic.records if r.kind == "command"]
        assert [r.path.rsplit("/", 1)[-1] for r in commands] == ["stop", "start"]
        assert run.sim.traffic.commands_while_in_flight() == [], "nothing reached the platform mid-transition"


async def test_a_202_never_appears_as_running(broker: BrokerHandle, unique_name: Callable[[str], str],
                                              profile: str) -> None:
    tenant = generate_tenant(3, 1, dialer_types=(DialerType.PREDICTIVE,))
    async with e2e(broker, unique_name, tenant=tenant, profile=profile) as run:
        commands = [await run.send(f"campaign-000{i}", "start", Priority.HIGH) for i in (1, 2, 3)]
        await run.until(lambda: all("COMPLETED" in run.outcomes(c) for c in commands), timeout=60,
                        what="three starts completed")
        for command in commands:
            data = run.of(command.campaign_id)
            starting = next(e for e in data if e["to"] == "STARTING")
            assert starting["request"]["status"] == 202 and starting["cause"] == "command"
            running = next(e for e in data if e["to"] == "RUNNING")
            assert running["cause"] in ("notification", "poll") and running["from"] == "STARTING"
            # The platform's own record: RUNNING happened there before we said so. Genesys has no
            # starting status: what it shows as `on` (STARTING or RUNNING inside the simulator) is its RUNNING.
            shown_running = {S.RUNNING} if profile == "guide" else {S.STARTING, S.RUNNING}
            platform_running = [h for h in run.sim.history if h.campaign_id == command.campaign_id
                                and h.state in shown_running]
            assert platform_running, "the simulator never reached RUNNING"


async def test_poll_intervals_show_jitter_and_stagger(broker: BrokerHandle,
                                                      unique_name: Callable[[str], str], profile: str) -> None:
    """Notifications off: tracked campaigns poll on the guide's backoff, each interval jittered, the
    first polls of a batch staggered. Measured from the simulator's own request log."""
    tenant = generate_tenant(6, 6, dialer_types=(DialerType.PREDICTIVE,), state=S.RUNNING)
    policy = Backoff()
    async with e2e(broker, unique_name, tenant=tenant, profile=profile, notifications=False, scale=10) as run:
        for i in range(1, 7):
            run.sim.next_transition(f"campaign-{i:04d}", "stall", duration=150)  # inside the 180 s window
        commands = [await run.send(f"campaign-{i:04d}", "stop", Priority.HIGH) for i in range(1, 7)]
        await run.until(lambda: all("COMPLETED" in run.outcomes(c) for c in commands), timeout=90,
                        what="all stops completed")
        ratios: list[float] = []
        firsts: list[float] = []
        for command in commands:
            cid = command.campaign_id
            post = next(r.sim_time for r in run.sim.traffic.records if r.kind == "command" and r.campaign_id == cid)
            reads = sorted(r.sim_time for r in run.sim.traffic.records
                           if r.kind == "read" and r.path.endswith(f"/campaigns/{cid}") and r.sim_time > post)
            firsts.append(reads[0] - post)
            # Gap k follows the (k+1)-th nominal delay of the backoff: 3, 4.5, 6.75, ... capped at 30.
            ratios.extend((b - a) / policy.nominal(k + 1) for k, (a, b) in enumerate(itertools.pairwise(reads)))
    assert len(ratios) >= 36
    inside = [r for r in ratios if 0.8 - 0.05 <= r <= 1.2 + 0.05]
    assert len(inside) >= 0.9 * len(ratios), [round(r, 2) for r in ratios]
    assert 0.9 <= statistics.median(ratios) <= 1.1
    assert statistics.pstdev(ratios) >= 0.05, "intervals must jitter, not repeat"
    # Stagger: the batch's first polls are spread over the first interval, not one herd.
    assert max(firsts) - min(firsts) >= 0.5, firsts


async def test_predictive_stop_lasting_150s_is_not_failed(broker: BrokerHandle,
                                                          unique_name: Callable[[str], str], profile: str) -> None:
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.PREDICTIVE,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, profile=profile) as run:
        cid = "campaign-0001"
        run.sim.next_transition(cid, "stall", duration=150)
        stop = await run.send(cid, "stop")
        await run.until(lambda: "COMPLETED" in run.outcomes(stop), timeout=60, what="stop completed")
        assert "FAILED" not in [e["to"] for e in run.of(cid)]
        assert not [r for r in run.sim.traffic.records if r.path.endswith(f"/{_ERRORS[profile]}")], "no errors query"


async def test_progressive_stop_past_60s_triggers_the_errors_query(
        broker: BrokerHandle, unique_name: Callable[[str], str], profile: str) -> None:
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.PROGRESSIVE,), state=S.RUNNING)
    async with e2e(broker, unique_name, tenant=tenant, profile=profile) as run:
        cid = "campaign-0001"
        run.sim.next_transition(cid, "stall", duration=100)
        stop = await run.send(cid, "stop")
        errors = f"{cid}/{_ERRORS[profile]}"
        await run.until(lambda: any(r.path.endswith(errors) for r in run.sim.traffic.records),
                        timeout=60, what="errors query")
        errors_at = next(r.sim_time for r in run.sim.traffic.records if r.path.endswith(errors))
        post_at = next(r.sim_time for r in run.sim.traffic.records if r.kind == "command")
        assert errors_at - post_at >= 60.0 - 1.0
        await run.until(lambda: run.outcomes(stop)[-1:] in (["COMPLETED"], ["FAILED"]), timeout=60)
        # The platform named no lock and no error: past its window the stop is FAILED, errors attached.
        # (The result is published just before its event, so wait for the event as well.)
        await run.until(lambda: any(e["to"] == "FAILED" for e in run.of(cid)), timeout=30, what="FAILED event")
        failed = [e for e in run.of(cid) if e["to"] == "FAILED"]
        assert failed and failed[0]["cause"] == "timeout" and failed[0]["reason"] == "TOLERANCE_EXCEEDED"


async def test_a_locked_contact_list_defers_then_proceeds(broker: BrokerHandle,
                                                          unique_name: Callable[[str], str], profile: str) -> None:
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.POWER,))
    async with e2e(broker, unique_name, tenant=tenant, profile=profile) as run:
        cid = "campaign-0001"
        list_id = run.sim.campaign(cid).contact_list_id
        run.sim.set_contact_list(list_id, state="LOCKED")
        start = await run.send(cid, "start")
        await run.until(lambda: "DEFERRED" in run.outcomes(start), what="deferred")
        assert "CONTACT_LIST_NOT_READY" in run.reasons(start)
        assert not [r for r in run.sim.traffic.records if r.kind == "command"], "nothing sent while locked"
        run.sim.set_contact_list(list_id, state="ACTIVE")
        await run.until(lambda: "COMPLETED" in run.outcomes(start), timeout=60, what="start completed")


async def test_eight_commands_on_one_dialer_keep_two_in_flight_and_no_409_500(
        broker: BrokerHandle, unique_name: Callable[[str], str], profile: str) -> None:
    # Few active calls: the dialer stays under 80 % of its capacity, so nothing is deferred for load.
    tenant = generate_tenant(8, 1, dialer_types=(DialerType.PREDICTIVE,), state=S.RUNNING, max_active_calls=8)
    async with e2e(broker, unique_name, tenant=tenant, profile=profile) as run:
        commands = [await run.send(f"campaign-{i:04d}", "stop", Priority.HIGH if i == 8 else Priority.STANDARD)
                    for i in range(1, 9)]
        await run.until(lambda: all("COMPLETED" in run.outcomes(c) for c in commands), timeout=120,
                        what="eight stops completed")
        traffic = run.sim.traffic
        assert max(traffic.max_in_flight().values()) <= 2
        assert traffic.commands_while_dialer_busy(2) == []
        assert not [r for r in traffic.records if r.status in (409, 500)]
        posts = sorted((r.sim_time, r.campaign_id) for r in traffic.records if r.kind == "command")
        standard = [t for t, cid in posts if cid != "campaign-0008"]
        assert all(b - a >= 15.0 - 0.5 for a, b in itertools.pairwise(standard)), "STANDARD staggered 15 s"


async def test_no_429_is_ever_received(broker: BrokerHandle, unique_name: Callable[[str], str],
                                       profile: str) -> None:
    tenant = generate_tenant(40, 4, state=S.RUNNING)
    config = SimulatorConfig(profile=profile, rate_clock="sim",  # type: ignore[arg-type]
                             faults=FaultConfig(drop_notification_probability=1.0))
    async with e2e(broker, unique_name, tenant=tenant, profile=profile, sim_config=config) as run:
        commands = [await run.send(f"campaign-{i:04d}", "pause", Priority.HIGH) for i in range(1, 41)]
        await run.until(lambda: all(run.outcomes(c)[-1:] in (["COMPLETED"], ["FAILED"]) for c in commands),
                        timeout=120, what="forty pauses finished")
        traffic = run.sim.traffic
        assert not [r for r in traffic.records if r.status == 429]
        assert traffic.reads_per_second_peak(clock="sim") <= 10


# Not a platform trap: a malformed command never reaches the platform, so one profile is enough.
async def test_malformed_commands_are_refused_or_dead_lettered(broker: BrokerHandle,
                                                               unique_name: Callable[[str], str]) -> None:
    tenant = generate_tenant(1, 1)
    async with e2e(broker, unique_name, tenant=tenant) as run:
        await run.send_raw("campaign-0001", b'{"id": "9f1c3e1e-1111-4a4a-8b8b-222222222222", '
                                            b'"campaignId": "campaign-0001", "action": "explode"}')
        await run.send_raw(None, b"\xff not json")
        good = await run.send("campaign-0001", "start")
        await run.until(lambda: "COMPLETED" in run.outcomes(good), timeout=60, what="consumption continued")
        refused = [r for r in run.results if r["commandId"] == "9f1c3e1e-1111-4a4a-8b8b-222222222222"]
        assert refused and refused[0]["outcome"] == "REFUSED" and refused[0]["reason"] == "MALFORMED_COMMAND"
        assert "action" in refused[0]["message"]
        await run.until(lambda: len(run.dead_letters) == 1, what="dead letter")
        assert dict(run.dead_letters[0].headers)["error"].startswith(b"invalid Command")


async def test_a_restart_in_the_middle_of_a_transition_reissues_nothing(
        broker: BrokerHandle, unique_name: Callable[[str], str], profile: str) -> None:
    tenant = generate_tenant(2, 1, dialer_types=(DialerType.PREDICTIVE,), state=S.RUNNING, max_active_calls=5)
    # Scale 10 and a 150 s drain (inside the 180 s window): even tansu's ~2 s group join leaves the
    # restart well inside the transition.
    async with e2e(broker, unique_name, tenant=tenant, profile=profile, start_service=False, scale=10) as run:
        cid = "campaign-0001"
        run.sim.next_transition(cid, "stall", duration=150)
        async with Service(run.settings).running():
            stop = await run.send(cid, "stop")
            await run.until(lambda: any(e["to"] == "STOPPING" for e in run.of(cid)), what="STOPPING published")
        # The first instance is gone mid-transition; a new one restores campaign.state and takes over.
        assert run.sim.state_of(cid) is S.STOPPING
        async with Service(run.settings).running() as parts:
            assert parts.orchestrator.campaigns[cid].current is S.STOPPING
            await run.until(lambda: "COMPLETED" in run.outcomes(stop), timeout=60, what="completed after restart")
        posts = [r for r in run.sim.traffic.records if r.kind == "command" and r.campaign_id == cid]
        assert len(posts) == 1, "the stop was sent once, before the restart"
        sequences = [e["sequence"] for e in run.of(cid)]
        assert sequences == list(range(1, len(sequences) + 1)), "no gap, no duplicate across the restart"
        assert [e["to"] for e in run.of(cid)][-1] == "STOPPED"


async def test_drift_found_at_startup_becomes_a_reconcile_event(broker: BrokerHandle,
                                                               unique_name: Callable[[str], str], profile: str) -> None:
    tenant = generate_tenant(1, 1, dialer_types=(DialerType.POWER,))
    async with e2e(broker, unique_name, tenant=tenant, profile=profile, start_service=False) as run:
        cid = "campaign-0001"
        async with Service(run.settings).running():
            await run.until(lambda: len(run.of(cid)) == 1, what="first event")
        run.sim.set_state(cid, S.RUNNING)  # someone started it while we were down
        async with Service(run.settings).running():
            await run.until(lambda: len(run.of(cid)) == 2, what="drift event")
        drift = run.of(cid)[-1]
        assert (drift["from"], drift["to"], drift["cause"]) == ("STOPPED", "RUNNING", "reconcile")
        assert drift["anomaly"]["kind"] == "SKIPPED_STATES" and drift["anomaly"]["skipped"] == ["STARTING"]
