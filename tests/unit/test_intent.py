"""Our intent on a platform whose `off` cannot tell a pause from a stop (Genesys), and the `halt` an
audit reads: paused, stopped, contacts exhausted, forced off, or off not by us."""

from __future__ import annotations

import uuid

import orjson
import pytest

from adapters.platform.profiles import campaign_from_payload
from fsm import CampaignMachine, ToleranceWindows
from fsm.audit import EventLog, rebuild_state
from fsm.intent import halt_of, interpret, keeps
from fsm.machine import Campaign
from schemas.events import CampaignStateChangedEvent
from schemas.state import CampaignStateRecord
from schemas.types import Action, CampaignState, Cause, DialerType, Halt, Intent
from tests.unit.test_audit import _records

S, A = CampaignState, Action
P, ST, R = (str(uuid.UUID(int=i)) for i in (1, 2, 3))


@pytest.fixture
def machine() -> CampaignMachine:
    return CampaignMachine()


def _running(machine: CampaignMachine) -> Campaign:
    campaign, _ = machine.adopt("c-1", S.RUNNING, DialerType.POWER, at=0.0, platform_status="on")
    return campaign


def _see(machine: CampaignMachine, campaign: Campaign, status: str, at: float = 10.0) -> dict[str, object] | None:
    """What a genesys read of `status` does to the campaign: the event's data, or None if nothing moved."""
    body = {"id": campaign.id, "campaignStatus": status, "dialingMode": "power", "edgeGroup": {"id": "eg"}}
    snap = campaign_from_payload("genesys", body)
    assert snap.state is not None
    change = machine.observe(campaign, snap.state, cause=Cause.POLL, at=at, platform_status=status,
                             intent_decides=snap.intent_decides, halt=snap.halt)
    if change is None:
        return None
    event = change.event()
    CampaignStateChangedEvent.model_validate_json(orjson.dumps(event))  # the wire dict keeps to the contract
    data: dict[str, object] = event["data"]
    return data


def test_interpret_reads_off_by_the_intent() -> None:
    assert interpret(Intent.PAUSE, S.STOPPED, intent_decides=True) is S.PAUSED
    assert interpret(Intent.PAUSE, S.STOPPING, intent_decides=True) is S.PAUSING
    assert interpret(Intent.STOP, S.STOPPED, intent_decides=True) is S.STOPPED
    assert interpret(None, S.STOPPED, intent_decides=True) is S.STOPPED
    # A status that names itself (guide's PAUSED, Genesys' complete) is never reinterpreted.
    assert interpret(Intent.PAUSE, S.STOPPED, intent_decides=False) is S.STOPPED
    assert keeps(Intent.STOP, S.STOPPED, intent_decides=False)
    assert not keeps(Intent.PAUSE, S.STOPPED, intent_decides=False)
    assert not keeps(Intent.PAUSE, S.RUNNING, intent_decides=False)


@pytest.mark.parametrize(
    ("intent", "state", "named", "halt"),
    [
        (Intent.PAUSE, S.PAUSED, None, Halt.PAUSED),
        (Intent.STOP, S.STOPPED, None, Halt.STOPPED),
        (None, S.STOPPED, None, Halt.OFF),
        (Intent.STOP, S.STOPPED, Halt.CONTACTS_EXHAUSTED, Halt.CONTACTS_EXHAUSTED),
        (Intent.PAUSE, S.STOPPING, Halt.FORCED_OFF, Halt.FORCED_OFF),
        (None, S.RUNNING, None, None),
    ],
)
def test_halt_of(intent: Intent | None, state: CampaignState, named: Halt | None, halt: Halt | None) -> None:
    assert halt_of(intent, state, named) is halt


def test_a_genesys_pause_is_off_read_as_paused(machine: CampaignMachine) -> None:
    campaign = _running(machine)
    decision = machine.command(campaign, A.PAUSE, at=1.0, command_id=P)
    assert decision.accepted and campaign.current is S.PAUSING and campaign.intent is Intent.PAUSE
    assert decision.change is not None and decision.change.event()["data"]["intent"] == "pause"
    assert _see(machine, campaign, "stopping") is None  # stopping after a pause: still PAUSING
    data = _see(machine, campaign, "off")
    assert data is not None and (data["to"], data["intent"], data["halt"]) == ("PAUSED", "pause", "paused")
    # Resumed: on again, the intent is spent.
    machine.command(campaign, A.RESUME, at=20.0, command_id=R)
    data = _see(machine, campaign, "on", at=21.0)
    assert data is not None and data["to"] == "RUNNING" and "intent" not in data and campaign.intent is None


def test_a_genesys_stop_is_off_read_as_stopped(machine: CampaignMachine) -> None:
    campaign = _running(machine)
    machine.command(campaign, A.STOP, at=1.0, command_id=ST)
    assert campaign.current is S.STOPPING and campaign.intent is Intent.STOP
    data = _see(machine, campaign, "off")
    assert data is not None and (data["to"], data["intent"], data["halt"]) == ("STOPPED", "stop", "stopped")


def test_a_stop_of_a_paused_campaign_turns_the_same_off_into_stopped(machine: CampaignMachine) -> None:
    campaign = _running(machine)
    machine.command(campaign, A.PAUSE, at=1.0, command_id=P)
    _see(machine, campaign, "off")
    assert campaign.current is S.PAUSED
    machine.command(campaign, A.STOP, at=5.0, command_id=ST)
    assert campaign.current is S.STOPPING and campaign.intent is Intent.STOP
    data = _see(machine, campaign, "off", at=6.0)  # the platform never moved: only our intent did
    assert data is not None and (data["from"], data["to"], data["halt"]) == ("STOPPING", "STOPPED", "stopped")


def test_off_turned_elsewhere_is_stopped_with_halt_off(machine: CampaignMachine) -> None:
    campaign = _running(machine)
    data = _see(machine, campaign, "off")
    assert data is not None and (data["to"], data["halt"]) == ("STOPPED", "off") and "intent" not in data


def test_complete_and_forced_off_name_their_own_reason(machine: CampaignMachine) -> None:
    campaign = _running(machine)
    data = _see(machine, campaign, "complete")
    assert data is not None and (data["to"], data["halt"], data["platformStatus"]) == (
        "STOPPED", "contacts-exhausted", "complete")
    paused = _running(machine)
    machine.command(paused, A.PAUSE, at=1.0, command_id=P)
    _see(machine, paused, "off")
    data = _see(machine, paused, "forced_off", at=30.0)
    assert data is not None and (data["from"], data["to"], data["halt"]) == ("PAUSED", "STOPPED", "forced-off")
    assert paused.intent is None, "forced off: our pause no longer explains it"
    # Forgotten, so a later plain off is no longer read as our pause.
    assert interpret(paused.intent, S.STOPPED, intent_decides=True) is S.STOPPED


def test_a_restored_campaign_keeps_its_intent(machine: CampaignMachine) -> None:
    """Restart or takeover: the record from campaign.state reads `off` the way the pause meant it."""
    campaign = _running(machine)
    machine.command(campaign, A.PAUSE, at=1.0, command_id=P)
    record = campaign.snapshot()
    assert record["intent"] == "pause"
    CampaignStateRecord.model_validate_json(orjson.dumps({**record, "heldCommand": None}))
    restored = Campaign.restore(record)
    assert restored.intent is Intent.PAUSE
    other = CampaignMachine()  # a new owner's machine
    change = other.observe(restored, S.STOPPED, cause=Cause.RECONCILE, at=9.0, platform_status="off",
                           intent_decides=True)
    assert change is not None and change.to_state is S.PAUSED and change.halt is Halt.PAUSED
    # A record written before intents existed restores with none.
    legacy = {k: v for k, v in record.items() if k != "intent"}
    assert Campaign.restore(legacy).intent is None


def test_the_audit_tells_the_four_halts_apart_and_rebuilds_the_intent() -> None:
    """Four campaigns off for four reasons; the replayed log names each, and `campaign.state` rebuilt
    from the events alone keeps the pause's intent."""
    machine = CampaignMachine()
    events: list[dict[str, object]] = []

    def campaign(cid: str) -> Campaign:
        c, change = machine.adopt(cid, S.RUNNING, DialerType.POWER, at=0.0, platform_status="on")
        events.append(c.chain(change))
        return c

    def see(c: Campaign, status: str, at: float) -> None:
        body = {"id": c.id, "campaignStatus": status, "dialingMode": "power", "edgeGroup": {"id": "eg"}}
        snap = campaign_from_payload("genesys", body)
        assert snap.state is not None
        change = machine.observe(c, snap.state, cause=Cause.POLL, at=at, platform_status=status,
                                 intent_decides=snap.intent_decides, halt=snap.halt)
        assert change is not None
        events.append(c.chain(change))

    def command(c: Campaign, action: Action, command_id: str) -> None:
        decision = machine.command(c, action, at=1.0, command_id=command_id)
        assert decision.change is not None
        events.append(c.chain(decision.change))

    paused, stopped, exhausted, forced = (campaign(f"c-{i}") for i in range(1, 5))
    command(paused, A.PAUSE, P)
    see(paused, "off", 5.0)
    command(stopped, A.STOP, ST)
    see(stopped, "off", 5.0)
    see(exhausted, "complete", 5.0)
    see(forced, "forced_off", 5.0)
    log = EventLog(strict=True)
    log.add(_records(events))  # type: ignore[arg-type]
    replay = log.finish()
    assert replay.findings == []
    halts = {cid: h.entries[-1].halt for cid, h in replay.histories.items()}
    assert halts == {"c-1": "paused", "c-2": "stopped", "c-3": "contacts-exhausted", "c-4": "forced-off"}
    rebuilt = rebuild_state(replay.histories["c-1"], ToleranceWindows())
    assert (rebuilt["state"], rebuilt["intent"]) == ("PAUSED", "pause")
    assert Campaign.restore(rebuilt).intent is Intent.PAUSE


def test_a_stale_on_during_a_pause_does_not_turn_its_off_into_a_stop(machine: CampaignMachine) -> None:
    """A notification from before the pause arrives after it: the pause's intent stands while it is
    in flight, so the `off` that follows is still read as PAUSED."""
    campaign = _running(machine)
    machine.command(campaign, A.PAUSE, at=1.0, command_id=P)
    data = _see(machine, campaign, "on", at=2.0)  # stale: the model adopts it (the platform is the truth)
    assert data is not None and data["to"] == "RUNNING"
    assert campaign.intent is Intent.PAUSE
    data = _see(machine, campaign, "off", at=3.0)
    assert data is not None and (data["to"], data["halt"]) == ("PAUSED", "paused")
