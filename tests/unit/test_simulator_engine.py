"""The simulator's scheduler, tenant and engine, without HTTP: time advanced by hand on a FakeClock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.devtools.simulator import (
    FaultConfig,
    Scheduler,
    Simulator,
    SimulatorConfig,
    TenantError,
    generate_tenant,
    load_tenant,
    parse_tenant,
)
from adapters.devtools.simulator.engine import DialerOverloaded, InvalidTransition, UnknownCampaign
from fsm.testing import FakeClock
from schemas.types import Action, CampaignState, DialerType

S = CampaignState
ROOT = Path(__file__).resolve().parents[2]


def _tenant(*campaigns: tuple[str, DialerType, CampaignState, int], dialer: str = "d1") -> dict[str, object]:
    return {
        "dialers": [{"id": dialer, "licensedCapacity": 100}],
        "contactLists": [{"id": "l1"}],
        "campaigns": [
            {"id": cid, "dialerType": dt.value, "dialerId": dialer, "contactListId": "l1", "state": st.value,
             "activeCalls": calls}
            for cid, dt, st, calls in campaigns
        ],
    }


def _sim(*campaigns: tuple[str, DialerType, CampaignState, int], **faults: float) -> Simulator:
    return Simulator(parse_tenant(_tenant(*campaigns)), SimulatorConfig(faults=FaultConfig(**faults)),
                     clock=FakeClock())


def _time_to(sim: Simulator, cid: str, state: CampaignState, limit: float = 1000.0, step: float = 0.5) -> float:
    start = sim.clock.monotonic()
    while sim.state_of(cid) is not state:
        if sim.clock.monotonic() - start > limit:
            raise AssertionError(f"{cid} never reached {state} (is {sim.state_of(cid)})")
        sim.advance(step)
    return sim.clock.monotonic() - start


# --- clock and scheduler --------------------------------------------------------------------------


def test_scheduler_fires_timers_in_due_order_at_their_own_time() -> None:
    clock = FakeClock()
    sched = Scheduler(clock)
    seen: list[tuple[str, float]] = []
    sched.call_later(5, lambda: seen.append(("b", clock.monotonic())))
    sched.call_later(2, lambda: seen.append(("a", clock.monotonic())))
    cancelled = sched.call_later(3, lambda: seen.append(("x", clock.monotonic())))
    cancelled.cancel()
    sched.call_every(4, lambda: seen.append(("tick", clock.monotonic())))
    assert sched.advance(10) == 4
    assert seen == [("a", 2.0), ("tick", 4.0), ("b", 5.0), ("tick", 8.0)]
    assert clock.monotonic() == 10.0


def test_advance_needs_a_fake_clock() -> None:
    sim = Simulator(generate_tenant(1))
    with pytest.raises(TypeError, match="FakeClock"):
        sim.advance(1)


# --- tenant ---------------------------------------------------------------------------------------


def test_example_tenant_file_loads() -> None:
    tenant = load_tenant(ROOT / "examples" / "tenant.json")
    assert set(tenant.dialers) == {"dialer-east", "dialer-west"}
    running = tenant.campaigns["a1b2c3d4-e5f6-7890-abcd-ef1234567890"]
    assert running.state is S.RUNNING and running.active_calls == 40
    assert tenant.contact_lists["list-staging"].blocking
    assert parse_tenant(tenant.to_document()).to_document() == tenant.to_document()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["campaigns"][0].update(dialerId="nope"), "dialerId 'nope' is not in dialers"),
        (lambda d: d["campaigns"][0].update(contactListId="nope"), "contactListId 'nope' is not in contactLists"),
        (lambda d: d["campaigns"][0].update(dialerType="TURBO"), "campaigns.0.dialerType"),
        (lambda d: d["campaigns"][0].update(activeCals=3), "campaigns.0.activeCals: Extra inputs"),
        (lambda d: d["campaigns"].append(dict(d["campaigns"][0])), "duplicate id 'c1'"),
        (lambda d: d["contactLists"][0].update(state="BROKEN"), "contactLists.0.state"),
    ],
)
def test_bad_tenant_documents_name_the_problem(mutate: object, message: str) -> None:
    doc = _tenant(("c1", DialerType.POWER, S.STOPPED, 0))
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(TenantError, match=message.replace("(", r"\(")):
        parse_tenant(doc)


def test_load_tenant_reports_missing_file_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(TenantError, match="cannot read tenant file"):
        load_tenant(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TenantError, match="not valid JSON"):
        load_tenant(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_tenant(("c1", DialerType.POWER, S.STOPPED, 0))))
    assert list(load_tenant(good).campaigns) == ["c1"]


def test_generated_tenant_is_deterministic_and_spread_over_dialers() -> None:
    a, b = generate_tenant(7, 3, seed=5), generate_tenant(7, 3, seed=5)
    assert a.to_document() == b.to_document()
    assert [c.dialer_id for c in a.campaigns.values()][:4] == ["dialer-01", "dialer-02", "dialer-03", "dialer-01"]
    assert [c.dialer_type for c in a.campaigns.values()][:3] == [DialerType.PREDICTIVE, DialerType.PROGRESSIVE,
                                                                 DialerType.POWER]
    with pytest.raises(TenantError, match="--dialers must be >= 1"):
        generate_tenant(1, 0)


# --- progression per dialer type ------------------------------------------------------------------


def test_predictive_start_takes_seconds_and_passes_through_starting() -> None:
    sim = _sim(("c1", DialerType.PREDICTIVE, S.STOPPED, 10))
    sim.engine.request("c1", Action.START)
    assert sim.state_of("c1") is S.STARTING
    sim.advance(7.9)
    assert sim.state_of("c1") is S.STARTING
    sim.advance(0.1)
    assert sim.state_of("c1") is S.RUNNING
    assert sim.states("c1") == [S.STARTING, S.RUNNING]


@pytest.mark.parametrize(("calls", "seconds"), [(0, 30.0), (20, 60.0), (60, 120.0), (500, 120.0)])
def test_predictive_stop_drains_30_to_120_s_with_active_calls(calls: int, seconds: float) -> None:
    sim = _sim(("c1", DialerType.PREDICTIVE, S.RUNNING, calls))
    sim.engine.request("c1", Action.STOP)
    assert _time_to(sim, "c1", S.STOPPED, step=0.25) == pytest.approx(seconds, abs=0.25)
    assert sim.states("c1") == [S.STOPPING, S.STOPPED]


def test_progressive_stops_faster_than_predictive_and_power_at_once() -> None:
    sim = _sim(("pred", DialerType.PREDICTIVE, S.RUNNING, 40), ("prog", DialerType.PROGRESSIVE, S.RUNNING, 40),
               ("pow", DialerType.POWER, S.RUNNING, 40))
    for cid in ("pred", "prog", "pow"):
        sim.engine.request(cid, Action.STOP)
    assert _time_to(sim, "pow", S.STOPPED, step=0.25) <= 0.5
    took_prog = _time_to(sim, "prog", S.STOPPED, step=0.25) + 0.5
    took_pred = _time_to(sim, "pred", S.STOPPED, step=0.25) + took_prog
    assert took_prog < 60 < took_pred <= 120


def test_predictive_resume_from_paused_is_faster_than_start_from_stopped() -> None:
    sim = _sim(("paused", DialerType.PREDICTIVE, S.PAUSED, 10), ("stopped", DialerType.PREDICTIVE, S.STOPPED, 10))
    sim.engine.request("paused", Action.RESUME)
    sim.engine.request("stopped", Action.START)
    resume = _time_to(sim, "paused", S.RUNNING, step=0.5)
    start = resume + _time_to(sim, "stopped", S.RUNNING, step=0.5)
    assert resume < start
    assert sim.states("paused") == [S.STARTING, S.RUNNING]


def test_pause_goes_through_pausing_and_keeps_the_calls_until_paused() -> None:
    sim = _sim(("c1", DialerType.PREDICTIVE, S.RUNNING, 20))
    sim.engine.request("c1", Action.PAUSE)
    assert sim.state_of("c1") is S.PAUSING
    assert sim.engine.dialer_calls("d1") == 20
    _time_to(sim, "c1", S.PAUSED)
    assert sim.engine.dialer_calls("d1") == 0


@pytest.mark.parametrize(
    ("state", "action"),
    [(S.STOPPING, Action.START), (S.RUNNING, Action.START), (S.STOPPED, Action.STOP), (S.STOPPED, Action.RESUME),
     (S.PAUSED, Action.PAUSE), (S.FAILED, Action.START), (S.STARTING, Action.STOP)],
)
def test_invalid_transitions_are_refused(state: CampaignState, action: Action) -> None:
    sim = _sim(("c1", DialerType.PREDICTIVE, state, 5))
    with pytest.raises(InvalidTransition):
        sim.engine.request("c1", action)
    with pytest.raises(UnknownCampaign):
        sim.engine.request("nope", Action.START)


def test_a_transitional_state_in_the_tenant_finishes_on_its_own() -> None:
    sim = _sim(("c1", DialerType.POWER, S.STARTING, 0))
    sim.advance(2)
    assert sim.state_of("c1") is S.RUNNING


# --- faults in the engine -------------------------------------------------------------------------


def test_locked_contact_list_holds_starting_with_empty_errors_until_released() -> None:
    sim = _sim(("c1", DialerType.PROGRESSIVE, S.STOPPED, 5))
    sim.set_contact_list("l1", state="LOCKED")
    sim.engine.request("c1", Action.START)
    sim.advance(600)
    assert sim.state_of("c1") is S.STARTING
    assert sim.campaign("c1").errors == []
    assert sim.engine.transitions["c1"].held
    sim.set_contact_list("l1", state="ACTIVE")
    sim.advance(sim.config.timing.release_delay)
    assert sim.state_of("c1") is S.RUNNING


def test_importing_list_holds_stopping_and_releases_itself_after_release_after() -> None:
    sim = _sim(("c1", DialerType.POWER, S.RUNNING, 5))
    sim.set_contact_list("l1", state="IMPORTING", import_status="IN_PROGRESS", release_after=100)
    sim.engine.request("c1", Action.STOP)
    sim.advance(99)
    assert sim.state_of("c1") is S.STOPPING
    sim.advance(1 + sim.config.timing.release_delay)
    assert sim.state_of("c1") is S.STOPPED
    assert sim.contact_list("l1").ready


def test_more_than_three_transitions_on_one_dialer_are_refused() -> None:
    sim = _sim(*((f"c{i}", DialerType.PREDICTIVE, S.STOPPED, 0) for i in range(5)))
    for i in range(3):
        sim.engine.request(f"c{i}", Action.START)
    with pytest.raises(DialerOverloaded) as caught:
        sim.engine.request("c3", Action.START)
    assert caught.value.status == 409 and caught.value.in_flight == 3
    assert sim.state_of("c3") is S.STOPPED
    sim.faults.config.update({"overload500Probability": 1.0})
    with pytest.raises(DialerOverloaded) as caught:
        sim.engine.request("c4", Action.START)
    assert caught.value.status == 500
    sim.advance(8)
    sim.engine.request("c3", Action.START)  # the first three finished: room again
    assert sim.traffic.max_in_flight() == {"d1": 3}


def test_stall_overrides_the_duration_past_the_tolerance_window() -> None:
    sim = _sim(("c1", DialerType.PREDICTIVE, S.RUNNING, 0))
    assert sim.next_transition("c1", "stall", 400) is False
    sim.engine.request("c1", Action.STOP)
    sim.advance(399)
    assert sim.state_of("c1") is S.STOPPING
    sim.advance(1)
    assert sim.state_of("c1") is S.STOPPED


def test_indefinite_stall_ends_only_when_released() -> None:
    sim = _sim(("c1", DialerType.POWER, S.STOPPED, 0))
    sim.engine.request("c1", Action.START)
    assert sim.next_transition("c1", "stall") is True  # applied to the transition in flight
    sim.advance(10_000)
    assert sim.state_of("c1") is S.STARTING
    assert sim.engine.release("c1")
    assert sim.state_of("c1") is S.RUNNING


def test_failing_transition_ends_in_failed_with_errors_and_admin_reset_leaves_it() -> None:
    sim = _sim(("c1", DialerType.PROGRESSIVE, S.RUNNING, 0))
    sim.next_transition("c1", "fail", errors=[{"code": "x.blocked", "message": "blocked"}])
    sim.engine.request("c1", Action.PAUSE)
    _time_to(sim, "c1", S.FAILED)
    assert sim.campaign("c1").errors == [{"code": "x.blocked", "message": "blocked"}]
    with pytest.raises(InvalidTransition):
        sim.engine.request("c1", Action.START)
    sim.set_state("c1", S.STOPPED, errors=[])
    sim.engine.request("c1", Action.START)
    assert sim.campaign("c1").errors == []


def test_probabilistic_faults_follow_the_seed() -> None:
    sim = _sim(("c1", DialerType.POWER, S.STOPPED, 0), fail_probability=1.0)
    sim.engine.request("c1", Action.START)
    sim.advance(2)
    assert sim.state_of("c1") is S.FAILED and sim.campaign("c1").errors
    locked = _sim(("c1", DialerType.POWER, S.STOPPED, 0), list_lock_probability=1.0, list_lock_seconds=50)
    locked.engine.request("c1", Action.START)
    assert locked.contact_list("l1").blocking
    locked.advance(49)
    assert locked.state_of("c1") is S.STARTING and locked.campaign("c1").errors == []
    locked.advance(1 + locked.config.timing.release_delay)
    assert locked.state_of("c1") is S.RUNNING


def test_fault_config_updates_are_validated_all_or_nothing() -> None:
    config = FaultConfig()
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        config.update({"stallProbability": 0.5, "failProbability": 2})
    assert config.stall_probability == 0.0
    with pytest.raises(ValueError, match="unknown fault setting 'bogus'"):
        config.update({"bogus": 1})
    config.update({"dialer_transition_limit": 2, "readLimitPerS": 5})
    assert (config.dialer_transition_limit, config.read_limit_per_s) == (2, 5.0)
