"""SystemClock: real time for the service and, scaled and started at 0, for the simulator."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from adapters.clock import SystemClock
from adapters.devtools.simulator.clock import wall_deadline
from fsm.ports import Clock
from fsm.testing import FakeClock


def test_unscaled_it_is_the_real_clock() -> None:
    clock: Clock = SystemClock()
    assert abs(clock.monotonic() - time.monotonic()) < 0.05
    assert abs(clock.now() - time.time()) < 0.05


async def test_scaled_time_runs_faster_and_sleeps_shorter() -> None:
    clock = SystemClock(100.0, start=0.0)
    assert 0.0 <= clock.monotonic() < 1.0  # simulated seconds since construction
    wall0, began = clock.now(), time.monotonic()
    await clock.sleep(5.0)  # 0.05 real seconds
    real = time.monotonic() - began
    assert 0.04 <= real < 1.0
    assert clock.monotonic() == pytest.approx(real * 100.0, abs=2.0)
    assert clock.now() - wall0 == pytest.approx(real * 100.0, abs=2.0)
    assert abs(wall0 - time.time()) < 1.0  # scaled wall time starts at the real one


def test_scaled_without_start_continues_from_the_real_monotonic_clock() -> None:
    clock = SystemClock(50.0)
    assert abs(clock.monotonic() - time.monotonic()) < 1.0
    assert repr(clock) == "SystemClock(time_scale=50.0)"
    assert repr(SystemClock(2, start=0)) == "SystemClock(time_scale=2.0, start=0.0)"


def test_wall_deadline_is_real_time_for_a_scaled_clock_and_own_time_for_a_fake() -> None:
    assert wall_deadline(SystemClock(100.0, start=0.0), 50.0) == pytest.approx(time.time() + 0.5, abs=0.1)
    fake = FakeClock(wall_start=1000.0)
    assert wall_deadline(fake, 50.0) == 1050.0


@pytest.mark.parametrize("kwargs, message", [
    ({"time_scale": 0}, "time_scale"),
    ({"time_scale": -1.0}, "time_scale"),
    ({"start": math.nan}, "start"),
])
def test_bad_arguments_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SystemClock(**kwargs)


async def test_sleep_never_waits_for_negative_seconds() -> None:
    began = time.monotonic()
    await asyncio.wait_for(SystemClock(10.0).sleep(-5.0), 1.0)
    assert time.monotonic() - began < 0.5
