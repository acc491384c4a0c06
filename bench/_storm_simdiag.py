"""The storm bench's simulator with diagnostics (`storm_bench.py --sim-diag`): `campaign-fsm simulate`
that also reports, on stderr, each garbage collection and each event-loop stall over 20 ms: what a
read waiting in its socket meanwhile is stamped late by.

`SimProcess` runs it as ``python -m bench._storm_simdiag [simulate options]`` from the repository
root, as it runs ``python -m adapters.cli.simulate`` otherwise, so either way the simulator is this
source tree's.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Any

from adapters.devtools.simulator.app import Simulator

_gc_started = [0.0]


def _gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.monotonic()
    elif (time.monotonic() - _gc_started[0]) > 0.02:
        print(f"SIMDIAG gc {time.monotonic():.3f} {(time.monotonic() - _gc_started[0]) * 1000:.1f} ms "
              f"gen {info['generation']}", file=sys.stderr, flush=True)


async def _lag() -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        late = time.monotonic() - before - 0.01
        if late > 0.02:
            print(f"SIMDIAG lag {time.monotonic():.3f} {late * 1000:.1f} ms", file=sys.stderr, flush=True)


_start = Simulator.start


async def _start_with_lag(self: Simulator) -> None:
    self._diag_task = asyncio.create_task(_lag(), name="simdiag-lag")  # type: ignore[attr-defined]
    await _start(self)


def main() -> int:
    gc.callbacks.append(_gc)
    Simulator.start = _start_with_lag  # type: ignore[method-assign]
    from adapters.cli.simulate import main as simulate  # after the hooks are in, as the simulator's own imports

    code: int = simulate()
    return code


if __name__ == "__main__":
    sys.exit(main())
