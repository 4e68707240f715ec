"""Runs: the run folders, training jobs, their live event streams, files and exports."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ...engine.recipes import load_recipe
from ...engine.runfolder import is_ensemble_run
from ...errors import ResNetError
from ...export import export_checkpoint
from ...export.formats import FORMATS, INT8_FORMATS, SUFFIXES
from ..errors import ApiError
from ..jobs import (
    ACTIVE,
    TERMINAL_EVENTS,
    evaluation,
    existing_run,
    is_run_folder,
    metrics_rows,
    misclassified,
    read_config,
    run_row,
    validate_config,
)

router = APIRouter(tags=["runs"])

FILES = {
    "curves.png": "image/png",
    "confusion_matrix.png": "image/png",
    "summary.json": "application/json",
    "config.yaml": "application/yaml",
    "metrics.csv": "text/csv",
    "best.pt": "application/octet-stream",
    "last.pt": "application/octet-stream",
    "test_metrics.json": "application/json",
    "val_metrics.json": "application/json",
    **{
        f"{stem}{int8}{suffix}": "application/octet-stream"
        for stem in ("best", "last", "model")
        for int8 in ("", ".int8")
        for suffix in (*SUFFIXES.values(), ".openvino.bin")
    },
}
POLL_S = 0.2
KEEPALIVE_S = 15.0


class RunRow(BaseModel):
    """One run folder in the table."""

    model_config = ConfigDict(extra="allow")

    id: str
    task: str | None = None
    model: str | None = None
    data: str | None = None
    status: str = Field(
        description="queued, running, stopping, stopped, finished, failed, cancelled"
    )
    best_acc: float | None = None
    test_acc: float | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    created: float | None = None


class RunList(BaseModel):
    """Every run folder, and the ids waiting in the training queue (first starts first)."""

    runs: list[RunRow]
    queue: list[str]


class StartRun(BaseModel):
    """A training job: config sections (model, data, optim, finetune, run), an optional recipe
    they override, an optional run id (the folder name under --runs)."""

    config: dict[str, Any] = Field(default_factory=dict)
    recipe: str | None = Field(None, max_length=100)
    name: str | None = Field(None, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    task: Literal["classify", "detect", "segment"] = "classify"


class JobState(BaseModel):
    """A job's state after a start, stop or resume request."""

    id: str
    status: str
    position: int | None = Field(None, description="1-based place in the queue")
    events: str = Field(description="the event stream's path")


class RunDetail(RunRow):
    """A run with its config, summary, metrics rows, final evaluation and files."""

    config: dict[str, Any] = Field(default_factory=dict)
    summary: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    position: int | None = None
    files: list[str] = Field(default_factory=list)
    error: str | None = None
    events: int = 0
    progress: dict[str, Any] | None = Field(None, description="the last step event")


class ExportRequest(BaseModel):
    """Which format to export the run's best checkpoint to, and whether in int8."""

    format: str = Field("onnx", description=f"one of {', '.join(FORMATS)}")
    int8: bool = Field(
        False,
        description=f"int8, calibrated on the run's training images ({', '.join(INT8_FORMATS)})",
    )
    embed_preprocessing: bool = Field(
        False,
        description="openvino: the IR takes uint8 RGB pixels [N, H, W, C] and normalises them "
        "in the graph",
    )


class ExportResult(BaseModel):
    """An export that passed its parity check."""

    format: str
    file: str
    download: str
    size_bytes: int
    files: list[dict[str, Any]] = Field(
        default_factory=list, description="every file written (an OpenVINO IR is .xml + .bin)"
    )
    parity: dict[str, Any]
    line: str


class Misclassified(BaseModel):
    """Misclassified held-out images with their true and predicted labels."""

    split: str
    complete: bool = Field(description="every misclassified image of the split is listed")
    items: list[dict[str, Any]]


def _jobs(request: Request):
    return request.app.state.jobs


def _root(request: Request) -> Path:
    return Path(request.app.state.settings.runs)


@router.get("/runs", response_model=RunList)
def list_runs(request: Request) -> dict[str, Any]:
    """Every run folder under --runs (the server's and `resnet train`'s), newest first."""
    jobs, root = _jobs(request), _root(request)
    folders = [d for d in root.iterdir() if is_run_folder(d)] if root.is_dir() else []
    rows = [run_row(d, jobs.live(d.name)) for d in folders]
    rows.sort(key=lambda r: r["created"] or 0, reverse=True)
    return {"runs": rows, "queue": jobs.queued()}


@router.post("/runs", response_model=JobState, status_code=202)
def start_run(request: Request, body: StartRun) -> dict[str, Any]:
    """Queues a training job (422 with the reason for a config that does not validate)."""
    config = _build_config(request, body)
    jobs = _jobs(request)
    hint = f"{_model_name(config, body.task)}-{Path(str(_data_name(config, body.task))).stem}"
    run_id = jobs.new_id(body.name, hint)
    job = jobs.submit(run_id, config, body.task)
    return _state(request, job.id, job.status)


def _build_config(request: Request, body: StartRun) -> dict[str, Any]:
    """The validated config as a plain mapping: recipe, then the request's sections, with the
    data source resolved (a data set id becomes its folder)."""
    config = dict(body.config)
    if body.recipe:
        if body.task != "classify":
            raise ApiError(422, "recipes are for classification runs")
        try:
            base = load_recipe(body.recipe)
            config = base.updated(config).to_dict()
        except ResNetError as e:
            raise ApiError(422, str(e).splitlines()[0]) from None
    cfg = validate_config(config, body.task).to_dict()
    store = request.app.state.datasets
    if body.task == "classify":
        cfg["data"]["source"] = store.resolve(cfg["data"]["source"])
        cfg["run"]["out"] = None  # the server chooses the folder: --runs/<id>
    else:
        cfg["data"] = store.resolve(cfg["data"])
        cfg["out"] = None
    return cfg


def _model_name(cfg: dict, task: str) -> str:
    return cfg["model"]["name"] if task == "classify" else f"{task}-{cfg['model']}"


def _data_name(cfg: dict, task: str) -> str:
    return cfg["data"]["source"] if task == "classify" else cfg["data"]


def _state(request: Request, run_id: str, status: str) -> dict[str, Any]:
    return dict(
        id=run_id,
        status=status,
        position=_jobs(request).position(run_id),
        events=f"/v1/runs/{run_id}/events",
    )


@router.get("/runs/{run_id}", response_model=RunDetail)
def get_run(request: Request, run_id: str) -> dict[str, Any]:
    """Status, config, summary, metrics rows, per-class metrics, confusion matrix, queue place."""
    jobs = _jobs(request)
    folder = existing_run(_root(request), run_id)
    job = jobs.live(run_id)
    row = run_row(folder, job)
    summary = _json(folder / "summary.json")
    events, _ = jobs.events(run_id)
    steps = [e for e in events if e.get("event") == "step"]
    classes = (summary or {}).get("classes") or next(
        (e.get("classes") for e in events if e.get("event") == "run_start"), None
    )
    return {
        **row,
        "config": read_config(folder),
        "summary": summary,
        "metrics": metrics_rows(folder),
        "evaluation": evaluation(folder, classes),
        "position": jobs.position(run_id),
        "files": sorted(n for n in FILES if (folder / n).is_file()),
        "error": job.error
        if job
        else next((e.get("message") for e in reversed(events) if e.get("event") == "error"), None),
        "events": len(events),
        "progress": steps[-1] if steps and row["status"] in ACTIVE else None,
    }


def _json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def run_events(
    request: Request,
    run_id: str,
    since: int = Query(0, ge=0, description="the first event index to send"),
    last_event_id: str | None = Header(None, max_length=20),
) -> StreamingResponse:
    """Server-sent events of a run: `id: <index>`, `event: <name>`, `data: <json>`. A client
    that reconnects with `Last-Event-ID` (or `?since=`) gets only what it missed; the stream
    ends once the run has ended (run_end or error) and no job of it is queued or running. A
    finished run replays its recorded events (or, for a `resnet train` run, its epochs)."""
    existing_run(_root(request), run_id)
    start = since
    if last_event_id and last_event_id.strip().isdigit():
        start = int(last_event_id.strip()) + 1
    return StreamingResponse(
        _stream(request, run_id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(request: Request, run_id: str, index: int):
    jobs, quiet_since = _jobs(request), time.monotonic()
    while True:
        batch, more = await asyncio.to_thread(jobs.events, run_id, index)
        for event in batch:
            name = event.get("event", "message")
            yield f"id: {index}\nevent: {name}\ndata: {json.dumps(event)}\n\n"
            index += 1
        if not more:
            return
        if batch:
            quiet_since = time.monotonic()
            ended = batch[-1].get("event") in TERMINAL_EVENTS
            if ended and not _active(request, run_id):
                return
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_S)


def _active(request: Request, run_id: str) -> bool:
    job = _jobs(request).live(run_id)
    return job is not None and job.status in ACTIVE


@router.post("/runs/{run_id}/stop", response_model=JobState)
def stop_run(request: Request, run_id: str) -> dict[str, Any]:
    """Stops a running job at the next step with a resumable last.pt (a queued one is
    cancelled); 409 when it is not running."""
    job = _jobs(request).stop(run_id)
    return _state(request, job.id, job.status)


@router.post("/runs/{run_id}/resume", response_model=JobState, status_code=202)
def resume_run(request: Request, run_id: str) -> dict[str, Any]:
    """Queues `train(resume=folder)` for a stopped run; 409 while it runs or once finished."""
    job = _jobs(request).resume(run_id)
    return _state(request, job.id, job.status)


@router.get(
    "/runs/{run_id}/files/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def run_file(request: Request, run_id: str, name: str) -> FileResponse:
    """One of a run's files by name: curves.png, confusion_matrix.png, summary.json,
    config.yaml, metrics.csv, best.pt, last.pt, the metrics JSON files and exports."""
    folder = existing_run(_root(request), run_id)
    if name not in FILES:
        raise ApiError(404, f"no file {name[:100]!r}; available: {', '.join(FILES)}")
    path = folder / name
    if not path.is_file():
        raise ApiError(404, f"run {run_id!r} has no {name} (yet)")
    return FileResponse(path, media_type=FILES[name], filename=name)


@router.post("/runs/{run_id}/export", response_model=ExportResult)
async def export_run(request: Request, run_id: str, body: ExportRequest) -> dict[str, Any]:
    """Exports the run's best checkpoint (ONNX, TorchScript, ExportedProgram, OpenVINO, Keras …;
    int8 for ONNX and OpenVINO) after the parity check against the eager model; returns the
    parity report and the download path of each file written."""
    if body.format not in FORMATS:
        raise ApiError(422, f"format must be one of {', '.join(FORMATS)}, not {body.format!r}")
    if body.int8 and body.format not in INT8_FORMATS:
        raise ApiError(422, f"int8 export covers {', '.join(INT8_FORMATS)}, not {body.format}")
    if body.embed_preprocessing and body.format != "openvino":
        raise ApiError(422, f"embed_preprocessing covers openvino, not {body.format}")
    folder = existing_run(_root(request), run_id)
    source = _export_source(folder)
    try:
        result = await asyncio.to_thread(
            export_checkpoint,
            source,
            body.format,
            int8=body.int8,
            embed_preprocessing=body.embed_preprocessing,
        )
    except ResNetError as e:
        raise ApiError(422, str(e).splitlines()[0]) from None
    written = [Path(result.path)]
    if body.format == "openvino":
        written.append(written[0].with_suffix(".bin"))
    files = [
        dict(file=p.name, download=f"/v1/runs/{run_id}/files/{p.name}", size_bytes=p.stat().st_size)
        for p in written
    ]
    return dict(
        format=result.format,
        file=files[0]["file"],
        download=files[0]["download"],
        size_bytes=sum(f["size_bytes"] for f in files),
        files=files,
        parity=result.parity.to_dict(),
        line=result.parity.line(),
    )


def _export_source(folder: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    if is_ensemble_run(folder) and (folder / "ensemble.json").is_file():
        return folder
    raise ApiError(409, "this run has no checkpoint to export yet")


@router.get("/runs/{run_id}/misclassified", response_model=Misclassified)
async def run_misclassified(
    request: Request,
    run_id: str,
    limit: int = Query(24, ge=1, le=200, description="at most this many images"),
) -> dict[str, Any]:
    """Misclassified test images (else validation) with true and predicted labels, as base64
    PNG thumbnails of what the model saw; computed once per checkpoint and cached."""
    folder = existing_run(_root(request), run_id)
    try:
        return await asyncio.to_thread(misclassified, folder, limit)
    except ResNetError as e:
        raise ApiError(409, str(e).splitlines()[0]) from None
