"""Prometheus metrics of one server: requests, latency, batch sizes, queue depth, training."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ServeMetrics:
    """The server's own registry (no global state: two apps in one process do not collide)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "resnet_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "resnet_request_seconds",
            "request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "resnet_batch_size",
            "images per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.queue_depth = Gauge("resnet_queue_depth", "images waiting for a model", registry=r)
        self.jobs_queued = Gauge("resnet_training_jobs_queued", "training jobs waiting", registry=r)
        self.train_progress = Gauge(
            "resnet_training_progress", "fraction of the planned steps done", ["run"], registry=r
        )
        self.train_img_s = Gauge("resnet_training_img_s", "training images/s", ["run"], registry=r)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every request and times it, labelled by its route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Passes the request on, recording its status and latency."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, t0 = 500, time.perf_counter()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            name = route_template(scope)
            self.metrics.requests.labels(name, scope["method"], str(status)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)


def route_template(scope: Scope) -> str:
    """The matched route's path template with its router's prefix ("/v1/runs/{run_id}"), so
    labels stay few however many ids are requested; "unmatched" for a 404."""
    route = scope.get("route")
    if route is None or not hasattr(route, "path"):
        return "unmatched"
    included = (scope.get("fastapi") or {}).get("included_router")
    prefix = getattr(getattr(included, "include_context", None), "prefix", "") or ""
    return prefix + route.path
