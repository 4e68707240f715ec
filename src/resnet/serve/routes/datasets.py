"""Data sets: upload a ZIP, register a server folder, list them, look at one."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field

router = APIRouter(tags=["datasets"])
CHUNK = 1 << 20


class Unreadable(BaseModel):
    """A file the scan could not use, and why."""

    file: str
    reason: str


class DatasetSummary(BaseModel):
    """A data set in the listing."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    kind: str = Field(description="builtin, upload or path")
    layout: str = Field(description="builtin, split, folders or csv")
    source: str = Field(description="what a run's data.source should name")
    classes: list[str] | None = None
    counts: dict[str, dict[str, int]] = Field(description="images per class, per split")
    unreadable: int = 0
    images: int = 0


class DatasetList(BaseModel):
    """Every data set the server knows."""

    datasets: list[DatasetSummary]


class Dataset(BaseModel):
    """One data set: class counts, unreadable files and sample thumbnails per class."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    kind: str
    layout: str
    source: str
    classes: list[str] | None = None
    counts: dict[str, dict[str, int]]
    unreadable: list[Unreadable] = []
    thumbnails: dict[str, list[str]] = Field(
        default_factory=dict, description="per class, data:image/png;base64 URLs"
    )


class PathRequest(BaseModel):
    """A folder (or path,label CSV) on the server's disk to use as a data set."""

    path: str = Field(min_length=1, max_length=4096)


@router.get("/datasets", response_model=DatasetList)
def list_datasets(request: Request) -> dict[str, Any]:
    """Built-in sets (when installed), uploads and registered folders."""
    return {"datasets": request.app.state.datasets.list()}


@router.post("/datasets", response_model=Dataset, status_code=201)
async def upload_dataset(request: Request, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
    """Uploads a ZIP (ImageFolder layout, optionally with train/ val/ test/, or images + a
    path,label CSV). The ZIP is streamed to disk and checked before extraction: 415 if it is not
    a ZIP, 422 for an unreadable one or a member leaving the upload (`..`, absolute, symlink),
    413 for too many members, too large a total or a compression bomb."""
    store = request.app.state.datasets
    store.root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".zip-", suffix=".zip", dir=store.root)
    try:
        with open(fd, "wb") as out:
            while chunk := await file.read(CHUNK):
                out.write(chunk)
        return await asyncio.to_thread(store.add_zip, Path(tmp), file.filename or "upload.zip")
    finally:
        Path(tmp).unlink(missing_ok=True)
        await file.close()


@router.post("/datasets/path", response_model=Dataset, status_code=201)
async def register_path(request: Request, body: PathRequest) -> dict[str, Any]:
    """Registers a folder on the server (404 if missing, 422 if not a folder or CSV)."""
    return await asyncio.to_thread(request.app.state.datasets.add_path, body.path)


@router.get("/datasets/{dataset_id}", response_model=Dataset)
async def get_dataset(
    request: Request,
    dataset_id: str,
    samples: int = Query(4, ge=0, le=16, description="thumbnails per class"),
) -> dict[str, Any]:
    """Class counts, up to `samples` thumbnails per class and the unreadable files."""
    return await asyncio.to_thread(request.app.state.datasets.get, dataset_id, samples)
