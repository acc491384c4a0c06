"""Genesys' organisation-wide limits as the platform sees them (issue 14, items 4 and 5).

The simulator serves the genesys profile with Genesys' cap of 50 active campaigns enforced (it
refuses the 51st start), and `/linedistribution` computed from an edge group's lines and all its
campaigns' calls. Each test reads the simulator's own records (`sim.history`, `sim.traffic`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator import SimulatorConfig
from adapters.devtools.simulator.lines import ACTIVE_STATUSES
from adapters.devtools.simulator.tenant import generate_tenant, parse_tenant
from adapters.service import Service
from schemas.commands import Command
from schemas.types import CampaignState, DialerType, Priority
from tests.integration.harness import Run, e2e

pytestmark = pytest.mark.integration
S = CampaignState
CAP = 50


def _peak_active(run: Run) -> int:
    """The most campaigns active at once, replayed from the simulator's state record."""
    status = {c.id: "off" for c in run.sim.tenant.campaigns.values()}
    peak = 0
    for record in run.sim.history:
        status[record.campaign_id] = record.status
        peak = max(peak, sum(1 for s in status.values() if s in ACTIVE_STATUSES))
    return peak


def _start_posts(run: Run) -> dict[str, float]:
    """campaign -> simulated time its (first accepted) start reached the platform."""
    posts: dict[str, float] = {}
    for r in run.sim.traffic.records:
        if r.kind == "command" and r.action == "start" and r.status == 202 and r.campaign_id:
            posts.setdefault(r.campaign_id, r.sim_time)
    return posts


def _deferred_for_cap(run: Run, command: Command) -> bool:
    return any(r["commandId"] == str(command.id) and r["outcome"] == "DEFERRED"
               and r.get("reason") == "ACTIVE_CAMPAIGN_CAP" for r in run.results)


async def test_a_storm_of_80_starts_never_makes_a_51st_active_campaign(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    tenant = generate_tenant(80, 10, dialer_types=(DialerType.POWER,), state=S.STOPPED, max_active_calls=0)
    config = SimulatorConfig(profile="genesys", rate_clock="sim", active_campaign_cap=CAP)
    async with e2e(broker, unique_name, tenant=tenant, profile="genesys", sim_config=config, scale=20,
                   standard_spacing_s=1.0, deferral_ttl_s=7200.0) as run:
        ids = [f"campaign-{i:04d}" for i in range(1, 81)]
        # The storm: 60 STANDARD starts at once; 50 find a place, 10 wait.
        standard = [await run.send(cid, "start") for cid in ids[:60]]
        await run.until(lambda: sum(_deferred_for_cap(run, c) for c in standard) == 10, timeout=120,
                        what="10 STANDARD starts deferred for the cap")
        await run.until(lambda: sum("COMPLETED" in run.outcomes(c) for c in standard) == CAP, timeout=120,
                        what="50 starts completed")
        # 20 HIGH starts arrive while the organisation is full: they wait too, ahead of the STANDARD ones.
        high = [await run.send(cid, "start", Priority.HIGH) for cid in ids[60:]]
        await run.until(lambda: all(_deferred_for_cap(run, c) for c in high), timeout=60,
                        what="the HIGH starts deferred for the cap")
        assert len(run.sim.in_flight_campaigns()) == 0 and len(_start_posts(run)) == CAP

        # 15 places free: all 15 go to HIGH starts, none to a STANDARD one that waited longer.
        started = [cid for cid in ids[:60] if run.sim.state_of(cid) is S.RUNNING]
        stops = [await run.send(cid, "stop", Priority.HIGH) for cid in started[:15]]
        await run.until(lambda: all("COMPLETED" in run.outcomes(s) for s in stops), timeout=120,
                        what="15 stops")
        await run.until(lambda: sum("COMPLETED" in run.outcomes(c) for c in high) == 15, timeout=120,
                        what="15 HIGH starts completed")
        waited_standard = [c for c in standard if _deferred_for_cap(run, c)]
        assert not any("COMPLETED" in run.outcomes(c) for c in waited_standard), "a STANDARD went before a HIGH"

        # 20 more: the last 5 HIGH, then the 10 STANDARD that waited.
        more = [await run.send(cid, "stop", Priority.HIGH) for cid in started[15:35]]
        everything = standard + high
        await run.until(lambda: all("COMPLETED" in run.outcomes(c) for c in everything + more), timeout=180,
                        what="every start completed")

        # When places were scarce (15 for 30 waiters) the platform saw 15 HIGH starts first; once 20
        # more freed there was room for all 15 left, so their order is the dialers' business.
        posts = _start_posts(run)
        waiters = {c.campaign_id for c in high} | {c.campaign_id for c in waited_standard}
        first = sorted(waiters, key=posts.__getitem__)[:15]
        assert set(first) <= {c.campaign_id for c in high}, "HIGH before STANDARD when a place frees"
        assert not any(o in ("FAILED", "REFUSED") for c in everything for o in run.outcomes(c))
        refused = [r for r in run.sim.traffic.records if r.kind == "command" and r.status >= 400]
        assert refused == [], "the platform never had to refuse a start"
        assert _peak_active(run) <= CAP


async def test_a_standard_start_waits_while_its_edge_group_is_over_80_percent_of_its_outbound_lines(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    # 100 lines, Max Line Utilization 50 %: 50 outbound lines. 45 calls of the *other* campaign are
    # 90 % of them: the starting campaign's own calls (none) say nothing of the group's load.
    tenant = parse_tenant({
        "dialers": [{"id": "edge-group-1", "licensedCapacity": 100, "maxLineUtilization": 0.5}],
        "contactLists": [{"id": "list-1"}, {"id": "list-2"}],
        "campaigns": [
            {"id": "busy", "dialerType": "POWER", "dialerId": "edge-group-1", "contactListId": "list-1",
             "state": "RUNNING", "activeCalls": 45},
            {"id": "idle", "dialerType": "POWER", "dialerId": "edge-group-1", "contactListId": "list-2"},
        ],
    })
    async with e2e(broker, unique_name, tenant=tenant, profile="genesys", scale=10) as run:
        start = await run.send("idle", "start")
        await run.until(lambda: "DEFERRED" in run.outcomes(start), timeout=60, what="deferred for the lines")
        assert run.reasons(start)[-1] == "DIALER_OVER_CAPACITY"
        assert "edge-group-1" in next(r["message"] for r in run.results if r["commandId"] == str(start.id)
                                      and r["outcome"] == "DEFERRED")
        assert not [r for r in run.sim.traffic.records if r.kind == "command" and r.campaign_id == "idle"]
        assert any(r.path.endswith("/busy/linedistribution") or r.path.endswith("/idle/linedistribution")
                   for r in run.sim.traffic.records)
        run.sim.set_state("busy", S.RUNNING, active_calls=30)  # 60 % of the outbound lines
        await run.until(lambda: "COMPLETED" in run.outcomes(start), timeout=90, what="started once lines free")


async def test_two_instances_storming_one_organisation_overshoot_by_at_most_one_refused_start(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    # Two instances, one organisation with a cap of 5, 12 starts at once. Each sees the other's starts
    # only at its next read, so each takes at most ceil(5 / 2) = 3 places of a read: one start too
    # many at worst, which the platform refuses and which ends FAILED once, never sent again.
    cap = 5
    tenant = generate_tenant(12, 4, dialer_types=(DialerType.POWER,), state=S.STOPPED, max_active_calls=0)
    config = SimulatorConfig(profile="genesys", rate_clock="sim", active_campaign_cap=cap)
    async with e2e(broker, unique_name, tenant=tenant, profile="genesys", sim_config=config, scale=20,
                   start_service=False, standard_spacing_s=1.0, deferral_ttl_s=7200.0,
                   active_campaign_cap=cap) as run:
        shared = run.settings.platform.model_copy(update={"instances": 2})
        first = run.settings.model_copy(update={"platform": shared})
        second = first.model_copy(update={"outbox_path": first.outbox_path + ".second"})
        async with Service(first).running() as a, Service(second).running() as b:
            owners = [p.extra["ownership"] for p in (a, b)]
            await run.until(lambda: all(o.owned for o in owners) and sum(len(o.owned) for o in owners) == 3,
                            timeout=60, what="both instances own partitions")
            starts = [await run.send(f"campaign-{i:04d}", "start") for i in range(1, 13)]

            def settled() -> bool:
                done = sum("COMPLETED" in run.outcomes(c) for c in starts)
                return done == cap and all(run.outcomes(c)[-1:] in (["COMPLETED"], ["FAILED"], ["DEFERRED"])
                                           for c in starts)

            await run.until(settled, timeout=120, what="the cap filled and every start answered")
            await asyncio.sleep(40 / run.scale)  # two more reads' lifetimes: nothing else may go
            assert sum("COMPLETED" in run.outcomes(c) for c in starts) == cap
        failed = [c for c in starts if "FAILED" in run.outcomes(c)]
        assert all(run.reasons(c)[-1] == "ACTIVE_CAMPAIGN_CAP" for c in failed)
        assert len(failed) <= 1, [run.reasons(c) for c in failed]
        refused = [r for r in run.sim.traffic.records if r.kind == "command" and r.status >= 400]
        assert len(refused) == len(failed), "each refused start was sent once"
        waiting = [c for c in starts if run.outcomes(c)[-1] == "DEFERRED"]
        assert all(run.reasons(c)[-1] == "ACTIVE_CAMPAIGN_CAP" for c in waiting)
        assert len(waiting) == 12 - cap - len(failed)
        assert _peak_active(run) <= cap
