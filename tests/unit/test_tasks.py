"""`cancel_and_wait`: a task is stopped without swallowing the caller's own cancellation."""

from __future__ import annotations

import asyncio
import gc

import pytest

from fsm.tasks import cancel_and_wait


def _slow_to_stop(release: asyncio.Event, ended: list[str]) -> asyncio.Task[None]:
    async def body() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # cleanup that takes a while (a socket closing, a timer ending)
            ended.append("child")
            raise

    return asyncio.create_task(body())


async def test_a_caller_cancelled_while_it_waits_stays_cancelled() -> None:
    release, ended = asyncio.Event(), []
    child = _slow_to_stop(release, ended)
    await asyncio.sleep(0)

    async def stopper() -> str:
        await cancel_and_wait(child)
        return "went on as if nothing had been asked of it"

    outer = asyncio.create_task(stopper())
    await asyncio.sleep(0.01)
    outer.cancel()
    await asyncio.sleep(0.01)
    # The caller waits for its child to end before it ends itself, as a TaskGroup would.
    assert not outer.done()
    release.set()
    done, _ = await asyncio.wait({outer}, timeout=5)
    assert done and outer.cancelled(), "the caller's cancellation was swallowed"
    assert ended == ["child"] and child.cancelled()


async def test_a_second_cancellation_stops_the_wait() -> None:
    release, ended = asyncio.Event(), []
    child = _slow_to_stop(release, ended)
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_and_wait(child))
    await asyncio.sleep(0.01)
    outer.cancel()
    await asyncio.sleep(0.01)
    outer.cancel()
    done, _ = await asyncio.wait({outer}, timeout=5)
    assert done and outer.cancelled() and not child.done()
    release.set()
    await cancel_and_wait(child)
    assert child.cancelled()


async def test_what_the_tasks_end_with_is_not_raised_nor_reported_later() -> None:
    reported: list[object] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context.get("message")))
    try:
        async def fails() -> None:
            raise RuntimeError("boom")

        failed = asyncio.create_task(fails())
        await asyncio.sleep(0)
        running = asyncio.create_task(asyncio.sleep(3600))
        await cancel_and_wait(failed, running, None)
        assert failed.done() and running.cancelled()
        del failed, running
        await asyncio.sleep(0)
        gc.collect()
        assert reported == []  # no "Task exception was never retrieved" at some later collection
    finally:
        loop.set_exception_handler(None)


async def test_a_task_that_ignores_nothing_ends_at_once() -> None:
    tasks = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(3)]
    await asyncio.sleep(0)
    async with asyncio.timeout(1):
        await cancel_and_wait(*tasks)
    assert all(t.cancelled() for t in tasks)


@pytest.mark.parametrize("count", [0, 1])
async def test_nothing_to_cancel_returns(count: int) -> None:
    done = [asyncio.create_task(asyncio.sleep(0)) for _ in range(count)]
    await asyncio.sleep(0.01)
    await cancel_and_wait(*done)
    await cancel_and_wait()
