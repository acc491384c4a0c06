"""The one backoff: the guide's polling numbers, jitter on every interval, the try limit, the stagger,
and the other retry loops' parameters (doubling, no jitter, jitter below the nominal delay, no limit)."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter

import pytest

from fsm.backoff import Backoff, PollBackoff, PollSchedule, stagger

GUIDE_NOMINAL_HEAD = [2.0, 3.0, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30.0, 30.0]


def test_defaults_are_the_guides_numbers() -> None:
    policy = Backoff()
    assert (policy.initial, policy.multiplier, policy.cap, policy.max_tries, policy.jitter) == \
        (2.0, 1.5, 30.0, 60, 0.2)


def test_nominal_sequence_grows_by_one_and_a_half_up_to_the_cap() -> None:
    nominal = Backoff().nominal_delays()
    assert len(nominal) == 60
    assert list(nominal[:9]) == pytest.approx(GUIDE_NOMINAL_HEAD)
    assert all(d == 30.0 for d in nominal[7:])


def test_without_jitter_the_delays_are_the_nominal_sequence() -> None:
    policy = Backoff(jitter=0.0)
    assert list(policy.backoff(random.Random(1))) == list(policy.nominal_delays())


def test_mean_of_jittered_delays_is_the_nominal_sequence() -> None:
    policy = Backoff()
    rng = random.Random(7)
    runs = [list(policy.backoff(rng)) for _ in range(2000)]
    for attempt, nominal in enumerate(policy.nominal_delays()):
        mean = statistics.fmean(run[attempt] for run in runs)
        # sd of U(0.8, 1.2)*n is 0.115 n; over 2000 draws the mean's sd is 0.0026 n: 2 % is ~8 sd.
        assert mean == pytest.approx(nominal, rel=0.02), attempt


def test_every_interval_is_jittered_within_twenty_percent_after_the_cap() -> None:
    policy = Backoff()
    rng = random.Random(11)
    ratios: list[float] = []
    for _ in range(500):
        for attempt, delay in enumerate(policy.backoff(rng)):
            nominal = policy.nominal(attempt)
            assert 0.8 * nominal <= delay <= 1.2 * nominal
            if nominal == policy.cap:
                assert 24.0 <= delay <= 36.0  # jitter after the cap: a capped interval can exceed 30 s
            ratios.append(delay / nominal)
    # Jitter is really applied to every interval, and spread over the whole band, not clumped.
    assert min(ratios) < 0.805 and max(ratios) > 1.195
    fifths = Counter(min(int((r - 0.8) / 0.08), 4) for r in ratios)
    assert all(0.18 < fifths[i] / len(ratios) < 0.22 for i in range(5)), fifths
    assert sum(1 for r in ratios if r > 1.0) / len(ratios) == pytest.approx(0.5, abs=0.02)


def test_sixty_tries_then_explicitly_exhausted() -> None:
    backoff = Backoff().backoff(random.Random(3))
    delays = []
    while (delay := backoff.next_delay()) is not None:
        delays.append(delay)
    assert len(delays) == 60
    assert backoff.exhausted and backoff.remaining == 0 and backoff.tries == 60
    assert backoff.next_delay() is None
    with pytest.raises(StopIteration):
        next(backoff)


def test_iteration_stops_after_max_tries_of_a_custom_policy() -> None:
    policy = Backoff(initial=1.0, multiplier=2.0, cap=5.0, max_tries=4, jitter=0.0)
    assert list(policy.backoff(random.Random(0))) == [1.0, 2.0, 4.0, 5.0]


def test_total_duration_is_about_28_minutes_not_the_guides_3_hours() -> None:
    policy = Backoff()
    # 2 * (1.5**7 - 1) / 0.5 for the growing part, then 53 tries at the 30 s cap.
    expected = 2.0 * (1.5**7 - 1) / 0.5 + 53 * 30.0
    assert policy.nominal_total() == pytest.approx(expected)
    assert policy.nominal_total() == pytest.approx(1654.34375)
    assert policy.nominal_total() < 3600  # the guide's "up to ~3 hours" would need ~6.5x more
    rng = random.Random(5)
    totals = [sum(policy.backoff(rng)) for _ in range(500)]
    assert all(0.8 * expected <= t <= 1.2 * expected for t in totals)
    # 60 independent jitters average out: totals sit within a few percent of nominal.
    assert statistics.fmean(totals) == pytest.approx(expected, rel=0.01)
    assert statistics.pstdev(totals) < 0.03 * expected


def test_offset_is_added_to_the_first_delay_only() -> None:
    policy = Backoff(jitter=0.0)
    assert list(policy.backoff(random.Random(0), offset=1.25))[:3] == [3.25, 3.0, 4.5]


def test_same_seed_same_delays() -> None:
    policy = Backoff()
    assert list(policy.backoff(random.Random(42))) == list(policy.backoff(random.Random(42)))


def test_nominal_does_not_overflow_for_long_policies() -> None:
    policy = Backoff(max_tries=5000)
    assert policy.nominal(4999) == 30.0
    assert math.isfinite(policy.nominal_total())


@pytest.mark.parametrize("kwargs, message", [
    ({"initial": 0}, "initial"),
    ({"multiplier": 0.5}, "multiplier"),
    ({"cap": 1.0}, "cap"),
    ({"jitter": 1.0}, "jitter"),
    ({"jitter": -0.1}, "jitter"),
    ({"max_tries": 0}, "max_tries"),
    ({"max_tries": 2.5}, "max_tries"),
    ({"initial": math.nan}, "initial"),
])
def test_policy_rejects_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_backoff_rejects_negative_offset() -> None:
    with pytest.raises(ValueError, match="offset"):
        PollBackoff(Backoff(), random.Random(0), offset=-1)


# --- the other retry loops' parameters ----------------------------------------------------------


def test_delay_is_the_nominal_step_jittered_after_the_cap() -> None:
    client = Backoff(0.25, 2.0, 8.0, max_tries=None, jitter=0.2)  # the platform client's retries
    rng = random.Random(5)
    for attempt in range(40):
        nominal = min(8.0, 0.25 * 2.0 ** attempt)
        assert 0.8 * nominal <= client.delay(attempt, rng) <= 1.2 * nominal
    assert client.delay(30, random.Random(1)) == client.delay(30, random.Random(1)) > 8.0 * 0.8
    assert max(client.delay(30, rng) for _ in range(200)) > 8.0  # +-20 % after the cap: past it


def test_jitter_below_never_exceeds_the_nominal_delay_nor_the_cap() -> None:
    outbox = Backoff(0.1, 2.0, 5.0, max_tries=None, jitter=0.5, jitter_below=True)
    rng = random.Random(9)
    for attempt in range(12):
        nominal = outbox.nominal(attempt)
        delays = [outbox.delay(attempt, rng) for _ in range(400)]
        assert all(0.5 * nominal <= d <= nominal <= 5.0 for d in delays)
        assert statistics.fmean(delays) == pytest.approx(0.75 * nominal, rel=0.05)


def test_without_jitter_no_rng_is_needed_and_the_steps_double_to_the_cap() -> None:
    queue = Backoff(1.0, 2.0, 5.0, max_tries=None, jitter=0.0)  # the work queue's per-key retries
    assert [queue.delay(a) for a in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert queue.delay(10_000) == 5.0
    with pytest.raises(ValueError, match=r"random\.Random"):
        Backoff().delay(0)


def test_zero_jitter_still_draws_from_a_given_rng() -> None:
    # The poll stagger shares its generator with the jitter: jitter 0 must not shift later offsets.
    rng, twin = random.Random(4), random.Random(4)
    assert Backoff(jitter=0.0).delay(3, rng) == 6.75
    Backoff().delay(3, twin)
    assert rng.random() == twin.random()


def test_an_unbounded_backoff_is_never_exhausted_and_has_no_total() -> None:
    policy = Backoff(max_tries=None)
    backoff = policy.backoff(random.Random(0))
    delays = [backoff.next_delay() for _ in range(500)]
    assert all(d is not None for d in delays) and not backoff.exhausted and backoff.remaining is None
    assert "unbounded" in repr(backoff)
    with pytest.raises(ValueError, match="unbounded"):
        policy.nominal_total()
    with pytest.raises(ValueError, match="max_tries"):
        Backoff(max_tries=True)  # type: ignore[arg-type]


# --- stagger -------------------------------------------------------------------------------------


def _buckets(values: list[float], low: float, high: float, n: int) -> Counter[int]:
    width = (high - low) / n
    return Counter(min(int((v - low) / width), n - 1) for v in values)


def test_stagger_puts_one_campaign_in_each_slot() -> None:
    offsets = stagger(100, random.Random(9), spread=2.0)
    assert len(offsets) == 100
    assert all(0 <= o < 2.0 for o in offsets)
    assert sorted(_buckets(offsets, 0, 2.0, 100).values()) == [1] * 100
    assert stagger(0, random.Random(9), spread=2.0) == []


@pytest.mark.parametrize("n, spread", [(-1, 2.0), (3, -1.0), (3, math.inf)])
def test_stagger_rejects_bad_input(n: int, spread: float) -> None:
    with pytest.raises(ValueError):
        stagger(n, random.Random(0), spread=spread)


def test_schedule_spreads_a_batch_of_100_evenly_over_the_first_interval() -> None:
    schedule = PollSchedule(Backoff(), random.Random(21))
    offsets = [schedule.offset(now=1000.0) for _ in range(100)]
    assert all(0 <= o < 2.0 for o in offsets)
    counts = _buckets(offsets, 0, 2.0, 10)
    # The golden-ratio sequence keeps every bucket within +-2 of an even share; 100 independent
    # uniform draws would typically put 15 or more in the fullest of 10 buckets.
    assert max(counts.values()) <= 12 and min(counts.values()) >= 8, counts
    # Finer still: 20 buckets of 0.1 s, none holding more than 6 of the 100 (an even share is 5).
    assert max(_buckets(offsets, 0, 2.0, 20).values()) <= 6


def test_first_polls_of_a_batch_are_not_clustered() -> None:
    """What the platform sees: the first GET of 100 campaigns stopped in the same second."""
    policy = Backoff()
    staggered_peaks: list[int] = []
    unstaggered_peaks: list[int] = []
    for seed in range(20):
        schedule = PollSchedule(policy, random.Random(seed))
        first = [schedule.backoff(now=0.0).next_delay() or 0.0 for _ in range(100)]
        assert all(1.6 <= f <= 2.4 + 2.0 for f in first)
        assert max(first) - min(first) > 1.6  # twice the width of the unstaggered band
        staggered_peaks.append(max(_buckets(first, 1.6, 4.6, 6).values()))
        rng = random.Random(seed)
        plain = [policy.backoff(rng).next_delay() or 0.0 for _ in range(100)]
        assert all(1.6 <= f <= 2.4 for f in plain)  # all 100 reads inside 0.8 s: over 10/s
        unstaggered_peaks.append(max(_buckets(plain, 1.6, 4.6, 6).values()))
    # Offset U[0, 2) plus jittered U[1.6, 2.4] is a trapezoid whose flat top holds 50 % per second:
    # ~25 of 100 per half second at the peak. Unstaggered, one half second holds 60 % or more.
    assert max(staggered_peaks) <= 40 and statistics.fmean(staggered_peaks) <= 32
    assert min(unstaggered_peaks) >= 50 and statistics.fmean(unstaggered_peaks) >= 60
    assert statistics.fmean(staggered_peaks) * 2 <= statistics.fmean(unstaggered_peaks)


def test_schedule_starts_a_new_batch_after_the_window() -> None:
    schedule = PollSchedule(Backoff(), random.Random(8), spread=2.0, batch_window=5.0)
    first_batch = [schedule.offset(now=0.0 + i * 0.01) for i in range(50)]
    second_batch = [schedule.offset(now=100.0) for _ in range(50)]
    for batch in (first_batch, second_batch):
        assert max(_buckets(batch, 0, 2.0, 5).values()) <= 11


def test_schedule_with_a_wider_spread_for_a_known_read_budget() -> None:
    # 1,000 campaigns at 10 reads/s: a caller may spread first polls over 100 s.
    schedule = PollSchedule(Backoff(), random.Random(2), spread=100.0)
    offsets = [schedule.offset(now=0.0) for _ in range(1000)]
    per_second = _buckets(offsets, 0, 100.0, 100)
    assert max(per_second.values()) <= 12


def test_schedule_rejects_bad_spread() -> None:
    with pytest.raises(ValueError, match="spread"):
        PollSchedule(Backoff(), random.Random(0), spread=-2.0)
    with pytest.raises(ValueError, match="batch_window"):
        PollSchedule(Backoff(), random.Random(0), batch_window=math.nan)
