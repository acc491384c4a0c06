"""The transition table: the one source that drives the machine, the state diagram and the tests.

Two kinds of move exist. A *command edge* is a move we ask for (guide section 2): the model takes it
at once, entering the transitional state, and the platform finishes it later. A *platform edge* is a
move the platform makes on its own schedule (guide section 1, "directional rules"); we only ever
observe those. Everything else in this module is derived from these two tables.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from schemas.types import TERMINAL_STATES, TRANSITIONAL_STATES, Action, CampaignState, ReasonCode

__all__ = [
    "ALL_ACTIONS",
    "COMMAND_EDGES",
    "NO_OPS",
    "PLATFORM_EDGES",
    "PLATFORM_STATE",
    "STABLE_STATES",
    "CommandEdge",
    "legal_actions",
    "refusal_reason",
    "shortest_path",
]

S = CampaignState
A = Action

# A destination that is not a state: reset goes to the state the platform reports when it is read
# (guide section 2: never publish a state the platform has not reported).
PLATFORM_STATE = "PLATFORM_STATE"

STABLE_STATES: tuple[CampaignState, ...] = (S.STOPPED, S.RUNNING, S.PAUSED)
ALL_ACTIONS: tuple[Action, ...] = tuple(Action)


@dataclass(frozen=True, slots=True)
class CommandEdge:
    action: Action
    source: CampaignState
    dest: CampaignState | str  # a state, or PLATFORM_STATE
    note: str


COMMAND_EDGES: tuple[CommandEdge, ...] = (
    CommandEdge(A.START, S.STOPPED, S.STARTING, "POST /start"),
    CommandEdge(A.PAUSE, S.RUNNING, S.PAUSING, "POST /pause"),
    CommandEdge(A.RESUME, S.PAUSED, S.STARTING, "POST /resume (RESUMING maps to STARTING)"),
    CommandEdge(A.STOP, S.RUNNING, S.STOPPING, "POST /stop"),
    CommandEdge(A.STOP, S.PAUSED, S.STOPPING, "POST /stop"),
    CommandEdge(A.RESET, S.FAILED, PLATFORM_STATE, "local: the platform is read; the state it reports"),
)

# Guide section 1, verbatim. FAILED has no platform edge out: only a reset leaves it.
PLATFORM_EDGES: dict[CampaignState, tuple[CampaignState, ...]] = {
    S.STOPPED: (S.STARTING,),
    S.STARTING: (S.RUNNING, S.FAILED),
    S.RUNNING: (S.PAUSING, S.STOPPING),
    S.PAUSING: (S.PAUSED, S.FAILED),
    S.PAUSED: (S.STARTING, S.STOPPING),
    S.STOPPING: (S.STOPPED, S.FAILED),
    S.FAILED: (),
}

# Asking for the state the campaign is already in is an idempotent no-op, reported but not an error.
# A reset of a campaign that is not FAILED (an observation cleared it first, as the runbook's order
# "fix it on the platform, then reset" makes likely) has nothing left to do.
NO_OPS: frozenset[tuple[Action, CampaignState]] = frozenset(
    {(A.START, S.RUNNING), (A.RESUME, S.RUNNING), (A.PAUSE, S.PAUSED), (A.STOP, S.STOPPED),
     (A.RESET, S.STOPPED), (A.RESET, S.RUNNING), (A.RESET, S.PAUSED)}
)

assert set(PLATFORM_EDGES) == set(CampaignState)
assert TERMINAL_STATES | TRANSITIONAL_STATES == set(CampaignState)


def legal_actions(state: CampaignState, supported: frozenset[Action]) -> tuple[Action, ...]:
    """The actions that would move a campaign in `state` on a platform supporting `supported`."""
    return tuple(e.action for e in COMMAND_EDGES if e.source == state and e.action in supported)


def refusal_reason(state: CampaignState, action: Action, supported: frozenset[Action]) -> ReasonCode:
    """Why the machine has no edge for `action` from `state`. Derived, so it cannot drift from the table.

    The order is the guide's: the platform's capability first (a permanent answer), then the state
    gate (wait for the transition in flight), then the idempotent no-op, then plain illegality.
    """
    if action not in supported:
        return ReasonCode.UNSUPPORTED_BY_PLATFORM
    if state in TRANSITIONAL_STATES:
        return ReasonCode.TRANSITION_IN_FLIGHT
    if (action, state) in NO_OPS:
        return ReasonCode.ALREADY_IN_STATE
    return ReasonCode.ILLEGAL_TRANSITION


def shortest_path(source: CampaignState, dest: CampaignState) -> tuple[CampaignState, ...] | None:
    """The states strictly between `source` and `dest` along platform edges, or None if unreachable."""
    if source == dest:
        return ()
    parent: dict[CampaignState, CampaignState] = {}
    queue = deque([source])
    seen = {source}
    while queue:
        here = queue.popleft()
        for nxt in PLATFORM_EDGES[here]:
            if nxt in seen:
                continue
            parent[nxt] = here
            if nxt == dest:
                path = []
                step = parent[nxt]
                while step != source:
                    path.append(step)
                    step = parent[step]
                return tuple(reversed(path))
            seen.add(nxt)
            queue.append(nxt)
    return None
