"""`create_app(settings)`: the HTTP API and the web app of `resnet serve`, as one FastAPI app.

No module-level app and no global state: everything a request needs hangs off `app.state`
(settings, the model registry, the training jobs, the metrics), built by the lifespan handler,
which loads and warms the models on start and, on shutdown, stops taking work, lets queued
predictions finish and stops a running training job resumably.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from .auth import check_token
from .datasets import DatasetStore
from .errors import install_error_handlers
from .inference import ModelRegistry
from .jobs import JobManager
from .limits import BodyLimitMiddleware
from .metrics import MetricsMiddleware, ServeMetrics
from .routes import datasets, health, models, pages, predict, runs
from .settings import ServeSettings

API_VERSION = "v1"


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The app for `settings` (defaults: runs/ on 127.0.0.1, no token)."""
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    app = FastAPIOffline(  # FastAPI whose /docs and /redoc assets ship in a package: no CDN
        title="resnet serve",
        version=API_VERSION,
        summary="Train, evaluate and serve residual networks on your own machine.",
        lifespan=_lifespan,
    )
    app.state.settings, app.state.metrics = settings, metrics
    app.state.ready, app.state.draining = False, False
    app.state.models = ModelRegistry(settings, metrics)
    app.state.jobs = JobManager(settings, metrics)
    app.state.datasets = DatasetStore(settings)
    install_error_handlers(app)
    api = [Depends(check_token)]
    app.include_router(health.router)  # liveness and readiness answer without a token
    for module in (predict, models, runs, datasets):
        app.include_router(module.router, prefix=f"/{API_VERSION}", dependencies=api)
    app.include_router(pages.router)
    app.add_middleware(BodyLimitMiddleware, limit_for=_body_limit(settings))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _body_limit(settings: ServeSettings):
    def limit_for(path: str) -> int:
        if path.startswith(f"/{API_VERSION}/datasets"):
            return settings.upload_body_bytes
        return settings.predict_body_bytes

    return limit_for


@asynccontextmanager
async def _lifespan(app: FastAPI):
    state = app.state
    await asyncio.to_thread(state.models.load_all)  # reads checkpoints, warms each model once
    state.jobs.start()
    state.ready = True
    try:
        yield
    finally:
        state.ready, state.draining = False, True  # readiness goes false first
        await state.models.drain()
        await asyncio.to_thread(state.jobs.shutdown)  # a running job stops resumably
        state.models.close()
