"""Admission: which commands may reach a campaign's state gate at all.

Authentication happens as a command arrives, before it is queued for its campaign: what is
queued is either admitted or already refused, so no later path (a look busy with other work, a
command arriving meanwhile) can skip it, and nothing unauthenticated costs a platform read.

Each command carries the origin of the record it came in (`topic:partition@offset`). The same
record delivered again (a crash before its offset was committed) is a *redelivery*: acknowledged
without acting; a refused record delivered again (a rebalance before its offset was committed) is
answered with its first refusal, which is not published twice (memory bounded, not across restarts).
The same command id in any other record is a *replay*: refused REPLAYED. The ids
of the commands a campaign took within the freshness window are kept in its `campaign.state`
record (`Campaign.recent`), so a restart or a new owner refuses replays too. Ids are compared by
`id_key` (case-insensitively) and echoed in every result exactly as they came.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from schemas.commands import Command, CommandResult, id_key
from schemas.types import Outcome, ReasonCode

from .core import Core, answer
from .machine import Campaign
from .record import Admitted

__all__ = ["Admission"]

_log = logging.getLogger("fsm.orchestrator")


class Admission(Core):
    def _admit(self, command: Command, origin: str | None,
               future: asyncio.Future[CommandResult]) -> asyncio.Future[CommandResult]:
        """Queue `command` for its campaign's look, admitted or refused; the future its intake waits on."""
        command_id = id_key(command.id)  # one id in any spelling: a re-sent id in upper case is a replay
        seen = self._seen.get(command_id)
        if seen is not None and seen[0] == origin:
            if seen[1] is not None and not seen[1].done():
                return seen[1]  # its first delivery is still being handled: one answer serves both
            _log.info("command %s for %s: a redelivery of a record already taken; nothing to do",
                      command_id, command.campaign_id)
            answer(future, self._result(command, Outcome.REFUSED, ReasonCode.REPLAYED,
                                        "redelivery of a record already taken: nothing to do", None))
            return future
        if origin is not None and (first := self._refused_before(origin, command_id)) is not None:
            if not first.done():
                return first
            _log.info("command %s for %s: a redelivery of a record already refused; not published again",
                      command_id, command.campaign_id)
            answer(future, first.result())
            return future
        refusal = self._authenticate(command, reused=seen is not None)
        if refusal is not None:
            if origin is not None:
                self._refused[origin] = (command_id, future)
                while len(self._refused) > self.config.remembered_commands:
                    self._refused.popitem(last=False)
            # Published at once, beside the campaign's looks rather than queued behind them: a flood
            # of forgeries at one campaign neither waits on its reads nor delays its real commands,
            # and the sink takes the refusals together.
            task = asyncio.create_task(self._publish(refusal, future), name=f"refusal:{command_id}")
            self._answering.add(task)
            task.add_done_callback(functools.partial(self._answered, future))
            return future
        self._remember(command_id, origin, future)
        future.add_done_callback(functools.partial(self._unless_taken, command_id, command.campaign_id))
        self._record(command.campaign_id).inbox.append((Admitted(command, origin), future))
        self._queue.hint(command.campaign_id)
        return future

    def _refused_before(self, origin: str, command_id: str) -> asyncio.Future[CommandResult] | None:
        """The refusal already decided for this very record (a redelivery after a rebalance or a
        failed commit), unless its publication failed: then it is judged and published again."""
        prior = self._refused.get(origin)
        if prior is None or prior[0] != command_id:
            return None
        first = prior[1]
        if first.done() and (first.cancelled() or first.exception() is not None):
            del self._refused[origin]
            return None
        return first

    def _answered(self, future: asyncio.Future[CommandResult], task: asyncio.Task[None]) -> None:
        self._answering.discard(task)
        if task.cancelled():
            future.cancel()
        elif (exc := task.exception()) is not None:
            _log.error("%s could not be published: %r", task.get_name(), exc)
            if not future.done():
                future.set_exception(exc)  # the intake answers or redelivers that record

    def _authenticate(self, command: Command, *, reused: bool) -> CommandResult | None:
        """Signature, freshness and replay: the refusal, or None when the command is admitted."""
        if self.authority is not None:
            decision = self.authority.authenticate(command, self._auth_now())
            if not decision.allowed:
                assert decision.reason is not None
                return self._refusal(command, decision.reason, decision.detail)
        if reused:
            return self._refusal(command, ReasonCode.REPLAYED,
                                 f"command id {command.id} was already taken from another record")
        record = self._records.get(command.campaign_id)
        horizon = record.campaign.replay_horizon if record is not None and record.campaign is not None else None
        if horizon is not None and command.issued_at.timestamp() <= horizon:
            return self._refusal(command, ReasonCode.STALE_COMMAND,
                                 "issued before this campaign's replay memory horizon (too many recent commands "
                                 "to prove this one new); send it again with a new id and a fresh issuedAt")
        return None

    def _refusal(self, command: Command, reason: ReasonCode, detail: str) -> CommandResult:
        self.auth_refusals[reason] += 1
        return self._result(command, Outcome.REFUSED, reason, detail, None)

    def _unless_taken(self, command_id: str, campaign_id: str, future: asyncio.Future[CommandResult]) -> None:
        """Its first result is durable: keep the id, drop the future. Failed or cancelled (handed over
        to another owner) before that: forget it, so the same record delivered again is new."""
        seen = self._seen.get(command_id)
        if seen is None or seen[1] is not future:
            return
        if not future.cancelled() and future.exception() is None:
            self._seen[command_id] = (seen[0], None)
            return
        del self._seen[command_id]
        if self.authority is not None:
            self.authority.forget(command_id)
        record = self._records.get(campaign_id)
        if record is not None and record.campaign is not None and command_id in record.campaign.recent:
            del record.campaign.recent_for_update()[command_id]

    def _note_taken(self, campaign: Campaign, command: Command, origin: str | None) -> None:
        """Put the command's id into the campaign's replay memory (durable with its first answer),
        dropping ids past the freshness window; beyond the per-campaign bound the oldest goes and
        its issuedAt becomes the horizon at or before which nothing can be proven new (fail closed)."""
        recent = campaign.recent_for_update()
        recent[id_key(command.id)] = (command.issued_at.timestamp(), origin)
        cutoff = self._auth_now() - self._replay_window()
        for expired in [i for i, (issued, _) in recent.items() if issued < cutoff]:
            del recent[expired]
        while len(recent) > self.config.replay_memory:
            oldest = min(recent, key=lambda i: recent[i][0])
            issued = recent.pop(oldest)[0]
            campaign.replay_horizon = max(campaign.replay_horizon or issued, issued)

    def _replay_window(self) -> float:
        return self.authority.max_age_s if self.authority is not None else self.config.replay_window
