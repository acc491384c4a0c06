"""The operator's HTTP endpoint: `/healthz`, `/readyz`, `/metrics` (Prometheus text format).

Gauges are read from the running parts at scrape time (pull, not push), so the core never imports
a metrics library and a scrape always sees the current truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["MetricsSource", "build_app"]

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
