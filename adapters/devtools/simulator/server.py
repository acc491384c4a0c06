"""Serving the simulator over a real socket with uvicorn, in-process (tests) or as a process (CLI).

`run_simulator()` is the fixture-friendly form::

    async with run_simulator(tenant, SimulatorConfig(profile="genesys"), time_scale=100) as (url, sim):
        ...  # url == "http://127.0.0.1:<port>"; sim is the Simulator handle

It binds 127.0.0.1 on a free port (port 0), starts uvicorn as a task with the app's lifespan on,
returns once the socket is listening, and always shuts the server down on the way out (graceful,
then forced after `shutdown_timeout` seconds). uvicorn's own signal handlers are not installed, so
the test runner's Ctrl-C stays its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from adapters.service.http import ServerStartError, serve_asgi
from fsm.ports import Clock

from .app import Simulator, SimulatorConfig
from .tenant import Tenant

__all__ = ["SimulatorServerError", "run_simulator"]

class SimulatorServerError(RuntimeError):
    """The server could not start (e.g. the port is taken)."""


@contextlib.asynccontextmanager
async def run_simulator(
    tenant: Tenant | None = None,
    config: SimulatorConfig | None = None,
    *,
    simulator: Simulator | None = None,
    clock: Clock | None = None,
    time_scale: float = 1.0,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    shutdown_timeout: float = 5.0,
) -> AsyncIterator[tuple[str, Simulator]]:
    """Serve a simulator over HTTP/WebSocket; yields `(base_url, simulator)`.

    Pass a ready `simulator`, or `tenant`/`config`/`clock`/`time_scale` to build one.
    """
    sim = simulator or Simulator(tenant, config, clock=clock, time_scale=time_scale)
    try:
        async with serve_asgi(sim.app, host=host, port=port, name="simulator", startup_timeout=startup_timeout,
                              shutdown_timeout=shutdown_timeout) as url:
            yield url, sim
    except ServerStartError as exc:  # only serve_asgi raises it: the server never started
        raise SimulatorServerError(str(exc)) from exc.__cause__
