"""The held command's lifecycle, the dialer slot lease, and the log context of a look (issue 12)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from fsm import CampaignMachine, log_context
from fsm.dialer_queue import DialerGate
from fsm.held import HeldCommand, SlotLease, Stage
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.ports import CampaignSnapshot, Notification
from fsm.testing import FakeClock
from schemas.commands import Command
from schemas.types import Action, CampaignState, Priority, ReasonCode
from tests.fakes import FakeCampaign, FakePlatform, MemorySink

S = CampaignState


def _command(campaign_id: str, action: Action, priority: Priority = Priority.STANDARD) -> Command:
    return Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, priority=priority,
                   requested_by="test", issued_at=datetime.now(UTC))


def test_the_held_command_moves_through_its_stages_as_new_values() -> None:
    held = HeldCommand(_command("c1", Action.STOP))
    assert held.stage is Stage.PREFLIGHT and held.due(0.0)
    deferred = held.looked().deferred(ReasonCode.CONTACT_LIST_NOT_READY, 5.0, 15.0)
    assert (deferred.stage, deferred.deferred_at, deferred.next_check) == (Stage.PREFLIGHT, 5.0, 15.0)
    assert not deferred.due(10.0) and deferred.due(15.0) and deferred.poke().due(10.0)
    again = deferred.looked().deferred(ReasonCode.CONTACT_LIST_NOT_READY, 20.0, 30.0)
    assert again.deferred_at == 5.0, "a deferral keeps its first instant (the deferral TTL counts from it)"
    queued = again.proceed()
    assert queued.stage is Stage.QUEUED and not queued.due(100.0), "a queued command waits for its slot"
    granted = queued.granted()
    assert granted.stage is Stage.GRANTED and granted.due(100.0)
    limited = granted.rate_limited_until(110.0)
    assert limited.rate_limited == 1 and not limited.due(105.0) and limited.due(110.0)
    assert limited.sending().stage is Stage.SENT
    assert held.stage is Stage.PREFLIGHT, "values are frozen: the old one is unchanged"


class _MovingPlatform(FakePlatform):
    """A platform that, once a stop was sent, reports the campaign on another dialer (a re-homing)."""

    async def get_campaign(self, campaign_id: str) -> CampaignSnapshot:
        if self.posts(campaign_id):
            self.campaigns[campaign_id].dialer_id = "dialer-2"
        return await super().get_campaign(campaign_id)


async def test_a_slot_taken_on_dialer_a_goes_back_to_dialer_a_when_the_dialer_changes() -> None:
    clock = FakeClock(auto_advance=True)
    platform = _MovingPlatform(clock, [FakeCampaign("c1", S.RUNNING, dialer_id="dialer-1")])
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=MemorySink(), clock=clock,
                        config=OrchestratorConfig(seed=1))
    await orch.start()
    try:
        await orch.submit(_command("c1", Action.STOP, Priority.HIGH))
        await clock.sleep(2)
        assert {s.dialer_id: s.in_flight for s in orch.gate.stats()} == {"dialer-1": 1}
        await clock.sleep(10)  # polls see the campaign on dialer-2 now
        assert orch.campaigns["c1"].dialer_id == "dialer-2"
        platform.campaigns["c1"].state = S.STOPPED
        await clock.sleep(60)
        assert orch.campaigns["c1"].current is S.STOPPED
        assert {s.dialer_id: s.in_flight for s in orch.gate.stats()}.get("dialer-1") == 0, \
            "the slot went back to the dialer it was taken on"
        assert all(s.in_flight == 0 for s in orch.gate.stats())
    finally:
        await orch.close()


class _ChattyPlatform(FakePlatform):
    """Logs as the real platform client does, from inside a look."""

    async def get_campaign(self, campaign_id: str) -> CampaignSnapshot:
        logging.getLogger("adapters.platform_client").info("GET campaign (client's own line)")
        return await super().get_campaign(campaign_id)


async def test_every_log_line_of_a_look_names_its_campaign(caplog: pytest.LogCaptureFixture) -> None:
    log_context.install()
    caplog.set_level(logging.DEBUG)
    clock = FakeClock(auto_advance=True)
    platform = _ChattyPlatform(clock, [FakeCampaign("c1", S.STOPPED), FakeCampaign("c2", S.RUNNING)])
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=MemorySink(), clock=clock,
                        config=OrchestratorConfig(seed=1))
    await orch.start()
    try:
        caplog.clear()
        start = _command("c1", Action.START, Priority.HIGH)
        await orch.submit(start)
        platform.campaigns["c2"].status = "DANCING"  # a status nobody maps: the look warns
        await orch.on_notification(Notification("v2.outbound.campaigns.c2", clock.now(),
                                                platform.snapshot(platform.campaigns["c2"])))
        await clock.sleep(5)
        lines: list[Any] = [r for r in caplog.records if r.name.startswith(("fsm", "adapters"))]
        assert {r.getMessage() for r in lines} >= {"GET campaign (client's own line)"}
        assert any("unknown platform status" in r.getMessage() for r in lines)
        unnamed = [r.getMessage() for r in lines if getattr(r, "campaign_id", None) not in ("c1", "c2")]
        assert unnamed == [], unnamed
        warning = next(r for r in lines if "unknown platform status" in r.getMessage())
        assert warning.campaign_id == "c2"  # type: ignore[attr-defined]
    finally:
        await orch.close()


async def test_a_slot_lease_whose_ask_fails_asks_again_after_a_backoff(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 item 5: the `dialer-slot` task is supervised. The gate failing it (a defect) used to end
    the task, logged, with the held command left QUEUED for good; now it is logged with its traceback
    and the slot asked for again after a backoff."""
    clock = FakeClock()
    gate: DialerGate[str] = DialerGate(clock)
    await gate.acquire("d1", "busy1", Priority.HIGH)
    await gate.acquire("d1", "busy2", Priority.HIGH)
    real_acquire = gate.acquire
    failed: list[str] = []

    async def acquire_failing_once(dialer_id: str, item: str, priority: Priority) -> None:
        if not failed:
            failed.append(item)
            raise RuntimeError("a defect in the gate")
        await real_acquire(dialer_id, item, priority)

    monkeypatch.setattr(gate, "acquire", acquire_failing_once)
    granted: list[bool] = []
    with caplog.at_level(logging.ERROR, logger="fsm.held"):
        lease = SlotLease(gate, "d1", "c1", Priority.HIGH, lambda: granted.append(True))
        await clock.settle()
        assert failed == ["c1"] and not lease.granted
        gate.release("d1", "busy1")
        await clock.advance(1.0)
    assert lease.granted and granted == [True], "asked again after the backoff and granted"
    logged = [r for r in caplog.records if "asking again" in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    await lease.wait_closed()
    await gate.close()
