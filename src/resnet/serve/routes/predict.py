"""`POST /v1/predict`: top-k classes (and Grad-CAM) for uploaded images, or boxes / masks.

Two ways to send images: multipart form data (one or more `files` parts) or JSON
`{"images": [base64, ...], "model": ..., "top_k": 5, "cam": false}`; `model`, `top_k` and `cam`
may also be query parameters (or form fields). Base64 may be a `data:image/...;base64,` URL.
"""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from ..errors import ApiError

router = APIRouter(tags=["predict"])

MAX_IMAGES = 64  # images in one request
MAX_TOP_K = 1000  # top_k above the class count is clamped; above this it is refused


class Label(BaseModel):
    """One of the top-k classes."""

    label: str
    index: int
    prob: float


class Prediction(BaseModel):
    """The answer for one image: top-k classes (classifiers) or boxes / masks (tasks)."""

    top_k: list[Label] | None = None
    cam_png: str | None = Field(None, description="Grad-CAM overlay, base64 PNG (with cam)")
    detections: list[dict] | None = Field(None, description="detection: label, class, score, box")
    classes: dict[str, float] | None = Field(None, description="segmentation: area per class")
    image_png: str | None = Field(None, description="tasks: the image with boxes or masks drawn")


class PredictResponse(BaseModel):
    """Predictions of `model`, one per image in request order."""

    model: str
    predictions: list[Prediction]


class PredictJson(BaseModel):
    """The JSON request body."""

    model_config = {"extra": "forbid"}

    images: list[str] = Field(..., max_length=MAX_IMAGES, description="base64-encoded images")
    model: str | None = None
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)
    cam: bool | None = None


_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictJson.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "model": {"type": "string"},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
                        "cam": {"type": "boolean"},
                    },
                }
            },
        },
    }
}


def _b64(text: str, index: int) -> bytes:
    """The bytes of one base64 image (a `data:` URL's payload too); 422 when not base64."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"images[{index}] is not valid base64") from None


async def _from_json(request: Request) -> tuple[list[bytes], dict]:
    """Images and options from a JSON body."""
    try:
        body = PredictJson.model_validate(json.loads(await request.body()))
    except (ValueError, UnicodeDecodeError) as e:
        if isinstance(e, ValidationError):
            first = e.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ApiError(422, f"{where}: {first.get('msg', 'invalid')}".lstrip(": ")) from None
        raise ApiError(422, "the body is not valid JSON") from None
    images = [_b64(t, i) for i, t in enumerate(body.images)]
    return images, body.model_dump(exclude={"images"}, exclude_none=True)


def _form_option(form, key: str, kind):
    value = form.get(key)
    if value is None or isinstance(value, UploadFile):
        return None
    if kind is bool:
        if value.lower() not in ("true", "false", "1", "0", "on", "off", "yes", "no"):
            raise ApiError(422, f"{key}: expected true or false, got {value[:20]!r}")
        return value.lower() in ("true", "1", "on", "yes")
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ApiError(422, f"{key}: expected an integer, got {value[:20]!r}") from None
    return value


async def _from_form(request: Request) -> tuple[list[bytes], dict]:
    """Images (`files` parts) and options (form fields) from multipart form data."""
    try:
        form = await request.form(max_files=MAX_IMAGES, max_fields=16)
    except ApiError:
        raise
    except Exception as e:  # a malformed multipart body, too many parts
        raise ApiError(422, f"bad multipart body: {str(e)[:120]}") from None
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    images = [await f.read() for f in files]
    options = {
        "model": _form_option(form, "model", str),
        "top_k": _form_option(form, "top_k", int),
        "cam": _form_option(form, "cam", bool),
    }
    await form.close()
    return images, {k: v for k, v in options.items() if v is not None}


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    openapi_extra=_BODY,
)
async def predict(
    request: Request,
    model: str | None = Query(None, description="a loaded model or a run's name"),
    top_k: int | None = Query(None, ge=1, le=MAX_TOP_K, description="classes per image (5)"),
    cam: bool | None = Query(None, description="add a Grad-CAM overlay per image"),
) -> dict:
    """Predicts each uploaded image with `model` (default: the first loaded model)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        images, options = await _from_json(request)
    elif kind == "multipart/form-data":
        images, options = await _from_form(request)
    else:
        raise ApiError(415, "send images as multipart/form-data (files) or application/json")
    if not images:
        raise ApiError(422, "no images: send one or more `files` parts or a JSON `images` list")
    if len(images) > MAX_IMAGES:
        raise ApiError(422, f"at most {MAX_IMAGES} images per request, got {len(images)}")
    top_k = options.get("top_k", top_k) or 5
    if not 1 <= top_k <= MAX_TOP_K:
        raise ApiError(422, f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    registry = request.app.state.models
    name = options.get("model", model) or registry.default_name()
    cam = bool(options.get("cam", cam))
    predictions = await registry.predict(name, images, top_k=top_k, cam=cam)
    return {"model": name, "predictions": predictions}
