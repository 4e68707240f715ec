"""What `resnet serve` is configured with: one dataclass, each field a command-line flag."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
TOKEN_ENV = "RESNET_SERVE_TOKEN"


@dataclass
class ServeSettings:
    """Settings of one server. Defaults are the safe ones: loopback only, bounded everything.

    Attributes:
        runs: the run folders' root (`resnet train --out` writes there too).
        datasets: where uploaded data sets are extracted (default: `<runs>/../datasets`).
        host, port: where to listen (127.0.0.1: this machine only).
        models: checkpoints, run folders or exported files to serve from the start.
        token: when set, every API call and the page need `Authorization: Bearer <token>`.
        max_batch, max_wait_ms: micro-batching: up to `max_batch` images, waiting at most
            `max_wait_ms` for more after the first.
        max_queue: images waiting for a model; beyond it requests get 503 with Retry-After.
        predict_body_mb, upload_body_mb: request body limits (413 beyond them).
        max_pixels: the largest decoded image (width x height); larger ones get 413.
        zip_members, zip_total_mb: limits of an uploaded ZIP (count, uncompressed size).
        jobs: training jobs that run at once (the rest wait in a queue).
        backend: "auto" (the fastest agreeing with fp32), "eager", "onnxruntime" or "openvino".
        warm: run each model once at start, so the first request is not the slowest.
    """

    runs: Path = Path("runs")
    datasets: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    models: list[str] = field(default_factory=list)
    token: str | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    predict_body_mb: float = 20.0
    upload_body_mb: float = 512.0
    max_pixels: int = 40_000_000
    zip_members: int = 100_000
    zip_total_mb: float = 4096.0
    jobs: int = 1
    backend: str = "auto"
    warm: bool = True

    def __post_init__(self):
        self.runs = Path(self.runs)
        self.datasets = Path(self.datasets) if self.datasets else self.runs.parent / "datasets"
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for what, folder in (("runs", self.runs), ("datasets", self.datasets)):
            if folder.exists() and not folder.is_dir():
                raise ValueError(f"--{what} {folder} is a file, not a folder")
        if self.max_batch < 1 or self.max_queue < 1 or self.jobs < 1:
            raise ValueError("max_batch, max_queue and jobs must be at least 1")
        if self.backend not in ("auto", "eager", "onnxruntime", "openvino"):
            raise ValueError("backend must be auto, eager, onnxruntime or openvino")

    @property
    def predict_body_bytes(self) -> int:
        """The predict endpoint's body limit in bytes."""
        return int(self.predict_body_mb * MiB)

    @property
    def upload_body_bytes(self) -> int:
        """The data-set upload's body limit in bytes."""
        return int(self.upload_body_mb * MiB)
