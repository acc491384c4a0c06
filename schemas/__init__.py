"""The contract: every message campaign-fsm reads or writes, as pydantic v2 models."""

from .base import ContractError, decode, encode
from .commands import Command, CommandResult
from .events import CampaignStateChanged, CampaignStateChangedEvent, state_changed_event
from .types import Action, Anomaly, CampaignState, Cause, DialerType, Outcome, Priority, ReasonCode

__all__ = [
    "Action",
    "Anomaly",
    "CampaignState",
    "CampaignStateChanged",
    "CampaignStateChangedEvent",
    "Cause",
    "Command",
    "CommandResult",
    "ContractError",
    "DialerType",
    "Outcome",
    "Priority",
    "ReasonCode",
    "decode",
    "encode",
    "state_changed_event",
]
