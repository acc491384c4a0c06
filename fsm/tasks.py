"""Stopping asyncio tasks: the one way this code base cancels a task and waits for its end.

The idiom it replaces, ``task.cancel(); with suppress(CancelledError): await task``, has a trap:
if the *caller* is cancelled while it waits, the suppress swallows the caller's own cancellation
too. A loop that was being stopped then goes round again, and whoever awaits it hangs for good
(a notification channel's stop did, in CI). ``asyncio.wait`` never raises what the task ends with,
only a cancellation of the caller, so that one still reaches the caller.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel each task (None and finished ones are skipped) and wait until all have ended.

    What a task ends with is not raised here. A task whose failure matters logs it itself, from
    its done-callback. The outcome is still marked as seen, so asyncio does not report "exception
    never retrieved" later, at some random collection. If the caller is cancelled while it waits,
    it still waits for the tasks to end (as a TaskGroup does: nothing is left running behind a
    caller that returned), then that cancellation propagates. A second cancellation stops the wait.
    """
    live = [task for task in tasks if task is not None]
    for task in live:
        task.add_done_callback(_seen)
        task.cancel()
    pending = [task for task in live if not task.done()]
    if not pending:
        return
    try:
        await asyncio.wait(pending)
    except asyncio.CancelledError:
        await asyncio.wait(pending)
        raise


def _seen(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
