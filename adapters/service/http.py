"""The operator's HTTP endpoint, `/healthz`, `/readyz`, `/metrics` (`build_app`), and serving an
ASGI app over a real socket with uvicorn, in-process, as an async context manager (`serve_asgi`).

The endpoint's gauges are read from the running parts at scrape time (pull, not push), so the core
never imports a metrics library and a scrape always sees the current truth (Prometheus text format).

`serve_asgi` is used by the simulator and by the service's health/metrics endpoint::

    async with serve_asgi(app, host="127.0.0.1", port=0, name="metrics") as url:
        ...  # url == "http://127.0.0.1:<port>"

The socket is bound here rather than by uvicorn (which answers a taken port with `sys.exit()`);
the server runs as a named task with the app's lifespan on; the context returns once it listens
and always shuts it down on the way out (graceful, then forced). uvicorn's own signal handlers are
not installed: the owner of the process decides what a signal means.

What one client can hold is bounded (`HttpLimits`), so that a flood of sockets can neither exhaust
the process's file descriptors nor keep `/healthz` from answering for long:

- connections are accepted here rather than by asyncio's `create_server`: one over
  `max_connections` is reset the moment it is accepted, and running out of descriptors is waited
  out quietly (asyncio's own accept loop logs an ERROR for every failed accept, thousands a second);
- a request must arrive whole, head and body, within `request_timeout_s` of its first byte (for a
  connection's first request, of the connection itself), so a client that sends slowly or never
  is closed; a connection idle between requests is closed after `keep_alive_timeout_s`;
- a body over `max_body_bytes` is refused: 400 when its length is declared, else the connection closes;
- the server's own messages and uvicorn's per-connection ones are rate-limited: at most one line per
  message per 10 s, the next one (or a last line at shutdown) saying how many were left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from fsm.tasks import cancel_and_wait

__all__ = ["HttpLimits", "MetricsSource", "ServerStartError", "build_app", "serve_asgi"]

_log = logging.getLogger(__name__)

_LOG_EVERY_S = 10.0
# Out of descriptors, the listening socket stays readable: retrying at once would spin.
_ACCEPT_RETRY_S = 0.1


class ServerStartError(RuntimeError):
    """The server could not start (e.g. the port is taken)."""


@dataclass(frozen=True)
class HttpLimits:
    """What clients may hold of one server; see the module docstring."""

    max_connections: int = 64
    request_timeout_s: float = 5.0
    keep_alive_timeout_s: float = 5.0
    max_body_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_body_bytes < 0:
            raise ValueError(f"max_connections must be >= 1 and max_body_bytes >= 0: {self}")
        if not (self.request_timeout_s > 0 and self.keep_alive_timeout_s > 0):
            raise ValueError(f"request_timeout_s and keep_alive_timeout_s must be > 0: {self}")


@dataclass
class _Kind:
    last_at: float
    level: int
    example: str
    left_out: int = 0


class _RateLimit(logging.Filter):
    """At most one record per message template every `every_s` seconds; the next one says how many
    were left out in between."""

    def __init__(self, every_s: float = _LOG_EVERY_S) -> None:
        super().__init__()
        self._every_s = every_s
        self._kinds: dict[tuple[str, str], _Kind] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # The template, not the message: templates are few, messages carry addresses and counts.
        key = (record.name, str(record.msg))
        now = time.monotonic()
        kind = self._kinds.get(key)
        if kind is not None and now - kind.last_at < self._every_s:
            kind.left_out += 1
            return False
        self._kinds[key] = _Kind(now, record.levelno, record.getMessage())
        if kind is not None and kind.left_out:
            record.msg = f"{record.msg} ({kind.left_out} more like this since the previous one, not logged)"
        return True

    def flush(self) -> None:
        """Say how many were left out since the last line of each kind (at shutdown)."""
        for (name, _), kind in self._kinds.items():
            if kind.left_out:
                logging.getLogger(name).log(kind.level, "%d more log lines like this were not logged: %s",
                                            kind.left_out, kind.example)
                kind.left_out = 0


class _QuietLogger(logging.Logger):
    """Records go to `target`'s handlers through a `_RateLimit`. Kept out of logging's registry so
    that the limit holds back one server's records only."""

    def __init__(self, target: logging.Logger, limit: _RateLimit) -> None:
        super().__init__(target.name)
        self.parent = target
        self._target = target
        self.addFilter(limit)

    def isEnabledFor(self, level: int) -> bool:
        # The registry clears the level caches of its own loggers only; ask the target every time.
        return self._target.isEnabledFor(level)


class _Config(uvicorn.Config):
    name: str
    limits: HttpLimits
    connection_log: logging.Logger


class _WatchedConnection(h11.Connection):
    """An h11 server connection that shows every event it parses to `watch` before uvicorn sees it."""

    def __init__(self, watch: Callable[[h11.Event], None]) -> None:
        super().__init__(h11.SERVER)
        self._watch = watch

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        event = super().next_event()
        if isinstance(event, h11.Event):
            self._watch(event)
        return event


class _LimitedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on reading each request and a cap on its body."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, _Config)
        self._name = config.name
        self._limits = config.limits
        self.logger = config.connection_log
        # uvicorn annotates it int, but only hands it to call_later.
        self.timeout_keep_alive = config.limits.keep_alive_timeout_s  # type: ignore[assignment]
        self.conn = _WatchedConnection(self._watch)
        self._deadline: asyncio.TimerHandle | None = None
        self._body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._start_deadline()  # the first byte of a further request on a kept-alive connection
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The WebSocket protocol takes the transport over and judges it by its own pings.
        self._stop_deadline()
        super().handle_websocket_upgrade(event)

    def _watch(self, event: h11.Event) -> None:
        if isinstance(event, h11.Request):
            self._body_bytes = 0
            declared = next((v for k, v in event.headers if k == b"content-length"), None)
            if declared is not None and int(declared) > self._limits.max_body_bytes:
                # uvicorn answers its parse errors with a 400 and closes; the app never sees the request.
                raise h11.RemoteProtocolError("request body over the limit", 413)
        elif isinstance(event, h11.Data):
            self._body_bytes += len(event.data)
            if self._body_bytes > self._limits.max_body_bytes and not self.transport.is_closing():
                self.logger.warning("the %s server closed a connection whose request body went over %d bytes",
                                    self._name, self._limits.max_body_bytes)
                self.transport.close()
        elif isinstance(event, h11.EndOfMessage):
            self._stop_deadline()

    def _start_deadline(self) -> None:
        self._stop_deadline()
        self._deadline = self.loop.call_later(self._limits.request_timeout_s, self._request_timed_out)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _request_timed_out(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.warning("the %s server closed a connection that sent no whole request within %.1f s",
                                self._name, self._limits.request_timeout_s)
            self.transport.close()


class _Server(uvicorn.Server):
    def __init__(self, config: _Config, limit: _RateLimit) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self._config = config
        self._name = config.name
        self._limit = limit
        self._log = _QuietLogger(_log, limit)
        self._accepting: list[asyncio.Task[None]] = []

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().serve(sockets)
        finally:
            await self._stop_accepting()  # also when cancelled (forced stop), before the socket closes
            self._limit.flush()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn gets no socket to serve: the accept loops below hand it connections.
        await super().startup([])
        if self.started:
            self._accepting = [asyncio.create_task(self._accept(sock), name=f"{self._name}-server-accept")
                               for sock in sockets or []]
            self.ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._stop_accepting()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def _stop_accepting(self) -> None:
        await cancel_and_wait(*self._accepting)
        self._accepting = []

    def _protocol(self) -> _LimitedH11:
        return _LimitedH11(self._config, self.server_state, self.lifespan.state)

    async def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                await self._accept_one(listener)
            except Exception:
                # A defect: a dead accept loop would leave /healthz unanswered with nothing said.
                _log.exception("the %s server's accept loop failed; it goes on", self._name)
                await asyncio.sleep(_ACCEPT_RETRY_S)

    async def _accept_one(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        cap = self._config.limits.max_connections
        try:
            conn, _ = await loop.sock_accept(listener)
        except OSError as exc:
            self._log.warning("the %s server cannot accept a connection: %s", self._name,
                              errno.errorcode.get(exc.errno or 0, str(exc)))
            await asyncio.sleep(_ACCEPT_RETRY_S)
            return
        # uvicorn's set holds HTTP and WebSocket connections alike, each until it is lost.
        if len(self.server_state.connections) >= cap:
            _reset(conn)
            self._log.warning("the %s server reset a connection over its limit of %d open", self._name, cap)
            return
        try:
            await loop.connect_accepted_socket(self._protocol, conn)
        except Exception as exc:
            conn.close()
            self._log.warning("the %s server dropped a connection it could not set up: %r", self._name, exc)


def _reset(conn: socket.socket) -> None:
    # A reset rather than a FIN: the client learns at once, and no half-closed socket lingers here.
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = "http",
    startup_timeout: float = 10.0,
    shutdown_timeout: float = 5.0,
    limits: HttpLimits | None = None,
) -> AsyncIterator[str]:
    limit = _RateLimit()
    config = _Config(
        app, http=_LimitedH11, lifespan="on", ws="websockets-sansio", log_level="warning", access_log=False,
        timeout_graceful_shutdown=max(1, round(shutdown_timeout)),
    )
    config.name = name
    config.limits = limits or HttpLimits()
    config.connection_log = _QuietLogger(logging.getLogger("uvicorn.error"), limit)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only for sockets
    # created with that protocol; without it a reused connection waits ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(config.backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ServerStartError(f"the {name} server cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server = _Server(config, limit)
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
        task.add_done_callback(functools.partial(_ended_early, server, name))
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


def _ended_early(server: uvicorn.Server, name: str, task: asyncio.Task[None]) -> None:
    # Said when it happens, not at shut-down: /healthz goes unanswered from here (liveness fails).
    if not server.should_exit and not task.cancelled():
        _log.error("the %s server stopped while serving", name, exc_info=task.exception())


async def _force_stop(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.force_exit = True
    await cancel_and_wait(task)


# --- the operator's endpoint ---------------------------------------------------------------------

# name -> (help, callable returning [(labels, value)])
MetricsSource = dict[str, tuple[str, Callable[[], Iterable[tuple[dict[str, str], float]]]]]


class _PullCollector(Collector):
    def __init__(self, source: MetricsSource) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        for name, (help_text, read) in self._source.items():
            samples = list(read())
            labels = sorted({k for sample_labels, _ in samples for k in sample_labels})
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for sample_labels, value in samples:
                family.add_metric([sample_labels.get(k, "") for k in labels], value)
            yield family


def build_app(*, alive: Callable[[], bool], ready: Callable[[], bool], metrics: MetricsSource) -> Starlette:
    registry = CollectorRegistry()
    registry.register(_PullCollector(metrics))

    async def healthz(_: Request) -> Response:
        ok = alive()
        return JSONResponse({"status": "ok" if ok else "down"}, status_code=200 if ok else 503)

    async def readyz(_: Request) -> Response:
        ok = ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def metrics_route(_: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz),
                             Route("/metrics", metrics_route)])
