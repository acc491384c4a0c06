"""Faults the simulated platform injects: switched on by probability (seeded) or armed on demand.

The design guide's failure modes, each a knob here:

* dialer overload: more than `dialer_transition_limit` (3) campaigns transitional at once on one
  dialer instance -> the next transition request is refused with 409, or 500 with probability
  `overload_500_probability` (guide, edge case 2);
* request rate limit: guide, more than `read_limit_per_s` (10) outbound GETs in any 1 s -> 429;
  genesys, more than `request_limit_per_min` (300) requests of any method in any 60 s -> 429;
* contact-list contention: with probability `list_lock_probability` a start/stop locks the campaign's
  contact list (LOCKED or IMPORTING) for `list_lock_seconds`, holding the campaign in STARTING or
  STOPPING with an empty errors array (guide, edge case 1);
* a stalled transition (`stall_probability`, lasting `stall_seconds`, past every tolerance window);
* a transition that ends in FAILED with errors (`fail_probability`);
* dropped notifications (`drop_notification_probability`) and sockets closed after a
  `v2.system.socket_closing` warning (`socket_close_probability`, rolled once per heartbeat).

On-demand faults (`TransitionOverride` per campaign, `drop_next`) are one-shot and deterministic.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from pydantic.alias_generators import to_camel

__all__ = ["FaultConfig", "FaultInjector", "TransitionOutcome", "TransitionOverride"]

TransitionOutcome = Literal["normal", "stall", "fail"]

DEFAULT_FAILURE = {"code": "dialer.compliance.blocked",
                   "message": "The dialer refused the transition: compliance throttling is active."}


@dataclass(slots=True)
class FaultConfig:
    """Switches and probabilities (0..1). Times are simulated seconds. Mutable through the admin API."""

    dialer_transition_limit: int = 3
    overload_500_probability: float = 0.0
    read_limit_per_s: float = 10.0
    request_limit_per_min: float = 300.0
    list_lock_probability: float = 0.0
    list_lock_seconds: float = 90.0
    stall_probability: float = 0.0
    stall_seconds: float = 600.0
    fail_probability: float = 0.0
    drop_notification_probability: float = 0.0
    socket_close_probability: float = 0.0
    socket_close_grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name} must be within 0..1, got {value!r}")
            if not f.name.endswith("_probability") and value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value!r}")

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update (snake_case or camelCase keys). All-or-nothing: bad input changes nothing."""
        names = {f.name: f for f in fields(self)}
        camel = {to_camel(n): n for n in names}
        staged = asdict(self)
        for key, value in changes.items():
            name = key if key in names else camel.get(key)
            if name is None:
                raise ValueError(f"unknown fault setting {key!r}; known: {', '.join(sorted(camel))}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number, got {value!r}")
            staged[name] = int(value) if name == "dialer_transition_limit" else float(value)
        FaultConfig(**staged)  # validates
        for name, value in staged.items():
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        return {to_camel(k): v for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class TransitionOverride:
    """How one campaign's next (or current) transition ends. `duration` None = the normal duration,
    except for a stall, where None means "until released" (POST /admin/campaigns/{id}/release)."""

    outcome: TransitionOutcome = "normal"
    duration: float | None = None
    errors: tuple[dict[str, str], ...] = ()


@dataclass(slots=True)
class FaultInjector:
    """The seeded dice plus the armed one-shot faults."""

    config: FaultConfig = field(default_factory=FaultConfig)
    seed: int | None = 0
    overrides: dict[str, TransitionOverride] = field(default_factory=dict)
    drop_next: int = 0
    drop_topic: str | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def roll(self, probability: float) -> bool:
        return probability > 0.0 and self._rng.random() < probability

    def choice(self, options: tuple[str, ...]) -> str:
        return self._rng.choice(options)

    def take_override(self, campaign_id: str) -> TransitionOverride | None:
        return self.overrides.pop(campaign_id, None)

    def random_outcome(self) -> TransitionOverride | None:
        """A probabilistic stall or failure for a transition that has no armed override."""
        if self.roll(self.config.fail_probability):
            return TransitionOverride("fail", None, (dict(DEFAULT_FAILURE),))
        if self.roll(self.config.stall_probability):
            return TransitionOverride("stall", self.config.stall_seconds)
        return None

    def should_drop(self, topic: str) -> bool:
        """Whether to drop the notification for `topic` (armed count first, then the dice)."""
        if self.drop_next > 0 and (self.drop_topic is None or self.drop_topic == topic):
            self.drop_next -= 1
            if self.drop_next == 0:
                self.drop_topic = None
            return True
        return self.roll(self.config.drop_notification_probability)
