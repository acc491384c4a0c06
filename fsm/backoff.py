"""The one backoff of the service, and fallback polling (guide section 3) built on it.

`Backoff` is every retry loop's delay: try `attempt` (0-based) waits
min(initial x multiplier^attempt, cap), times a jitter factor drawn after the cap. Each loop passes
its own numbers (see docs/architecture.md, "where each concept lives"): polling the guide's, the
work queue's per-key retry, the platform client's 5xx/timeout/429 retries, the notification
reconnects, the outbox drainer and command intake theirs.

Polling: while a transition is in flight and notifications cannot be trusted, the campaign is
polled. The guide's numbers are the defaults of `Backoff`: first delay 2 s, x1.5 per try, capped at
30 s, at most 60 tries, and +-20 % jitter on *every* interval, applied after the cap (so a capped
interval lies in [24, 36] s). The guide says 60 tries cover "up to ~3 hours"; they do not: the
nominal sequence sums to 1654.3 s (~27.6 min), and jitter keeps the total within +-20 % of that.
When the tries run out the backoff says so (`exhausted`); what to do then is the caller's decision.

Jitter alone does not stop a thundering herd when a shift change stops hundreds of campaigns in the
same second: their first polls still land within the same +-20 % of 2 s. So the first delays of a
batch are staggered too. `stagger(n, ...)` spreads a batch known in advance evenly over a window;
`PollSchedule` does it online for campaigns that register one at a time, using the golden-ratio
sequence, whose every prefix is spread almost evenly (no campaign count needed up front). The stagger
is an extra offset before the first interval; every interval itself stays a jittered backoff step.

Everything here is pure: randomness comes from an injected `random.Random`, time is passed in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Backoff", "PollBackoff", "PollSchedule", "stagger"]

# 1/phi: consecutive multiples (mod 1) fill [0, 1) with gaps of at most three distinct sizes.
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff parameters; the defaults are the guide's polling numbers.

    `jitter` 0.2 means each delay is its nominal value x U(0.8, 1.2). With `jitter_below` the factor
    is drawn from U(1 - jitter, 1) instead, so a delay never exceeds its nominal value nor the cap
    (the outbox's retries: mean 3/4 of nominal). `max_tries` None: no limit, the loop decides.
    """

    initial: float = 2.0
    multiplier: float = 1.5
    cap: float = 30.0
    max_tries: int | None = 60
    jitter: float = 0.2
    jitter_below: bool = False

    def __post_init__(self) -> None:
        for name in ("initial", "multiplier", "cap", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"Backoff.{name} must be a finite number, got {value!r}")
        if self.initial <= 0:
            raise ValueError(f"Backoff.initial must be > 0 seconds, got {self.initial}")
        if self.multiplier < 1:
            raise ValueError(f"Backoff.multiplier must be >= 1, got {self.multiplier}")
        if self.cap < self.initial:
            raise ValueError(f"Backoff.cap ({self.cap}) must be >= initial ({self.initial})")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"Backoff.jitter must be in [0, 1), got {self.jitter}")
        tries = self.max_tries
        if tries is not None and (isinstance(tries, bool) or not isinstance(tries, int) or tries < 1):
            raise ValueError(f"Backoff.max_tries must be None or an integer >= 1, got {tries!r}")

    def nominal(self, attempt: int) -> float:
        """The un-jittered delay before try `attempt` (0-based): min(initial x multiplier^attempt, cap)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        # Past the cap the power only grows; stop computing it before it overflows a float.
        value = self.initial
        for _ in range(attempt):
            value *= self.multiplier
            if value >= self.cap:
                return self.cap
        return min(value, self.cap)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before try `attempt` (0-based): the nominal delay, jittered with `rng`.

        `rng` may be None only without jitter; given, it is drawn from even then, so a policy with
        jitter 0 leaves a shared generator (the poll stagger's) in the same state as one with jitter.
        """
        nominal = self.nominal(attempt)
        if rng is None:
            if self.jitter:
                raise ValueError("a Backoff with jitter needs an injected random.Random")
            return nominal
        return self.jittered(nominal, rng)

    def jittered(self, nominal: float, rng: random.Random) -> float:
        """`nominal` with the policy's jitter: uniform in [nominal x (1-j), nominal x (1+j)] (or x 1)."""
        high = 1.0 if self.jitter_below else 1.0 + self.jitter
        return nominal * rng.uniform(1.0 - self.jitter, high)

    def nominal_delays(self) -> tuple[float, ...]:
        """The whole un-jittered sequence, `max_tries` long (also the mean of the jittered one)."""
        return tuple(self.nominal(i) for i in range(self._bounded_tries()))

    def nominal_total(self) -> float:
        """Seconds from the first delay to the last try, without jitter or stagger."""
        return math.fsum(self.nominal_delays())

    def backoff(self, rng: random.Random, *, offset: float = 0.0) -> PollBackoff:
        """A fresh sequence of delays. `offset` (a stagger) is added to the first delay only."""
        return PollBackoff(self, rng, offset=offset)

    def _bounded_tries(self) -> int:
        if self.max_tries is None:
            raise ValueError("an unbounded Backoff (max_tries None) has no finite sequence")
        return self.max_tries


class PollBackoff(Iterator[float]):
    """The delays before each poll of one transition: `next_delay()` until it returns None.

    Iterating gives the same delays and stops after `max_tries`. `tries` counts delays handed out.
    """

    __slots__ = ("_offset", "_policy", "_rng", "tries")

    def __init__(self, policy: Backoff, rng: random.Random, *, offset: float = 0.0) -> None:
        if not math.isfinite(offset) or offset < 0:
            raise ValueError(f"stagger offset must be a finite number >= 0, got {offset!r}")
        self._policy = policy
        self._rng = rng
        self._offset = offset
        self.tries = 0

    @property
    def exhausted(self) -> bool:
        """True once `max_tries` delays were handed out: stop polling, decide something else."""
        limit = self._policy.max_tries
        return limit is not None and self.tries >= limit

    @property
    def remaining(self) -> int | None:
        """Delays left to hand out; None for an unbounded policy."""
        limit = self._policy.max_tries
        return None if limit is None else limit - self.tries

    def next_delay(self) -> float | None:
        """Seconds to wait before the next poll, or None when the tries are used up."""
        if self.exhausted:
            return None
        delay = self._policy.delay(self.tries, self._rng)
        if self.tries == 0:
            delay += self._offset
        self.tries += 1
        return delay

    def __next__(self) -> float:
        delay = self.next_delay()
        if delay is None:
            raise StopIteration
        return delay

    def __iter__(self) -> PollBackoff:
        return self

    def __repr__(self) -> str:
        limit = self._policy.max_tries
        return f"PollBackoff(tries={self.tries}/{'unbounded' if limit is None else limit})"


def stagger(n: int, rng: random.Random, *, spread: float) -> list[float]:
    """Offsets for a batch of `n` campaigns known in advance, evenly spread over [0, spread).

    Stratified: the window is cut into `n` equal slots, campaign i gets a uniform point in slot i,
    so no two offsets share a slot and none of the window is left empty.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"batch size must be an integer >= 0, got {n!r}")
    _check_spread(spread)
    if n == 0:
        return []
    width = spread / n
    return [width * (i + rng.random()) for i in range(n)]


class PollSchedule:
    """Hands out backoffs whose first delays are staggered across the campaigns of one batch.

    A batch is every campaign registered within `batch_window` seconds of the batch's first one
    (default: one `spread`). The k-th campaign of a batch gets the offset
    `spread x frac(u + k/phi)`, `u` drawn once per batch: any number of them, as they arrive, lies
    almost evenly over [0, spread). `spread` defaults to the policy's first interval; a caller that
    knows its read budget may widen it (e.g. expected batch size / reads per second).
    """

    __slots__ = ("_batch_start", "_batch_window", "_count", "_phase", "_policy", "_rng", "_spread")

    def __init__(self, policy: Backoff, rng: random.Random, *, spread: float | None = None,
                 batch_window: float | None = None) -> None:
        self._policy = policy
        self._rng = rng
        self._spread = policy.initial if spread is None else spread
        _check_spread(self._spread)
        self._batch_window = self._spread if batch_window is None else batch_window
        if not math.isfinite(self._batch_window) or self._batch_window < 0:
            raise ValueError(f"batch_window must be a finite number >= 0, got {batch_window!r}")
        self._batch_start: float | None = None
        self._count = 0
        self._phase = 0.0

    def offset(self, now: float) -> float:
        """The stagger offset for a campaign registering at `now` (monotonic seconds)."""
        start = self._batch_start
        if start is None or not start <= now < start + self._batch_window:
            self._batch_start = now
            self._count = 0
            self._phase = self._rng.random()
        k = self._count
        self._count += 1
        return self._spread * ((self._phase + k * _GOLDEN) % 1.0)

    def backoff(self, now: float) -> PollBackoff:
        """A backoff for a campaign registering at `now`: staggered first delay, then the policy."""
        return PollBackoff(self._policy, self._rng, offset=self.offset(now))


def _check_spread(spread: float) -> None:
    if not isinstance(spread, int | float) or not math.isfinite(spread) or spread < 0:
        raise ValueError(f"stagger spread must be a finite number >= 0 seconds, got {spread!r}")
