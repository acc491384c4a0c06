"""Serving an ASGI app over a real socket with uvicorn, in-process, as an async context manager.

Used by the simulator and by the service's health/metrics endpoint::

    async with serve_asgi(app, host="127.0.0.1", port=0, name="metrics") as url:
        ...  # url == "http://127.0.0.1:<port>"

The socket is bound here rather than by uvicorn (which answers a taken port with `sys.exit()`);
the server runs as a named task with the app's lifespan on; the context returns once it listens
and always shuts it down on the way out (graceful, then forced). uvicorn's own signal handlers are
not installed: the owner of the process decides what a signal means.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

__all__ = ["ServerStartError", "serve_asgi"]

_log = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
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
        yield


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = "http",
    startup_timeout: float = 10.0,
    shutdown_timeout: float = 5.0,
) -> AsyncIterator[str]:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only for sockets
    # created with that protocol; without it a reused connection waits ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerStartError(f"the {name} server cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server = _Server(uvicorn.Config(
        app, lifespan="on", ws="websockets-sansio", log_level="warning", access_log=False,
        timeout_graceful_shutdown=max(1, round(shutdown_timeout)),
    ))
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{name}-server-{host}:{port}")
    try:
        ready = asyncio.create_task(server.ready.wait(), name=f"{name}-server-ready")
        try:
            await asyncio.wait({ready, task}, timeout=startup_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not server.started:
            cause = task.exception() if task.done() and not task.cancelled() else None
            raise ServerStartError(f"the {name} server failed to start on {host}:{port}") from cause
        bound_port = sock.getsockname()[1]
        yield f"http://[{host}]:{bound_port}" if ":" in host else f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), shutdown_timeout + 2.0)
        except TimeoutError:
            _log.warning("the %s server did not stop within %.1f s; forcing it", name, shutdown_timeout)
            await _force_stop(server, task)
        except asyncio.CancelledError:
            await _force_stop(server, task)
            raise
        except Exception:
            _log.exception("the %s server failed", name)
        finally:
            sock.close()


async def _force_stop(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.force_exit = True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
