"""Liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..auth import check_token
from ..errors import ApiError

router = APIRouter(tags=["health"])


@router.get("/livez")
def livez() -> dict:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> dict:
    """Ready once the models are loaded and warmed; not while draining (503)."""
    state = request.app.state
    if not state.ready or state.draining:
        raise ApiError(
            503, "draining" if state.draining else "loading models", {"Retry-After": "1"}
        )
    return {"status": "ready", "models": state.models.names()}


@router.get("/metrics", dependencies=[Depends(check_token)])
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latency, batch sizes, queue depth, training progress."""
    body = request.app.state.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
