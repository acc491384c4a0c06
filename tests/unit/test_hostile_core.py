"""The core against hostile input (issue 10) and the guide's rules seen from the platform (issue 11).

In-memory ports and virtual time; the same findings are run over a real broker and the simulator in
tests/integration/test_hostile_input.py and tests/integration/test_guide_rules_platform.py.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from adapters.signing import Signer
from fsm import CampaignMachine
from fsm.authorization import CommandAuthority
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.ports import ContactListSnapshot, DialerLoad, Notification, PlatformRateLimited
from fsm.testing import FakeClock
from schemas.commands import Command, CommandResult
from schemas.state import StoredCommand
from schemas.types import Action, CampaignState, Priority, ReasonCode
from tests.fakes import FakeCampaign, FakeNotifications, FakePlatform, MemorySink

S = CampaignState
KEY = b"k" * 32


def signed(command: Command, key: bytes = KEY) -> Command:
    return Signer("ops", key).sign(command)


class World:
    def __init__(self, orch: Orchestrator, platform: FakePlatform, sink: MemorySink, clock: FakeClock) -> None:
        self.orch, self.platform, self.sink, self.clock = orch, platform, sink, clock

    def command(self, campaign_id: str, action: Action, *, priority: Priority = Priority.STANDARD,
                **extra: Any) -> Command:
        return Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, priority=priority,
                       requested_by="test", issued_at=datetime.fromtimestamp(self.clock.now(), UTC), **extra)

    def posts(self) -> list[str]:
        return [f"{p[1]} {p[2]}" for p in self.platform.posts()]


async def world(campaigns: Sequence[FakeCampaign], *, secured: bool = True, notifications: bool | None = None,
                restored: Sequence[dict[str, Any]] = (), platform: FakePlatform | None = None,
                clock: FakeClock | None = None, config: OrchestratorConfig | None = None,
                sink: MemorySink | None = None) -> World:
    clock = clock or FakeClock(auto_advance=True, wall_start=datetime.now(UTC).timestamp())
    platform = platform or FakePlatform(clock, list(campaigns))
    sink = sink or MemorySink()
    authority = CommandAuthority({"ops": KEY}) if secured else None
    notes = None if notifications is None else FakeNotifications(up=notifications)
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock, notifications=notes,
                        config=config or OrchestratorConfig(seed=5), authority=authority, auth_clock=clock.now)
    await orch.start(restored)
    return World(orch, platform, sink, clock)


async def restart(w: World, records: Sequence[dict[str, Any]] | None = None) -> World:
    """A new process on the same platform and clock, from what was durable (or from `records`)."""
    saved = list(records if records is not None else w.sink.durable_records())
    await w.orch.close()
    return await world((), restored=saved, platform=w.platform, clock=w.clock)


# --- issue 10, finding 1: no path skips authentication ----------------------------------------------


class _ArrivingSink(MemorySink):
    """Commands arrive while the orchestrator awaits its sink: the window finding 1 slipped through."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[Command] = []
        self.orch: Orchestrator | None = None

    async def state_saved(self, snapshot: dict[str, Any], results: Sequence[CommandResult] = ()) -> None:
        await super().state_saved(snapshot, results)
        while self.arrivals and self.orch is not None:
            self.orch.submit(self.arrivals.pop())


async def test_commands_arriving_while_a_look_is_busy_are_still_authenticated() -> None:
    sink = _ArrivingSink()
    w = await world([FakeCampaign("c1", S.RUNNING)], sink=sink)
    sink.orch = w.orch
    try:
        # While the signed pause is being saved, an unsigned stop and a forged stop arrive.
        unsigned = w.command("c1", Action.STOP, priority=Priority.HIGH)
        forged = signed(w.command("c1", Action.STOP, priority=Priority.HIGH), key=b"x" * 32)
        sink.arrivals = [unsigned, forged]
        pause = signed(w.command("c1", Action.PAUSE, priority=Priority.HIGH))
        await w.orch.submit(pause)
        await w.clock.sleep(5)
        assert w.sink.outcomes(unsigned.id) == [("REFUSED", "UNSIGNED")]
        assert w.sink.outcomes(forged.id) == [("REFUSED", "BAD_SIGNATURE")]
        assert w.posts() == ["POST pause c1"], "only the signed command reached the platform"
        assert w.orch.auth_refusals == {ReasonCode.UNSIGNED: 1, ReasonCode.BAD_SIGNATURE: 1}
    finally:
        await w.orch.close()


async def test_a_refused_record_delivered_again_is_answered_but_not_published_twice() -> None:
    """A rebalance before a refused record's offset is committed delivers it again: the intake gets
    the first refusal back (so it can commit), and the results topic sees one refusal, not two. The
    same command in another record is judged anew (and refused again: it is published again)."""
    w = await world([FakeCampaign("c1", S.RUNNING)])
    try:
        unsigned = w.command("c1", Action.STOP, priority=Priority.HIGH)
        first = await w.orch.submit(unsigned, "commands:0@7")
        again = await w.orch.submit(unsigned, "commands:0@7")
        await w.clock.sleep(1)
        assert (first.outcome.value, again.outcome.value) == ("REFUSED", "REFUSED")
        assert first.reason is ReasonCode.UNSIGNED and again.reason is ReasonCode.UNSIGNED
        assert w.sink.outcomes(unsigned.id) == [("REFUSED", "UNSIGNED")], "published once"
        await w.orch.submit(unsigned, "commands:0@8")
        await w.clock.sleep(1)
        assert w.sink.outcomes(unsigned.id) == [("REFUSED", "UNSIGNED")] * 2, "another record: judged again"
        assert w.posts() == []
    finally:
        await w.orch.close()


async def test_unauthenticated_commands_for_unknown_campaigns_cost_no_read() -> None:
    w = await world([FakeCampaign("c1", S.STOPPED)])
    try:
        reads = w.platform.reads()
        taken = signed(w.command("c1", Action.START, priority=Priority.HIGH))
        await w.orch.submit(taken, "commands:0@1")
        for n in range(50):
            # Reusing a taken id (ids are on the results topic) under a campaign nobody knows.
            reuse = taken.model_copy(update={"campaign_id": f"nobody-{n}"})
            await w.orch.submit(reuse, f"commands:0@{n + 2}")
        assert w.platform.reads() - reads <= 2, "the signed start's own pre-flight reads at most"
        assert {o for n in range(50) for o in w.sink.outcomes(taken.id)[1:]} == {("REFUSED", "BAD_SIGNATURE")}
    finally:
        await w.orch.close()


# --- finding 4: replay memory survives a restart; redelivery and re-send are told apart ------------


async def test_a_replay_after_a_restart_is_refused_and_a_redelivery_is_quiet() -> None:
    w = await world([FakeCampaign("c1", S.RUNNING)])
    stop = signed(w.command("c1", Action.STOP, priority=Priority.HIGH))
    await w.orch.submit(stop, "commands:0@7")
    await w.clock.sleep(1)
    w.platform.campaigns["c1"].state = S.STOPPED
    await w.clock.sleep(120)
    assert w.sink.outcomes(stop.id)[-1] == ("COMPLETED", None)
    w.platform.campaigns["c1"].state = S.RUNNING  # someone started it again meanwhile
    assert w.posts() == ["POST stop c1"]
    w2 = await restart(w)
    try:
        redelivered = await w2.orch.submit(stop, "commands:0@7")
        assert redelivered.reason is ReasonCode.REPLAYED and w2.sink.outcomes(stop.id) == []
        replay = await w2.orch.submit(stop, "commands:0@9")
        assert (replay.outcome.value, replay.reason) == ("REFUSED", ReasonCode.REPLAYED)
        assert w2.sink.outcomes(stop.id) == [("REFUSED", "REPLAYED")], "a re-send is answered, on the topic"
        await w2.clock.sleep(10)
        assert w2.posts() == ["POST stop c1"], "the replayed stop never reached the platform again"
        assert w2.orch.auth_refusals[ReasonCode.REPLAYED] == 1
    finally:
        await w2.orch.close()


async def test_a_command_whose_handling_fails_fails_alone_and_is_forgotten() -> None:
    class Flaky(MemorySink):
        fail_next = True

        async def state_saved(self, snapshot: dict[str, Any], results: Sequence[CommandResult] = ()) -> None:
            if self.fail_next and results:
                self.fail_next = False
                raise OSError("disk full")
            await super().state_saved(snapshot, results)

    w = await world([FakeCampaign("c1", S.STOPPED), FakeCampaign("c2", S.STOPPED)], sink=Flaky())
    try:
        first = signed(w.command("c1", Action.START, priority=Priority.HIGH))
        second = signed(w.command("c1", Action.STOP))
        failed = w.orch.submit(first, "commands:0@1")
        after = w.orch.submit(second, "commands:0@2")
        await w.clock.sleep(1)
        assert isinstance(failed.exception(), OSError), "the intake learns this record failed"
        assert after.result().reason is ReasonCode.ALREADY_IN_STATE, "the next command is handled"
        assert w.posts() == [] and w.orch.campaigns["c1"].held is None, "nothing acts on an unsaved accept"
        again = await w.orch.submit(first, "commands:0@1")  # the intake redelivers that record
        assert again.outcome.value == "ACCEPTED"
        await w.clock.sleep(1)
        assert w.posts() == ["POST start c1"]
    finally:
        await w.orch.close()


async def test_ids_come_back_exactly_as_sent_and_a_respelt_id_is_still_a_replay() -> None:
    # Issue 13, failure 2: a result's commandId came back lower-cased.
    w = await world([FakeCampaign("c1", S.RUNNING)])
    try:
        upper = str(uuid.uuid4()).upper()
        stop = signed(w.command("c1", Action.STOP, priority=Priority.HIGH).model_copy(update={"id": upper}))
        assert (await w.orch.submit(stop, "commands:0@1")).command_id == upper
        await w.clock.sleep(1)
        w.platform.campaigns["c1"].state = S.STOPPED
        await w.clock.sleep(120)
        assert [r.command_id for r in w.sink.results if r.campaign_id == "c1"] == [upper, upper]
        assert w.sink.outcomes(upper) == [("ACCEPTED", None), ("COMPLETED", None)]
        # The same UUID spelt in lower case, in a new record: one id, so a replay (echoed as it came).
        again = signed(w.command("c1", Action.START).model_copy(update={"id": upper.lower()}))
        replay = await w.orch.submit(again, "commands:0@2")
        assert (replay.command_id, replay.reason) == (upper.lower(), ReasonCode.REPLAYED)
        assert w.posts() == ["POST stop c1"]
    finally:
        await w.orch.close()


# --- finding 5: the state topic is checked input -----------------------------------------------------


async def test_planted_and_broken_state_records_are_quarantined_and_the_rest_restored() -> None:
    w = await world([FakeCampaign("c1", S.RUNNING), FakeCampaign("c2", S.RUNNING), FakeCampaign("c3", S.STOPPED)])
    records = {r["campaignId"]: r for r in w.sink.durable_records()}
    year_ago = datetime.now(UTC) - timedelta(days=365)
    planted = Command(id=uuid.uuid4(), campaign_id="c1", action=Action.STOP, requested_by="mallory",
                      issued_at=year_ago)
    # Stored commands are the records their producers sent (value and signing headers, issue 13).
    records["c1"].update(held=str(planted.id), heldCommand=StoredCommand.of(planted))
    old_signed = signed(Command(id=uuid.uuid4(), campaign_id="c2", action=Action.STOP, requested_by="ops",
                                issued_at=year_ago, not_before=datetime.now(UTC) + timedelta(seconds=5)))
    records["c2"]["scheduledCommands"] = [{"value": "{}", "keyId": None, "signature": None},
                                          StoredCommand.of(old_signed)]
    records["c3"]["state"] = "DANCING"
    w2 = await restart(w, list(records.values()))
    try:
        assert w2.orch.ready, "readiness is reached whatever the records say"
        assert w2.orch.quarantined == {"held": 1, "scheduled": 2, "record": 1}
        await w2.clock.sleep(30)
        assert w2.platform.posts() == [], "neither the unsigned nor the year-old stop ran"
        assert w2.orch.campaigns["c3"].current is S.STOPPED, "a broken record's campaign is read from the platform"
        start = signed(w2.command("c3", Action.START, priority=Priority.HIGH))
        assert (await w2.orch.submit(start)).outcome.value == "ACCEPTED"
    finally:
        await w2.orch.close()


async def test_a_stored_command_is_verified_again_over_the_bytes_its_producer_signed() -> None:
    # A held command restored from campaign.state: its producer's record (value, key id, signature)
    # is kept, so a restart verifies it again; a planted edit of the value, or a signature taken
    # from another campaign's command, is quarantined and never acts.
    w = await world([FakeCampaign("c1", S.RUNNING), FakeCampaign("c2", S.RUNNING), FakeCampaign("c3", S.RUNNING)])
    records = {r["campaignId"]: r for r in w.sink.durable_records()}
    soon = datetime.now(UTC) + timedelta(seconds=5)
    honest = signed(w.command("c1", Action.STOP, not_before=soon))
    stored = StoredCommand.of(honest)
    assert stored["value"] == honest.signed.value.decode() and stored["keyId"] == "ops"  # type: ignore[union-attr]
    records["c1"]["scheduledCommands"] = [stored]
    c2 = StoredCommand.of(signed(w.command("c2", Action.STOP, not_before=soon)))
    records["c2"]["scheduledCommands"] = [{**c2, "value": str(c2["value"]).replace('"stop"', '"pause"')}]
    moved = signed(w.command("c2", Action.STOP, not_before=soon))  # c2's command stored under c3
    records["c3"]["scheduledCommands"] = [StoredCommand.of(moved)]
    w2 = await restart(w, list(records.values()))
    try:
        assert w2.orch.quarantined == {"scheduled": 2}
        await w2.clock.sleep(30)
        assert w2.posts() == ["POST stop c1"], "only the honest stored command ran"
    finally:
        await w2.orch.close()


# --- finding 7: limits with reasons -------------------------------------------------------------


async def test_not_before_beyond_the_horizon_and_too_many_waiting_are_refused() -> None:
    w = await world([FakeCampaign("c1", S.STOPPED)], config=OrchestratorConfig(seed=1, max_scheduled=3))
    try:
        later = datetime.fromtimestamp(w.clock.now() + 3600, UTC)
        far = signed(w.command("c1", Action.START, not_before=datetime(9999, 12, 31, tzinfo=UTC)))
        assert (await w.orch.submit(far)).reason is ReasonCode.NOT_BEFORE_TOO_FAR
        answers = [await w.orch.submit(signed(w.command("c1", Action.START, not_before=later))) for _ in range(5)]
        assert [a.reason for a in answers] == [ReasonCode.SCHEDULED] * 3 + [ReasonCode.TOO_MANY_WAITING] * 2
        record = w.sink.state["c1"]
        assert len(record["scheduledCommands"]) == 3 and len(orjson.dumps(record)) < 20_000
    finally:
        await w.orch.close()


# --- finding 8: notifications apply to their topic's campaign only; identity comes from reads --------


async def test_a_notification_cannot_move_the_dialer_and_a_forged_jump_is_read_back() -> None:
    w = await world([FakeCampaign("c1", S.RUNNING, dialer_id="dialer-1")], notifications=True)
    try:
        forged = FakeCampaign("c1", S.PAUSED, dialer_id="dialer-eu-9")
        await w.orch.on_notification(Notification("v2.outbound.campaigns.c1", w.clock.now(),
                                                  w.platform.snapshot(forged)))
        await w.clock.sleep(2)
        campaign = w.orch.campaigns["c1"]
        assert campaign.dialer_id == "dialer-1", "the dialer is what the platform's record says"
        assert campaign.current is S.RUNNING, "a jump that skips PAUSING is confirmed by a read, which wins"
        assert [e["to"] for e in w.sink.of("c1")][-2:] == ["PAUSED", "RUNNING"]
    finally:
        await w.orch.close()


# --- finding 11: a 429 on a POST is waited out and sent again --------------------------------------


async def test_a_post_answered_429_is_sent_again_after_retry_after() -> None:
    w = await world([FakeCampaign("c1", S.STOPPED)])
    try:
        w.platform.post_failure["c1"] = PlatformRateLimited("slow down", retry_after=3.0)
        start = signed(w.command("c1", Action.START, priority=Priority.HIGH))
        await w.orch.submit(start)
        await w.clock.sleep(10)
        assert w.posts() == ["POST start c1", "POST start c1"]
        assert w.platform.posts()[1][0] - w.platform.posts()[0][0] >= 3.0 * 0.8
        assert w.orch.campaigns["c1"].current is S.STARTING
        assert ("FAILED", "PLATFORM_ERROR") not in w.sink.outcomes(start.id)
    finally:
        await w.orch.close()


# --- issue 11 -------------------------------------------------------------------------------------


async def test_a_held_command_makes_the_opposite_no_op_wait_its_turn() -> None:
    # Rule 1: a stop held for the 15 s spacing, then a start: never COMPLETED ALREADY_IN_STATE RUNNING.
    w = await world([FakeCampaign("c1", S.RUNNING), FakeCampaign("c2", S.RUNNING)])
    try:
        first = await w.orch.submit(signed(w.command("c2", Action.STOP)))
        await w.clock.sleep(1)
        stop = signed(w.command("c1", Action.STOP))
        assert (await w.orch.submit(stop)).outcome.value == "ACCEPTED" and first.outcome.value == "ACCEPTED"
        start = await w.orch.submit(signed(w.command("c1", Action.START)))
        assert (start.outcome.value, start.reason) == ("REFUSED", ReasonCode.TRANSITION_IN_FLIGHT)
    finally:
        await w.orch.close()


async def test_pre_flight_is_judged_again_right_before_the_post() -> None:
    # Rule 2: the list locks while the command waits in the dialer queue: not POSTed until it is ready.
    w = await world([FakeCampaign("c1", S.RUNNING), FakeCampaign("c2", S.RUNNING)])
    try:
        await w.orch.submit(signed(w.command("c2", Action.STOP)))
        await w.clock.sleep(1)
        stop = signed(w.command("c1", Action.STOP))
        await w.orch.submit(stop)
        await w.clock.sleep(5)
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", False, True, "LOCKED")
        await w.clock.sleep(30)
        assert [p for p in w.posts() if p.endswith("c1")] == [], "never POSTed onto a locked list"
        assert ("DEFERRED", "CONTACT_LIST_NOT_READY") in w.sink.outcomes(stop.id)
        w.platform.lists["list-1"] = ContactListSnapshot("list-1", True, False, "ACTIVE")
        await w.clock.sleep(60)
        assert [p for p in w.posts() if p.endswith("c1")] == ["POST stop c1"]
    finally:
        await w.orch.close()


async def test_the_dialer_load_is_read_again_before_a_queued_standard_post() -> None:
    w = await world([FakeCampaign("c1", S.RUNNING), FakeCampaign("c2", S.RUNNING)])
    try:
        await w.orch.submit(signed(w.command("c2", Action.STOP)))
        await w.clock.sleep(1)
        stop = signed(w.command("c1", Action.STOP))
        await w.orch.submit(stop)
        w.platform.loads["dialer-1"] = DialerLoad("dialer-1", 131, 100)  # the dialer fills up meanwhile
        await w.clock.sleep(30)
        assert [p for p in w.posts() if p.endswith("c1")] == [], "not POSTed with the dialer at 131 %"
        assert ("DEFERRED", "DIALER_OVER_CAPACITY") in w.sink.outcomes(stop.id)
    finally:
        await w.orch.close()


async def test_a_reset_publishes_only_states_the_platform_reported() -> None:
    # Rules 3 and 4.
    w = await world([FakeCampaign("c1", S.FAILED), FakeCampaign("c2", S.FAILED)])
    try:
        still = await w.orch.submit(signed(w.command("c1", Action.RESET)))
        assert (still.outcome.value, still.state) == ("FAILED", S.FAILED)
        assert [e["to"] for e in w.sink.of("c1")] == ["FAILED"], "no RUNNING the platform never had"
        w.platform.campaigns["c1"].state = S.STOPPED
        cleared = await w.orch.submit(signed(w.command("c1", Action.RESET)))
        assert (cleared.outcome.value, cleared.state) == ("COMPLETED", S.STOPPED)
        reset_event = w.sink.of("c1")[-1]
        assert (reset_event["from"], reset_event["to"], reset_event["cause"], reset_event["action"]) == (
            "FAILED", "STOPPED", "command", "reset")
        # The runbook's order: fixed on the platform and observed first, then the reset.
        w.platform.campaigns["c2"].state = S.STOPPED
        await w.orch.on_notification(Notification("v2.outbound.campaigns.c2", w.clock.now(),
                                                  w.platform.snapshot(w.platform.campaigns["c2"])))
        await w.clock.sleep(1)
        late = await w.orch.submit(signed(w.command("c2", Action.RESET)))
        assert (late.outcome.value, late.reason) == ("COMPLETED", ReasonCode.ALREADY_IN_STATE)
    finally:
        await w.orch.close()


class _SlowReads(FakePlatform):
    """Reads of some campaigns take seconds (a busy platform, a stalled network)."""

    slow: frozenset[str] = frozenset()

    async def get_campaign(self, campaign_id: str) -> Any:
        if campaign_id in self.slow:
            await self.clock.sleep(6.0)
        return await super().get_campaign(campaign_id)


async def test_standard_posts_on_a_dialer_are_15_s_apart_as_sent() -> None:
    # Rule 5: reads before each POST must not shrink the spacing.
    clock = FakeClock(auto_advance=True, wall_start=datetime.now(UTC).timestamp())
    platform = _SlowReads(clock, [FakeCampaign(f"c{i}", S.RUNNING) for i in range(1, 5)])
    platform.slow = frozenset({"c1", "c3"})
    w = await world((), platform=platform, clock=clock)
    try:
        for i in range(1, 5):
            await w.orch.submit(signed(w.command(f"c{i}", Action.STOP)))
        for i in range(1, 5):
            await w.clock.sleep(20)
            w.platform.campaigns[f"c{i}"].state = S.STOPPED
        await w.clock.sleep(120)
        times = [p[0] for p in w.platform.posts()]
        assert len(times) == 4
        assert all(b - a >= 15.0 for a, b in itertools.pairwise(times)), times
    finally:
        await w.orch.close()
