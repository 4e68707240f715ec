"""Training jobs: a FIFO queue of runs trained one at a time through `resnet.engine.train`.

The server never reaches into the training loop. A job is `train(config, callbacks=[...],
stop=event)` (or `train(resume=folder)`) on a worker thread; its events (`event.to_dict()`) are
kept in memory in order and appended to `events.jsonl` in the run folder, one JSON line each,
flushed and fsynced per line (a torn last line after a crash is skipped on reading), so a page
that reconnects, even after a server restart, catches up from any index. Step events are
thinned to at most about five a second (the first and last step of every epoch always kept).

Run ids are the run folders' names under `settings.runs`; `run_folder` validates them.

Shutdown (`JobManager.shutdown`): a running job is stopped through its stop event, which makes
the engine write a resumable `last.pt`, and its thread is waited for; jobs still queued are
cancelled: their `job.json` says "cancelled", and `resume` starts them later (from scratch when
they never wrote a checkpoint).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..data import eval_loader
from ..engine import TrainConfig, load_model, train
from ..engine.config import Config
from ..errors import ResNetError
from ..storage import write_json
from ..tasks import train_task
from ..tasks.config import task_config
from .errors import ApiError
from .metrics import ServeMetrics
from .settings import ServeSettings

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
EVENTS = "events.jsonl"
JOB = "job.json"
MISCLASSIFIED = "misclassified.json"
ACTIVE = ("queued", "running", "stopping")
TERMINAL_EVENTS = ("run_end", "error")
STEP_INTERVAL_S = 0.2  # the least time between two kept step events of one epoch
TASKS = ("classify", "detect", "segment")


def run_folder(root: Path, run_id: str) -> Path:
    """The folder of run `run_id` under `root`; 422 for an id that is not a plain folder name
    or that would leave `root` (the folder need not exist)."""
    if not RUN_ID.fullmatch(run_id or "") or ".." in run_id:
        raise ApiError(422, f"invalid run id {run_id[:100]!r}: letters, digits, . _ - only")
    base = Path(root).resolve()
    path = (base / run_id).resolve()
    if path.parent != base:
        raise ApiError(422, f"invalid run id {run_id[:100]!r}")
    return path


def existing_run(root: Path, run_id: str) -> Path:
    """`run_folder`, 404 unless it exists as a folder."""
    path = run_folder(root, run_id)
    if not path.is_dir():
        raise ApiError(404, f"no run {run_id!r}")
    return path


def read_events(folder: Path) -> list[dict]:
    """The events recorded in `folder/events.jsonl` (a torn or garbled line is skipped)."""
    path = Path(folder) / EVENTS
    if not path.is_file():
        return []
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


@dataclass
class Job:
    """One training job: a new run (`config`) or a resumed one (`resume`)."""

    id: str
    folder: Path
    task: str = "classify"
    config: dict | None = None
    resume: bool = False
    status: str = "queued"
    created: float = field(default_factory=time.time)
    error: str | None = None
    events: list[dict] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    last_step_t: float = 0.0

    def record(self) -> dict:
        """What `job.json` holds."""
        return dict(
            id=self.id,
            task=self.task,
            config=self.config,
            status=self.status,
            created=self.created,
            error=self.error,
        )


class JobManager:
    """Runs training jobs on worker threads, `settings.jobs` at a time, the rest queued FIFO."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics):
        self.settings, self.metrics = settings, metrics
        self.root = Path(settings.runs)
        self.jobs: dict[str, Job] = {}
        self.queue: deque[str] = deque()
        self.lock = threading.Condition()
        self.threads: list[threading.Thread] = []
        self.closing = False

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Starts the worker threads."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.closing = False
        for i in range(self.settings.jobs):
            t = threading.Thread(target=self._worker, name=f"resnet-train-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stops running jobs resumably and waits for their threads; cancels queued jobs."""
        with self.lock:
            self.closing = True
            for job_id in list(self.queue):
                job = self.jobs[job_id]
                job.status = "cancelled"
                self._save(job)
            self.queue.clear()
            self.metrics.jobs_queued.set(0)
            for job in self.jobs.values():
                if job.status == "running":
                    job.status = "stopping"
                    job.stop.set()
            self.lock.notify_all()
        for t in self.threads:
            t.join(timeout)
        self.threads = []

    # -- submitting ---------------------------------------------------------------------
    def new_id(self, name: str | None, hint: str) -> str:
        """`name` (validated, 409 if taken) or a fresh id made from `hint` and the time."""
        if name:
            folder = run_folder(self.root, name)
            if folder.exists() or name in self.jobs:
                raise ApiError(409, f"run {name!r} exists already; choose another name")
            return name
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", hint).strip("-.")[:70] or "run"
        base = f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_id, n = base, 1
        while (self.root / run_id).exists() or run_id in self.jobs:
            n += 1
            run_id = f"{base}-{n}"
        return run_id

    def submit(self, run_id: str, config: dict, task: str = "classify") -> Job:
        """Queues a new run of `config` (validated already) in folder `run_id`."""
        folder = run_folder(self.root, run_id)
        folder.mkdir(parents=True, exist_ok=False)
        job = Job(run_id, folder, task=task, config=config)
        write_json(folder / JOB, job.record())
        return self._enqueue(job)

    def resume(self, run_id: str) -> Job:
        """Queues `train(resume=folder)` for a stopped run (409 while it is queued or running);
        a run cancelled before its first checkpoint starts again from its config."""
        folder = existing_run(self.root, run_id)
        with self.lock:
            current = self.jobs.get(run_id)
            if current and current.status in ACTIVE:
                raise ApiError(409, f"run {run_id!r} is {current.status}")
        saved = _read_json(folder / JOB) or {}
        if (folder / "last.pt").is_file():
            if _finished(folder):
                raise ApiError(409, f"run {run_id!r} has finished; nothing to resume")
            job = Job(run_id, folder, task="classify", resume=True, config=saved.get("config"))
        elif saved.get("config") is not None:
            job = Job(run_id, folder, task=saved.get("task", "classify"), config=saved["config"])
        else:
            raise ApiError(409, f"run {run_id!r} has no last.pt to resume from")
        job.events = current.events if current else read_events(folder)
        if job.task != "classify":
            raise ApiError(409, "detection and segmentation runs do not resume")
        return self._enqueue(job)

    def stop(self, run_id: str) -> Job:
        """Asks a running job to stop at the next step (resumably); a queued one is cancelled."""
        existing_run(self.root, run_id)
        with self.lock:
            job = self.jobs.get(run_id)
            if job is None or job.status not in ACTIVE:
                raise ApiError(409, f"run {run_id!r} is not running")
            if job.status == "queued":
                self.queue.remove(run_id)
                self.metrics.jobs_queued.set(len(self.queue))
                job.status = "cancelled"
                self._save(job)
            elif job.task != "classify":
                raise ApiError(409, "detection and segmentation runs cannot stop midway")
            else:
                job.status = "stopping"
                job.stop.set()
            self.lock.notify_all()
        return job

    def _enqueue(self, job: Job) -> Job:
        with self.lock:
            if self.closing:
                raise ApiError(503, "the server is shutting down", {"Retry-After": "5"})
            self.jobs[job.id] = job
            self.queue.append(job.id)
            self.metrics.jobs_queued.set(len(self.queue))
            self._save(job)
            self.lock.notify_all()
        return job

    # -- reading ------------------------------------------------------------------------
    def live(self, run_id: str) -> Job | None:
        """The job this server holds for `run_id`, if any."""
        return self.jobs.get(run_id)

    def position(self, run_id: str) -> int | None:
        """1-based place in the queue, None when not queued."""
        with self.lock:
            q = list(self.queue)
        return q.index(run_id) + 1 if run_id in q else None

    def queued(self) -> list[str]:
        """The queued run ids, first to start first."""
        with self.lock:
            return list(self.queue)

    def events(self, run_id: str, since: int = 0) -> tuple[list[dict], bool]:
        """`(events from index since, whether more may come)` for a run, live or on disk."""
        job = self.jobs.get(run_id)
        if job is not None:
            with self.lock:
                return job.events[since:], job.status in ACTIVE
        folder = self.root / run_id
        recorded = read_events(folder) if (folder / EVENTS).is_file() else None
        return (replay_from_files(folder) if recorded is None else recorded)[since:], False

    # -- running ------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            with self.lock:
                while not self.queue and not self.closing:
                    self.lock.wait()
                if self.closing:
                    return
                job = self.jobs[self.queue.popleft()]
                self.metrics.jobs_queued.set(len(self.queue))
                job.status, job.error = "running", None
                job.stop.clear()
                self._save(job)
            self._run(job)

    def _run(self, job: Job) -> None:
        callbacks = [lambda event: self._on_event(job, event.to_dict())]
        quiet = dict(callbacks=callbacks, stop=job.stop, progress=False, log=None)
        try:
            if job.resume:
                summary = train(resume=job.folder, **quiet)
            elif job.task == "classify":
                cfg = TrainConfig.from_dict(job.config).updated({"run": {"out": str(job.folder)}})
                summary = train(cfg, **quiet)
            else:
                summary = self._run_task(job)
            status = "stopped" if summary.get("status") == "stopped" else "finished"
        except Exception as e:  # any failure ends this job only; the server goes on
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not job.events or job.events[-1].get("event") != "error":
                self._on_event(
                    job, {"event": "error", "message": message, "kind": type(e).__name__}
                )
            status, job.error = "failed", message
        with self.lock:
            job.status = status
            self._save(job)
            self.lock.notify_all()
        self.metrics.train_img_s.labels(job.id).set(0)

    def _run_task(self, job: Job) -> dict:
        """Detection / segmentation through `resnet.tasks.train_task` (no step events, no stop):
        announced as one run_start and one run_end."""
        cfg = task_config(job.config, job.task).updated({"out": str(job.folder), "progress": False})
        self._on_event(
            job,
            {
                "event": "run_start",
                "out": str(job.folder),
                "task": job.task,
                "config": cfg.to_dict(),
                "model": cfg.model,
                "data": cfg.data,
            },
        )
        summary = train_task(job.task, cfg)
        summary = {k: v for k, v in summary.items() if k != "step_losses"}
        self._on_event(job, {"event": "run_end", "summary": summary, "status": "finished"})
        return summary

    def _on_event(self, job: Job, event: dict) -> None:
        """Keeps one event (thinning steps), appends it to events.jsonl, updates the gauges."""
        if event.get("event") == "step":
            self._step_metrics(job, event)
            now = time.monotonic()
            edge = event["step"] in (1, event["steps"])
            if not edge and now - job.last_step_t < STEP_INTERVAL_S:
                return
            job.last_step_t = now
        line = json.dumps(_plain(event)) + "\n"
        with self.lock:
            job.events.append(json.loads(line))
        with open(job.folder / EVENTS, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _step_metrics(self, job: Job, event: dict) -> None:
        total = max(1, event["epochs"] * event["steps"])
        done = (event["epoch"] - 1) * event["steps"] + event["step"]
        self.metrics.train_progress.labels(job.id).set(min(1.0, done / total))
        self.metrics.train_img_s.labels(job.id).set(event["img_s"])

    def _save(self, job: Job) -> None:
        if job.folder.is_dir():
            write_json(job.folder / JOB, job.record())


def _plain(obj: Any) -> Any:
    """JSON-safe data (tuples as lists, paths and other objects as strings)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finished(folder: Path) -> bool:
    summary = _read_json(folder / "summary.json")
    return isinstance(summary, dict) and summary.get("status") != "stopped"


def file_status(folder: Path) -> str:
    """A run's status from its files alone: finished (summary.json), stopped (a last.pt to
    resume), or what job.json says (failed, cancelled), else failed."""
    if _finished(folder):
        return "finished"
    if (folder / "last.pt").is_file():
        return "stopped"
    saved = _read_json(folder / JOB) or {}
    status = saved.get("status") if isinstance(saved, dict) else None
    return status if status in ("failed", "cancelled") else "failed"


def validate_config(config: dict, task: str) -> Config:
    """The request's config as a TrainConfig (or TaskConfig), or a 422 with the one-line reason."""
    if task not in TASKS:
        raise ApiError(422, f"task must be one of {', '.join(TASKS)}")
    try:
        if task == "classify":
            return TrainConfig.from_dict(config)
        return task_config(config, task)
    except ResNetError as e:
        raise ApiError(422, str(e).splitlines()[0]) from None


# -- reading run folders --------------------------------------------------------------------
def is_run_folder(folder: Path) -> bool:
    """A folder a run wrote (or the server queued): it holds one of a run's files."""
    return (
        folder.is_dir()
        and not folder.name.startswith(".")
        and any((folder / n).exists() for n in ("config.yaml", JOB, "summary.json", "last.pt"))
    )


def read_config(folder: Path) -> dict:
    """The run's config.yaml as a mapping ({} when missing or unreadable), else job.json's."""
    try:
        return TrainConfig.read_yaml(folder / "config.yaml")
    except ResNetError:
        saved = _read_json(folder / JOB) or {}
        return saved.get("config") or {} if isinstance(saved, dict) else {}


def metrics_rows(folder: Path) -> list[dict]:
    """metrics.csv as a list of rows, numbers as numbers (empty cells as None)."""
    path = folder / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str | None) -> float | int | str | None:
    if text in (None, ""):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _section_value(cfg: dict, section: str, key: str) -> Any:
    value = cfg.get(section)
    return value.get(key) if isinstance(value, dict) else value


def run_row(folder: Path, job: Job | None) -> dict:
    """One line of the runs table: model, data, status, accuracies, epochs, time, created."""
    summary = _read_json(folder / "summary.json")
    summary = summary if isinstance(summary, dict) else {}
    cfg = read_config(folder)
    rows = metrics_rows(folder)
    accs = [r["val_acc"] for r in rows if isinstance(r.get("val_acc"), int | float)]
    saved = _read_json(folder / JOB)
    created = saved.get("created") if isinstance(saved, dict) else None
    return dict(
        id=folder.name,
        task=(saved or {}).get("task", cfg.get("task", "classify"))
        if isinstance(saved, dict)
        else cfg.get("task", "classify"),
        model=summary.get("model") or _section_value(cfg, "model", "name"),
        data=summary.get("data") or _section_value(cfg, "data", "source"),
        status=job.status if job is not None and job.status in ACTIVE else file_status(folder),
        best_acc=summary.get("best_val_acc", max(accs) if accs else None),
        test_acc=summary.get("test_acc"),
        epochs=summary.get("epochs", len(rows)),
        train_seconds=summary.get("train_seconds"),
        created=created or _mtime(folder / "config.yaml") or _mtime(folder),
    )


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def evaluation(folder: Path, classes: list[str] | None) -> dict | None:
    """The final evaluation (`test_metrics.json`, else `val_metrics.json`): overall figures,
    per-class precision / recall / F1 and the confusion matrix."""
    for split in ("test", "val"):
        m = _read_json(folder / f"{split}_metrics.json")
        if not isinstance(m, dict):
            continue
        names = classes or [str(i) for i in range(len(m.get("f1", [])))]
        matrix = m.get("confusion_matrix") or []
        per_class = [
            dict(
                name=c,
                precision=_at(m, "precision", i),
                recall=_at(m, "recall", i),
                f1=_at(m, "f1", i),
                support=sum(matrix[i]) if i < len(matrix) else None,
            )
            for i, c in enumerate(names)
        ]
        overall = {k: v for k, v in m.items() if isinstance(v, int | float)}
        return dict(
            split=split,
            classes=names,
            overall=overall,
            per_class=per_class,
            confusion_matrix=matrix,
        )
    return None


def _at(m: dict, key: str, i: int) -> float | None:
    values = m.get(key) or []
    return values[i] if i < len(values) else None


def replay_from_files(folder: Path) -> list[dict]:
    """Events for a run made without the server (`resnet train`): its metrics.csv rows as
    epoch_end events, then run_end when it has a summary."""
    rows = metrics_rows(folder)
    events = [dict(event="epoch_end", epoch=r.get("epoch"), epochs=len(rows), row=r) for r in rows]
    summary = _read_json(folder / "summary.json")
    if isinstance(summary, dict):
        events.append(dict(event="run_end", summary=summary, status=file_status(folder)))
    return events


def misclassified(folder: Path, limit: int) -> dict:
    """Up to `limit` misclassified images of the run's test split (else validation), with true
    and predicted labels and a PNG thumbnail of what the model saw; cached in the run folder
    (`misclassified.json`) until the checkpoint changes."""
    ckpt = next((folder / n for n in ("best.pt", "last.pt") if (folder / n).is_file()), None)
    if ckpt is None:
        raise ApiError(409, "this run has no checkpoint yet")
    key = f"{ckpt.name}:{ckpt.stat().st_mtime_ns}"
    cached = _read_json(folder / MISCLASSIFIED)
    if (
        isinstance(cached, dict)
        and cached.get("key") == key
        and (cached.get("limit", 0) >= limit or cached.get("complete"))
    ):
        return {**cached, "items": cached["items"][:limit]}
    model, state = load_model(ckpt)
    loader, split = _eval_split(state)
    items, seen, classes = [], 0, state["classes"]
    pre = state["preprocessing"]
    with torch.inference_mode():
        for x, y in loader:
            for j, true, predicted, conf in _mistakes(model(x).float(), y, classes):
                items.append(
                    dict(
                        index=seen + j,
                        true=true,
                        predicted=predicted,
                        confidence=round(conf, 4),
                        image=_thumbnail_b64(x[j], pre),
                    )
                )
            seen += len(y)
            if len(items) >= limit:
                break
    complete = len(items) < limit
    result = dict(key=key, split=split, limit=limit, complete=complete, items=items[:limit])
    write_json(folder / MISCLASSIFIED, result)
    return result


def _eval_split(state: dict) -> tuple[Any, str]:
    data = (state.get("config") or {}).get("data", {})
    problem = "the checkpoint names no data"
    for split in ("test", "val"):
        try:
            loader = eval_loader(
                data["source"],
                split,
                state["preprocessing"],
                state["classes"],
                val_split=data.get("val_split", 0.1),
                batch_size=128,
                workers=0,
            )
            return loader, split
        except (ResNetError, KeyError) as e:
            problem = str(e).splitlines()[0] if str(e) else problem
    raise ApiError(409, f"no test or validation images to look at: {problem}")


def _mistakes(logits: torch.Tensor, y: torch.Tensor, classes: list[str]):
    """(index, true, predicted, confidence) of each wrong prediction in a batch; multi-label:
    the findings (";"-joined) differ, confidence the least certain label's."""
    if y.dim() == 2:
        probs = torch.sigmoid(logits)
        pred = probs > 0.5
        conf = torch.where(pred, probs, 1 - probs).min(1).values

        def names(row: torch.Tensor) -> str:
            return ";".join(c for c, on in zip(classes, row.tolist(), strict=True) if on)

        for j in (pred != (y > 0)).any(1).nonzero().flatten().tolist():
            yield j, names(y[j] > 0), names(pred[j]), float(conf[j])
        return
    conf, pred = torch.softmax(logits, dim=1).max(dim=1)
    for j in (pred != y).nonzero().flatten().tolist():
        yield j, classes[int(y[j])], classes[int(pred[j])], float(conf[j])


def _thumbnail_b64(x: torch.Tensor, pre: dict) -> str:
    """One normalised input image back to pixels, as a base64 PNG."""
    c = x.shape[0]
    mean = torch.tensor(pre["mean"], dtype=torch.float32).view(-1, 1, 1)[:c]
    std = torch.tensor(pre["std"], dtype=torch.float32).view(-1, 1, 1)[:c]
    pixels = ((x.float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    arr = pixels[0].numpy() if c == 1 else pixels[:3].permute(1, 2, 0).contiguous().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
