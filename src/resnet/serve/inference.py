"""The models a server holds, and inference under load: micro-batching on one thread per model.

`ModelRegistry` loads the models named at start (checkpoints, run folders, ensemble folders,
exported .onnx / .pt2 / TorchScript files) and, lazily on first use, any run under `--runs`
(the model's name is the run folder's name). Each classifier gets a `MicroBatcher`: requests
put their images in one queue; a worker task takes up to `max_batch` of them, waiting at most
`max_wait_ms` after the first, and runs the model on a dedicated single-thread executor, so the
event loop never computes. A full queue answers 503 with Retry-After instead of growing.

The backend ("auto") is chosen per model at load: eager fp32 or ONNX Runtime, whichever is
faster on a few batches among those that agree with fp32 (same top-1, small max |diff|).
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ..analysis.gradcam import GradCAM, overlay, to_image_frame
from ..data.images import (
    ImageTooLarge,
    UnreadableImage,
    decode_image,
    image_to_tensor,
    rgb_tensor,
)
from ..engine.inference import class_probabilities
from ..engine.runfolder import MANIFEST, checkpoint_in, is_ensemble_run
from ..errors import ResNetError
from ..export import detect_format, load_classifier
from ..export.samples import real_inputs
from ..models import Ensemble
from ..tasks import checkpoint_task
from ..tasks.detection import detections_to_list, draw_detections
from ..tasks.model import load_task_model
from ..tasks.segmentation import draw_masks
from .errors import ApiError
from .metrics import ServeMetrics
from .settings import ServeSettings

log = logging.getLogger("resnet.serve")

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CAM_SIDE = 512  # Grad-CAM overlays are drawn at most this many pixels on their longer side
SCORE_THRESH = 0.3  # detections below this score are neither drawn nor listed
# The fp32 runtimes a checkpoint can be served from besides eager PyTorch.
RUNTIME_BACKENDS = ("onnxruntime", "openvino")
TIMING_BATCHES = 3  # batches timed per backend when "auto" chooses one


def retry_later(message: str) -> ApiError:
    """A 503 that tells the client when to come back."""
    return ApiError(503, message, {"Retry-After": "1"})


class MicroBatcher:
    """Batches single images from concurrent requests into model calls on one worker thread.

    `await submit(images)` returns one output row per image, equal (up to float tolerance) to
    running the model on that image alone. `run(batch) -> rows` executes on the executor.
    """

    def __init__(self, name: str, run, settings: ServeSettings, metrics: ServeMetrics):
        self.name, self.run, self.metrics = name, run, metrics
        self.max_batch, self.max_queue = settings.max_batch, settings.max_queue
        self.max_wait = settings.max_wait_ms / 1000
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"model-{name}")
        self.pending = 0  # images accepted and not yet answered (waiting or running)
        self.accepting = True
        self._items: deque[tuple[torch.Tensor, asyncio.Future, float]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ensure_worker(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._wakeup = loop, asyncio.Event()
            self._task = loop.create_task(self._work(), name=f"batcher-{self.name}")
        return loop

    async def submit(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The model's output rows for `images`, computed in shared batches."""
        if not self.accepting:
            raise retry_later("the server is shutting down")
        if self.pending + len(images) > self.max_queue:
            raise retry_later(
                f"model {self.name} is busy ({self.pending} images queued, limit "
                f"{self.max_queue}); retry shortly"
            )
        loop = self._ensure_worker()
        futures = [loop.create_future() for _ in images]
        now = loop.time()
        self._items.extend((x, f, now) for x, f in zip(images, futures, strict=True))
        self.pending += len(images)
        self.metrics.queue_depth.inc(len(images))
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*futures))
        finally:
            self.pending -= len(images)
            self.metrics.queue_depth.dec(len(images))

    async def _work(self) -> None:
        """Forever: wait for images, gather a batch, run it off the loop, hand out the rows."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._fill(loop)
            batch = self._take()
            if not batch:
                continue
            self.metrics.batch_size.observe(len(batch))
            try:
                rows = await loop.run_in_executor(
                    self.executor, self.run, torch.stack([x for x, _ in batch])
                )
            except Exception as e:  # the requests waiting on this batch get the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), row in zip(batch, rows, strict=True):
                if not fut.done():
                    fut.set_result(row)

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Waits until `max_batch` images wait or `max_wait` has passed since the first."""
        deadline = self._items[0][2] + self.max_wait
        while len(self._items) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[tuple[torch.Tensor, asyncio.Future]]:
        """Up to `max_batch` waiting images of one shape, skipping abandoned requests."""
        batch: list[tuple[torch.Tensor, asyncio.Future]] = []
        while self._items and len(batch) < self.max_batch:
            x, fut, _ = self._items[0]
            if fut.done():  # its request was cancelled (client gone)
                self._items.popleft()
                continue
            if batch and x.shape != batch[0][0].shape:
                break
            self._items.popleft()
            batch.append((x, fut))
        return batch

    async def drain(self, timeout: float = 30.0) -> None:
        """Stops taking images and waits (at most `timeout` s) for the accepted ones."""
        self.accepting = False
        end = time.monotonic() + timeout
        while self.pending and time.monotonic() < end:
            await asyncio.sleep(0.01)
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def close(self) -> None:
        """Stops the worker thread (after the batch it is running)."""
        self.accepting = False
        if self._task is not None and not self._task.done() and self._loop is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self.executor.shutdown(wait=False, cancel_futures=True)


def _png_base64(picture: torch.Tensor) -> str:
    """A uint8 [H, W, 3] (or [3, H, W]) picture as base64 PNG text."""
    if picture.ndim == 3 and picture.shape[0] == 3 and picture.shape[-1] != 3:
        picture = picture.permute(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(picture.contiguous().numpy()).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_or_refuse(data: bytes, index: int, max_pixels: int) -> Image.Image:
    """Decodes one uploaded image; over the limit -> 413, not an image -> 415."""
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageTooLarge as e:
        raise ApiError(413, f"image {index}: {e}") from None
    except UnreadableImage:
        raise ApiError(415, f"image {index} is not an image this server can read") from None


def _timed(fn, x: torch.Tensor) -> float:
    """Median seconds of `fn(x)` over a few runs, after one untimed run."""
    fn(x)
    times = []
    for _ in range(TIMING_BATCHES):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def agrees(reference, candidate, x: torch.Tensor) -> tuple[bool, float]:
    """Whether `candidate` gives the same top-1 as `reference` on `x` with a small max |diff|."""
    ref, got = reference(x).float(), candidate(x).float()
    diff = float((ref - got).abs().max()) if torch.isfinite(got).all() else float("inf")
    tol = 1e-3 + 1e-3 * float(ref.abs().max())
    return bool((ref.argmax(1) == got.argmax(1)).all()) and diff <= tol, diff


def _image_model(clf, path: Path):
    """`clf`, unless it reads scans: the server decodes 2-D images only."""
    if clf.preprocessing.get("scan"):
        raise ResNetError(
            f"{path} reads DICOM / NIfTI scans; the server takes 2-D images only: use "
            "`resnet predict` for scan models"
        )
    return clf


def choose_backend(path: Path, backend: str, max_batch: int):
    """`(classifier, report)`: the forced backend, or under "auto" the fastest that agrees.

    Exported files run on their own runtime (ONNX -> onnxruntime, an IR -> openvino, ...).
    Under "auto" a checkpoint is exported in memory to each fp32 runtime of RUNTIME_BACKENDS;
    those that agree with eager fp32 are timed on real images and the fastest serves.
    """
    if detect_format(path) != "checkpoint" or backend == "eager":
        clf = _image_model(load_classifier(path), path)
        return clf, {"backend": _backend_name(clf), "chosen_by": backend}
    if backend in RUNTIME_BACKENDS:
        clf = _image_model(load_classifier(path, backend), path)  # exports + parity
        return clf, {"backend": backend, "chosen_by": backend}
    eager = _image_model(load_classifier(path), path)
    report: dict[str, Any] = {"chosen_by": "auto", "timings_ms": {}, "rejected": {}}
    x = real_inputs(eager.preprocessing, min(max_batch, 8))
    candidates = {"eager": eager}
    for name in RUNTIME_BACKENDS:
        try:
            clf = load_classifier(path, name)
            ok, diff = agrees(eager, clf, x)
            if ok:
                candidates[name] = clf
            else:
                report["rejected"][name] = f"differs from fp32 (max |diff| {diff:.2e})"
        except Exception as e:  # a missing package, export or parity failure: not a candidate
            report["rejected"][name] = str(e).splitlines()[0][:200] or type(e).__name__
    for name, clf in candidates.items():
        report["timings_ms"][name] = round(1000 * _timed(clf, x), 3)
    best = min(report["timings_ms"], key=report["timings_ms"].get)
    report["backend"] = best
    report["timing_batch"] = len(x)
    return candidates[best], report


def _backend_name(clf) -> str:
    return "eager" if clf.backend == "torch" and clf.source == "checkpoint" else clf.backend


class ServedClassifier:
    """A classifier behind a `MicroBatcher`: decode, preprocess, batch, top-k, Grad-CAM."""

    task = "classify"

    def __init__(self, name: str, path: Path, settings: ServeSettings, metrics: ServeMetrics):
        self.name, self.path, self.settings = name, path, settings
        self.classifier, self.backend = choose_backend(path, settings.backend, settings.max_batch)
        self.transform = self.classifier.transform()
        self.pre = self.classifier.preprocessing
        self.classes = self.classifier.classes
        model = self.classifier.model
        self.cam_problem = (
            "needs the eager checkpoint (this is an exported file)"
            if model is None
            else "explains one net, not an ensemble"
            if isinstance(model, Ensemble)
            else None
        )
        self.batcher = MicroBatcher(name, self._run, settings, metrics)
        if settings.warm:
            self._run(self._inputs([torch.zeros(self.pre["in_chans"], *self.pre["size"])]))

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities for a preprocessed batch (on the model's own thread)."""
        return class_probabilities(self.classifier(batch), self.pre)

    def _inputs(self, images: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.transform(x) for x in images])

    def _prepare(self, data: list[bytes]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Decoded float [C, H, W] images and their model inputs (on a worker thread:
        decoding is not the event loop's job)."""
        images = []
        for i, d in enumerate(data):
            with decode_or_refuse(d, i, self.settings.max_pixels) as img:
                try:
                    images.append(image_to_tensor(img, self.pre["in_chans"], f"image {i}"))
                except UnreadableImage:
                    raise ApiError(415, f"image {i} is not an image this server can read") from None
                except ResNetError as e:
                    raise ApiError(422, str(e)) from None
        return images, [self.transform(x) for x in images]

    async def predict(self, data: list[bytes], top_k: int, cam: bool) -> list[dict]:
        """Top-k classes (and a Grad-CAM overlay when `cam`) for each encoded image."""
        if cam and self.cam_problem:
            raise ApiError(422, f"Grad-CAM on model {self.name} {self.cam_problem}")
        images, inputs = await asyncio.to_thread(self._prepare, data)
        probs = await self.batcher.submit(inputs)
        k = min(top_k, len(self.classes))
        results = []
        for p in probs:
            top = p.topk(k)
            results.append(
                {
                    "top_k": [
                        {"label": self.classes[i], "index": int(i), "prob": float(v)}
                        for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                    ]
                }
            )
        if cam:
            targets = [r["top_k"][0]["index"] for r in results]
            loop = asyncio.get_running_loop()
            pngs = await loop.run_in_executor(
                self.batcher.executor, self._cams, images, inputs, targets
            )
            for r, png in zip(results, pngs, strict=True):
                r["cam_png"] = png
        return results

    def _cams(self, images, inputs, targets) -> list[str]:
        """Grad-CAM overlays (base64 PNG) of each image for its top-1 class."""
        cam_of = GradCAM(self.classifier.model)
        out = []
        for image, x, target in zip(images, inputs, targets, strict=True):
            cam, _ = cam_of(x[None], target=target)
            h, w = image.shape[-2:]
            if max(h, w) > CAM_SIDE:
                scale = CAM_SIDE / max(h, w)
                size = [max(1, round(h * scale)), max(1, round(w * scale))]
                image = TF.resize(image, size, antialias=True)
            full = to_image_frame(cam[0], (h, w), self.pre)
            out.append(_png_base64(overlay(image, full)))
        return out

    def describe(self) -> dict:
        """What the model is and how it is served."""
        model = self.classifier.model
        return {
            "name": self.name,
            "source": str(self.path),
            "format": self.classifier.source,
            "task": self.task,
            "classes": self.classes,
            "input_size": [self.pre["in_chans"], *self.pre["size"]],
            "params": sum(p.numel() for p in model.parameters()) if model is not None else None,
            "backend": self.backend["backend"],
            "backend_choice": self.backend,
            "cam": self.cam_problem is None,
            "cam_note": "Grad-CAM runs on the eager fp32 model"
            if self.cam_problem is None
            else f"Grad-CAM {self.cam_problem}",
            "max_batch": self.settings.max_batch,
            "max_wait_ms": self.settings.max_wait_ms,
            "max_queue": self.settings.max_queue,
            "loaded": True,
        }


class ServedTask:
    """A detection or segmentation checkpoint: one image at a time, drawn as a PNG."""

    def __init__(self, name: str, path: Path, settings: ServeSettings, metrics: ServeMetrics):
        self.name, self.path, self.settings = name, path, settings
        self.model, state = load_task_model(path)
        self.task, self.classes = state["task"], list(state["classes"])
        self.size = self.model.head_config["size"]
        self.batcher = MicroBatcher(name, None, settings, metrics)  # its thread; no batching

    @torch.no_grad()
    def _one(self, image: torch.Tensor) -> dict:
        """Boxes or class masks of one uint8 RGB image, with the drawing as base64 PNG."""
        if self.task == "detect":
            pred = self.model([image.float() / 255])[0]
            drawn = draw_detections(image, pred, self.classes, SCORE_THRESH)
            return {
                "detections": detections_to_list(pred, self.classes, SCORE_THRESH),
                "image_png": _png_base64(drawn),
            }
        x = TF.resize(image, [self.size, self.size], antialias=True).float()[None] / 255
        logits = F.interpolate(
            self.model(x), size=image.shape[-2:], mode="bilinear", align_corners=False
        )
        semantic = logits.argmax(1)[0]
        counts = torch.bincount(semantic.flatten(), minlength=len(self.classes) + 1)
        frac = (counts / semantic.numel()).tolist()
        found = {
            self.classes[c - 1]: round(frac[c], 4)
            for c in range(1, len(self.classes) + 1)
            if counts[c] > 0
        }
        return {"classes": found, "image_png": _png_base64(draw_masks(image, semantic))}

    def _predict_all(self, data: list[bytes]) -> list[dict]:
        out = []
        for i, d in enumerate(data):
            with decode_or_refuse(d, i, self.settings.max_pixels) as img:
                image = rgb_tensor(img)
            out.append(self._one(image))
        return out

    async def predict(self, data: list[bytes], top_k: int, cam: bool) -> list[dict]:
        """Detections or masks for each encoded image (top_k and cam do not apply)."""
        b = self.batcher
        if not b.accepting:
            raise retry_later("the server is shutting down")
        if b.pending + len(data) > b.max_queue:
            raise retry_later(f"model {self.name} is busy; retry shortly")
        b.pending += len(data)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(b.executor, self._predict_all, data)
        finally:
            b.pending -= len(data)

    def describe(self) -> dict:
        """What the model is and how it is served."""
        return {
            "name": self.name,
            "source": str(self.path),
            "format": "checkpoint",
            "task": self.task,
            "classes": self.classes,
            "input_size": [3, self.size, self.size],
            "params": sum(p.numel() for p in self.model.parameters()),
            "backend": "eager",
            "backend_choice": {"backend": "eager", "chosen_by": "task models run eager"},
            "cam": False,
            "cam_note": "Grad-CAM is for classifiers; this model draws boxes or masks",
            "max_batch": 1,
            "max_wait_ms": 0,
            "max_queue": self.settings.max_queue,
            "loaded": True,
        }


def load_served(name: str, path: Path, settings: ServeSettings, metrics: ServeMetrics):
    """A served model for a checkpoint, run folder, ensemble folder or exported file."""
    if detect_format(path) == "checkpoint" and checkpoint_task(path) != "classify":
        return ServedTask(name, path, settings, metrics)
    return ServedClassifier(name, path, settings, metrics)


def model_name(spec: str) -> tuple[str, Path]:
    """`NAME=PATH` or a bare path: a run folder's name, a run's best.pt/last.pt -> its folder's
    name, any other file -> its stem."""
    if "=" in spec and not Path(spec).exists():
        name, _, path = spec.partition("=")
        return name, Path(path)
    path = Path(spec)
    if path.is_dir():
        return path.resolve().name, path
    if path.name in ("best.pt", "last.pt"):
        return path.resolve().parent.name, path
    return path.stem, path


def _is_run(folder: Path) -> bool:
    """A folder a model can be loaded from: it has a checkpoint or is a finished ensemble."""
    return folder.is_dir() and (
        (folder / "best.pt").exists()
        or (folder / "last.pt").exists()
        or (folder / MANIFEST).exists()
    )


class ModelRegistry:
    """The models one server serves: named at start, plus any run under `--runs` on first use."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics):
        self.settings, self.metrics = settings, metrics
        self._models: dict[str, Any] = {}
        self._lazy: dict[str, float] = {}  # run name -> checkpoint mtime when it was loaded
        self._lock = threading.Lock()
        self.accepting = True
        self.loaded = False  # load_all has run (`resnet serve` runs it before binding the port)

    def load_all(self) -> None:
        """Loads (and warms) every model in `settings.models` once; a bad one stops the start."""
        if self.loaded:
            return
        for spec in self.settings.models:
            name, path = model_name(spec)
            if not path.exists():
                raise ResNetError(f"--model {spec}: no such file or folder")
            while name in self._models:
                name += "-2"
            t0 = time.perf_counter()
            self._models[name] = load_served(name, path, self.settings, self.metrics)
            log.info("loaded model %s from %s in %.1f s", name, path, time.perf_counter() - t0)
        self.loaded = True

    def names(self) -> list[str]:
        """The loaded models' names."""
        return list(self._models)

    def available_runs(self) -> list[str]:
        """Run folders under `settings.runs` a model can be loaded from."""
        root = self.settings.runs
        if not root.is_dir():
            return []
        return sorted(d.name for d in root.iterdir() if RUN_NAME.match(d.name) and _is_run(d))

    def describe(self) -> list[dict]:
        """Every loaded model, then the runs not loaded yet (loaded on first use)."""
        out = [m.describe() for m in list(self._models.values())]
        for run in self.available_runs():
            if run not in self._models:
                out.append({"name": run, "source": str(self.settings.runs / run), "loaded": False})
        return out

    def describe_one(self, name: str) -> dict:
        """One model's description (loading a run's model if needed)."""
        return self.get(name).describe()

    def _run_folder(self, name: str) -> Path:
        """The run folder `name` stands for, refusing names that could leave `--runs`."""
        folder = self.settings.runs / name
        if not RUN_NAME.match(name) or ".." in name or not _is_run(folder):
            known = ", ".join(self.names()[:10]) or "none loaded"
            raise ApiError(404, f"no model or run named {name!r} (models: {known})")
        return folder

    def _stale(self, name: str) -> bool:
        """A run's model loaded lazily whose checkpoint has been rewritten since."""
        if name not in self._lazy:
            return False
        try:
            return checkpoint_in(self.settings.runs / name).stat().st_mtime != self._lazy[name]
        except (OSError, ResNetError):
            return False

    def get(self, name: str):
        """The served model `name`; a run's model loads on first use (and again after its
        checkpoint changed, e.g. while it trains). Blocking: call it off the event loop."""
        served = self._models.get(name)
        if served is not None and not self._stale(name):
            return served
        folder = self._run_folder(name)
        with self._lock:
            served = self._models.get(name)
            if served is not None and not self._stale(name):
                return served
            mtime = 0.0 if is_ensemble_run(folder) else checkpoint_in(folder).stat().st_mtime
            fresh = load_served(name, folder, self.settings, self.metrics)
            old, self._models[name], self._lazy[name] = served, fresh, mtime
        if old is not None:
            old.batcher.accepting = False  # it finishes what it holds; new requests go to fresh
        return fresh

    def default_name(self) -> str:
        """The model a request without `model` gets: the first loaded one."""
        if not self._models:
            runs = ", ".join(self.available_runs()[:10]) or "none"
            raise ApiError(422, f"name a model (no model is loaded; runs: {runs})")
        return next(iter(self._models))

    async def predict(
        self, name: str | None, images: list[bytes], *, top_k: int = 5, cam: bool = False
    ) -> list[dict]:
        """Predictions for encoded images by model `name` (None: the default model)."""
        if not self.accepting:
            raise retry_later("the server is shutting down")
        served = await asyncio.to_thread(self.get, name or self.default_name())
        return await served.predict(images, top_k, cam)

    async def drain(self) -> None:
        """Stops taking requests and lets the queued ones finish."""
        self.accepting = False
        await asyncio.gather(*(m.batcher.drain() for m in list(self._models.values())))

    def close(self) -> None:
        """Stops every model's worker thread."""
        for m in list(self._models.values()):
            m.batcher.close()
