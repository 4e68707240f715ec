"""`GET /v1/models`: the served models (and the runs that load on first use)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

router = APIRouter(tags=["models"])


@router.get("/models")
def list_models(request: Request) -> list[dict]:
    """Every loaded model (classes, input size, parameters, chosen backend, batching), then the
    run folders not loaded yet (`"loaded": false`: they load on first use)."""
    return request.app.state.models.describe()


@router.get("/models/{name}")
async def get_model(name: str, request: Request) -> dict:
    """One model; a run's model is loaded (and warmed) if it is not yet. Unknown: 404."""
    return await asyncio.to_thread(request.app.state.models.describe_one, name)
