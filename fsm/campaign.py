"""A campaign as the machine sees it: a light, slotted model holding its own state, and the
numbered `StateChange`s it goes through (each one's CampaignStateChanged wire form and hash chain).

The shared `CampaignMachine` (fsm/machine.py) moves these values; it never adds them to itself, so
one process holds 100,000 of them. `snapshot`/`restore` are the campaign's part of its
`campaign.state` record (fsm/record.py stores the rest).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from schemas.events import event_hash, state_changed_event
from schemas.instants import epoch_of, epoch_stamp
from schemas.types import TRANSITIONAL_STATES, Action, CampaignState, Cause, DialerType, Halt, Intent, ReasonCode

from .table import STABLE_STATES

__all__ = ["Campaign", "StateChange"]

S = CampaignState
_STATE: dict[str, CampaignState] = {s.value: s for s in CampaignState}
# The shared text of each state, looked up: `.value` costs several times as much per campaign
# created, and `str()` of a member copies the text into every campaign.
_TEXT: dict[CampaignState, str] = {s: s.value for s in CampaignState}
_NOTHING_RECENT: Mapping[str, tuple[float, str | None]] = MappingProxyType({})


class Campaign:
    """One campaign as the model knows it. Mutated only by `CampaignMachine`."""

    __slots__ = (
        "_recent",
        "action",
        "command_id",
        "contact_list_id",
        "deadline",
        "dialer_id",
        "dialer_type",
        "entered_at",
        "held",
        "id",
        "intent",
        "last_hash",
        "last_stable",
        "platform_status",
        "replay_horizon",
        "sequence",
        "state",
    )

    def __init__(
        self,
        campaign_id: str,
        state: CampaignState,
        dialer_type: DialerType,
        *,
        dialer_id: str | None = None,
        contact_list_id: str | None = None,
        sequence: int = 0,
        entered_at: float = 0.0,
        deadline: float | None = None,
        last_stable: CampaignState | None = None,
        command_id: str | None = None,
        action: Action | None = None,
        platform_status: str | None = None,
    ) -> None:
        self.id = campaign_id
        self.state: str = _TEXT[state]
        self.dialer_type = dialer_type
        self.dialer_id = dialer_id
        self.contact_list_id = contact_list_id
        self.sequence = sequence
        self.entered_at = entered_at
        self.deadline = deadline
        self.last_stable = last_stable or (state if state in STABLE_STATES else S.STOPPED)
        self.command_id = command_id
        self.action = action
        self.platform_status = platform_status
        # A command the gate accepted that is still waiting (pre-flight, dialer queue) to be sent.
        # While held, the machine refuses every other command: it is a transition in flight too.
        self.held: str | None = None
        # Hash of this campaign's last published event: the next one carries it (audit chain).
        self.last_hash: str | None = None
        # Replay memory, stored with the campaign so whoever owns it next refuses replays too:
        # command id -> (issuedAt, record origin). Kept by the orchestrator, bounded by its window.
        # Made on its first command: an empty dict is 64 bytes, and in a large tenant most campaigns
        # go a whole shift without one.
        self._recent: dict[str, tuple[float, str | None]] | None = None
        self.replay_horizon: float | None = None
        # Why we last turned it off (pause or stop), while the platform shows a status that cannot
        # tell (Genesys `off`): how an observation of that status is read. Stored, so it survives.
        self.intent: Intent | None = None

    @property
    def recent(self) -> Mapping[str, tuple[float, str | None]]:
        """The replay memory, to read (`recent_for_update` to change it)."""
        return self._recent if self._recent is not None else _NOTHING_RECENT

    @recent.setter
    def recent(self, memory: Mapping[str, tuple[float, str | None]]) -> None:
        self._recent = dict(memory) if memory else None

    def recent_for_update(self) -> dict[str, tuple[float, str | None]]:
        if self._recent is None:
            self._recent = {}
        return self._recent

    @property
    def current(self) -> CampaignState:
        return _STATE[self.state]

    @property
    def in_flight(self) -> bool:
        return self.state in TRANSITIONAL_STATES

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to restore this campaign (the `campaign.state` record)."""
        return {
            "campaignId": self.id,
            "state": self.state,
            "dialerType": self.dialer_type.value,
            "dialerId": self.dialer_id,
            "contactListId": self.contact_list_id,
            "sequence": self.sequence,
            # Instants in the one timestamp format; those the core compares against rounded up
            # (schemas/instants.py), so a restore never moves a deadline or the replay horizon earlier.
            "enteredAt": epoch_stamp(self.entered_at),
            "deadline": None if self.deadline is None else epoch_stamp(self.deadline, up=True),
            "lastStable": self.last_stable.value,
            "commandId": self.command_id,
            "action": self.action.value if self.action else None,
            "platformStatus": self.platform_status,
            "held": self.held,
            "lastHash": self.last_hash,
            "recentCommands": [[i, epoch_stamp(at, up=True), origin] for i, (at, origin) in self.recent.items()],
            "replayHorizon": None if self.replay_horizon is None else epoch_stamp(self.replay_horizon, up=True),
            "intent": self.intent.value if self.intent else None,
        }

    @classmethod
    def restore(cls, record: dict[str, Any]) -> Campaign:
        """The campaign of a `campaign.state` record; its instants may be RFC 3339 text or, in records
        written before the one timestamp format, epoch seconds (ValueError/TypeError on anything else)."""
        deadline = record.get("deadline")
        campaign = cls(
            record["campaignId"],
            CampaignState(record["state"]),
            DialerType(record["dialerType"]),
            dialer_id=record.get("dialerId"),
            contact_list_id=record.get("contactListId"),
            sequence=int(record["sequence"]),
            entered_at=epoch_of(record["enteredAt"]),
            deadline=None if deadline is None else epoch_of(deadline),
            last_stable=CampaignState(record["lastStable"]),
            command_id=record.get("commandId"),
            action=Action(record["action"]) if record.get("action") else None,
            platform_status=record.get("platformStatus"),
        )
        campaign.held = record.get("held")
        campaign.last_hash = record.get("lastHash")
        campaign.recent = {
            str(command_id).lower(): (epoch_of(issued), origin if isinstance(origin, str) else None)
            for command_id, issued, origin in record.get("recentCommands") or ()
        }
        horizon = record.get("replayHorizon")
        campaign.replay_horizon = epoch_of(horizon) if horizon is not None else None
        campaign.intent = Intent(record["intent"]) if record.get("intent") else None
        return campaign

    def chain(self, change: StateChange, wall: float | None = None) -> dict[str, Any]:
        """The wire event of `change`, carrying the hash of this campaign's previous event; the
        campaign remembers the new event's hash for the next one (the audit's hash chain). `wall`:
        see `state_changed_event`."""
        event = change.event(wall)
        if self.last_hash is not None:
            event["data"]["prevHash"] = self.last_hash
        self.last_hash = event_hash(event)
        return event

    def __repr__(self) -> str:
        return f"Campaign({self.id!r}, {self.state}, {self.dialer_type.value}, seq={self.sequence})"


@dataclass(slots=True)
class StateChange:
    """One state change, numbered. `event()` is its CampaignStateChanged wire form."""

    campaign_id: str
    sequence: int
    from_state: CampaignState | None
    to_state: CampaignState
    cause: Cause
    at: float
    dialer_type: DialerType
    dialer_id: str | None = None
    action: Action | None = None
    command_id: str | None = None
    anomaly: dict[str, Any] | None = None
    reason: ReasonCode | None = None
    errors: list[dict[str, str]] | None = None
    platform_status: str | None = None
    request: dict[str, Any] | None = None
    intent: Intent | None = None
    halt: Halt | None = None

    def event(self, wall: float | None = None) -> dict[str, Any]:
        # What every event has by position: given sixteen or more keyword arguments, CPython 3.11
        # builds a dict for the call, which made building an event half as slow again (+0.6 us).
        return state_changed_event(
            self.campaign_id, self.sequence, self.from_state, self.to_state, self.cause, self.at, self.dialer_type,
            dialer_id=self.dialer_id,
            action=self.action,
            command_id=self.command_id,
            anomaly=self.anomaly,
            reason=self.reason,
            errors=self.errors,
            platform_status=self.platform_status,
            request=self.request,
            wall=wall,
            # The members themselves, as for the states above: a StrEnum is its text on the wire.
            intent=self.intent,
            halt=self.halt,
        )
