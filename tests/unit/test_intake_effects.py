"""The state gate decides, then the look acts: `Intake._decide` returns effects and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fsm import CampaignMachine
from fsm.authorization import AuthDecision
from fsm.intake import Answer, Hold, Remember, Reset, Schedule
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.record import Admitted, CampaignRecord
from fsm.testing import FakeClock
from schemas.commands import Command
from schemas.types import Action, CampaignState, ReasonCode
from tests.fakes import FakeCampaign, FakePlatform, MemorySink

S = CampaignState


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    clock = FakeClock(auto_advance=True, wall_start=datetime.now(UTC).timestamp())
    platform = FakePlatform(clock, [FakeCampaign("idle", S.STOPPED), FakeCampaign("live", S.RUNNING),
                                    FakeCampaign("broken", S.FAILED)])
    orchestrator = Orchestrator(machine=CampaignMachine(), platform=platform, sink=MemorySink(), clock=clock,
                                config=OrchestratorConfig(seed=2, not_before_horizon=3600, max_scheduled=1))
    await orchestrator.start()
    yield orchestrator
    await orchestrator.close()
    await clock.aclose()


def _command(orch: Orchestrator, campaign_id: str, action: Action, **extra: Any) -> Command:
    return Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, requested_by="ops",
                   issued_at=datetime.fromtimestamp(orch.clock.now(), UTC), **extra)


def _decide(orch: Orchestrator, command: Command, policy: AuthDecision | None = None,
            released: bool = False) -> tuple[object, ...]:
    record = orch._records[command.campaign_id]
    before = _state(record)
    effects = orch._decide(record, Admitted(command, "commands:0@7"), policy, released=released)
    assert _state(record) == before, "deciding changes nothing"
    return effects


def _state(record: CampaignRecord) -> tuple[object, ...]:
    assert record.campaign is not None
    return (record.store(), record.held, record.owed, list(record.scheduled), dict(record.campaign.recent))


def _later(orch: Orchestrator, seconds: float) -> datetime:
    return datetime.fromtimestamp(orch.clock.now() + seconds, UTC)


async def test_an_accepted_command_is_remembered_then_held_with_its_decision(orch: Orchestrator) -> None:
    start = _command(orch, "idle", Action.START)
    remember, hold = _decide(orch, start)
    assert remember == Remember(start, "commands:0@7")
    assert isinstance(hold, Hold) and hold.command is start
    assert hold.decision.accepted and hold.decision.to is S.STARTING
    assert hold.result.outcome.value == "ACCEPTED" and hold.result.reason is None


async def test_the_machine_answers_a_no_op_and_an_illegal_command(orch: Orchestrator) -> None:
    _, done = _decide(orch, _command(orch, "live", Action.START))
    assert isinstance(done, Answer) and (done.result.outcome.value, done.result.reason) == (
        "COMPLETED", ReasonCode.ALREADY_IN_STATE)
    _, illegal = _decide(orch, _command(orch, "idle", Action.PAUSE))
    assert isinstance(illegal, Answer) and illegal.result.reason is ReasonCode.ILLEGAL_TRANSITION
    assert illegal.result.legal_actions


async def test_a_policy_refusal_is_answered_and_still_remembered(orch: Orchestrator) -> None:
    start = _command(orch, "idle", Action.START)
    effects = _decide(orch, start, AuthDecision.refuse(ReasonCode.NOT_AUTHORISED, "not on this dialer"))
    assert effects[0] == Remember(start, "commands:0@7")
    assert isinstance(effects[1], Answer) and effects[1].result.reason is ReasonCode.NOT_AUTHORISED


async def test_not_before_schedules_or_refuses_by_horizon_and_count(orch: Orchestrator) -> None:
    soon = _command(orch, "idle", Action.START, not_before=_later(orch, 600))
    _, wait = _decide(orch, soon)
    assert isinstance(wait, Schedule) and wait.command is soon and wait.result.reason is ReasonCode.SCHEDULED
    _, far = _decide(orch, _command(orch, "idle", Action.START, not_before=_later(orch, 7200)))
    assert isinstance(far, Answer) and far.result.reason is ReasonCode.NOT_BEFORE_TOO_FAR
    orch._records["idle"].scheduled.append(soon)
    _, full = _decide(orch, _command(orch, "idle", Action.STOP, not_before=_later(orch, 60)))
    assert isinstance(full, Answer) and full.result.reason is ReasonCode.TOO_MANY_WAITING
    # Released at its time: neither remembered nor authorised again, gated by the machine now.
    (hold,) = _decide(orch, soon, released=True)
    assert isinstance(hold, Hold)


async def test_a_reset_is_left_to_the_platform_read(orch: Orchestrator) -> None:
    reset = _command(orch, "broken", Action.RESET)
    assert _decide(orch, reset) == (Remember(reset, "commands:0@7"), Reset(reset))


async def test_applying_the_effects_is_what_a_submitted_command_does(orch: Orchestrator) -> None:
    start = _command(orch, "idle", Action.START, not_before=_later(orch, timedelta(minutes=5).total_seconds()))
    result = await orch.submit(start, "commands:0@8")
    assert (result.outcome.value, result.reason) == ("DEFERRED", ReasonCode.SCHEDULED)
    record = orch._records["idle"]
    assert record.scheduled == [start] and str(start.id) in record.campaign.recent  # type: ignore[union-attr]
