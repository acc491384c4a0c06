"""The per-dialer semaphore and priority queue (guide, edge case 2): pure policy, then the async gate."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm.dialer_queue import DialerGate, DialerPolicy, DialerQueue, DialerQueues, GateClosed
from fsm.testing import FakeClock
from schemas.types import Priority

H, S = Priority.HIGH, Priority.STANDARD


# --- the pure policy -----------------------------------------------------------------------------


def test_defaults_are_two_slots_and_fifteen_seconds() -> None:
    assert DialerPolicy() == DialerPolicy(max_in_flight=2, standard_spacing=15.0)


def test_at_most_two_in_flight_until_a_release() -> None:
    q: DialerQueue[str] = DialerQueue("d1")
    for item in "abc":
        q.offer(item, H, now=0)
    assert q.ready(0) == ["a", "b"]
    assert q.in_flight == 2 and q.depth == 1
    assert q.next_ready(100) is None
    assert q.when_next(100) is None  # only a release can help
    assert q.release("a") is True
    assert q.when_next(100) == 100
    assert q.next_ready(100) == "c"


def test_high_bypasses_queued_standard() -> None:
    q: DialerQueue[str] = DialerQueue("d1")
    q.offer("s1", S, now=0)
    q.offer("s2", S, now=0)
    q.offer("h1", H, now=0)
    assert q.ready(0) == ["h1", "s1"]
    q.release("h1")
    q.release("s1")
    assert q.next_ready(1) is None  # s2 is held back by the stagger
    assert q.when_next(1) == 15
    q.offer("h2", H, now=1)
    assert q.next_ready(1) == "h2"  # HIGH goes at once, stagger or not
    assert q.next_ready(14.9) is None
    assert q.next_ready(15) == "s2"


def test_standard_dispatches_are_fifteen_seconds_apart() -> None:
    q: DialerQueue[int] = DialerQueue("d1")
    for i in range(5):
        q.offer(i, S, now=0)
    dispatched: list[tuple[float, int]] = []
    now = 0.0
    while q.depth:
        wake = q.when_next(now)
        assert wake is not None
        now = wake
        item = q.next_ready(now)
        assert item is not None
        dispatched.append((now, item))
        q.release(item)  # a slot is free at once: only the stagger spaces them
    assert dispatched == [(0, 0), (15, 1), (30, 2), (45, 3), (60, 4)]


def test_standard_spacing_counts_from_the_request_as_sent() -> None:
    # Guide edge case 2, from the platform's side: what is 15 s apart is the POSTs, not the dispatches.
    q: DialerQueue[str] = DialerQueue("d1")
    for item in ("s0", "s1", "s2"):
        q.offer(item, S, now=0)
    assert q.next_ready(0) == "s0"
    assert q.when_next(20) is None and q.next_ready(20) is None, "s0 has not left: nothing else may go"
    q.sent("s0", 22)  # reads before its POST took 22 s
    assert q.next_ready(36.9) is None
    assert q.when_next(23) == 37
    assert q.next_ready(37) == "s1"
    q.release("s1")  # given up before its POST (a failed re-check): spaced from its dispatch, to be safe
    assert q.next_ready(51.9) is None
    assert q.next_ready(52) == "s2"


def test_high_dispatch_does_not_reset_the_standard_stagger() -> None:
    q: DialerQueue[str] = DialerQueue("d1")
    q.offer("s1", S, now=0)
    assert q.next_ready(0) == "s1"
    q.offer("h1", H, now=5)
    q.offer("s2", S, now=5)
    assert q.ready(5) == ["h1"]
    q.release("h1")
    q.release("s1")
    assert q.when_next(6) == 15


def test_fifo_within_each_priority() -> None:
    q: DialerQueue[str] = DialerQueue("d1", DialerPolicy(max_in_flight=10, standard_spacing=0))
    for item, priority in [("s1", S), ("h1", H), ("s2", S), ("h2", H), ("s3", S), ("h3", H)]:
        q.offer(item, priority, now=0)
    assert q.ready(0) == ["h1", "h2", "h3", "s1", "s2", "s3"]


def test_withdraw_and_double_offer_and_double_release() -> None:
    q: DialerQueue[str] = DialerQueue("d1")
    q.offer("a", S, now=0)
    with pytest.raises(ValueError, match="already queued"):
        q.offer("a", H, now=0)
    assert q.withdraw("a") is True
    assert q.withdraw("a") is False
    q.offer("b", H, now=0)
    assert q.next_ready(0) == "b"
    with pytest.raises(ValueError, match="already in flight"):
        q.offer("b", H, now=0)
    assert q.release("b") is True
    assert q.release("b") is False  # a second release is harmless
    assert q.release("never") is False


def test_stats_show_depth_and_in_flight() -> None:
    q: DialerQueue[str] = DialerQueue("d7")
    q.offer("s1", S, now=3)
    q.offer("s2", S, now=4)
    q.offer("h1", H, now=5)
    q.offer("h2", H, now=6)
    q.offer("h3", H, now=7)
    q.ready(10)
    stats = q.stats()
    assert (stats.dialer_id, stats.in_flight, stats.queued_high, stats.queued_standard) == ("d7", 2, 1, 2)
    assert stats.depth == 3
    assert stats.oldest_queued_at == 3
    assert stats.last_standard_at is None


def test_dialers_are_independent() -> None:
    queues: DialerQueues[str] = DialerQueues()
    for item in ("a1", "a2", "a3"):
        queues.offer("A", item, S, now=0)
    queues.offer("B", "b1", S, now=0)
    queues.offer("B", "b2", H, now=0)
    assert queues.ready(0) == [("A", "a1"), ("B", "b2"), ("B", "b1")]
    queues.sent("A", "a1", 0)  # a1's request leaves at once
    assert queues.when_next(0) == 15  # A's stagger; B is full
    assert queues.release("B", "b1") and not queues.release("A", "b1")
    assert {s.dialer_id: s.in_flight for s in queues.stats()} == {"A": 1, "B": 1}
    assert len(queues) == 2 and "A" in queues and "C" not in queues


@pytest.mark.parametrize("kwargs", [{"max_in_flight": 0}, {"max_in_flight": True},
                                    {"standard_spacing": -1.0}, {"standard_spacing": float("nan")}])
def test_policy_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="DialerPolicy"):
        DialerPolicy(**kwargs)  # type: ignore[arg-type]


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.sampled_from([H, S])),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("tick"), st.floats(0, 40)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops=_ops, slots=st.integers(1, 3), spacing=st.sampled_from([0.0, 15.0]))
def test_invariants_hold_for_any_sequence(ops: list[tuple[str, object]], slots: int, spacing: float) -> None:
    """Never more than `slots` in flight; STANDARD dispatches >= spacing apart; FIFO per priority;
    and the policy never idles while a HIGH item waits with a slot free."""
    q: DialerQueue[int] = DialerQueue("d", DialerPolicy(max_in_flight=slots, standard_spacing=spacing))
    counter = itertools.count()
    now = 0.0
    offered: dict[Priority, list[int]] = defaultdict(list)
    dispatched: dict[Priority, list[int]] = defaultdict(list)
    priority_of: dict[int, Priority] = {}
    in_flight: list[int] = []
    standard_times: list[float] = []
    for op, arg in ops:
        if op == "offer":
            assert isinstance(arg, Priority)
            item = next(counter)
            q.offer(item, arg, now)
            offered[arg].append(item)
            priority_of[item] = arg
        elif op == "release" and in_flight:
            assert isinstance(arg, int)
            item = in_flight.pop(arg % len(in_flight))
            assert q.release(item)
        elif op == "tick":
            assert isinstance(arg, float)
            now += arg
        for item in q.ready(now):
            in_flight.append(item)
            dispatched[priority_of[item]].append(item)
            if priority_of[item] is S:
                standard_times.append(now)
        assert q.in_flight == len(in_flight) <= slots
        if q.stats().queued_high:
            assert q.in_flight == slots
        wake = q.when_next(now)
        assert wake is None or wake > now
    for priority in (H, S):
        assert dispatched[priority] == offered[priority][: len(dispatched[priority])]
    assert all(b - a >= spacing for a, b in itertools.pairwise(standard_times))


# --- the async gate ------------------------------------------------------------------------------


class _Tracker:
    """Counts transitions in flight per dialer, as the simulator would see them."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.now: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.global_peak = 0
        self.started: list[tuple[str, str, float]] = []

    def enter(self, dialer: str, item: str) -> None:
        self.now[dialer] += 1
        self.peak[dialer] = max(self.peak[dialer], self.now[dialer])
        self.global_peak = max(self.global_peak, sum(self.now.values()))
        self.started.append((dialer, item, self.clock.monotonic()))

    def leave(self, dialer: str) -> None:
        self.now[dialer] -= 1


async def _transition(gate: DialerGate[str], tracker: _Tracker, dialer: str, item: str,
                      priority: Priority, seconds: float) -> None:
    await gate.acquire(dialer, item, priority)
    gate.sent(dialer, item)  # the request leaves at once
    tracker.enter(dialer, item)
    try:
        await tracker.clock.sleep(seconds)  # the platform takes this long to reach a terminal state
    finally:
        tracker.leave(dialer)
        gate.release(dialer, item)


async def test_eight_commands_on_one_dialer_never_exceed_two_in_flight() -> None:
    async with FakeClock(auto_advance=True) as clock:
        gate: DialerGate[str] = DialerGate(clock)
        tracker = _Tracker(clock)
        await asyncio.gather(*(
            _transition(gate, tracker, "d1", f"c{i}", S, seconds=40) for i in range(8)
        ))
        assert tracker.peak["d1"] == 2
        assert len(tracker.started) == 8
        starts = [t for _, _, t in tracker.started]
        assert all(b - a >= 15 for a, b in itertools.pairwise(starts))
        assert [s.in_flight for s in gate.stats()] == [0]
        await gate.close()


async def test_gate_high_goes_first_when_a_slot_frees() -> None:
    clock = FakeClock()
    gate: DialerGate[str] = DialerGate(clock)
    order: list[str] = []

    async def run(item: str, priority: Priority) -> None:
        await gate.acquire("d1", item, priority)
        gate.sent("d1", item)  # its request leaves at once
        order.append(item)

    await gate.acquire("d1", "busy1", H)
    await gate.acquire("d1", "busy2", H)
    tasks = [asyncio.create_task(run(f"s{i}", S)) for i in range(3)]
    await clock.settle()
    tasks.append(asyncio.create_task(run("h1", H)))
    await clock.settle()
    assert order == []
    assert gate.stats()[0].depth == 4
    gate.release("d1", "busy1")
    await clock.settle()
    assert order == ["h1"]  # the HIGH arrived last and still went first, at once
    gate.release("d1", "busy2")
    await clock.settle()
    assert order == ["h1", "s0"]
    gate.release("d1", "h1")
    await clock.advance(14.0)
    assert order == ["h1", "s0"]  # a slot is free, but the stagger holds s1 back
    await clock.advance(1.0)
    assert order == ["h1", "s0", "s1"]
    gate.release("d1", "s0")
    gate.release("d1", "s1")
    await clock.advance(15.0)
    assert order == ["h1", "s0", "s1", "s2"]
    await asyncio.gather(*tasks)
    await gate.close()


async def test_release_wakes_the_next_waiter_without_time_passing() -> None:
    clock = FakeClock()
    gate: DialerGate[str] = DialerGate(clock)
    await gate.acquire("d1", "a", H)
    await gate.acquire("d1", "b", H)
    waiter = asyncio.create_task(gate.acquire("d1", "c", H))
    await clock.settle()
    assert not waiter.done()
    assert gate.release("d1", "a") is True
    await clock.settle()
    assert waiter.done()
    assert clock.monotonic() == 0
    assert gate.release("d1", "a") is False
    await gate.close()


async def test_many_dialers_run_in_parallel() -> None:
    async with FakeClock(auto_advance=True) as clock:
        gate: DialerGate[str] = DialerGate(clock)
        tracker = _Tracker(clock)
        await asyncio.gather(*(
            _transition(gate, tracker, f"d{d}", f"d{d}-c{i}", H, seconds=10)
            for d in range(20) for i in range(6)
        ))
        assert all(tracker.peak[f"d{d}"] == 2 for d in range(20))
        assert tracker.global_peak == 40  # every dialer used both slots at once
        assert clock.monotonic() == pytest.approx(30)  # 6 per dialer, 2 at a time, 10 s each
        await gate.close()


async def test_cancelled_waiter_leaves_the_queue() -> None:
    clock = FakeClock()
    gate: DialerGate[str] = DialerGate(clock)
    await gate.acquire("d1", "a", H)
    await gate.acquire("d1", "b", H)
    waiter = asyncio.create_task(gate.acquire("d1", "c", S))
    await clock.settle()
    assert gate.stats()[0].depth == 1
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert gate.stats()[0].depth == 0
    gate.release("d1", "a")
    assert gate.stats()[0].in_flight == 1
    await gate.close()


async def test_cancelled_just_after_dispatch_gives_the_slot_back() -> None:
    clock = FakeClock()
    gate: DialerGate[str] = DialerGate(clock)
    await gate.acquire("d1", "a", H)
    await gate.acquire("d1", "b", H)
    waiter = asyncio.create_task(gate.acquire("d1", "c", H))
    await clock.settle()
    gate.release("d1", "a")  # dispatches c: its future is resolved, its task not yet resumed
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert waiter.cancelled()
    assert gate.stats()[0].in_flight == 1  # only b: c's slot was returned
    await gate.close()


async def test_slot_context_releases_on_error() -> None:
    clock = FakeClock()
    gate: DialerGate[str] = DialerGate(clock)
    with pytest.raises(RuntimeError, match="boom"):
        async with gate.slot("d1", "a", H):
            assert gate.stats()[0].in_flight == 1
            raise RuntimeError("boom")
    assert gate.stats()[0].in_flight == 0
    await gate.close()


async def test_close_fails_waiters_and_stops_timers() -> None:
    clock = FakeClock()
    gate: DialerGate[str] = DialerGate(clock)
    await gate.acquire("d1", "s0", S)
    gate.release("d1", "s0")
    waiter = asyncio.create_task(gate.acquire("d1", "s1", S))  # held by the stagger: a timer runs
    await clock.settle()
    assert any(t.get_name() == "dialer-stagger:d1" for t in asyncio.all_tasks())
    await gate.close()
    with pytest.raises(GateClosed):
        await waiter
    assert not any(t.get_name().startswith("dialer-stagger") for t in asyncio.all_tasks())
    with pytest.raises(GateClosed):
        await gate.acquire("d1", "s2", S)


async def test_try_acquire_takes_a_slot_only_when_acquire_would_not_wait() -> None:
    clock = FakeClock()
    gate: DialerGate[str] = DialerGate(clock)
    assert gate.try_acquire("d1", "a", Priority.STANDARD), "a free dialer: the slot at once"
    assert not gate.try_acquire("d1", "b", Priority.STANDARD), "a STANDARD not yet sent holds the next back"
    assert gate.try_acquire("d1", "c", Priority.HIGH), "HIGH does not wait for the stagger"
    assert not gate.try_acquire("d1", "d", Priority.HIGH), "both slots taken"
    stats = gate.stats()[0]
    assert (stats.in_flight, stats.depth) == (2, 0), "a refused try leaves nothing queued"
    waiter = asyncio.create_task(gate.acquire("d1", "e", Priority.STANDARD))
    await asyncio.sleep(0)
    gate.release("d1", "c")
    await asyncio.sleep(0)
    assert not waiter.done(), "a STANDARD not yet sent still holds it back"
    assert not gate.try_acquire("d1", "f", Priority.STANDARD), "nobody jumps the queue"
    gate.sent("d1", "a")
    await clock.advance(15)
    await waiter
    await gate.close()


async def test_a_stagger_timer_that_dies_is_logged_and_the_dialer_looked_at_again(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 item 5: nothing dies silently. The timer that lets the next STANDARD go after the
    stagger dying (a defect) is logged with its traceback, and the dialer is looked at again after a
    backoff instead of leaving its waiters until some slot is freed."""
    clock = FakeClock()
    gate: DialerGate[str] = DialerGate(clock)
    await gate.acquire("d1", "s0", S)
    gate.sent("d1", "s0")
    waiter = asyncio.create_task(gate.acquire("d1", "s1", S))
    await clock.settle()
    pump = gate._pump
    calls = 0

    def pump_failing_once(dialer_id: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a defect in the pump")
        pump(dialer_id)

    monkeypatch.setattr(gate, "_pump", pump_failing_once)
    with caplog.at_level(logging.ERROR, logger="fsm.dialer_queue"):
        await clock.advance(15.0)  # the stagger ends: its timer dies in the pump
        assert not waiter.done()
        await clock.advance(1.0)  # the backoff: the dialer is looked at again
        assert waiter.done(), "the waiter was dispatched after the dead timer's backoff"
    died = [r for r in caplog.records if "dialer-stagger:d1 died" in r.getMessage()]
    assert died and died[0].exc_info is not None
    await waiter
    await gate.close()
