"""The organisation's active-campaign cap: how many campaigns are active, and who waits for a place.

Genesys Cloud runs at most 50 voice campaigns at once per organisation (25 digital; Genesys help,
"Limitations with outbound dialer"); a campaign counts while it is `on`, `stopping` or
`forced_stopping`, and the 51st start fails. Every instance of this service drives campaigns of the
same organisation, so no instance can count alone: the count is one list read of the organisation's
campaigns (shared for `ttl` by every command of this instance), merged with what this instance knows
better than that read:

- its own openings past the gate (a start queued for its dialer slot, sent, or STARTING): each holds
  a place from the moment it passed, whatever the read says;
- its campaigns observed after the read was taken: their own state wins (a stop seen a second ago
  frees its place without waiting for the next read).

Instances do not see each other's openings until the next read, so in one read's lifetime each
instance takes at most its share of the places that read left free: ceil(free / instances)
(`OrgRead.quota`, `instances` from configuration). Together they then take at most
`instances - 1` places too many per read (the rounding), instead of every free place once per
instance. Such an overflow, or a campaign this service cannot see, meets the platform's own refusal:
that command ends FAILED `ACTIVE_CAMPAIGN_CAP` (fsm/dispatch.py), never retried in a loop.

Among the openings of one instance that wait for a place, HIGH goes before STANDARD and first in
before later (`CapLine`). Across instances the order is best effort.

The decision itself (`check_active_cap`) is a pre-flight gate, in fsm/preflight.py. Nothing here reads
a clock or the platform.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from schemas.types import Action, CampaignState, Priority

__all__ = ["ACTIVE_STATES", "OPENING_ACTIONS", "CapLine", "CapPolicy", "LocalView", "OrgRead", "count_active",
           "share"]

S = CampaignState

# The seven states a platform campaign counts in (Genesys: on, stopping, forced_stopping; a pausing
# campaign shows `stopping` there). STOPPED, PAUSED and FAILED free the place.
ACTIVE_STATES = frozenset({S.STARTING, S.RUNNING, S.PAUSING, S.STOPPING})
# The actions that make an inactive campaign active, and so need a place.
OPENING_ACTIONS = frozenset({Action.START, Action.RESUME})


@dataclass(frozen=True, slots=True)
class CapPolicy:
    """`limit` None: no cap. `ttl`: how long one organisation-wide read is reused (it costs one GET
    per 100 campaigns). `recheck`: how soon a held opening looks again if nothing pokes it first."""

    limit: int | None = None
    ttl: float = 15.0
    recheck: float = 5.0
    instances: int = 1  # instances sharing the organisation (each takes its share of a read's free places)

    def __post_init__(self) -> None:
        if isinstance(self.instances, bool) or not isinstance(self.instances, int) or self.instances < 1:
            raise ValueError(f"CapPolicy.instances must be an integer >= 1, got {self.instances!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise ValueError(f"CapPolicy.limit must be None or an integer >= 1, got {self.limit!r}")
        for name in ("ttl", "recheck"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"CapPolicy.{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class LocalView:
    """What this instance knows of one of its campaigns. `observed_at` is on the same monotonic
    clock as the organisation read's time; `reserved`: an opening of it passed the gate."""

    campaign_id: str
    active: bool
    observed_at: float | None
    reserved: bool = False


@dataclass(slots=True)
class OrgRead:
    """One read of the organisation's active campaigns (`read_at` on the monotonic clock), the places
    this instance may still take before the next read (`quota`), and how many it took (`admitted`)."""

    read_at: float
    active: frozenset[str]
    quota: int | None  # None: one instance alone, bound by the count only
    admitted: int = 0

    @property
    def quota_left(self) -> int | None:
        return None if self.quota is None else self.quota - self.admitted


def share(free: int, instances: int) -> int:
    """This instance's share of `free` places: rounded up, so a last place is never left to no one."""
    return -(-max(0, free) // max(1, instances))


def count_active(read: Iterable[str], read_at: float | None, local: Iterable[LocalView]) -> frozenset[str]:
    """The campaigns that hold a place: the organisation read, corrected by fresher local knowledge.

    `read` are the ids the read showed active, taken at `read_at` (None: no read yet, local only).
    """
    active = set(read)
    for view in local:
        if view.reserved:
            active.add(view.campaign_id)
        elif view.observed_at is not None and (read_at is None or view.observed_at >= read_at):
            if view.active:
                active.add(view.campaign_id)
            else:
                active.discard(view.campaign_id)
    return frozenset(active)


class CapLine:
    """Openings of this instance waiting for a place: HIGH first, then STANDARD, first in first out.

    Keyed by command id (a campaign holds one command at a time); each entry names its campaign so
    a freed place can poke the right one.
    """

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines: dict[Priority, dict[str, str]] = {Priority.HIGH: {}, Priority.STANDARD: {}}

    def join(self, command_id: str, campaign_id: str, priority: Priority) -> None:
        """Take a place in line (idempotent: a command keeps the place it first took)."""
        priority = Priority(priority)
        if command_id in self._lines[priority]:
            return
        self.leave(command_id)
        self._lines[priority][command_id] = campaign_id

    def leave(self, command_id: str) -> bool:
        return any(line.pop(command_id, None) is not None for line in self._lines.values())

    def ahead(self, command_id: str, priority: Priority) -> int:
        """How many waiting openings go before this one (all of its class and above if not in line)."""
        high, standard = self._lines[Priority.HIGH], self._lines[Priority.STANDARD]
        if Priority(priority) is Priority.HIGH:
            return _position(high, command_id)
        return len(high) + _position(standard, command_id)

    def retain(self, alive: Callable[[str, str], bool]) -> None:
        """Forget entries whose command is no longer held (let go by a path that did not say so)."""
        for line in self._lines.values():
            for command_id, campaign_id in list(line.items()):
                if not alive(command_id, campaign_id):
                    del line[command_id]

    def first(self, count: int) -> list[str]:
        """The campaigns of the first `count` openings in line, in order."""
        if count <= 0:
            return []
        order = [*self._lines[Priority.HIGH].values(), *self._lines[Priority.STANDARD].values()]
        return order[:count]

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def __contains__(self, command_id: object) -> bool:
        return any(command_id in line for line in self._lines.values())


def _position(line: dict[str, str], command_id: str) -> int:
    for index, key in enumerate(line):
        if key == command_id:
            return index
    return len(line)
