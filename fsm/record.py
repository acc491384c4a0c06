"""`CampaignRecord`: everything the orchestrator holds for one campaign, in one value.

The model (`Campaign`), the commands waiting for a look, the held command, the transition being
tracked, the dialer slot it holds, the newest notification, commands waiting for their `notBefore`,
events not yet taken by the sink, when the campaign was last observed, and an ACCEPTED result
still owed to the sink. The orchestrator keeps
one map of these; giving a campaign away is one removal, and what goes to `campaign.state` is
`store()` of it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from schemas.commands import Command, CommandResult
from schemas.state import StoredCommand
from schemas.types import Action

from .backoff import PollBackoff
from .held import HeldCommand, SlotLease, Stage
from .machine import Campaign
from .ports import CampaignSnapshot

__all__ = ["Admitted", "CampaignRecord", "Inbound", "Tracking"]


@dataclass(frozen=True, slots=True)
class Admitted:
    """A command that passed authentication (signature, freshness, replay) when it was submitted, or
    was verified again when restored. Only these reach the state gate, so no path can skip it."""

    command: Command
    origin: str | None


# An admitted command waiting for its campaign's look, and the future its intake waits on.
Inbound = tuple[Admitted, asyncio.Future[CommandResult]]


@dataclass(slots=True)
class Tracking:
    """A transition in flight, ours (`command_id`) or one we only observed."""

    command_id: str | None
    action: Action | None
    backoff: PollBackoff
    next_poll: float


@dataclass(slots=True, eq=False)
class CampaignRecord:
    id: str
    campaign: Campaign | None = None  # None until the platform has been read for it
    inbox: deque[Inbound] = field(default_factory=deque)
    held: HeldCommand | None = None
    tracking: Tracking | None = None
    lease: SlotLease | None = None  # the dialer slot of the held command, then of its transition
    latest: CampaignSnapshot | None = None  # the newest notification body not applied yet
    scheduled: list[Command] = field(default_factory=list)
    unsent: deque[tuple[dict[str, Any], tuple[CommandResult, ...]]] = field(default_factory=deque)
    observed_at: float | None = None  # monotonic time of the last observation
    confirm_at: float | None = None  # when to read the platform to confirm an anomalous notification
    confirmed_at: float | None = None  # when that was last done (confirmations are at most `fresh_for` apart)
    leaving: bool = False  # being handed over: no new look starts
    # The held command's ACCEPTED, not durable yet, and the future its intake waits on: it rides with
    # the record's next durable write (on the common path the one before the POST), and the look
    # makes it durable on its own before it ends, or before anything is published for the command.
    owed: tuple[CommandResult, asyncio.Future[CommandResult] | None] | None = None

    def give_back_slot(self) -> None:
        """The one place a dialer slot is given back (idempotent)."""
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def store(self) -> dict[str, Any]:
        """The `campaign.state` record: the campaign plus what it holds, so a restart loses nothing."""
        assert self.campaign is not None
        record = self.campaign.snapshot()
        held = self.held
        # As the producer sent them (value and signing headers): a restore verifies them again.
        record["heldCommand"] = StoredCommand.of(held.command) if held else None
        record["heldCommandSent"] = held.stage is Stage.SENT if held else None
        record["scheduledCommands"] = [StoredCommand.of(c) for c in self.scheduled] if self.scheduled else None
        return record
