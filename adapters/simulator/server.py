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

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn

from .app import Simulator, SimulatorConfig
from .clock import SimClock
from .tenant import Tenant

__all__ = ["SimulatorServerError", "run_simulator"]

_log = logging.getLogger(__name__)


class SimulatorServerError(RuntimeError):
    """The server could not start (e.g. the port is taken)."""


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The owner (test or CLI) decides what a signal means; uvicorn must not take SIGINT over.
        yield


@contextlib.asynccontextmanager
async def run_simulator(
    tenant: Tenant | None = None,
    config: SimulatorConfig | None = None,
    *,
    simulator: Simulator | None = None,
    clock: SimClock | None = None,
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
    # Bind here rather than in uvicorn, which answers a taken port with sys.exit().
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SimulatorServerError(f"the simulator cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server = _Server(uvicorn.Config(
        sim.app, lifespan="on", ws="websockets-sansio", log_level="warning", access_log=False,
        timeout_graceful_shutdown=max(1, round(shutdown_timeout)),
    ))
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"simulator-server-{host}:{port}")
    try:
        ready = asyncio.create_task(server.ready.wait(), name="simulator-server-ready")
        try:
            await asyncio.wait({ready, task}, timeout=startup_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not server.started:
            cause = task.exception() if task.done() and not task.cancelled() else None
            raise SimulatorServerError(f"the simulator failed to start on {host}:{port}") from cause
        bound_port = sock.getsockname()[1]
        url = f"http://[{host}]:{bound_port}" if ":" in host else f"http://{host}:{bound_port}"
        yield url, sim
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), shutdown_timeout + 2.0)
        except TimeoutError:
            _log.warning("the simulator server did not stop within %.1f s; forcing it", shutdown_timeout)
            await _force_stop(server, task)
        except asyncio.CancelledError:
            await _force_stop(server, task)
            raise
        except Exception:
            _log.exception("the simulator server failed")
        finally:
            sock.close()


async def _force_stop(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.force_exit = True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
