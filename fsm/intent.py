"""Our intent: why we turned a campaign off, for a platform that cannot tell a pause from a stop.

Genesys Cloud has one `off` (and one `stopping`) for both: a campaign turned off and on again
continues at its next record, whoever turned it off and why. A pause or a stop we send records its
intent on the campaign (`Campaign.intent`, stored in `campaign.state`, so a restart or a new owner
reads `off` the same way); while the platform shows a status that cannot tell (`intent_decides`
on the snapshot), the intent reads it: PAUSED (PAUSING) after a pause, STOPPED (STOPPING) after a
stop or with no intent at all. An intent the platform's word no longer bears out (the campaign
dials again, was forced off, ran out of contacts after a pause) is forgotten.

`halt_of` names, for an audit, why a campaign is not dialing (`Halt`): paused, stopped, the
platform's own reason (contacts exhausted, forced off), or off with no pause or stop of ours.
"""

from __future__ import annotations

from schemas.types import Action, CampaignState, Halt, Intent

__all__ = ["INTENT_OF", "halt_of", "interpret", "keeps"]

S = CampaignState

INTENT_OF: dict[Action, Intent] = {Action.PAUSE: Intent.PAUSE, Action.STOP: Intent.STOP}
_EXPLAINS: dict[Intent, frozenset[str]] = {
    Intent.PAUSE: frozenset({S.PAUSING.value, S.PAUSED.value}),
    Intent.STOP: frozenset({S.STOPPING.value, S.STOPPED.value}),
}
_AS_PAUSED: dict[CampaignState, CampaignState] = {S.STOPPED: S.PAUSED, S.STOPPING: S.PAUSING}


def interpret(intent: Intent | None, state: CampaignState, *, intent_decides: bool) -> CampaignState:
    """The state a reported one means: a status that cannot tell a pause from a stop is PAUSED
    (PAUSING) after a pause of ours, else what the profile reported (STOPPED, STOPPING)."""
    if intent_decides and intent is Intent.PAUSE:
        return _AS_PAUSED.get(state, state)
    return state


def keeps(intent: Intent, state: CampaignState, *, intent_decides: bool) -> bool:
    """Whether `intent` still explains an observation of `state` (read through `interpret`)."""
    return intent_decides or state.value in _EXPLAINS[intent]


def halt_of(intent: Intent | None, state: CampaignState, named: Halt | None) -> Halt | None:
    """Why a campaign in `state` is not dialing: the platform's own reason when it names one, else ours."""
    if named is not None:
        return named
    return _HALTS[(intent, state)]


def _ours(intent: Intent | None, state: CampaignState) -> Halt | None:
    if state is S.PAUSED:
        return Halt.PAUSED
    if state is S.STOPPED:
        return Halt.STOPPED if intent is Intent.STOP else Halt.OFF
    return None


# Every change carries one: looked up, not worked out (each member read off its enum class costs four times a name).
_HALTS: dict[tuple[Intent | None, CampaignState], Halt | None] = {
    (intent, state): _ours(intent, state) for intent in (None, *Intent) for state in CampaignState
}
