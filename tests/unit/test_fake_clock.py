"""FakeClock: virtual time that wakes sleepers in deadline order, manually or by auto-advance."""

from __future__ import annotations

import asyncio
import math

import pytest

from fsm.ports import Clock
from fsm.testing import FakeClock


def test_implements_the_clock_port() -> None:
    clock: Clock = FakeClock(start=5.0, wall_start=1000.0)
    assert clock.monotonic() == 5.0
    assert clock.now() == 1000.0


async def test_sleep_waits_for_advance_in_manual_mode() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(10))
    await clock.settle()
    assert not task.done()
    await clock.advance(9.999)
    assert not task.done()
    await clock.advance(0.001)
    assert task.done()
    assert clock.monotonic() == pytest.approx(10.0)


async def test_advance_wakes_sleepers_in_deadline_order_and_at_their_deadline() -> None:
    clock = FakeClock(wall_start=500.0)
    woke: list[tuple[str, float, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic(), clock.now()))

    # Created out of order, with two equal deadlines: those keep the order they went to sleep in.
    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in
             [("c", 30), ("a", 10), ("b1", 20), ("b2", 20), ("late", 100)]]
    await clock.advance(50)
    assert woke == [("a", 10, 510), ("b1", 20, 520), ("b2", 20, 520), ("c", 30, 530)]
    assert clock.monotonic() == 50
    assert clock.sleepers == 1
    assert clock.next_deadline == 100
    await clock.advance(50)
    assert [w[0] for w in woke][-1] == "late"
    await asyncio.gather(*tasks)


async def test_a_woken_task_that_sleeps_again_is_woken_again_within_one_advance() -> None:
    clock = FakeClock()
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(5):
            await clock.sleep(3)
            ticks.append(clock.monotonic())

    task = asyncio.create_task(ticker())
    await clock.advance(10)
    assert ticks == [3, 6, 9]
    await clock.advance(6)
    assert ticks == [3, 6, 9, 12, 15]
    await task


async def test_cancelled_sleeper_is_not_woken_or_counted() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(5))
    other = asyncio.create_task(clock.sleep(8))
    await clock.settle()
    assert clock.sleepers == 2
    task.cancel()
    await clock.settle()
    assert clock.sleepers == 1
    assert clock.next_deadline == 8
    await clock.advance(10)
    assert task.cancelled() and other.done() and not other.cancelled()


async def test_zero_and_negative_sleep_yield_without_moving_time() -> None:
    clock = FakeClock(start=7.0)
    await clock.sleep(0)
    await clock.sleep(-3)
    assert clock.monotonic() == 7.0
    assert clock.sleepers == 0


async def test_advance_to_next_jumps_to_the_earliest_sleeper() -> None:
    clock = FakeClock()
    assert await clock.advance_to_next() is False
    task = asyncio.create_task(clock.sleep(42))
    assert await clock.advance_to_next() is True
    assert clock.monotonic() == 42
    assert task.done()


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
async def test_advance_rejects_bad_amounts(bad: float) -> None:
    with pytest.raises(ValueError, match="advance"):
        await FakeClock().advance(bad)


async def test_time_never_moves_backwards() -> None:
    clock = FakeClock(start=10)
    with pytest.raises(ValueError, match="forward"):
        await clock.advance_to(5)


async def test_sleep_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        await FakeClock().sleep(math.nan)


def test_rejects_non_finite_start() -> None:
    with pytest.raises(ValueError, match="finite"):
        FakeClock(start=math.inf)


# --- auto-advance --------------------------------------------------------------------------------


async def test_auto_advance_runs_hours_of_sleep_at_once() -> None:
    async with FakeClock(auto_advance=True) as clock:
        for _ in range(60):
            await clock.sleep(30)
        assert clock.monotonic() == pytest.approx(1800)


async def test_auto_advance_wakes_concurrent_sleepers_at_their_own_deadlines() -> None:
    async with FakeClock(auto_advance=True) as clock:
        seen: dict[str, float] = {}

        async def worker(name: str, delays: list[float]) -> None:
            for d in delays:
                await clock.sleep(d)
            seen[name] = clock.monotonic()

        await asyncio.gather(worker("a", [5, 5, 5]), worker("b", [7]), worker("c", [100, 0.5]))
        assert seen == {"a": 15, "b": 7, "c": 100.5}


async def test_auto_advance_waits_while_any_task_can_still_run() -> None:
    """Time must not jump while a task is busy: a sleeper for 1 s must wake after the busy task."""
    async with FakeClock(auto_advance=True) as clock:
        progress: list[int] = []

        async def busy() -> None:
            for i in range(200):
                progress.append(i)
                await asyncio.sleep(0)

        async def sleeper() -> int:
            await clock.sleep(1)
            return len(progress)

        busy_task = asyncio.create_task(busy())
        done_when_woken = await sleeper()
        await busy_task
        assert done_when_woken == 200
        assert clock.monotonic() == 1


async def test_auto_advance_driver_leaves_no_task_behind() -> None:
    clock = FakeClock(auto_advance=True)
    await clock.sleep(3)
    await clock.settle()
    await asyncio.sleep(0)
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert "fake-clock:auto-advance" not in names


async def test_manual_advance_and_auto_mode_agree_on_time() -> None:
    async with FakeClock(auto_advance=True) as clock:
        task = asyncio.create_task(clock.sleep(50))
        await clock.advance(20)  # the driver may jump to 50 meanwhile: time never goes back
        await task
        assert clock.monotonic() >= 50


async def test_jump_to_wakes_due_sleepers_from_sync_code() -> None:
    # Moved from test_simulator_engine.py (was the simulator's ManualClock, now this FakeClock).
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(3))
    await asyncio.sleep(0)
    clock.jump_to(2)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.jump_to(3)
    await asyncio.wait_for(sleeper, 1)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.jump_to(1)


async def test_jump_to_wakes_every_due_sleeper_at_the_target_time() -> None:
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 5.0), ("a", 2.0), ("late", 9.0))]
    await clock.settle()
    clock.jump_to(6.0)
    assert clock.monotonic() == 6.0 and clock.sleepers == 1
    await clock.settle()
    assert woke == [("a", 6.0), ("b", 6.0)]  # none ran before the jump was over
    with pytest.raises(ValueError, match="finite"):
        clock.jump_to(math.inf)
    tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
