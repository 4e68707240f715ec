"""What a comparison measures on this machine: accuracy and training speed from each finished
run folder, peak memory while a run trains, and each trained model's size, MACs and inference
speed in the fastest backend that agrees with eager fp32."""

from __future__ import annotations

import copy
import json
import re
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..engine.checkpoint import load_checkpoint, load_model
from ..engine.runfolder import checkpoint_in
from ..errors import ResNetError
from ..export.auto import AUTO_MODES, agreement_for, calibration_for, choose_backend
from ..export.fast import MODES
from ..models import count_macs, count_params

BACKEND_ALIASES = {"eager": "eager_fp32"}
LATENCY_BATCH, THROUGHPUT_BATCH = 1, 32


def parse_backends(text: str) -> list[str] | None:
    """The inference modes `--backends` names: None for "auto" (every mode `choose_backend`
    tries), ["eager_fp32"] for "eager", else a comma-separated list of modes."""
    text = text.strip().lower()
    if text == "auto":
        return None
    modes = [BACKEND_ALIASES.get(m.strip(), m.strip()) for m in text.split(",") if m.strip()]
    known = dict.fromkeys([*AUTO_MODES, *MODES])
    unknown = [m for m in modes if m not in known]
    if unknown or not modes:
        raise ResNetError(
            f"unknown backend {unknown[0] if unknown else text!r}; use auto, eager or modes "
            f"from {', '.join(known)}"
        )
    return modes


class PeakMemory:
    """The peak memory of a block, in MiB: on a GPU CUDA's maximum allocated, on the CPU the
    process's peak resident set (its high-water mark reset on entry where Linux allows, else
    the process's peak since it started)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss"
        self.mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:  # "5" resets VmHWM, the peak RSS (Linux 4.0+)
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.kind = "rss_since_start"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mb = _peak_rss_mb()


def _peak_rss_mb() -> float:
    """This process's peak resident set in MiB (VmHWM, else getrusage's ru_maxrss)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    except (OSError, AttributeError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def run_figures(folder: Path) -> dict[str, Any]:
    """A finished run's accuracy (test split, else the held-out validation split), epochs,
    training time and training throughput, from its summary.json and last.pt."""
    summary = json.loads((folder / "summary.json").read_text())
    split = "test" if summary.get("test_acc") is not None else "val"
    history = load_checkpoint(folder / "last.pt", mmap=True).get("history", [])
    seconds = sum(r.get("seconds", 0.0) for r in history)
    images = sum(r.get("img_s", 0.0) * r.get("seconds", 0.0) for r in history)
    return {
        "status": "finished",
        "split": split,
        "accuracy": summary.get(f"{split}_acc"),
        "epochs": summary.get("epochs"),
        "train_seconds": summary.get("train_seconds"),
        "train_img_s": round(images / seconds, 2) if seconds else None,
    }


def model_size(model: torch.nn.Module, preprocessing: dict) -> tuple[int, int]:
    """(parameters, MACs of one image) of a model; MACs counted on a weightless meta copy."""
    shadow = copy.deepcopy(model).to("meta")
    size = tuple(int(s) for s in preprocessing["size"])
    return count_params(model), count_macs(shadow, size, int(preprocessing["in_chans"]))


def inference_figures(
    folder: Path,
    modes: list[str] | None,
    *,
    min_seconds: float = 0.5,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """A trained model's size and its inference speed on this machine's CPU: batch-1 latency
    and batch-32 throughput of the fastest of `modes` (None: every mode) whose top-1 agreement
    with eager fp32 on held-out images is >= 99 % (`export.auto.choose_backend`)."""
    model, state = load_model(folder)
    params, macs = model_size(model, state["preprocessing"])
    images = agreement_for(state)
    int8 = modes is None or any("int8" in m for m in modes)
    choice = choose_backend(
        model,
        images[:2],
        calibration=calibration_for(state) if int8 else None,
        agreement=images,
        modes=modes,
        min_seconds=min_seconds,
        batch_sizes=(LATENCY_BATCH, THROUGHPUT_BATCH),
        log=log,
    )
    return {
        "checkpoint": str(checkpoint_in(folder)),
        "params": params,
        "macs": macs,
        "backend": choice.mode,
        "latency_ms": choice.latency_ms,
        "throughput_img_s": choice.throughput_img_s,
        "agreement": choice.agreement,
        "threads": torch.get_num_threads(),
        "modes": choice.table,
    }
