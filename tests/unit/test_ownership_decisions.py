"""Ownership decides, then the orchestrator acts: what taking campaigns on and giving them away do,
asked of the decisions in `fsm/ownership.py` directly, with no platform, sink or orchestrator."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.signing import Signer
from fsm import CampaignMachine
from fsm.authorization import CommandAuthority
from fsm.held import HeldCommand, Stage
from fsm.ownership import (
    Discover,
    GiveAway,
    Observe,
    Quarantine,
    Read,
    Restore,
    Subscribe,
    Track,
    Trust,
    handing_over,
    leaving,
    restoring,
    subscribing,
    taking_over,
    unsubscribing,
)
from fsm.ports import CampaignSnapshot
from fsm.record import Admitted, CampaignRecord
from schemas.commands import Command, CommandResult
from schemas.state import StoredCommand
from schemas.types import Action, CampaignState, DialerType, Outcome

S = CampaignState
KEY = b"k" * 32
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
TRUST = Trust(CommandAuthority({"ops": KEY}), NOW, 3600.0)


def _everything(_: str) -> bool:
    return True


def _command(campaign_id: str, action: Action = Action.STOP, *, age: float = 10.0, key: bytes = KEY) -> Command:
    command = Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, requested_by="ops",
                      issued_at=datetime.fromtimestamp(NOW - age, UTC))
    return Signer("ops", key).sign(command)


def _record(campaign_id: str, state: CampaignState = S.RUNNING, *, held: Command | None = None,
            contact_list: str | None = None) -> CampaignRecord:
    campaign, _ = CampaignMachine().adopt(campaign_id, state, DialerType.PREDICTIVE, at=NOW - 60,
                                          contact_list_id=contact_list)
    record = CampaignRecord(campaign_id, campaign)
    if held is not None:
        campaign.held = str(held.id)
        record.held = HeldCommand(held)
    return record


def _stored(campaign_id: str, state: CampaignState = S.RUNNING, *, held: Command | None = None,
            **extra: Any) -> dict[str, Any]:
    stored = _record(campaign_id, state, held=held).store()
    stored.update(extra)
    return stored


def _result(command: Command, outcome: Outcome) -> CommandResult:
    return CommandResult(command_id=str(command.id), campaign_id=command.campaign_id, outcome=outcome,
                         message=str(outcome), at=datetime.fromtimestamp(NOW, UTC))


def _snapshot(campaign_id: str, state: CampaignState = S.RUNNING) -> CampaignSnapshot:
    return CampaignSnapshot(id=campaign_id, state=state, dialer_type=DialerType.PREDICTIVE, platform_status="ON",
                            dialer_id=None, contact_list_id=None)


# --- acquisition: the stored records ----------------------------------------------------------


def test_a_valid_record_is_restored_with_its_held_and_scheduled_commands() -> None:
    held, waiting = _command("c1"), _command("c1", Action.PAUSE)
    stored = _stored("c1", held=held, scheduledCommands=[StoredCommand.of(waiting)], heldCommandSent=True)
    before = copy.deepcopy(stored)
    effects = restoring([stored], _everything, (), TRUST)
    assert stored == before, "deciding changes nothing, not even the record it reads"
    restore, read = effects
    assert isinstance(restore, Restore) and read == Read(("c1",))
    assert restore.campaign.id == "c1" and restore.campaign.held == str(held.id)
    assert restore.held == HeldCommand(held, stage=Stage.SENT), "its POST may have left: only reading now"
    assert restore.scheduled == (waiting,)


def test_a_restored_transition_in_flight_is_tracked_before_the_platform_is_read() -> None:
    stored = _stored("c1", S.STOPPING, commandId="cmd-1", action="stop")
    effects = restoring([_stored("c0"), stored], _everything, (), TRUST)
    assert [type(e) for e in effects] == [Restore, Restore, Track, Read]
    assert effects[2] == Track("c1", "cmd-1", Action.STOP)
    assert effects[3] == Read(("c0", "c1"))


def test_a_held_command_with_a_bad_signature_is_quarantined_and_the_campaign_restored_holding_nothing() -> None:
    forged = _command("c1", key=b"x" * 32)
    effects = restoring([_stored("c1", held=forged)], _everything, (), TRUST)
    quarantine, restore, read = effects
    assert isinstance(quarantine, Quarantine) and (quarantine.what, quarantine.campaign_id) == ("held", "c1")
    assert "BAD_SIGNATURE" in quarantine.detail
    assert isinstance(restore, Restore) and restore.held is None and restore.campaign.held is None
    assert read == Read(("c1",)), "the campaign itself is taken on"


def test_a_held_command_too_old_to_be_still_waiting_is_quarantined() -> None:
    year_old = _command("c1", age=365 * 86_400.0)
    quarantine, restore, _ = restoring([_stored("c1", held=year_old)], _everything, (), TRUST)
    assert isinstance(quarantine, Quarantine) and quarantine.what == "held"
    assert "STALE_COMMAND" in quarantine.detail
    assert isinstance(restore, Restore) and restore.held is None
    # Without keys configured, neither signature nor age is asked for: it is restored.
    (restore, _) = restoring([_stored("c1", held=year_old)], _everything, (), Trust(None))
    assert isinstance(restore, Restore) and restore.held is not None


def test_scheduled_commands_unsigned_or_of_another_campaign_are_quarantined_one_by_one() -> None:
    honest, moved = _command("c1", Action.PAUSE), _command("c2")
    stored = _stored("c1", scheduledCommands=[{"value": "{}", "keyId": None, "signature": None},
                                              StoredCommand.of(moved), StoredCommand.of(honest)])
    effects = restoring([stored], _everything, (), TRUST)
    assert [(e.what, e.campaign_id) for e in effects if isinstance(e, Quarantine)] == [("scheduled", "c1")] * 2
    restore = effects[2]
    assert isinstance(restore, Restore) and restore.scheduled == (honest,)


def test_a_schema_invalid_record_is_quarantined_and_its_campaign_left_to_the_platform() -> None:
    effects = restoring([{**_stored("c1"), "state": "DANCING"}, _stored("c2")], _everything, (), TRUST)
    quarantine, restore, read = effects
    assert isinstance(quarantine, Quarantine) and (quarantine.what, quarantine.campaign_id) == ("record", "c1")
    assert isinstance(restore, Restore) and restore.campaign.id == "c2"
    assert read == Read(("c2",)), "c1 is not restored: the platform's read discovers it"


def test_records_not_owned_known_already_or_repeated_are_left_alone() -> None:
    stored = [_stored("mine"), _stored("theirs"), _stored("known"), _stored("mine", S.STOPPED), {"campaignId": 7}]
    effects = restoring(stored, lambda cid: cid != "theirs", {"known"}, TRUST)
    assert [type(e) for e in effects] == [Restore, Read]
    restore = effects[0]
    assert isinstance(restore, Restore) and restore.campaign.current is S.RUNNING, "the first record of it"
    assert effects[1] == Read(("mine",))


# --- acquisition: the platform's truth --------------------------------------------------------


def test_the_platform_read_discovers_the_unknown_and_observes_the_restored() -> None:
    def owns(campaign_id: str) -> bool:
        return campaign_id != "theirs"

    known, restored = {"restored", "older"}, {"restored"}
    assert taking_over(_snapshot("new"), owns, known, restored) == Discover(_snapshot("new"))
    assert taking_over(_snapshot("restored"), owns, known, restored) == Observe(_snapshot("restored"))
    assert taking_over(_snapshot("older"), owns, known, restored) is None, "its own looks follow it"
    assert taking_over(_snapshot("theirs"), owns, known, restored) is None


# --- release ----------------------------------------------------------------------------------


async def test_a_campaign_given_away_flushes_its_events_and_owed_accepted_and_leaves_its_commands() -> None:
    held, waiting = _command("c1"), _command("c1", Action.PAUSE)
    record = _record("c1", held=held)
    assert record.campaign is not None
    machine = CampaignMachine()
    first = machine.adopt("c1", S.RUNNING, DialerType.PREDICTIVE, at=NOW)[1]
    record.unsent.extend([(record.campaign.chain(first), ()),
                          (record.campaign.chain(first), (_result(waiting, Outcome.REFUSED),))])
    accepted = _result(held, Outcome.ACCEPTED)
    record.owed = (accepted, None)
    future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
    record.inbox.append((Admitted(waiting, "commands:0@9"), future))
    kept = _record("c2")
    assert leaving([record, kept], lambda cid: cid == "c2") == (record,)
    before = (record.store(), list(record.unsent), record.owed, list(record.inbox), record.held)
    give = handing_over(record)
    assert (record.store(), list(record.unsent), record.owed, list(record.inbox), record.held) == before
    assert give == GiveAway("c1", events=2, answered=(accepted, _result(waiting, Outcome.REFUSED)),
                            redelivered=(str(waiting.id),), slot=False)
    assert not future.done(), "deciding answers nothing"


def test_a_campaign_given_away_with_nothing_unsent_answers_nothing() -> None:
    record = _record("c1", held=_command("c1"))
    assert handing_over(record) == GiveAway("c1")
    assert handing_over(CampaignRecord("never-read")) == GiveAway("never-read")


def test_unsubscribing_keeps_a_contact_list_a_kept_campaign_still_uses() -> None:
    gone = [_record("a", contact_list="shared"), _record("b", contact_list="only-b"), CampaignRecord("c")]
    kept = [_record("d", contact_list="shared")]
    assert unsubscribing(gone, kept) == Subscribe(("a", "b", "c"), ("only-b",))


@pytest.mark.parametrize("owned", [set(), {"a"}])
def test_leaving_is_what_the_new_assignment_no_longer_covers(owned: set[str]) -> None:
    records = [_record("a"), _record("b")]
    assert [r.id for r in leaving(records, owned.__contains__)] == sorted({"a", "b"} - owned)


def test_subscribing_asks_for_the_campaigns_taken_on_and_their_contact_lists() -> None:
    taken = [_record("a", contact_list="l2"), _record("b", contact_list="l1"), _record("c", contact_list="l2"),
             CampaignRecord("d")]
    assert subscribing(taken) == Subscribe(("a", "b", "c", "d"), ("l1", "l2"))
