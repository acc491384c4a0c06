"""The orchestrator against in-memory ports and virtual time: each trap of the guide, by name."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from fsm import CampaignMachine
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.ports import ContactListSnapshot, DialerLoad, Notification, PlatformConflict, PlatformUnavailable
from fsm.testing import FakeClock
from schemas.commands import Command
from schemas.types import Action, CampaignState, DialerType, Priority, ReasonCode
from tests.fakes import FakeCampaign, FakeNotifications, FakePlatform, MemorySink

S = CampaignState


@dataclass
class World:
    orch: Orchestrator
    platform: FakePlatform
    sink: MemorySink
    clock: FakeClock
    notes: FakeNotifications | None

    def command(self, campaign_id: str, action: Action, priority: Priority = Priority.STANDARD) -> Command:
        return Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, priority=priority,
                       requested_by="test", issued_at=datetime.now(UTC))

    async def send(self, campaign_id: str, action: Action, priority: Priority = Priority.STANDARD) -> Command:
        command = self.command(campaign_id, action, priority)
        await self.orch.submit(command)
        return command

    async def finish(self, campaign_id: str, state: CampaignState, *, notify: bool) -> None:
        """The platform completes a transition; with `notify` it also pushes the notification."""
        campaign = self.platform.campaigns[campaign_id]
        campaign.state = state
        if notify:
            await self.orch.on_notification(Notification(
                f"v2.outbound.campaigns.{campaign_id}", self.clock.now(), self.platform.snapshot(campaign)))


async def _world(campaigns: list[FakeCampaign], *, notifications: bool | None = None,
                 config: OrchestratorConfig | None = None, restored: Sequence[dict[str, object]] = ()) -> World:
    clock = FakeClock(auto_advance=True)
    platform = FakePlatform(clock, campaigns)
    sink = MemorySink()
    notes = None if notifications is None else FakeNotifications(up=notifications)
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                        notifications=notes, config=config or OrchestratorConfig(seed=7))
    await orch.start(restored)
    return World(orch, platform, sink, clock, notes)


async def _restart(w: World, during_outage: Callable[[], None] | None = None) -> World:
    """Close `w` and start a new orchestrator on the same platform from the records `w` published."""
    saved = list(w.sink.state.values())
    await w.orch.close()
    await w.clock.aclose()  # two auto-advancing clocks in one loop would each keep the other busy
    if during_outage is not None:
        during_outage()
    return await _world(list(w.platform.campaigns.values()), restored=saved)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = await _world([FakeCampaign("c1", S.STOPPED), FakeCampaign("c2", S.RUNNING)])
    yield w
    await w.orch.close()


async def test_startup_reads_every_campaign_before_commands(world: World) -> None:
    assert world.orch.ready
    assert {e["campaignId"]: e["to"] for e in map(lambda e: e["data"], world.sink.events)} == {
        "c1": "STOPPED", "c2": "RUNNING"}
    assert all(e["data"]["cause"] == "reconcile" and e["data"]["sequence"] == 1 for e in world.sink.events)


async def test_a_202_never_appears_as_running(world: World) -> None:
    command = await world.send("c1", Action.START)
    await world.clock.sleep(1)
    assert world.sink.outcomes(command.id) == [("ACCEPTED", None)]
    assert world.orch.campaigns["c1"].current is S.STARTING
    assert [e["to"] for e in world.sink.of("c1")] == ["STOPPED", "STARTING"]
    starting = world.sink.of("c1")[1]
    assert starting["request"]["status"] == 202 and starting["commandId"] == str(command.id)
    # Time passes, the platform still says STARTING: the model keeps STARTING, no RUNNING invented.
    await world.clock.sleep(100)
    assert world.orch.campaigns["c1"].current is S.STARTING
    assert "RUNNING" not in [e["to"] for e in world.sink.of("c1")]
    # Only an observation finishes it.
    await world.finish("c1", S.RUNNING, notify=False)
    await world.clock.sleep(60)
    assert world.sink.of("c1")[-1]["to"] == "RUNNING" and world.sink.of("c1")[-1]["cause"] == "poll"
    assert world.sink.outcomes(command.id) == [("ACCEPTED", None), ("COMPLETED", None)]


async def test_start_right_after_stop_is_refused_until_stopped(world: World) -> None:
    stop = await world.send("c2", Action.STOP)
    await world.clock.sleep(1)
    start = await world.send("c2", Action.START)
    await world.clock.sleep(1)
    assert world.sink.outcomes(start.id) == [("REFUSED", "TRANSITION_IN_FLIGHT")]
    assert len(world.platform.posts("c2")) == 1, "the refused start never reached the platform"
    await world.finish("c2", S.STOPPED, notify=False)
    await world.clock.sleep(60)
    assert world.sink.outcomes(stop.id)[-1] == ("COMPLETED", None)
    again = await world.send("c2", Action.START)
    await world.clock.sleep(1)
    assert world.sink.outcomes(again.id) == [("ACCEPTED", None)]
    assert [p[1] for p in world.platform.posts("c2")] == ["POST stop", "POST start"]


async def test_already_in_state_is_a_reported_no_op(world: World) -> None:
    command = await world.send("c2", Action.START)
    assert world.sink.outcomes(command.id) == [("COMPLETED", "ALREADY_IN_STATE")]
    assert world.platform.posts() == []


async def test_illegal_command_lists_the_legal_ones(world: World) -> None:
    command = await world.send("c1", Action.PAUSE)
    result = world.sink.results[-1]
    assert world.sink.outcomes(command.id) == [("REFUSED", "ILLEGAL_TRANSITION")]
    assert result.legal_actions == [Action.START]


async def test_unknown_campaign_is_refused(world: World) -> None:
    command = await world.send("nope", Action.START)
    assert world.sink.outcomes(command.id) == [("REFUSED", "UNKNOWN_CAMPAIGN")]


async def test_notifications_complete_transitions_without_polling() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)], notifications=True)
    try:
        command = await w.send("c1", Action.START)
        await w.clock.sleep(1)
        reads = w.platform.reads()
        await w.finish("c1", S.RUNNING, notify=True)
        await w.clock.sleep(1)
        assert w.sink.of("c1")[-1]["to"] == "RUNNING" and w.sink.of("c1")[-1]["cause"] == "notification"
        assert w.platform.reads() == reads, "a notification needs no read"
        assert w.sink.outcomes(command.id)[-1] == ("COMPLETED", None)
    finally:
        await w.orch.close()


async def test_polling_backs_off_with_jitter_while_notifications_are_down() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)], notifications=False)
    try:
        await w.send("c1", Action.START)
        await w.clock.sleep(600)
        posted = w.platform.posts("c1")[0][0]
        polls = [t for t, call, ident in w.platform.calls if call == "GET campaign" and ident == "c1" and t > posted]
        gaps = [b - a for a, b in itertools.pairwise(polls)]
        assert len(gaps) >= 8
        for nominal, gap in zip([3.0, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30.0, 30.0], gaps, strict=False):
            assert nominal * 0.8 - 1e-9 <= gap <= nominal * 1.2 + 1e-9
        assert max(gaps) <= 36.0 + 1e-9
    finally:
        await w.orch.close()


async def test_going_down_switches_tracked_campaigns_to_polling() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)], notifications=True)
    try:
        await w.send("c1", Action.START)
        await w.clock.sleep(20)
        before = w.platform.reads()
        assert w.orch.stats().notifications_up
        await w.orch.on_notifications_state(False)
        await w.clock.sleep(20)
        assert w.platform.reads() - before >= 3, "down: backoff polling starts at once"
    finally:
        await w.orch.close()


async def test_a_locked_contact_list_defers_then_proceeds_on_notification() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)], notifications=True)
    try:
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", False, True, "LOCKED")
        command = await w.send("c1", Action.START)
        await w.clock.sleep(1)
        assert w.sink.outcomes(command.id) == [("ACCEPTED", None), ("DEFERRED", "CONTACT_LIST_NOT_READY")]
        assert w.platform.posts() == []
        deferred = w.sink.results[-1]
        assert deferred.next_attempt_at is not None
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", True, False, "ACTIVE")
        await w.orch.on_notification(Notification("v2.outbound.contactlists.list-1", w.clock.now(),
                                                  contact_list_id="list-1"))
        await w.clock.sleep(0.5)
        assert [p[1] for p in w.platform.posts()] == ["POST start"]
    finally:
        await w.orch.close()


async def test_a_deferral_expires_with_a_refusal() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    try:
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", False, False, "IMPORTING")
        command = await w.send("c1", Action.START)
        await w.clock.sleep(700)
        assert w.sink.outcomes(command.id)[-1] == ("REFUSED", "DEFERRAL_EXPIRED")
        assert w.platform.posts() == []
        retry = await w.send("c1", Action.START)  # the hold is gone
        assert w.sink.outcomes(retry.id)[0] == ("ACCEPTED", None)
    finally:
        await w.orch.close()


async def test_over_capacity_defers_standard_while_high_proceeds() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED), FakeCampaign("c2", S.STOPPED, contact_list_id="list-2")])
    try:
        w.platform.loads["dialer-1"] = DialerLoad("dialer-1", 85, 100)
        standard = await w.send("c1", Action.START)
        high = await w.send("c2", Action.START, Priority.HIGH)
        await w.clock.sleep(1)
        assert w.sink.outcomes(standard.id)[-1] == ("DEFERRED", "DIALER_OVER_CAPACITY")
        assert [p[2] for p in w.platform.posts()] == ["c2"]
        assert w.sink.outcomes(high.id)[-1] == ("ACCEPTED", None)
        w.platform.loads["dialer-1"] = DialerLoad("dialer-1", 10, 100)
        await w.clock.sleep(30)
        assert sorted(p[2] for p in w.platform.posts()) == ["c1", "c2"]
    finally:
        await w.orch.close()


async def test_eight_commands_on_one_dialer_never_have_more_than_two_in_flight() -> None:
    ids = [f"c{i}" for i in range(8)]
    w = await _world([FakeCampaign(i, S.RUNNING, contact_list_id=f"l-{i}") for i in ids], notifications=True)
    try:
        commands = {i: await w.send(i, Action.STOP, Priority.HIGH if i == "c7" else Priority.STANDARD)
                    for i in ids}
        finished: set[str] = set()
        peak = 0
        for _ in range(40):
            await w.clock.sleep(5)
            in_flight = {p[2] for p in w.platform.posts()} - finished
            peak = max(peak, len(in_flight))
            for cid in sorted(in_flight)[:1]:  # the platform drains one campaign per step
                await w.finish(cid, S.STOPPED, notify=True)
                finished.add(cid)
        assert peak <= 2
        posts = w.platform.posts()
        assert len(posts) == 8 and all(w.sink.outcomes(c.id)[-1] == ("COMPLETED", None)
                                       for c in commands.values())
        assert posts[0][2] == "c0" or posts[1][2] == "c7", "HIGH is served among the first"
        standard_times = [t for t, _, cid in posts if cid != "c7"]
        assert all(b - a >= 15.0 - 1e-9 for a, b in itertools.pairwise(standard_times))
    finally:
        await w.orch.close()


async def test_predictive_stop_lasting_150s_is_not_failed() -> None:
    w = await _world([FakeCampaign("c1", S.RUNNING, DialerType.PREDICTIVE)])
    try:
        command = await w.send("c1", Action.STOP)
        await w.clock.sleep(150)
        assert w.orch.campaigns["c1"].current is S.STOPPING
        assert not any(c[1] == "GET errors" for c in w.platform.calls), "no errors query inside the 180 s window"
        await w.finish("c1", S.STOPPED, notify=False)
        await w.clock.sleep(40)
        assert w.sink.outcomes(command.id)[-1] == ("COMPLETED", None)
        assert "FAILED" not in [e["to"] for e in w.sink.of("c1")]
    finally:
        await w.orch.close()


async def test_progressive_stop_past_60s_queries_errors_and_fails() -> None:
    w = await _world([FakeCampaign("c1", S.RUNNING, DialerType.PROGRESSIVE)])
    try:
        w.platform.errors["c1"] = [{"code": "dialer.engine.fault", "message": "engine down"}]
        command = await w.send("c1", Action.STOP)
        await w.clock.sleep(59)
        assert not any(c[1] == "GET errors" for c in w.platform.calls)
        await w.clock.sleep(5)
        assert any(c[1] == "GET errors" for c in w.platform.calls)
        failed = w.sink.of("c1")[-1]
        assert failed["to"] == "FAILED" and failed["cause"] == "timeout" and failed["reason"] == "TOLERANCE_EXCEEDED"
        assert failed["errors"] == [{"code": "dialer.engine.fault", "message": "engine down"}]
        assert w.sink.outcomes(command.id)[-1] == ("FAILED", "TOLERANCE_EXCEEDED")
    finally:
        await w.orch.close()


async def test_a_lock_past_the_window_is_delayed_not_failed() -> None:
    w = await _world([FakeCampaign("c1", S.RUNNING, DialerType.PROGRESSIVE)])
    try:
        command = await w.send("c1", Action.STOP)
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", False, True, "LOCKED")
        await w.clock.sleep(70)
        delayed = w.sink.of("c1")[-1]
        assert delayed["from"] == delayed["to"] == "STOPPING"
        assert delayed["anomaly"]["kind"] == "TRANSITION_DELAYED" and "locked" in delayed["anomaly"]["detail"]
        assert w.orch.campaigns["c1"].current is S.STOPPING
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", True, False, "ACTIVE")
        await w.finish("c1", S.STOPPED, notify=False)
        await w.clock.sleep(40)
        assert w.sink.outcomes(command.id)[-1] == ("COMPLETED", None)
    finally:
        await w.orch.close()


async def test_a_conflict_is_read_back_and_never_resent() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    try:
        w.platform.post_failure["c1"] = PlatformConflict("409", status=409)
        command = await w.send("c1", Action.START)
        await w.clock.sleep(5)
        assert w.sink.outcomes(command.id)[-1] == ("FAILED", "PLATFORM_CONFLICT")
        assert len(w.platform.posts("c1")) == 1
        assert w.orch.campaigns["c1"].current is S.STOPPED
        assert [e["to"] for e in w.sink.of("c1")] == ["STOPPED"], "a refused request moves nothing"
    finally:
        await w.orch.close()


async def test_a_timeout_that_was_executed_is_followed_not_resent() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    try:
        w.platform.post_failure["c1"] = PlatformUnavailable("timeout")
        w.platform.execute_despite_failure.add("c1")
        command = await w.send("c1", Action.START)
        await w.clock.sleep(5)
        assert w.orch.campaigns["c1"].current is S.STARTING
        await w.finish("c1", S.RUNNING, notify=False)
        await w.clock.sleep(60)
        assert len(w.platform.posts("c1")) == 1
        assert w.sink.outcomes(command.id)[-1] == ("COMPLETED", None)
    finally:
        await w.orch.close()


async def test_a_restart_in_the_middle_of_a_transition_reissues_nothing() -> None:
    w = await _world([FakeCampaign("c1", S.RUNNING)])
    command = await w.send("c1", Action.STOP)
    await w.clock.sleep(2)
    w2 = await _restart(w)
    try:
        w2.platform.calls.clear()
        w2.platform.campaigns["c1"].state = S.STOPPED
        await w2.clock.sleep(60)
        assert w2.platform.posts() == []
        assert w2.sink.of("c1")[-1]["to"] == "STOPPED" and w2.sink.of("c1")[-1]["sequence"] == 3
        assert w2.sink.outcomes(command.id) == [("COMPLETED", None)]
    finally:
        await w2.orch.close()


async def test_a_held_command_survives_a_restart() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    w.platform.lists["list-1"] = ContactListSnapshot("list-1", False, True, "LOCKED")
    command = await w.send("c1", Action.START)
    await w.clock.sleep(1)
    assert w.sink.state["c1"]["heldCommand"]
    w2 = await _restart(w)
    try:
        w2.platform.lists["list-1"] = ContactListSnapshot("list-1", True, False, "ACTIVE")
        await w2.clock.sleep(30)
        assert [p[1] for p in w2.platform.posts()] == ["POST start"]
        assert w2.orch.campaigns["c1"].current is S.STARTING
        assert str(command.id) == w2.sink.of("c1")[-1]["commandId"]
    finally:
        await w2.orch.close()


async def test_a_redelivered_held_command_is_not_taken_twice_after_a_restart() -> None:
    # Killed after the hold was durable but before the offset was committed: the command comes again.
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    w.platform.lists["list-1"] = ContactListSnapshot("list-1", False, True, "LOCKED")
    command = await w.send("c1", Action.START)
    await w.clock.sleep(1)
    w2 = await _restart(w)
    try:
        redelivered = await w2.orch.submit(command)
        assert (redelivered.outcome.value, redelivered.reason.value if redelivered.reason else None) == (
            "REFUSED", "REPLAYED"), "the intake is answered (its offset may be committed) ..."
        assert w2.sink.outcomes(command.id) == [], "... but nothing is published for a command already held"
        w2.platform.lists["list-1"] = ContactListSnapshot("list-1", True, False, "ACTIVE")
        await w2.clock.sleep(30)
        assert [p[1] for p in w2.platform.posts()] == ["POST start"]
    finally:
        await w2.orch.close()


async def test_a_kill_right_after_the_post_is_followed_on_restart_never_refused_or_resent() -> None:
    w = await _world([FakeCampaign("c1", S.PAUSED)])
    durable: list[dict[str, object]] = []
    # The process dies once the platform executed the POST, before its answer: what was durable then
    # is all a restart finds.
    w.platform.after_post = lambda _: durable.extend(w.sink.durable_records())
    command = await w.send("c1", Action.STOP)
    await w.clock.sleep(1)
    assert durable and durable[0]["heldCommandSent"] is True, "the POST may have left: that is durable first"
    await w.orch.close()
    await w.clock.aclose()
    w2 = await _world(list(w.platform.campaigns.values()), restored=durable)
    try:
        await w2.clock.sleep(1)
        stopping = w2.sink.of("c1")[0]
        seen = (stopping["sequence"], stopping["from"], stopping["to"], stopping["commandId"], stopping.get("anomaly"))
        assert seen == (2, "PAUSED", "STOPPING", str(command.id), None), "followed as executed, not an anomaly"
        await w2.finish("c1", S.STOPPED, notify=False)
        await w2.clock.sleep(60)
        assert w2.platform.posts() == [], "never sent again"
        assert [e["to"] for e in w2.sink.of("c1")] == ["STOPPING", "STOPPED"]
        assert w2.sink.outcomes(command.id) == [("COMPLETED", None)]
    finally:
        await w2.orch.close()


async def test_a_post_that_never_left_before_a_kill_fails_on_restart_and_is_not_resent() -> None:
    w = await _world([FakeCampaign("c1", S.PAUSED)])
    durable: list[dict[str, object]] = []
    w.platform.after_post = lambda _: durable.extend(w.sink.durable_records())
    command = await w.send("c1", Action.STOP)
    await w.clock.sleep(1)
    await w.orch.close()
    await w.clock.aclose()
    w.platform.campaigns["c1"].state = S.PAUSED  # the request never reached the platform after all
    w2 = await _world(list(w.platform.campaigns.values()), restored=durable)
    try:
        await w2.clock.sleep(5)
        assert w2.platform.posts() == [], "whether it left is unknown: never sent a second time"
        assert w2.sink.outcomes(command.id) == [("FAILED", "PLATFORM_ERROR")]
        assert w2.orch.campaigns["c1"].current is S.PAUSED and w2.sink.of("c1") == []
        assert w2.sink.state["c1"]["heldCommand"] is None
        again = await w2.send("c1", Action.STOP)  # the gate is open again
        await w2.clock.sleep(1)
        assert w2.sink.outcomes(again.id) == [("ACCEPTED", None)]
    finally:
        await w2.orch.close()


async def test_every_result_is_durable_with_the_record_change_that_decides_it() -> None:
    # Written separately, a kill in between would leave a terminal event without its command's
    # COMPLETED (the command's offset was committed at ACCEPTED), or a command let go with no result.
    w = await _world([FakeCampaign("c1", S.STOPPED), FakeCampaign("c2", S.RUNNING, DialerType.PROGRESSIVE,
                                                                  dialer_id="dialer-2", contact_list_id="l2")])
    try:
        w.platform.errors["c2"] = [{"code": "dialer.engine.fault", "message": "engine down"}]
        start = await w.send("c1", Action.START)
        stop = await w.send("c2", Action.STOP)
        await w.clock.sleep(1)
        await w.finish("c1", S.RUNNING, notify=False)
        await w.clock.sleep(70)
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", False, False, "IMPORTING")
        pause = await w.send("c1", Action.PAUSE)
        await w.clock.sleep(700)

        def write_of(command: Command, outcome: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            found = [(event, snapshot) for event, snapshot, results in w.sink.writes
                     if any(r.command_id == command.id and r.outcome.value == outcome for r in results)]
            assert len(found) == 1, (command.action, outcome, w.sink.outcomes(command.id))
            return found[0]

        event, record = write_of(start, "ACCEPTED")
        assert event is None and record is not None and str(start.id) in str(record["heldCommand"])
        event, record = write_of(start, "COMPLETED")
        assert event is not None and event["data"]["to"] == "RUNNING" and event["data"]["commandId"] == str(start.id)
        event, record = write_of(stop, "FAILED")
        assert event is not None and event["data"]["to"] == "FAILED" and event["data"]["cause"] == "timeout"
        event, record = write_of(pause, "REFUSED")
        assert event is None and record is not None and record["heldCommand"] is None and record["held"] is None
        w.platform.campaigns["c2"].state = S.STOPPED  # the operator fixed it; the model is FAILED
        reset = await w.send("c2", Action.RESET)
        event, record = write_of(reset, "COMPLETED")
        assert event is not None and event["data"]["from"] == "FAILED" and event["data"]["commandId"] == str(reset.id)
        assert w.sink.of("c2")[-1]["to"] == "STOPPED" and w.orch.campaigns["c2"].current is S.STOPPED
        assert not [r for _, _, results in w.sink.writes for r in results
                    if r.outcome.value in ("COMPLETED", "FAILED") and r.reason is None and _ is None], \
            "no transition's final result travels alone"
    finally:
        await w.orch.close()


async def test_reset_returns_to_last_stable_and_is_confirmed() -> None:
    w = await _world([FakeCampaign("c1", S.RUNNING)])
    try:
        await w.send("c1", Action.PAUSE)
        await w.clock.sleep(1)
        await w.finish("c1", S.FAILED, notify=False)
        await w.clock.sleep(40)
        assert w.orch.campaigns["c1"].current is S.FAILED
        w.platform.campaigns["c1"].state = S.RUNNING  # the operator fixed it on the platform
        reset = await w.send("c1", Action.RESET)
        assert w.sink.outcomes(reset.id) == [("COMPLETED", None)]
        assert [e["to"] for e in w.sink.of("c1")][-2:] == ["FAILED", "RUNNING"][-2:] or \
            w.sink.of("c1")[-1]["to"] == "RUNNING"
        pause = await w.send("c1", Action.PAUSE)
        assert w.sink.outcomes(pause.id)[0] == ("ACCEPTED", None), "the original transition can be retried"
    finally:
        await w.orch.close()


async def test_an_unknown_platform_status_is_recorded_not_guessed() -> None:
    w = await _world([FakeCampaign("c1", S.RUNNING)])
    try:
        await w.send("c1", Action.STOP)
        await w.clock.sleep(1)
        w.platform.campaigns["c1"].status = "hibernating"
        await w.clock.sleep(30)
        assert w.orch.campaigns["c1"].current is S.STOPPING
        assert w.orch.campaigns["c1"].platform_status == "hibernating"
    finally:
        await w.orch.close()


async def test_events_form_a_hash_chain_per_campaign(world: World) -> None:
    from schemas.events import event_hash

    await world.send("c1", Action.START)
    await world.clock.sleep(1)
    await world.finish("c1", S.RUNNING, notify=False)
    await world.clock.sleep(30)
    events = [e for e in world.sink.events if e["subject"] == "c1"]
    assert len(events) == 3 and "prevHash" not in events[0]["data"]
    for previous, event in itertools.pairwise(events):
        assert event["data"]["prevHash"] == event_hash(previous)
    assert world.sink.state["c1"]["lastHash"] == event_hash(events[-1])


# --- who may command a campaign ----------------------------------------------------------------

KEY = b"k" * 32


def _signed(command: Command, key: bytes = KEY, key_id: str = "ops") -> Command:
    from adapters.signing import Signer

    return Signer(key_id, key).sign(command)


async def _secured_world(policy: dict[str, object] | None = None) -> World:
    from fsm.authorization import CommandAuthority, Policy

    clock = FakeClock(auto_advance=True, wall_start=datetime.now(UTC).timestamp())
    platform = FakePlatform(clock, [FakeCampaign("c1", S.STOPPED), FakeCampaign("c2", S.STOPPED,
                                                                                  dialer_id="dialer-eu")])
    sink = MemorySink()
    authority = CommandAuthority({"ops": KEY}, Policy.from_config(policy) if policy else None)
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                        config=OrchestratorConfig(seed=3), authority=authority)
    await orch.start()
    return World(orch, platform, sink, clock, None)


async def test_unsigned_badly_signed_and_replayed_commands_are_refused() -> None:
    w = await _secured_world()
    try:
        unsigned = w.command("c1", Action.START)
        await w.orch.submit(unsigned)
        forged = _signed(w.command("c1", Action.START), key=b"x" * 32)
        await w.orch.submit(forged)
        good = _signed(w.command("c1", Action.START))
        await w.orch.submit(good)
        stale = _signed(w.command("c1", Action.STOP).model_copy(
            update={"issued_at": datetime.fromtimestamp(w.clock.now() - 3600, UTC)}))
        await w.orch.submit(stale)
        assert w.sink.outcomes(unsigned.id) == [("REFUSED", "UNSIGNED")]
        assert w.sink.outcomes(forged.id) == [("REFUSED", "BAD_SIGNATURE")]
        assert w.sink.outcomes(good.id)[0] == ("ACCEPTED", None)
        assert w.sink.outcomes(stale.id) == [("REFUSED", "STALE_COMMAND")]
        await w.clock.sleep(1)
        # The same signed command presented again by someone else (a different delivery path).
        w.orch._seen.clear()
        await w.orch.submit(good)
        assert w.sink.outcomes(good.id)[-1] == ("REFUSED", "REPLAYED")
        assert [p[1] for p in w.platform.posts()] == ["POST start"]
        assert w.orch.authority is not None and w.orch.authority.refusals[ReasonCode.UNSIGNED] == 1
    finally:
        await w.orch.close()


async def test_a_principal_outside_its_policy_is_refused() -> None:
    w = await _secured_world({"team-eu": {"dialers": ["dialer-eu"]}})
    try:
        outside = _signed(w.command("c1", Action.START).model_copy(update={"requested_by": "team-eu"}))
        inside = _signed(w.command("c2", Action.START).model_copy(update={"requested_by": "team-eu"}))
        await w.orch.submit(outside)
        await w.orch.submit(inside)
        assert w.sink.outcomes(outside.id) == [("REFUSED", "NOT_AUTHORISED")]
        assert w.sink.outcomes(inside.id)[0] == ("ACCEPTED", None)
    finally:
        await w.orch.close()


async def test_not_before_holds_a_command_until_its_time_then_gates_it(world: World) -> None:
    at = world.clock.now() + 600
    command = world.command("c1", Action.START).model_copy(
        update={"not_before": datetime.fromtimestamp(at, UTC)})
    await world.orch.submit(command)
    deferred = world.sink.results[-1]
    assert world.sink.outcomes(command.id) == [("DEFERRED", "SCHEDULED")]
    assert deferred.next_attempt_at is not None and abs(deferred.next_attempt_at.timestamp() - at) < 1e-3
    assert world.sink.state["c1"]["scheduledCommands"], "a restart must find it"
    await world.clock.sleep(599)
    assert world.platform.posts() == []
    await world.clock.sleep(2)
    assert world.sink.outcomes(command.id)[1] == ("ACCEPTED", None)
    assert [p[1] for p in world.platform.posts()] == ["POST start"]
    assert abs(world.platform.posts()[0][0] - 600) < 1.0
    assert world.sink.state["c1"]["scheduledCommands"] is None


async def test_a_scheduled_command_survives_a_restart() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    command = w.command("c1", Action.START).model_copy(
        update={"not_before": datetime.fromtimestamp(w.clock.now() + 100, UTC)})
    await w.orch.submit(command)
    w2 = await _restart(w)
    try:
        await w2.clock.sleep(120)
        assert [p[1] for p in w2.platform.posts()] == ["POST start"]
        assert w2.sink.outcomes(command.id)[0] == ("ACCEPTED", None)
    finally:
        await w2.orch.close()


# --- scale-out: ownership, hand-over, fencing ---------------------------------------------------


async def test_a_hand_over_mid_transition_is_finished_by_the_new_owner_without_reissue() -> None:
    clock = FakeClock(auto_advance=True)
    platform = FakePlatform(clock, [FakeCampaign("a", S.RUNNING), FakeCampaign("b", S.RUNNING)])
    sink = MemorySink()
    first = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                         config=OrchestratorConfig(seed=1))
    await first.start()
    command = Command(id=uuid.uuid4(), campaign_id="a", action=Action.STOP, requested_by="t",
                      issued_at=datetime.now(UTC))
    await first.submit(command)
    await clock.sleep(2)
    assert platform.campaigns["a"].state is S.STOPPING
    gone = await first.release(lambda cid: cid != "a")
    assert gone == ["a"] and "a" not in first.campaigns and "b" in first.campaigns
    second = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                          config=OrchestratorConfig(seed=2), owns=lambda cid: cid == "a")
    await second.acquire(list(sink.state.values()))
    second.mark_ready()
    assert list(second.campaigns) == ["a"] and second.campaigns["a"].current is S.STOPPING
    published = len(sink.events)
    platform.campaigns["a"].state = S.STOPPED
    await clock.sleep(60)
    assert len(platform.posts("a")) == 1
    assert sink.outcomes(command.id)[-1] == ("COMPLETED", None)
    assert [e["subject"] for e in sink.events[published:]] == ["a"], "only the new owner spoke for a"
    assert [e["data"]["sequence"] for e in sink.events if e["subject"] == "a"] == [1, 2, 3]
    await first.close()
    await second.close()


async def test_a_fenced_owner_neither_posts_nor_publishes() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    try:
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", False, True, "LOCKED")
        command = await w.send("c1", Action.START)
        await w.clock.sleep(1)
        owned = {"c1": True}
        w.orch._owns = lambda cid: owned.get(cid, False)
        owned["c1"] = False  # the partition moved, and this instance has not heard yet (a zombie)
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", True, False, "ACTIVE")
        events = len(w.sink.events)
        await w.orch.on_notification(Notification("v2.outbound.contactlists.list-1", w.clock.now(),
                                                  contact_list_id="list-1"))
        await w.clock.sleep(60)
        assert w.platform.posts() == [] and len(w.sink.events) == events
        assert w.sink.outcomes(command.id) == [("ACCEPTED", None), ("DEFERRED", "CONTACT_LIST_NOT_READY")]
    finally:
        await w.orch.close()


async def test_a_stale_view_is_read_before_posting() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    try:
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", False, True, "LOCKED")
        command = await w.send("c1", Action.START)
        await w.clock.sleep(30)
        w.platform.campaigns["c1"].state = S.RUNNING  # started by someone else meanwhile
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", True, False, "ACTIVE")
        await w.clock.sleep(30)
        assert w.platform.posts() == []
        assert w.sink.outcomes(command.id)[-1] == ("REFUSED", "ALREADY_IN_STATE")
        assert w.sink.of("c1")[-1]["to"] == "RUNNING" and w.sink.of("c1")[-1]["cause"] == "reconcile"
    finally:
        await w.orch.close()


async def test_a_transition_that_finished_while_no_one_looked_is_reported_on_restart() -> None:
    w = await _world([FakeCampaign("c1", S.RUNNING)])
    command = await w.send("c1", Action.STOP)
    await w.clock.sleep(2)

    def finished() -> None:  # it finished during the outage
        w.platform.campaigns["c1"].state = S.STOPPED

    w2 = await _restart(w, during_outage=finished)
    try:
        assert w2.sink.outcomes(command.id) == [("COMPLETED", None)]
        assert w2.sink.of("c1")[-1]["to"] == "STOPPED" and w2.sink.of("c1")[-1]["commandId"] == str(command.id)
    finally:
        await w2.orch.close()


async def test_a_release_survives_a_campaign_whose_look_ended_it_meanwhile() -> None:
    # A command for a campaign the platform does not know: its look reads the platform (slowly
    # here), refuses the command and forgets the campaign. A rebalance that takes the campaign away
    # during that read waits for the look, and must then not trip over the record it removed.
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    reading = asyncio.Event()
    go_on = asyncio.Event()
    real_get = w.platform.get_campaign

    async def slow_get(campaign_id: str) -> Any:
        if campaign_id == "ghost":
            reading.set()
            await go_on.wait()
        return await real_get(campaign_id)

    w.platform.get_campaign = slow_get  # type: ignore[method-assign]
    command = w.command("ghost", Action.START)
    answer = w.orch.submit(command)
    await asyncio.wait_for(reading.wait(), 5)
    releasing = asyncio.create_task(w.orch.release(lambda cid: cid == "c1"))
    await w.clock.sleep(0.2)
    go_on.set()
    gone = await asyncio.wait_for(releasing, 5)
    assert gone == [] and list(w.orch.campaigns) == ["c1"]
    assert (await answer).reason is ReasonCode.UNKNOWN_CAMPAIGN
    await w.orch.close()


@pytest.mark.parametrize("storm", [False, True])
async def test_an_accepted_command_is_answered_before_reads_that_wait_for_the_budget(storm: bool) -> None:
    # On a quiet tenant the ACCEPTED goes with the one write before the POST (the pre-flight reads
    # take milliseconds). In a storm every read waits its turn in the request budget, up to a
    # minute at 10 reads a second: the ACCEPTED must not wait with them.
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    w.platform.budget_spent = storm
    seen_at_read: list[list[tuple[str, str | None]]] = []
    real_read = w.platform.get_contact_list
    command = w.command("c1", Action.START)

    async def read(contact_list_id: str) -> ContactListSnapshot:
        seen_at_read.append(w.sink.outcomes(command.id))
        return await real_read(contact_list_id)

    w.platform.get_contact_list = read  # type: ignore[method-assign]
    await w.orch.submit(command)
    assert seen_at_read, "the pre-flight read the contact list"
    assert seen_at_read[0] == ([("ACCEPTED", None)] if storm else [])
    assert w.sink.outcomes(command.id) == [("ACCEPTED", None)]
    assert len(w.platform.posts("c1")) == 1
    await w.orch.close()


async def test_an_accepted_command_is_answered_before_a_later_read_that_would_wait() -> None:
    # The budget was free for the contact list's read and is spent by the time the dialer's load is
    # read (a storm beginning): the ACCEPTED goes out before that wait, not after it.
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    command = w.command("c1", Action.START)
    seen_at_load: list[list[tuple[str, str | None]]] = []
    real_list, real_load = w.platform.get_contact_list, w.platform.get_dialer_load

    async def read_list(contact_list_id: str) -> ContactListSnapshot:
        snapshot = await real_list(contact_list_id)
        w.platform.budget_spent = True
        return snapshot

    async def read_load(dialer_id: str, campaign_id: str) -> DialerLoad:
        seen_at_load.append(w.sink.outcomes(command.id))
        return await real_load(dialer_id, campaign_id)

    w.platform.get_contact_list = read_list  # type: ignore[method-assign]
    w.platform.get_dialer_load = read_load  # type: ignore[method-assign]
    await w.orch.submit(command)
    assert seen_at_load == [[("ACCEPTED", None)]]
    assert w.sink.outcomes(command.id) == [("ACCEPTED", None)] and len(w.platform.posts("c1")) == 1
    await w.orch.close()
