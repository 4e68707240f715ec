"""One way to run a trained classifier, whatever it was saved as: `load_classifier`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..data.scans import scan_samples
from ..data.transforms import eval_transform
from ..engine.checkpoint import load_model_or_ensemble
from ..errors import ResNetError
from . import auto, formats
from .metadata import detect_format, make_metadata
from .parity import check_parity
from .samples import real_inputs

BACKENDS = ("torch", "onnxruntime", "openvino", "keras", "litert")
# The runtime each exported format runs in.
NATIVE_BACKEND = {
    "onnx": "onnxruntime",
    "openvino": "openvino",
    "keras": "keras",
    "tflite": "litert",
    "torchscript": "torch",
    "exported-program": "torch",
}


# The format a checkpoint is exported to in memory to run in a backend other than torch.
_IN_MEMORY = {
    "onnxruntime": "onnx",
    "openvino": "openvino",
    "keras": "keras",
    "litert": "tflite",  # batch fixed at 1: the runner feeds a batch image by image
}


class Classifier:
    """A loaded classifier: `classifier(batch) -> logits`, plus what predict needs around it.

    Attributes:
        classes: class names in output order.
        preprocessing: the eval preprocessing dict (in_chans, size, mean, std, resize, crop).
        backend: "torch", "onnxruntime", "openvino", "keras" or "litert".
        source: "checkpoint", "onnx", "torchscript", "exported-program", "openvino", "keras" or
            "tflite".
        model: the eager `nn.Module` when the source is a checkpoint (Grad-CAM needs it), else None.
        temperature: a calibrated model's temperature (metadata "temperature"; 1 otherwise):
            the logits returned are the graph's divided by it, as `resnet predict` on the
            checkpoint gives them.
    """

    def __init__(
        self,
        run: Callable[[torch.Tensor], torch.Tensor],
        *,
        classes: list[str],
        preprocessing: dict[str, Any],
        backend: str,
        source: str,
        path: Path,
        model: torch.nn.Module | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self._run = run
        self.classes = list(classes)
        self.preprocessing = dict(preprocessing)
        self.backend = backend
        self.source = source
        self.path = path
        self.model = model
        self.metadata = metadata or {}
        self.temperature = float(self.metadata.get("temperature", 1.0))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (float32, CPU) for a preprocessed batch [N, C, H, W] ([N, C, D, H, W] for a
        volume model)."""
        ndim = 5 if self.preprocessing.get("scan", {}).get("mode") == "volume" else 4
        if batch.ndim != ndim:
            shape = "[N, C, D, H, W]" if ndim == 5 else "[N, C, H, W]"
            raise ResNetError(f"expected a batch {shape}, got shape {tuple(batch.shape)}")
        with torch.inference_mode():
            return self._run(batch).float() / self.temperature

    def transform(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The eval transform: float [C, H, W] image in [0, 1] -> model input."""
        return eval_transform(self.preprocessing)

    def __repr__(self) -> str:
        """Names the file, its source format, backend and class count."""
        return (
            f"Classifier({self.path.name}, source={self.source}, backend={self.backend}, "
            f"{len(self.classes)} classes)"
        )


def load_classifier(
    path: str | os.PathLike,
    backend: str | None = None,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Classifier:
    """Loads a checkpoint (.pt / run folder) or an exported model (.onnx, TorchScript, .pt2,
    OpenVINO .xml, .keras, .tflite).

    Args:
        path: the file (the format is read from its contents, not its name; an OpenVINO IR
            by its .xml, with the .bin beside it).
        backend: "torch", "onnxruntime", "openvino", "keras" or "litert"; None picks the
            file's own (ONNX -> onnxruntime, OpenVINO IR -> openvino, .keras -> keras,
            .tflite -> litert, the others -> torch). A checkpoint with another backend is
            exported in memory (dynamic batch; LiteRT's batch 1) and checked against the
            eager model before use.
        threads: ONNX Runtime intra-op threads, or OpenVINO inference threads (None: the
            runtime's default, all cores), or LiteRT's (None: torch.get_num_threads()).
        log: where backend "auto" reports its pick and progress (default: stderr).

    Backend "auto" (a checkpoint): the fastest mode that agrees with fp32 here (see
    `auto.choose_backend`), measured once per file, CPU, thread count and runtime versions and
    cached; the Classifier's `choice` attribute holds it. An exported file runs in its own.

    Raises:
        ResNetError: unreadable file, or a backend that cannot run this format.
    """
    path = Path(path)
    if backend is not None and backend not in (*BACKENDS, "auto"):
        raise ResNetError(f"backend must be one of {', '.join(BACKENDS)} or auto, not {backend!r}")
    source = detect_format(path)
    if source != "checkpoint":
        return _load_exported(path, source, None if backend == "auto" else backend, threads)
    if backend == "auto":
        return _load_auto(path, threads, log)
    model, state = load_model_or_ensemble(path)
    meta = make_metadata(state, fmt="checkpoint", dynamic_batch=True)
    if backend in _IN_MEMORY:
        fmt = _IN_MEMORY[backend]
        x = _parity_inputs(meta["preprocessing"], state, 4)
        dynamic = backend != "litert"  # LiteRT: batch 1, fed image by image (see _IN_MEMORY)
        data = formats.serialize(model, fmt, x[:2], dynamic_batch=dynamic, metadata=meta)
        run, _ = formats.load_serialized(fmt, data, threads)
        check_parity(model, run, x, runtime=backend, batch_sizes=(1, 3))
    else:
        run = model
    return Classifier(
        run,
        classes=meta["classes"],
        preprocessing=meta["preprocessing"],
        backend=backend or "torch",
        source=source,
        path=path,
        model=model,
        metadata=meta,
    )


def _load_auto(path: Path, threads: int | None, log: Callable[[str], None] | None) -> Classifier:
    """A checkpoint run in the mode `auto.choose_for_checkpoint` picks (measured or cached)."""
    model, state = load_model_or_ensemble(path)
    choice, cached = auto.choose_for_checkpoint(path, model, state, threads=threads, log=log)
    (log or auto.stderr_log)(choice.line(cached))
    meta = make_metadata(state, fmt="checkpoint", dynamic_batch=True)
    classifier = Classifier(
        auto.build_choice(model, choice, state, threads),
        classes=meta["classes"],
        preprocessing=meta["preprocessing"],
        backend=choice.backend,
        source="checkpoint",
        path=path,
        model=model,
        metadata=meta,
    )
    classifier.choice = choice
    return classifier


def _parity_inputs(pre: dict[str, Any], state: dict[str, Any], n: int) -> torch.Tensor:
    """`n` real inputs to check an in-memory export on: photo crops, or for a scan model the
    scans of its own training data (as `export_checkpoint` takes them)."""
    if pre.get("scan"):
        source = (state.get("config") or {}).get("data", {}).get("source", "")
        return scan_samples(pre, [source], n)
    return real_inputs(pre, n)


_FORMAT_NAMES = {
    "onnx": "an ONNX model",
    "openvino": "an OpenVINO IR",
    "torchscript": "a torchscript file",
    "exported-program": "an exported-program file",
    "keras": "a Keras model",
    "tflite": "a LiteRT (.tflite) model",
}


def _load_exported(path: Path, source: str, backend: str | None, threads: int | None) -> Classifier:
    """A Classifier over an exported file (ONNX, TorchScript, ExportedProgram, OpenVINO IR,
    .keras), run in its own runtime."""
    if source not in NATIVE_BACKEND:
        raise ResNetError(f"{path}: unknown model format {source!r}")
    native = NATIVE_BACKEND[source]
    if backend is not None and backend != native:
        raise ResNetError(
            f"{path} is {_FORMAT_NAMES[source]}: it runs with --backend {native} "
            f"(export the checkpoint for {backend}, or give the checkpoint with --backend "
            f"{backend})"
        )
    threads = threads if native in ("onnxruntime", "openvino", "litert") else None
    run, meta = formats.load_serialized(source, path, threads)
    return Classifier(
        run,
        classes=meta["classes"],
        preprocessing=meta["preprocessing"],
        backend=native,
        source=source,
        path=path,
        metadata=meta,
    )
