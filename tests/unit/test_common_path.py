"""The common path of a command costs one look, one gate evaluation and one durable write before its POST.

Issue 12, item 3: a signed `start` on an idle STOPPED campaign (contact list ready, dialer free)
is judged once by the machine, made durable once (its ACCEPTED together with `heldCommandSent`),
and goes out within the look that took it. A command that has to wait keeps its ACCEPTED durable
before it waits, as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import transitions.core

from adapters.signing import Signer
from fsm import CampaignMachine
from fsm.authorization import CommandAuthority
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.ports import ActionReceipt, ContactListSnapshot, DialerLoad
from fsm.testing import FakeClock
from schemas.commands import Command, CommandResult
from schemas.types import Action, CampaignState, Priority
from tests.fakes import FakeCampaign, FakePlatform, MemorySink

S = CampaignState
KEY = b"k" * 32


@dataclass
class Tally:
    """What happened, in order: gate evaluations, durable writes, looks and the POST."""

    log: list[str] = field(default_factory=list)
    counting: bool = False

    def note(self, what: str) -> None:
        if self.counting:
            self.log.append(what)

    def before_post(self, what: str) -> int:
        post = self.log.index("post") if "post" in self.log else len(self.log)
        return self.log[:post].count(what)

    def after_post(self, what: str) -> int:
        post = self.log.index("post")
        return self.log[post + 1:].count(what)


class _TallySink(MemorySink):
    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally

    async def state_changed(self, event: dict[str, Any], snapshot: dict[str, Any],
                            results: Sequence[CommandResult] = ()) -> None:
        self.tally.note("save")
        await super().state_changed(event, snapshot, results)

    async def state_saved(self, snapshot: dict[str, Any], results: Sequence[CommandResult] = ()) -> None:
        self.tally.note("save")
        await super().state_saved(snapshot, results)


class _TallyPlatform(FakePlatform):
    def __init__(self, clock: FakeClock, campaigns: list[FakeCampaign], tally: Tally) -> None:
        super().__init__(clock, campaigns)
        self.tally = tally

    async def send_action(self, campaign_id: str, action: Action, **options: Any) -> ActionReceipt:
        self.tally.note("post")
        return await super().send_action(campaign_id, action, **options)


def _signed(campaign_id: str, priority: Priority, clock: FakeClock) -> Command:
    unsigned = Command(id=uuid.uuid4(), campaign_id=campaign_id, action=Action.START, priority=priority,
                       requested_by="ops", issued_at=datetime.fromtimestamp(clock.now(), UTC))
    return Signer("ops", KEY).sign(unsigned)


async def _world(tally: Tally, monkeypatch: pytest.MonkeyPatch,
                 campaigns: list[FakeCampaign]) -> tuple[Orchestrator, _TallyPlatform, _TallySink, FakeClock]:
    clock = FakeClock(auto_advance=True, wall_start=datetime.now(UTC).timestamp())
    platform = _TallyPlatform(clock, campaigns, tally)
    sink = _TallySink(tally)
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                        config=OrchestratorConfig(seed=11), authority=CommandAuthority({"ops": KEY}),
                        auth_clock=clock.now)
    # Every guard the machine evaluates for a command (its gate, and any trigger that checks the
    # conditions again) goes through `Condition.check`: that is what a gate evaluation costs.
    check = transitions.core.Condition.check

    def counted(self: transitions.core.Condition, event_data: transitions.core.EventData) -> bool:
        tally.note("gate")
        return bool(check(self, event_data))

    monkeypatch.setattr(transitions.core.Condition, "check", counted)
    look = orch._look

    async def counted_look(record: Any) -> None:
        tally.note("look")
        await look(record)

    monkeypatch.setattr(orch, "_look", counted_look)
    await orch.start()
    return orch, platform, sink, clock


@pytest.mark.parametrize("priority", [Priority.HIGH, Priority.STANDARD])
async def test_a_start_on_an_idle_campaign_costs_one_look_one_gate_one_save_before_its_post(
    priority: Priority, monkeypatch: pytest.MonkeyPatch
) -> None:
    tally = Tally()
    orch, platform, sink, clock = await _world(tally, monkeypatch, [FakeCampaign("c1", S.STOPPED)])
    try:
        command = _signed("c1", priority, clock)
        tally.counting = True
        result = await orch.submit(command, "commands:0@1")
        await clock.sleep(1)
        assert result.outcome.value == "ACCEPTED"
        assert [p[1] for p in platform.posts()] == ["POST start"]
        assert orch.campaigns["c1"].current is S.STARTING
        assert tally.before_post("look") == 1, tally.log
        assert tally.before_post("gate") == 1, tally.log
        assert tally.before_post("save") == 1, tally.log
        # Entering STARTING after the 202 applies the decision taken before the POST: no second judgement.
        assert tally.after_post("gate") == 0, tally.log
        # The one durable write before the POST is the ACCEPTED with the record saying it may have left.
        accepted = next(w for w in sink.writes if w[2])
        assert accepted[0] is None and accepted[2][0].outcome.value == "ACCEPTED"
        assert accepted[1] is not None and accepted[1]["heldCommandSent"] is True
        assert sink.outcomes(command.id) == [("ACCEPTED", None)]
    finally:
        await orch.close()
        await clock.aclose()


async def test_a_command_that_waits_for_its_dialer_has_its_accepted_durable_before_it_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tally = Tally()
    campaigns = [FakeCampaign(f"c{i}", S.STOPPED) for i in (1, 2, 3)]
    orch, platform, sink, clock = await _world(tally, monkeypatch, campaigns)
    try:
        first, second = _signed("c1", Priority.HIGH, clock), _signed("c2", Priority.HIGH, clock)
        await orch.submit(first, "commands:0@1")
        await orch.submit(second, "commands:0@2")
        await clock.sleep(1)
        assert len(platform.posts()) == 2  # both slots of dialer-1 in flight
        third = _signed("c3", Priority.HIGH, clock)
        result = await orch.submit(third, "commands:0@3")
        assert result.outcome.value == "ACCEPTED"
        # Its answer is durable alone, with the held command not sent: it waits in the dialer's queue.
        accepted = next(w for w in sink.writes if w[2] and str(w[2][0].command_id) == str(third.id))
        assert accepted[1] is not None and accepted[1]["heldCommand"] and accepted[1]["heldCommandSent"] is False
        assert [p[2] for p in platform.posts()] == ["c1", "c2"]
        platform.campaigns["c1"].state = S.RUNNING
        await clock.sleep(120)
        assert [p[2] for p in platform.posts()] == ["c1", "c2", "c3"]
        assert sink.outcomes(third.id)[0] == ("ACCEPTED", None)
    finally:
        await orch.close()
        await clock.aclose()


async def test_a_deferred_command_has_its_accepted_durable_before_its_deferred(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tally = Tally()
    orch, platform, sink, clock = await _world(tally, monkeypatch, [FakeCampaign("c1", S.STOPPED)])
    try:
        platform.lists["list-1"] = ContactListSnapshot("list-1", False, True, "ACTIVE/PROCESSING")
        command = _signed("c1", Priority.STANDARD, clock)
        result = await orch.submit(command, "commands:0@1")
        await clock.sleep(1)
        assert result.outcome.value == "ACCEPTED"
        outcomes = [(w[0] is None and w[1] is not None, r.outcome.value) for w in sink.writes for r in w[2]
                    if str(r.command_id) == str(command.id)]
        assert outcomes[:2] == [(True, "ACCEPTED"), (False, "DEFERRED")], outcomes
        assert platform.posts() == []
    finally:
        await orch.close()
        await clock.aclose()


async def test_a_busy_dialer_defers_a_standard_start_after_its_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    tally = Tally()
    orch, platform, sink, clock = await _world(tally, monkeypatch, [FakeCampaign("c1", S.STOPPED)])
    try:
        platform.loads["dialer-1"] = DialerLoad("dialer-1", 95, 100)
        command = _signed("c1", Priority.STANDARD, clock)
        await orch.submit(command, "commands:0@1")
        await clock.sleep(1)
        assert [o for o, _ in sink.outcomes(command.id)][:2] == ["ACCEPTED", "DEFERRED"]
        assert platform.posts() == []
    finally:
        await orch.close()
        await clock.aclose()


async def test_when_the_one_write_before_the_post_fails_the_command_was_never_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tally = Tally()
    orch, platform, sink, clock = await _world(tally, monkeypatch, [FakeCampaign("c1", S.STOPPED)])
    failures = [OSError("disk full")]
    saved = sink.state_saved

    async def flaky(snapshot: dict[str, Any], results: Sequence[CommandResult] = ()) -> None:
        if results and failures:
            raise failures.pop()
        await saved(snapshot, results)

    monkeypatch.setattr(sink, "state_saved", flaky)
    try:
        command = _signed("c1", Priority.HIGH, clock)
        failed = orch.submit(command, "commands:0@1")
        await clock.sleep(1)
        assert isinstance(failed.exception(), OSError), "the intake learns this record failed"
        assert platform.posts() == [] and orch.campaigns["c1"].held is None, "nothing acts on an unsaved accept"
        assert sink.outcomes(command.id) == []
        again = await orch.submit(command, "commands:0@1")  # the intake redelivers that record
        await clock.sleep(1)
        assert again.outcome.value == "ACCEPTED"
        assert [p[1] for p in platform.posts()] == ["POST start"]
        assert sink.outcomes(command.id) == [("ACCEPTED", None)]
    finally:
        await orch.close()
        await clock.aclose()
