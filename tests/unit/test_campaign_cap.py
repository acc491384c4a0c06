"""The organisation's active-campaign cap: the pure count and line, the gate, and the orchestrator."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from adapters.settings import Settings
from fsm import CampaignMachine
from fsm.campaign_cap import CapLine, CapPolicy, LocalView, count_active, share
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.ports import ContactListSnapshot, DialerLoad, PlatformCapReached
from fsm.preflight import CapCheck, GateVerdict, WaitFor, check_active_cap, preflight
from fsm.testing import FakeClock
from schemas.commands import Command
from schemas.types import Action, CampaignState, Priority, ReasonCode
from tests.fakes import FakeCampaign, FakePlatform, MemorySink

S = CampaignState
H, STD = Priority.HIGH, Priority.STANDARD


# --- the waiting line ------------------------------------------------------------------------------


def test_the_line_puts_high_before_standard_and_first_in_first() -> None:
    line = CapLine()
    line.join("s1", "c-s1", STD)
    line.join("h1", "c-h1", H)
    line.join("s2", "c-s2", STD)
    line.join("h2", "c-h2", H)
    assert line.first(10) == ["c-h1", "c-h2", "c-s1", "c-s2"]
    assert [line.ahead(k, p) for k, p in (("h1", H), ("h2", H), ("s1", STD), ("s2", STD))] == [0, 1, 2, 3]
    # Not in line yet: behind every waiter of its class and above.
    assert (line.ahead("new", H), line.ahead("new", STD)) == (2, 4)
    line.join("s1", "c-s1", STD)  # idempotent: keeps its place
    assert line.ahead("s1", STD) == 2
    assert line.leave("h1") and not line.leave("h1")
    line.retain(lambda command_id, _: command_id != "s1")
    assert line.first(2) == ["c-h2", "c-s2"] and len(line) == 2 and "s1" not in line
    assert line.first(0) == [] and line.first(-3) == []


def test_count_active_merges_the_read_with_fresher_local_knowledge() -> None:
    read = {"a", "b", "c"}
    local = [
        LocalView("a", active=False, observed_at=20.0),  # stopped after the read: its place is free
        LocalView("b", active=False, observed_at=5.0),  # observed before the read: the read wins
        LocalView("d", active=False, observed_at=1.0, reserved=True),  # our start past the gate
        LocalView("e", active=True, observed_at=11.0),  # seen running after the read
        LocalView("f", active=True, observed_at=None),
    ]
    assert count_active(read, 10.0, local) == {"b", "c", "d", "e"}
    assert count_active((), None, local) == {"d", "e"}


def test_the_gate_defers_an_opening_that_would_pass_the_cap() -> None:
    full = CapCheck("x", frozenset({"a", "b"}), limit=2)
    decision = check_active_cap(full, now=100.0)
    assert decision.verdict is GateVerdict.DEFER and decision.reason is ReasonCode.ACTIVE_CAMPAIGN_CAP
    assert decision.wait_for is WaitFor.ACTIVE_CAMPAIGN_PLACE and decision.retry_at == 105.0
    assert "2 active campaign(s), its cap is 2" in decision.detail
    assert check_active_cap(CapCheck("a", frozenset({"a", "b"}), limit=2), 0.0).proceed, "itself is not another"
    assert check_active_cap(CapCheck("x", frozenset({"a"}), limit=2), 0.0).proceed
    waiting = CapCheck("x", frozenset({"a"}), limit=2, ahead=1)
    assert check_active_cap(waiting, 0.0).reason is ReasonCode.ACTIVE_CAMPAIGN_CAP, "the waiter before it goes first"
    reserved = CapCheck("x", frozenset({"a", "x"}), limit=2, ahead=5, reserved=True)
    assert check_active_cap(reserved, 0.0).proceed, "past the gate: ahead of every waiter"
    assert check_active_cap(None, 0.0).proceed


def test_the_cap_is_the_last_gate_and_keeps_the_deferral_expiry() -> None:
    locked = ContactListSnapshot("l1", ready=False, locked=True, detail="")
    full = CapCheck("x", frozenset({"a"}), limit=1)
    over = DialerLoad("d1", 95, 100)
    assert preflight(contact_list=locked, load=None, priority=STD, now=0.0, cap=full).reason \
        is ReasonCode.CONTACT_LIST_NOT_READY
    assert preflight(contact_list=None, load=over, priority=STD, now=0.0, cap=full).reason \
        is ReasonCode.DIALER_OVER_CAPACITY
    capped = preflight(contact_list=None, load=over, priority=H, now=50.0, deferred_at=10.0, cap=full)
    assert capped.reason is ReasonCode.ACTIVE_CAMPAIGN_CAP and capped.expires_at == 610.0
    assert preflight(contact_list=None, load=None, priority=H, now=700.0, deferred_at=10.0, cap=full).reason \
        is ReasonCode.DEFERRAL_EXPIRED


@pytest.mark.parametrize("bad", [{"limit": 0}, {"limit": True}, {"ttl": 0}, {"recheck": float("nan")}])
def test_cap_policy_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="CapPolicy"):
        CapPolicy(**bad)  # type: ignore[arg-type]


def test_settings_give_genesys_its_50_and_guide_none_unless_configured() -> None:
    assert Settings(platform={"profile": "genesys"}).orchestrator_config().cap.limit == 50
    assert Settings(platform={"profile": "guide"}).orchestrator_config().cap.limit is None
    assert Settings(platform={"profile": "guide"}, dispatch={"active_campaign_cap": 3}).orchestrator_config().cap \
        == CapPolicy(3, 15.0)
    assert Settings(platform={"profile": "genesys"}, dispatch={"active_campaign_cap": 0}).active_campaign_cap() \
        is None


# --- the orchestrator ------------------------------------------------------------------------------


def _command(campaign_id: str, priority: Priority = STD) -> Command:
    return Command(id=uuid.uuid4(), campaign_id=campaign_id, action=Action.START, priority=priority,
                   requested_by="test", issued_at=datetime.now(UTC))


async def _orchestrator(campaigns: list[FakeCampaign], limit: int) -> tuple[Orchestrator, FakePlatform, MemorySink,
                                                                          FakeClock]:
    clock = FakeClock(auto_advance=True)
    platform = FakePlatform(clock, campaigns)
    sink = MemorySink()
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                        config=OrchestratorConfig(seed=7, cap=CapPolicy(limit, ttl=15.0, recheck=5.0)))
    await orch.start()
    return orch, platform, sink, clock


async def test_a_place_freed_goes_to_high_before_standard_and_one_read_serves_a_storm() -> None:
    # Two dialers' worth of campaigns so the dialer gate never orders them; the cap alone does.
    running = FakeCampaign("r1", S.RUNNING, dialer_id="d-r")
    waiting = [FakeCampaign(f"w{i}", S.STOPPED, dialer_id=f"d-{i}", contact_list_id=f"l-{i}") for i in range(4)]
    orch, platform, sink, clock = await _orchestrator([running, *waiting], limit=1)
    try:
        reads_before = sum(1 for c in platform.calls if c[1] == "GET campaigns")
        standard = [_command(f"w{i}") for i in range(3)]
        for command in standard:
            await orch.submit(command)
        high = _command("w3", H)
        await orch.submit(high)
        await clock.sleep(1)
        for command in [*standard, high]:
            assert sink.outcomes(command.id)[-1] == ("DEFERRED", "ACTIVE_CAMPAIGN_CAP")
        assert platform.posts() == []
        assert sum(1 for c in platform.calls if c[1] == "GET campaigns") - reads_before == 1, "one shared read"
        running.state = S.STOPPED  # the place frees on the platform; the next read shows it
        await clock.sleep(30)
        assert [p[2] for p in platform.posts()] == ["w3"], "the HIGH start took the one place"
        assert all(sink.outcomes(c.id)[-1] == ("DEFERRED", "ACTIVE_CAMPAIGN_CAP") for c in standard)
    finally:
        await orch.close()


async def test_a_start_the_platform_refuses_for_the_cap_fails_once_and_is_not_sent_again() -> None:
    orch, platform, sink, clock = await _orchestrator([FakeCampaign("c1", S.STOPPED)], limit=50)
    try:
        platform.post_failure["c1"] = PlatformCapReached("HTTP 400: active campaign limit", status=400)
        command = _command("c1")
        await orch.submit(command)
        await clock.sleep(60)
        assert sink.outcomes(command.id)[-1] == ("FAILED", "ACTIVE_CAMPAIGN_CAP")
        assert len(platform.posts("c1")) == 1
        result = next(r for r in sink.results if str(r.command_id) == str(command.id) and r.outcome == "FAILED")
        assert "not retried" in result.message
    finally:
        await orch.close()


def test_an_instance_takes_its_share_of_the_free_places_rounded_up() -> None:
    assert [share(free, 2) for free in (-1, 0, 1, 2, 5)] == [0, 0, 1, 1, 3]
    assert share(7, 1) == 7 and share(1, 3) == 1
    shared_out = CapCheck("x", frozenset({"a"}), limit=5, quota_left=0)
    decision = check_active_cap(shared_out, 0.0)
    assert decision.reason is ReasonCode.ACTIVE_CAMPAIGN_CAP and "its share" in decision.detail
    assert check_active_cap(CapCheck("x", frozenset({"a"}), limit=5, quota_left=1), 0.0).proceed
    assert check_active_cap(CapCheck("x", frozenset({"a", "x"}), limit=5, quota_left=0, reserved=True), 0.0).proceed


async def test_with_two_instances_one_read_lets_each_take_half_the_free_places() -> None:
    campaigns = [FakeCampaign(f"w{i}", S.STOPPED, dialer_id=f"d-{i}", contact_list_id=f"l-{i}") for i in range(4)]
    clock = FakeClock(auto_advance=True)
    platform = FakePlatform(clock, campaigns)
    sink = MemorySink()
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                        config=OrchestratorConfig(seed=7, cap=CapPolicy(4, ttl=15.0, recheck=5.0, instances=2)))
    await orch.start()
    try:
        for i in range(4):
            await orch.submit(_command(f"w{i}"))
        await clock.sleep(1)
        assert len(platform.posts()) == 2, "ceil(4 free / 2 instances) before the next count"
        await clock.sleep(20)  # the next count: 2 active (ours), 2 free, our share 1
        assert len(platform.posts()) == 3
        await clock.sleep(20)
        assert len(platform.posts()) == 4
    finally:
        await orch.close()


async def test_a_start_held_by_the_cap_costs_no_list_or_load_reads_until_a_place_frees() -> None:
    """Issue 14's budget: a start waiting for a place is rechecked every `recheck` seconds; while the cap
    still holds it, the contact list and the dialer's lines are not read again (they cannot let it
    go), only the shared organisation count. Once a place frees, it is judged on fresh facts."""
    running = FakeCampaign("r1", S.RUNNING, dialer_id="d-r")
    waiting = FakeCampaign("w1", S.STOPPED, dialer_id="d-w", contact_list_id="l-w")
    orch, platform, sink, clock = await _orchestrator([running, waiting], limit=1)
    try:
        command = _command("w1")
        await orch.submit(command)
        await clock.sleep(1)
        assert sink.outcomes(command.id)[-1] == ("DEFERRED", "ACTIVE_CAMPAIGN_CAP")

        def side_reads() -> int:
            return sum(1 for c in platform.calls if c[1] in ("GET contactlist", "GET dialer"))

        first = side_reads()
        await clock.sleep(120)  # about 24 rechecks, the count re-read every 15 s
        assert sink.outcomes(command.id)[-1] == ("DEFERRED", "ACTIVE_CAMPAIGN_CAP")
        assert side_reads() == first, "rechecks while the cap holds read neither the list nor the lines"
        running.state = S.STOPPED
        await clock.sleep(30)
        assert [p[2] for p in platform.posts()] == ["w1"]
        assert side_reads() > first, "the start that goes is judged on fresh facts"
    finally:
        await orch.close()
