"""The keyed work queue: per-key order, coalescing, parallel keys, schedules, failures, shutdown."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict

import pytest

from fsm.testing import FakeClock
from fsm.work_queue import QueueState, WorkQueue


class Recorder:
    """A handler that records each run and can be held open per key with an Event."""

    def __init__(self, clock: FakeClock, *, duration: float = 0.0) -> None:
        self.clock = clock
        self.duration = duration
        self.runs: list[tuple[str, float]] = []
        self.active: dict[str, int] = defaultdict(int)
        self.overlap = False
        self.running = 0
        self.peak = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.task_names: list[str] = []
        self.fail: dict[str, int] = {}
        self.cancelled: list[str] = []

    async def __call__(self, key: str) -> None:
        self.runs.append((key, self.clock.monotonic()))
        task = asyncio.current_task()
        assert task is not None
        self.task_names.append(task.get_name())
        self.active[key] += 1
        self.overlap |= self.active[key] > 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if key in self.gates:
                await self.gates[key].wait()
            if self.duration:
                await self.clock.sleep(self.duration)
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
                raise RuntimeError(f"handler broke on {key}")
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        finally:
            self.active[key] -= 1
            self.running -= 1

    def count(self, key: str) -> int:
        return sum(1 for k, _ in self.runs if k == key)


async def test_runs_are_named_after_the_key() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    queue = WorkQueue(handler, clock=clock)
    assert queue.hint("camp-1") is True
    await queue.drain()
    assert handler.task_names == ["reconcile:camp-1"]
    await queue.close()


async def test_hints_during_a_run_coalesce_into_one_more_run() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    handler.gates["x"] = asyncio.Event()
    queue = WorkQueue(handler, clock=clock)
    queue.hint("x")
    await clock.settle()
    assert queue.is_running("x")
    for _ in range(10):
        queue.hint("x")
    assert queue.is_pending("x")
    handler.gates["x"].set()
    await queue.drain()
    assert handler.count("x") == 2  # one run for the first hint, one for the ten that came during it
    assert not handler.overlap
    await queue.close()


async def test_one_key_never_runs_twice_at_once_and_runs_follow_each_other() -> None:
    async with FakeClock(auto_advance=True) as clock:
        handler = Recorder(clock, duration=5.0)
        queue = WorkQueue(handler, clock=clock)

        async def nag() -> None:
            for _ in range(20):
                queue.hint("x")
                await clock.sleep(1.0)

        await nag()
        await queue.drain()
        assert not handler.overlap
        times = [t for k, t in handler.runs if k == "x"]
        assert all(b - a >= 5.0 for a, b in itertools.pairwise(times))  # strictly in turn
        assert 4 <= len(times) <= 5  # 20 hints over 20 s, 5 s per run: coalesced, not 20 runs
        await queue.close()


async def test_keys_run_in_parallel_up_to_the_concurrency_bound() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    gate = asyncio.Event()
    for key in "abcdef":
        handler.gates[key] = gate
    queue = WorkQueue(handler, clock=clock, concurrency=4)
    for key in "abcdef":
        queue.hint(key)
    await clock.settle()
    assert handler.running == 4
    assert queue.stats().running == 4 and queue.stats().pending == 2
    gate.set()
    await queue.drain()
    assert handler.peak == 4
    assert sorted(k for k, _ in handler.runs) == list("abcdef")
    await queue.close()


async def test_a_slow_key_does_not_block_others() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    handler.gates["slow"] = asyncio.Event()
    queue = WorkQueue(handler, clock=clock)
    queue.hint("slow")
    for key in ("a", "b"):
        queue.hint(key)
    await clock.settle()
    assert handler.count("a") == handler.count("b") == 1
    assert queue.is_running("slow")
    handler.gates["slow"].set()
    await queue.close()


async def test_schedule_runs_at_the_requested_time_and_earliest_wins() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    queue = WorkQueue(handler, clock=clock)
    queue.schedule("x", delay=30.0)
    queue.schedule("x", delay=10.0)
    queue.schedule("x", delay=20.0)  # later than the pending 10 s: ignored
    assert queue.due("x") == 10.0
    await clock.advance(9.9)
    assert handler.runs == []
    await clock.advance(0.1)
    assert handler.runs == [("x", 10.0)]
    await clock.advance(100)
    assert handler.runs == [("x", 10.0)]  # one look; the other requests were consumed by it
    queue.schedule("y", at=clock.monotonic() + 5)
    await clock.advance(5)
    assert handler.runs[-1] == ("y", 115.0)
    await queue.close()


async def test_a_hint_cuts_a_scheduled_look_short() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    queue = WorkQueue(handler, clock=clock)
    queue.schedule("x", delay=100.0)
    await clock.advance(5)
    queue.hint("x")
    await clock.settle()
    assert handler.runs == [("x", 5.0)]
    assert queue.due("x") is None
    await clock.advance(200)
    assert handler.runs == [("x", 5.0)]
    await queue.close()


async def test_the_handler_can_schedule_its_own_next_look() -> None:
    async with FakeClock(auto_advance=True) as clock:
        looks: list[float] = []
        done = asyncio.Event()
        queue: WorkQueue

        async def poller(key: str) -> None:
            looks.append(clock.monotonic())
            if len(looks) < 60:
                queue.schedule(key, delay=30.0)
            else:
                done.set()

        queue = WorkQueue(poller, clock=clock)
        queue.hint("x")
        await done.wait()
        assert looks == [30.0 * i for i in range(60)]  # half an hour of polling, instantly
        await queue.close()


async def test_unschedule_drops_a_pending_look() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    queue = WorkQueue(handler, clock=clock)
    queue.schedule("x", delay=10)
    assert queue.unschedule("x") is True
    assert queue.unschedule("x") is False
    await clock.advance(20)
    assert handler.runs == []
    await queue.close()


async def test_a_failing_handler_is_logged_retried_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    handler.fail["bad"] = 2
    queue = WorkQueue(handler, clock=clock, retry_initial=1.0, retry_cap=60.0)
    with caplog.at_level(logging.ERROR, logger="fsm.work_queue"):
        queue.hint("bad")
        queue.hint("good")
        await clock.settle()
    assert handler.count("good") == 1
    assert handler.count("bad") == 1
    assert queue.stats().failing == 1
    assert any("bad" in r.getMessage() and r.exc_info for r in caplog.records)
    await clock.advance(1.0)  # first retry after 1 s
    assert handler.count("bad") == 2
    await clock.advance(1.9)
    assert handler.count("bad") == 2
    await clock.advance(0.1)  # second retry 2 s later: it succeeds
    assert handler.count("bad") == 3
    assert queue.stats().failing == 0
    await clock.advance(100)
    assert handler.count("bad") == 3  # success: no more retries
    queue.hint("good")
    await queue.drain()
    assert handler.count("good") == 2  # the queue kept working throughout
    await queue.close()


async def test_retry_backoff_is_capped() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    handler.fail["bad"] = 10
    queue = WorkQueue(handler, clock=clock, retry_initial=1.0, retry_cap=5.0)
    queue.hint("bad")
    await clock.advance(1 + 2 + 4 + 5 + 5)
    assert [t for _, t in handler.runs] == [0, 1, 3, 7, 12, 17]
    await queue.close()


async def test_idle_worker_retires_and_a_new_hint_starts_another() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    queue = WorkQueue(handler, clock=clock, idle_timeout=60.0)
    queue.hint("x")
    await queue.drain()
    assert queue.stats().workers == 1
    await clock.advance(59)
    assert queue.stats().workers == 1
    await clock.advance(1)
    assert queue.stats().workers == 0
    assert not any(t.get_name() == "reconcile:x" for t in asyncio.all_tasks())
    queue.hint("x")
    await queue.drain()
    assert handler.count("x") == 2
    await queue.close()


async def test_close_finishes_running_and_hinted_keys_and_drops_schedules() -> None:
    async with FakeClock(auto_advance=True) as clock:
        handler = Recorder(clock, duration=10.0)
        queue = WorkQueue(handler, clock=clock, concurrency=2)
        for key in "abcd":
            queue.hint(key)
        queue.schedule("later", delay=1000.0)
        await clock.settle()
        await queue.close()
        assert queue.state is QueueState.CLOSED
        assert sorted(k for k, _ in handler.runs) == list("abcd")
        assert handler.cancelled == []
        assert clock.monotonic() == pytest.approx(20.0)  # 4 runs, 2 at a time; "later" never ran
        assert queue.hint("a") is False and queue.schedule("a", delay=1) is False
        assert not any(t.get_name().startswith("reconcile:") for t in asyncio.all_tasks())


async def test_close_cancels_stragglers_after_the_grace_period() -> None:
    async with FakeClock(auto_advance=True) as clock:
        handler = Recorder(clock, duration=10_000.0)
        queue = WorkQueue(handler, clock=clock)
        queue.hint("stuck")
        await clock.settle()
        await queue.close(grace=5.0)
        assert handler.cancelled == ["stuck"]
        assert clock.monotonic() == pytest.approx(5.0)
        assert queue.stats().workers == 0
        await queue.drain()  # nothing left busy: returns at once


async def test_close_is_idempotent_and_drain_waits_for_work() -> None:
    clock = FakeClock()
    handler = Recorder(clock)
    handler.gates["x"] = asyncio.Event()
    queue = WorkQueue(handler, clock=clock)
    queue.hint("x")
    drained = asyncio.create_task(queue.drain())
    await clock.settle()
    assert not drained.done()
    handler.gates["x"].set()
    await drained
    await queue.close()
    await queue.close()
    assert queue.state is QueueState.CLOSED


@pytest.mark.parametrize("kwargs", [{"concurrency": 0}, {"idle_timeout": -1.0}, {"retry_initial": 0.0},
                                    {"retry_cap": 0.5}])
def test_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    async def noop(key: str) -> None:
        return None

    with pytest.raises(ValueError):
        WorkQueue(noop, clock=FakeClock(), **kwargs)  # type: ignore[arg-type]


async def test_schedule_needs_exactly_one_time() -> None:
    async def noop(key: str) -> None:
        return None

    queue = WorkQueue(noop, clock=FakeClock())
    with pytest.raises(ValueError, match="exactly one"):
        queue.schedule("x")
    with pytest.raises(ValueError, match="exactly one"):
        queue.schedule("x", delay=1, at=2)
    with pytest.raises(ValueError, match="delay"):
        queue.schedule("x", delay=-1)
    await queue.close()


async def test_a_worker_that_crashes_is_logged_and_its_key_looked_at_again(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 item 5: nothing dies silently. A worker that crashes outside the handler (a defect;
    here in its wait) dropped its key and the look scheduled for it: the crash is logged with its
    traceback and the key is looked at again after the per-key backoff."""
    clock = FakeClock()
    handler = Recorder(clock)
    queue = WorkQueue(handler, clock=clock, retry_initial=1.0)
    wait = queue._sleep_or_wake
    crashed: list[str] = []

    async def crash_once(key: str, entry: object, seconds: float | None) -> bool:
        if not crashed:
            crashed.append(key)
            raise RuntimeError("a defect in the wait")
        return await wait(key, entry, seconds)  # type: ignore[arg-type]

    monkeypatch.setattr(queue, "_sleep_or_wake", crash_once)
    with caplog.at_level(logging.ERROR, logger="fsm.work_queue"):
        queue.schedule("x", delay=30.0)
        await clock.settle()
        assert crashed == ["x"]
        await clock.advance(31.0)
    assert handler.runs == [("x", 1.0)], "looked at again after the backoff"
    logged = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    await queue.close()
