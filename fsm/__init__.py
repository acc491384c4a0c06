"""The pure core: the campaign state machine, its table and its policies. No sockets, no clocks."""

from .machine import Campaign, CampaignMachine, Decision, StateChange
from .table import COMMAND_EDGES, PLATFORM_EDGES
from .windows import DEFAULT_WINDOWS, ToleranceWindows, WindowSpec

__all__ = [
    "COMMAND_EDGES",
    "DEFAULT_WINDOWS",
    "PLATFORM_EDGES",
    "Campaign",
    "CampaignMachine",
    "Decision",
    "StateChange",
    "ToleranceWindows",
    "WindowSpec",
]
