"""Dialer-aware tolerance windows (guide section 4), a registry keyed by `dialerType`.

A window is how long a transitional state may last before we look for a reason (the errors
endpoint and the contact list). Uniform thresholds are the guide's trap: a 30 s timeout fails
predictive campaigns that are only draining their call buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.types import CampaignState, DialerType

__all__ = ["DEFAULT_WINDOWS", "ToleranceWindows", "WindowSpec"]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Seconds allowed in each transitional state for one dialer type."""

    starting: float
    pausing: float
    stopping: float

    def for_state(self, state: CampaignState) -> float | None:
        if state is CampaignState.STARTING:
            return self.starting
        if state is CampaignState.PAUSING:
            return self.pausing
        if state is CampaignState.STOPPING:
            return self.stopping
        return None


# PREDICTIVE 180 s and PROGRESSIVE 60 s for STOPPING and PAUSING are the guide's numbers. The guide
# gives none for POWER or for STARTING; its edge case 1 calls five minutes in STARTING "degraded",
# so STARTING defaults to 300 s everywhere. POWER stops dialing at once: 60 s like progressive.
DEFAULT_WINDOWS: Mapping[DialerType, WindowSpec] = {
    DialerType.PREDICTIVE: WindowSpec(starting=300.0, pausing=180.0, stopping=180.0),
    DialerType.PROGRESSIVE: WindowSpec(starting=300.0, pausing=60.0, stopping=60.0),
    DialerType.POWER: WindowSpec(starting=300.0, pausing=60.0, stopping=60.0),
}


@dataclass(frozen=True, slots=True)
class ToleranceWindows:
    """The registry. Every dialer type must have an entry: a missing one is a configuration error."""

    by_dialer: Mapping[DialerType, WindowSpec] = field(default_factory=lambda: dict(DEFAULT_WINDOWS))

    def __post_init__(self) -> None:
        missing = [d.value for d in DialerType if d not in self.by_dialer]
        if missing:
            raise ValueError(f"tolerance windows missing for dialer types: {', '.join(missing)}")
        for dialer, spec in self.by_dialer.items():
            for name in ("starting", "pausing", "stopping"):
                if getattr(spec, name) <= 0:
                    raise ValueError(f"tolerance window {dialer}.{name} must be > 0 seconds")

    def window(self, dialer_type: DialerType, state: CampaignState) -> float | None:
        """Seconds allowed in `state`, or None for a terminal state (no deadline)."""
        return self.by_dialer[dialer_type].for_state(state)
