"""`GET /v1/models`: the served models (and the runs that load on first use)."""

from __future__ import annotations

import asyncio
import functools

from fastapi import APIRouter, Request

from ...errors import ResNetError
from ...models import get_entry, model_info
from ...models import list_models as registered_models
from ..errors import ApiError

router = APIRouter(tags=["models"])


@router.get("/catalogue")
def catalogue(pattern: str = "*") -> list[dict]:
    """Every architecture that can be trained (as `resnet models` lists them): name, family,
    depth, whether it has skip connections, its paper. `pattern` filters ("resnet*"); the size
    and cost of one come from `/catalogue/{name}`."""
    out = []
    for name in registered_models(pattern, dims=None):  # 2-D, 3-D and video nets
        e = get_entry(name)
        out.append(
            dict(
                name=e.name,
                family=e.family,
                depth=e.depth,
                skips=e.spec.skip,
                input_size=e.input_size,
                paper=e.paper,
            )
        )
    return out


@router.get("/catalogue/{name}")
def architecture(name: str) -> dict:
    """One architecture's parameters and multiply-accumulates per image at its usual input
    size (what sets its speed), counted on a weightless copy; unknown names get 404."""
    try:
        return _model_info(name)
    except (ResNetError, ValueError) as e:  # the registry's unknown-name error
        raise ApiError(404, str(e).splitlines()[0]) from None


@functools.lru_cache(maxsize=256)
def _model_info(name: str) -> dict:
    return model_info(name)


@router.get("/models")
def list_models(request: Request) -> list[dict]:
    """Every loaded model (classes, input size, parameters, chosen backend, batching), then the
    run folders not loaded yet (`"loaded": false`: they load on first use)."""
    return request.app.state.models.describe()


@router.get("/models/{name}")
async def get_model(name: str, request: Request) -> dict:
    """One model; a run's model is loaded (and warmed) if it is not yet. Unknown: 404."""
    return await asyncio.to_thread(request.app.state.models.describe_one, name)
