"""The state gate for admitted commands: policy, `notBefore`, the machine's verdict, reset.

Every answer is durable together with the campaign's record, whose replay memory then holds the
command's id (an ACCEPTED with the record's next write, `CampaignRecord.owed`). An accepted command
is *held* (`fsm/held.py`) and moves on in dispatch (`fsm/dispatch.py`); a held command is a
transition in flight for the gate, so any other command for that campaign is refused
TRANSITION_IN_FLIGHT, the no-op pairs included.

Decisions, then effects: `Intake._decide` looks at the campaign and the command and returns what is
to be done, as values (`Remember` its id, `Answer` it, `Schedule` it for its `notBefore`, `Hold` it
for dispatch, read the platform for a `Reset`), changing nothing; `Intake._intake` applies them in
order. What a command calls for can so be tested, and told apart from doing it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from schemas.commands import Command, CommandResult
from schemas.events import rfc3339
from schemas.types import Action, CampaignState, Cause, Outcome, ReasonCode

from .admission import Admission
from .authorization import AuthDecision, held_until
from .core import answer
from .held import HeldCommand
from .intent import interpret
from .machine import Decision
from .ports import PlatformError, PlatformNotFound
from .record import Admitted, CampaignRecord

__all__ = ["Answer", "Effect", "Hold", "Intake", "Remember", "Reset", "Schedule"]


@dataclass(frozen=True, slots=True)
class Remember:
    """The command's id goes into the campaign's replay memory (durable with its first answer)."""

    command: Command
    origin: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The command's result, durable with the campaign's record; then its intake is answered."""

    result: CommandResult


@dataclass(frozen=True, slots=True)
class Schedule:
    """The command waits for its `notBefore` among the campaign's scheduled ones; its DEFERRED is
    durable with them (and the command is not kept if that write fails)."""

    command: Command
    result: CommandResult


@dataclass(frozen=True, slots=True)
class Hold:
    """Accepted by the machine: held for dispatch, its ACCEPTED owed to the record's next durable write."""

    command: Command
    decision: Decision
    result: CommandResult


@dataclass(frozen=True, slots=True)
class Reset:
    """A reset, decided on what the platform reports: read first (`Intake._reset`)."""

    command: Command


Effect = Remember | Answer | Schedule | Hold | Reset


class Intake(Admission):
    async def _intake(self, record: CampaignRecord, admitted: Admitted,
                      future: asyncio.Future[CommandResult] | None, *, released: bool = False) -> None:
        """Decide what the command calls for (`_decide`), then do it, effect by effect, in order."""
        campaign = record.campaign
        assert campaign is not None
        # One at a time: the command before this one has its answer durable before this one is judged.
        await self._pay(record)
        policy: AuthDecision | None = None
        if not released and self.authority is not None:
            policy = self.authority.authorise(admitted.command, dialer_id=campaign.dialer_id)
            if not policy.allowed:
                assert policy.reason is not None
                self.auth_refusals[policy.reason] += 1
        for effect in self._decide(record, admitted, policy, released=released):
            await self._apply(record, effect, future)

    def _decide(self, record: CampaignRecord, admitted: Admitted, policy: AuthDecision | None, *,
                released: bool = False) -> tuple[Effect, ...]:
        """What an admitted command calls for, given the policy's verdict on it: changes nothing.

        A command taken now is remembered (replay memory), then refused by the policy, set to wait
        for its `notBefore`, or gated by the machine (a reset on the platform's word, read first).
        A command released from its `notBefore` was remembered and authorised when it arrived.
        """
        campaign = record.campaign
        assert campaign is not None
        command = admitted.command
        taken: tuple[Effect, ...] = ()
        if not released:
            taken = (Remember(command, admitted.origin),)
            if policy is not None and not policy.allowed:
                return (*taken, Answer(self._result(command, Outcome.REFUSED, policy.reason, policy.detail,
                                                    campaign.current)))
            now = self.clock.now()
            not_before = held_until(command, now)
            if not_before is not None:
                return (*taken, self._waiting(record, command, not_before, now))
        if command.action is Action.RESET:
            return (*taken, Reset(command))
        if command.recycle and not self.platform.supports_recycle:
            return (*taken, Answer(self._result(command, Outcome.REFUSED, ReasonCode.UNSUPPORTED_BY_PLATFORM,
                                                f"the {self.platform.profile} profile keeps no progress to recycle",
                                                campaign.current, legal=self.machine.legal(campaign))))
        decision = self.machine.judge(campaign, command.action, command_id=str(command.id),
                                      expected_state=command.expected_state)
        if not decision.accepted:
            # A recycle asked of a campaign already dialing would be "done" without being done.
            done = decision.reason is ReasonCode.ALREADY_IN_STATE and not command.recycle
            message = (decision.message if not command.recycle or decision.reason is not ReasonCode.ALREADY_IN_STATE
                       else f"campaign is already {decision.state}: stop it, then start with recycle")
            return (*taken, Answer(self._result(command, Outcome.COMPLETED if done else Outcome.REFUSED,
                                                decision.reason, message, decision.state, legal=decision.legal)))
        return (*taken, Hold(command, decision, self._result(command, Outcome.ACCEPTED, None,
                                                             f"{command.action} accepted; pre-flight next",
                                                             campaign.current)))

    def _waiting(self, record: CampaignRecord, command: Command, not_before: float, now: float) -> Effect:
        assert record.campaign is not None
        state = record.campaign.current
        waiting = len(record.scheduled)
        if not_before - now > self.config.not_before_horizon:
            return Answer(self._result(command, Outcome.REFUSED, ReasonCode.NOT_BEFORE_TOO_FAR,
                                       f"notBefore {rfc3339(not_before)} is more than "
                                       f"{self.config.not_before_horizon:g} s ahead", state))
        if waiting >= self.config.max_scheduled:
            return Answer(self._result(command, Outcome.REFUSED, ReasonCode.TOO_MANY_WAITING,
                                       f"{waiting} commands already wait for their notBefore on this campaign "
                                       f"(at most {self.config.max_scheduled})", state))
        return Schedule(command, self._result(command, Outcome.DEFERRED, ReasonCode.SCHEDULED,
                                              f"held until {rfc3339(not_before)}", state, next_attempt=not_before))

    async def _apply(self, record: CampaignRecord, effect: Effect,
                     future: asyncio.Future[CommandResult] | None) -> None:
        campaign = record.campaign
        assert campaign is not None
        if isinstance(effect, Remember):
            self._note_taken(campaign, effect.command, effect.origin)
        elif isinstance(effect, Answer):
            await self._save(record, effect.result, future)
        elif isinstance(effect, Schedule):
            record.scheduled.append(effect.command)
            try:
                await self._save(record, effect.result, future)
            except BaseException:
                if effect.command in record.scheduled:
                    record.scheduled.remove(effect.command)
                raise
        elif isinstance(effect, Reset):
            await self._reset(record, effect.command, future)
        else:
            command_id = str(effect.command.id)
            self.machine.hold(campaign, command_id)
            record.held = HeldCommand(effect.command, decision=effect.decision)
            # A restart must find the held command: its ACCEPTED is durable only with (or after) it,
            # in the record's next write. When the command goes straight to its POST in this look,
            # that is the write saying the POST may have left; when it waits, the look writes it
            # before it waits (`Core._pay`). Until then the intake waits: no offset is committed.
            record.owed = (effect.result, future)

    async def _release_scheduled(self, record: CampaignRecord) -> None:
        """Commands whose `notBefore` has come go through intake now: the state gate applies *now*."""
        if not record.scheduled:
            return
        now = self.clock.now()
        due = [c for c in record.scheduled if held_until(c, now) is None]
        if not due:
            return
        record.scheduled = [c for c in record.scheduled if c not in due]
        for command in due:
            await self._intake(record, Admitted(command, None), None, released=True)
        if not record.scheduled:
            await self._store(record)

    async def _reset(self, record: CampaignRecord, command: Command,
                     future: asyncio.Future[CommandResult] | None) -> None:
        """Leave FAILED for the state the platform reports, read now: never for one it has not reported.

        A campaign no longer FAILED (an observation cleared it, as when the runbook's "fix it on the
        platform, then reset" is followed) makes the reset an idempotent success.
        """
        campaign = record.campaign
        assert campaign is not None
        command_id = str(command.id)
        check = self.machine.command(campaign, Action.RESET, at=self.clock.now(), command_id=command_id,
                                     expected_state=command.expected_state, dry_run=True)
        if not check.accepted and check.reason is not ReasonCode.ILLEGAL_TRANSITION:
            outcome = Outcome.COMPLETED if check.reason is ReasonCode.ALREADY_IN_STATE else Outcome.REFUSED
            message = (f"campaign is {check.state}, not FAILED: nothing to reset"
                       if check.reason is ReasonCode.ALREADY_IN_STATE else check.message)
            await self._save(record, self._result(command, outcome, check.reason, message, check.state,
                                                  legal=check.legal), future)
            return
        # The platform's word first: the reset's result then rides with its event (a kill between
        # the two would otherwise leave a reset done and, redelivered, refused as illegal).
        try:
            snapshot = await self.platform.get_campaign(campaign.id)
        except PlatformError as exc:
            await self._save(record, self._result(command, Outcome.FAILED, ReasonCode.PLATFORM_ERROR,
                                                  f"the campaign could not be read ({type(exc).__name__}); "
                                                  "nothing reset", campaign.current), future)
            return
        reported = snapshot.state
        if reported is not None:  # a status that cannot tell a pause from a stop: our intent reads it
            reported = interpret(campaign.intent, reported, intent_decides=snapshot.intent_decides)
        if reported is None or reported is CampaignState.FAILED:
            said = snapshot.platform_status if reported is None else "FAILED"
            await self._observe(record, snapshot, Cause.RECONCILE)
            await self._save(record, self._result(
                command, Outcome.FAILED, ReasonCode.TRANSITION_FAILED,
                f"the platform still reports {said}: fix the campaign on the platform, then reset (runbook)",
                campaign.current), future)
            return
        campaign.dialer_id = snapshot.dialer_id or campaign.dialer_id
        campaign.contact_list_id = snapshot.contact_list_id or campaign.contact_list_id
        record.observed_at = self.clock.monotonic()
        decision = self.machine.command(campaign, Action.RESET, at=self.clock.now(), command_id=command_id,
                                        expected_state=command.expected_state, reported=reported)
        assert decision.accepted and decision.change is not None, decision
        decision.change.platform_status = snapshot.platform_status
        campaign.platform_status = snapshot.platform_status
        result = self._result(command, Outcome.COMPLETED, None, f"reset: the platform reports {reported}", reported)
        await self._emit(record, decision.change, (result,))
        answer(future, result)
        if campaign.in_flight:  # the platform is itself in a transition: followed like any observed one
            self._track(record, None, None, self.clock.now())

    async def _discover_for_command(self, record: CampaignRecord) -> bool:
        """Read a campaign a command names for the first time. False: the platform has no such campaign."""
        try:
            snapshot = await self.platform.get_campaign(record.id)
        except PlatformNotFound:
            return False
        await self._discover(snapshot, Cause.RECONCILE)
        if self.notifications is not None:
            await self.notifications.subscribe_campaigns([record.id])
            if record.campaign is not None and record.campaign.contact_list_id:
                await self.notifications.subscribe_contact_lists([record.campaign.contact_list_id])
        return True

    async def _refuse_unknown(self, record: CampaignRecord) -> None:
        while record.inbox:
            item, future = record.inbox.popleft()
            await self._publish(self._result(item.command, Outcome.REFUSED, ReasonCode.UNKNOWN_CAMPAIGN,
                                             "the platform has no such campaign", None), future)
