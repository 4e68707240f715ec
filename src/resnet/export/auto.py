"""Picks the fastest inference mode that agrees with eager fp32 on this machine, and remembers
the pick per model file, CPU, thread count and runtime versions (`--backend auto`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.scans import scan_samples
from ..engine.inference import expand_inputs
from ..engine.runfolder import checkpoint_in, is_ensemble_run, member_paths
from ..errors import ResNetError
from ..models.catalogue import cache_dir
from ..storage import sha256_file, write_json
from .benchmark import AGREEMENT_TARGET, machine, runtime_version, time_interleaved, top1
from .fast import ONNX_BASED, Runner, build
from .onnx import onnx_bytes
from .samples import calibration_images, fashion_mnist_split, real_inputs

# What `choose_backend` tries by default, in this order (eager fp32 first: it is the reference).
AUTO_MODES = (
    "eager_fp32",
    "channels_last",
    "bf16",
    "onnxruntime_fp32",
    "onnxruntime_int8",
    "openvino_fp32",
    "openvino_bf16",
    "openvino_int8",
)
# The runtime each mode runs in: `Classifier.backend` of a model loaded with backend "auto".
MODE_BACKEND = {
    "eager_fp32": "torch",
    "channels_last": "torch",
    "bf16": "torch",
    "compile_bf16": "torch",
    "onnxruntime_fp32": "onnxruntime",
    "onnxruntime_int8": "onnxruntime",
    "openvino_fp32": "openvino",
    "openvino_bf16": "openvino",
    "openvino_int8": "openvino",
    "openvino_int8_reference": "openvino",
    "litert_fp32": "litert",
    "litert_int8": "litert",
}
# The exported file that runs each mode: (format, int8). PyTorch's modes run the checkpoint
# itself best; an ExportedProgram is the file closest to it.
EXPORT_FORMAT = {
    "eager_fp32": ("exported-program", False),
    "channels_last": ("exported-program", False),
    "bf16": ("exported-program", False),
    "compile_bf16": ("exported-program", False),
    "onnxruntime_fp32": ("onnx", False),
    "onnxruntime_int8": ("onnx", True),
    "openvino_fp32": ("openvino", False),
    "openvino_bf16": ("openvino", False),  # an fp32 IR marked to compile in bf16
    "openvino_int8": ("openvino", True),
    "openvino_int8_reference": ("openvino", True),
}
RULE = (
    f"the lowest batch-1 latency among modes whose top-1 agreement with eager fp32 is "
    f">= {AGREEMENT_TARGET:.0%}"
)
CACHE_FOLDER = "backend-choice"  # under the package's cache folder (`$RESNET_CACHE`)
CACHE_VERSION = 1


@dataclass
class BackendChoice:
    """The mode `choose_backend` picked, and what it measured.

    Attributes:
        mode: the picked mode (one of `fast.MODES`).
        latency_ms: its median batch-1 latency.
        throughput_img_s: its throughput at the larger batch size.
        agreement: its top-1 agreement with eager fp32 on the agreement images.
        table: every mode tried: {"latency_ms", "throughput_img_s", "agreement"} or {"error"}.
        rule: how the pick was made.
        key: what a cached choice is valid for (file hash, CPU, threads, versions).
    """

    mode: str
    latency_ms: float
    throughput_img_s: float
    agreement: float
    table: dict[str, dict[str, Any]]
    rule: str = RULE
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        """The runtime the picked mode runs in: torch, onnxruntime or openvino."""
        return MODE_BACKEND[self.mode]

    @property
    def speedup(self) -> float:
        """Batch-1 latency of eager fp32 over the picked mode's (1.0 when eager was not timed)."""
        eager = self.table.get("eager_fp32", {}).get("latency_ms")
        return eager / self.latency_ms if eager and self.latency_ms else 1.0

    def line(self, cached: bool = False) -> str:
        """One line: what was picked and why."""
        where = "cached choice" if cached else "measured now"
        ran = [r for r in self.table.values() if "error" not in r]
        agreeing = sum(r["agreement"] >= AGREEMENT_TARGET for r in ran)
        return (
            f"backend auto: {self.mode} ({self.backend}), {self.speedup:.1f}x eager fp32 at "
            f"batch 1 ({self.latency_ms:.2f} ms), top-1 agreement {self.agreement:.1%}; "
            f"fastest of the {agreeing} of {len(ran)} modes agreeing >= "
            f"{AGREEMENT_TARGET:.0%} ({where})"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackendChoice:
        """The choice `to_dict` wrote."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def default_modes() -> tuple[str, ...]:
    """The modes `choose_backend` tries: AUTO_MODES (those that cannot run here say why)."""
    return AUTO_MODES


def _error_line(e: BaseException) -> str:
    """A one-line reason a mode is unavailable."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(e, ResNetError):
        return text[:240] or type(e).__name__
    return f"{type(e).__name__}: {text}"[:240]


def _batch(x: torch.Tensor, n: int) -> torch.Tensor:
    """`n` images of `x` (cycled when it has fewer)."""
    return x[:n] if len(x) >= n else x.repeat(-(-n // len(x)), *([1] * (x.ndim - 1)))[:n]


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to `threads` for the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _prepare(
    model: torch.nn.Module,
    modes: Sequence[str],
    example: torch.Tensor,
    calibration: torch.Tensor | None,
    threads: int,
    log: Callable[[str], None],
) -> tuple[dict[str, Runner], dict[str, dict[str, Any]]]:
    """Builds every mode; `(runners, table)` with the one-line error of each that failed."""
    runners: dict[str, Runner] = {}
    table: dict[str, dict[str, Any]] = {}
    onnx_fp32: bytes | None = None
    for i, mode in enumerate(modes, 1):
        log(f"backend auto: preparing {mode} ({i}/{len(modes)})")
        t0 = time.perf_counter()
        try:
            if mode in ONNX_BASED and onnx_fp32 is None:  # one export for ORT and OpenVINO
                onnx_fp32 = onnx_bytes(model, example[:2], dynamic_batch=True)
            runners[mode] = build(
                model,
                mode,
                example=example,
                calibration=calibration,
                threads=threads,
                onnx_model=onnx_fp32 if mode in ONNX_BASED else None,
            )
            table[mode] = {"prepare_s": round(time.perf_counter() - t0, 2)}
        except Exception as e:  # noqa: BLE001 - any failure makes the mode unavailable here
            table[mode] = {"error": _error_line(e)}
    return runners, table


def _agreement(
    runners: dict[str, Runner],
    table: dict[str, dict[str, Any]],
    agreement: torch.Tensor,
    inputs: dict[int, torch.Tensor],
    big: int,
) -> None:
    """Warms each runner at both batch sizes and records its top-1 agreement with the first
    (eager fp32); a runner that fails here is dropped with its error."""
    reference = None
    for mode, fn in list(runners.items()):
        try:
            for x in inputs.values():
                fn(x)
            preds = top1(fn, agreement, big)
        except Exception as e:  # noqa: BLE001
            table[mode] = {"error": _error_line(e)}
            del runners[mode]
            continue
        reference = preds if reference is None else reference
        table[mode]["agreement"] = round(float((preds == reference).float().mean()), 4)


def choose_backend(
    model: torch.nn.Module,
    example: torch.Tensor,
    *,
    calibration: torch.Tensor | None,
    agreement: torch.Tensor,
    modes: Sequence[str] | None = None,
    threads: int | None = None,
    min_seconds: float = 0.5,
    batch_sizes: tuple[int, int] = (1, 32),
    log: Callable[[str], None] | None = None,
) -> BackendChoice:
    """The fastest inference mode that agrees with eager fp32 on this machine.

    Rule: among the modes whose top-1 agreement with eager fp32 on `agreement` is >= 99 %, the
    one with the lowest median batch-1 latency (eager fp32 itself always qualifies). Every mode
    is built, warmed at both batch sizes, then all are timed interleaved round by round, so load
    from other processes falls on all alike.

    Args:
        model: the eager network (not modified).
        example: an input batch (the ONNX export traces its first two images).
        calibration: preprocessed training images for the int8 modes (None: int8 unavailable).
        agreement: preprocessed real images, held out from `calibration`, to compare top-1 on.
        modes: modes to try (default `default_modes()`); eager fp32 is added first if missing.
        threads: threads for PyTorch, ONNX Runtime and OpenVINO (default: torch's).
        min_seconds: timing per mode and batch size.
        batch_sizes: (latency batch, throughput batch).
        log: receives one line per step (progress).

    Returns:
        The choice, with every mode's figures or the one-line error that ruled it out.
    """
    if len(agreement) == 0:
        raise ResNetError("choose_backend needs agreement images (got none)")
    log = log or (lambda s: None)
    threads = threads or torch.get_num_threads()
    modes = list(dict.fromkeys(["eager_fp32", *(modes or default_modes())]))
    small, big = batch_sizes
    with _torch_threads(threads):
        runners, table = _prepare(model, modes, example, calibration, threads, log)
        inputs = {b: _batch(agreement, b) for b in (small, big)}
        _agreement(runners, table, agreement, inputs, big)
        log(f"backend auto: timing {len(runners)} modes at batch {small} and {big}")
        for b, key in ((small, "latency_ms"), (big, "throughput_img_s")):
            for mode, times in time_interleaved(runners, inputs[b], min_seconds).items():
                med = statistics.median(times)
                table[mode][key] = round(med * 1e3, 3) if b == small else round(b / med, 2)
    return _pick(table)


def _pick(table: dict[str, dict[str, Any]]) -> BackendChoice:
    """Applies RULE to a measured table."""
    ok = [m for m, r in table.items() if "error" not in r and r["agreement"] >= AGREEMENT_TARGET]
    if not ok:
        raise ResNetError("no inference mode ran here (not even eager fp32)")
    best = min(ok, key=lambda m: table[m]["latency_ms"])
    row = table[best]
    return BackendChoice(
        mode=best,
        latency_ms=row["latency_ms"],
        throughput_img_s=row["throughput_img_s"],
        agreement=row["agreement"],
        table=table,
    )


# The cached choice of a model file (`load_classifier(path, backend="auto")`).


def model_files(path: str | os.PathLike) -> list[Path]:
    """The checkpoint files a checkpoint path, run folder or ensemble folder loads."""
    path = Path(path)
    if path.is_dir() and is_ensemble_run(path):
        return [checkpoint_in(Path(m)) for m in member_paths(path)]
    return [checkpoint_in(path)]


def cache_key(path: str | os.PathLike, threads: int) -> dict[str, Any]:
    """What a measured choice holds for: the files' SHA-256, the CPU, threads, runtime versions."""
    return {
        "version": CACHE_VERSION,
        "sha256": [sha256_file(p) for p in model_files(path)],
        "cpu": machine()["cpu"],
        "threads": int(threads),
        "versions": {p: runtime_version(p) for p in ("torch", "onnxruntime", "openvino", "nncf")},
    }


def cache_file(key: dict[str, Any], root: str | os.PathLike | None = None) -> Path:
    """Where the choice for `key` is kept: `<cache folder>/backend-choice/<hash of key>.json`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return Path(root or cache_dir()) / CACHE_FOLDER / f"{digest}.json"


def cached_choice(key: dict[str, Any]) -> BackendChoice | None:
    """The choice stored for `key`, or None (none yet, or an unreadable file)."""
    path = cache_file(key)
    try:
        data = json.loads(path.read_text())
        choice = BackendChoice.from_dict(data)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return choice if choice.key == key and choice.mode in MODE_BACKEND else None


def remember(choice: BackendChoice, key: dict[str, Any]) -> Path:
    """Stores `choice` for `key` (atomically); returns the file."""
    choice.key = key
    return write_json(cache_file(key), choice.to_dict())


def stderr_log(line: str) -> None:
    """Prints a progress or result line on stderr (stdout stays for results)."""
    print(line, file=sys.stderr, flush=True)


# A checkpoint's own images: calibration for int8 and held-out images to agree on.


def data_source(state: dict[str, Any]) -> str | None:
    """The data source a checkpoint was trained on, as its config records it (or None)."""
    return (state.get("config") or {}).get("data", {}).get("source") or None


def calibration_for(state: dict[str, Any], n: int = 256) -> torch.Tensor | None:
    """`n` of the checkpoint's training images, preprocessed, as `resnet export --int8`
    calibrates on; None for scan models and checkpoints that record no usable data source."""
    pre, source = state["preprocessing"], data_source(state)
    if pre.get("scan") or not source:
        return None
    try:
        return calibration_images(source, pre, n)
    except ResNetError:
        return None  # the data moved or is not installed: the int8 modes are left out


def agreement_for(state: dict[str, Any], n: int = 512) -> torch.Tensor:
    """Real images to compare top-1 on, held out from calibration: the Fashion-MNIST test split,
    a folder's val/ or test/ images, the training scans of a scan model, else photo crops."""
    pre, source = state["preprocessing"], data_source(state)
    if pre.get("scan"):
        return scan_samples(pre, [source or ""], 16)
    with contextlib.suppress(ResNetError):
        if source == "fashion-mnist":
            return fashion_mnist_split(pre, "test", n)[0]
        for name in ("val", "test"):
            if source and (Path(source) / name).is_dir():
                paths = expand_inputs([Path(source) / name])[:n]
                return real_inputs(pre, len(paths), paths)
    return real_inputs(pre, 64)


def choose_for_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    state: dict[str, Any],
    *,
    threads: int | None = None,
    min_seconds: float = 0.3,
    log: Callable[[str], None] | None = None,
) -> tuple[BackendChoice, bool]:
    """`(choice, from_cache)` for a checkpoint: the cached choice for this file, CPU, thread
    count and runtime versions, else one measured now by `choose_backend` and cached."""
    log = log or stderr_log
    threads = threads or torch.get_num_threads()
    key = cache_key(path, threads)
    choice = cached_choice(key)
    if choice is not None:
        return choice, True
    log(f"backend auto: measuring the inference modes of {path} once (cached afterwards)")
    x = agreement_for(state)
    choice = choose_backend(
        model,
        x[:2],
        calibration=calibration_for(state),
        agreement=x,
        threads=threads,
        min_seconds=min_seconds,
        log=log,
    )
    remember(choice, key)
    return choice, False


def build_choice(
    model: torch.nn.Module,
    choice: BackendChoice,
    state: dict[str, Any],
    threads: int | None = None,
) -> Runner:
    """The picked mode built for `model` (int8 calibrated on the checkpoint's training images)."""
    calibration = calibration_for(state) if "int8" in choice.mode else None
    return build(
        model,
        choice.mode,
        example=agreement_for(state, 2)[:2],
        calibration=calibration,
        threads=threads or torch.get_num_threads(),
    )
