"""`resnet export`'s engine: a checkpoint to ONNX / TorchScript / ExportedProgram, parity-checked
on real images before the file is written."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.scans import scan_samples
from ..engine.checkpoint import load_model_or_ensemble
from ..errors import ResNetError
from ..storage import atomic_write_bytes
from . import onnx as onnx_export
from . import program
from .metadata import make_metadata
from .parity import ParityReport, check_parity
from .quantize import quantize_onnx
from .samples import calibration_images as calibration_images_of
from .samples import fashion_mnist_split, real_inputs

FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}
RUNTIMES = {
    "onnx": "onnxruntime",
    "torchscript": "torch.jit.load",
    "exported-program": "torch.export.load",
}


@dataclass
class ExportResult:
    """What `export_checkpoint` wrote.

    Attributes:
        path: the written file.
        format: one of FORMATS.
        metadata: what the file carries besides its graph (classes, preprocessing, ...).
        parity: the parity check the export passed before it was written.
        size_bytes: the file's size.
    """

    path: Path
    format: str
    metadata: dict[str, Any]
    parity: ParityReport
    size_bytes: int


def serialize(
    model: torch.nn.Module,
    fmt: str,
    example: torch.Tensor,
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    metadata: dict[str, Any] | None = None,
    exporter: str = "dynamo",
) -> bytes:
    """The bytes of `model` exported to `fmt` (one of FORMATS)."""
    if fmt == "onnx":
        return onnx_export.onnx_bytes(
            model,
            example,
            dynamic_batch=dynamic_batch,
            opset=opset,
            metadata=metadata,
            exporter=exporter,
        )
    if opset is not None:
        raise ResNetError("--opset applies to ONNX only")
    if fmt == "torchscript":
        return program.torchscript_bytes(model, metadata)
    if fmt == "exported-program":
        return program.program_bytes(model, example, dynamic_batch=dynamic_batch, metadata=metadata)
    raise ResNetError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")


def load_serialized(
    fmt: str, data: bytes | str | os.PathLike, threads: int | None = None
) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """`(callable: input batch -> logits, metadata)` for an exported model's bytes or file."""
    if fmt == "onnx":
        return (
            onnx_export.OrtRunner(onnx_export.session(data, threads)),
            onnx_export.read_metadata(data),
        )
    if fmt == "torchscript":
        return program.load_torchscript(data)
    if fmt == "exported-program":
        return program.load_program(data)
    raise ResNetError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")


def default_output(checkpoint: str | os.PathLike, fmt: str, int8: bool = False) -> Path:
    """Where an export goes by default: beside the checkpoint, or in the run folder."""
    path = Path(checkpoint)
    suffix = (".int8" if int8 else "") + SUFFIXES[fmt]
    if path.is_dir():
        return path / ("model" + suffix)
    return path.with_name(path.name.removesuffix(".pt") + suffix)


def _check_request(
    checkpoint: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None,
    num_images: int,
    int8: bool,
) -> Path:
    """Refuses an export request that cannot work; returns the output path."""
    if fmt not in FORMATS:
        raise ResNetError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if num_images < 1:
        raise ResNetError(f"need at least one image for the parity check (got {num_images})")
    if int8 and fmt != "onnx":
        raise ResNetError("--int8 needs --format onnx (ONNX Runtime static quantization)")
    path = Path(out) if out else default_output(checkpoint, fmt, int8)
    if path.is_dir():
        raise ResNetError(f"output {path} is a folder")
    return path


def _int8_source(
    calibration: str | os.PathLike | None,
    state: dict[str, Any],
    meta: dict[str, Any],
    calibration_images: int,
) -> str | os.PathLike:
    """The int8 calibration source (given, or the checkpoint's data source), noted in `meta`."""
    source = calibration or (state.get("config") or {}).get("data", {}).get("source")
    if not source:
        raise ResNetError(
            "--int8 needs training images to calibrate on: --calibration "
            "fashion-mnist|FOLDER (the checkpoint records no data source)"
        )
    meta["quantization"] = {
        "method": "onnxruntime static QDQ, int8 weights per channel, "
        "uint8 activations, MinMax calibration",
        "calibration": str(source),
        "images": calibration_images,
    }
    return source


def export_checkpoint(
    checkpoint: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None = None,
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    images: Sequence[str | os.PathLike] | None = None,
    num_images: int = 16,
    exporter: str = "dynamo",
    atol: float = 1e-3,
    rtol: float = 1e-3,
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    calibration_images: int = 256,
    min_int8_agreement: float = 0.95,
) -> ExportResult:
    """Exports a resnet checkpoint, checks parity on real images, then writes the file atomically.

    The exported bytes are loaded back in their runtime (ONNX Runtime, `torch.jit.load`,
    `torch.export.load`) and compared with the eager model on `num_images` real images (the
    given `images`, or crops of the bundled sample photos) fed at batch 1 and 5 (batch-1 only
    when the batch is fixed). Only a passing export is written; a failing one raises ParityError
    and leaves any existing file at `out` untouched.

    Args:
        checkpoint: a resnet checkpoint file, run folder or ensemble folder (exported as one
            graph whose output is the log of the members' mean probability).
        fmt: "onnx", "torchscript" or "exported-program".
        out: output path; default beside the checkpoint (best.pt -> best.onnx,
            best.torchscript.pt, best.pt2; best.int8.onnx with `int8`).
        dynamic_batch: symbolic batch dimension (TorchScript is always batch-free).
        opset: ONNX opset (None: the exporter's default).
        images: image files for the parity check.
        num_images: images in the parity check.
        exporter: ONNX exporter, "dynamo" or "legacy".
        atol, rtol: parity tolerance on logits: atol + rtol * max |logit|.
        int8: ONNX only: static int8 quantization (QDQ) calibrated on training images; parity
            then means top-1 agreement >= `min_int8_agreement` on held-out images (the test
            split for Fashion-MNIST, else `images` or the sample photos).
        calibration: "fashion-mnist" or a folder of training images; default: the data source
            recorded in the checkpoint's training config.
        calibration_images: how many training images calibrate the int8 ranges.
        min_int8_agreement: with `int8`, the top-1 agreement with the eager model to pass.
    """
    path = _check_request(checkpoint, fmt, out, num_images, int8)
    model, state = load_model_or_ensemble(checkpoint)  # an ensemble folder: one graph of all
    dynamic = dynamic_batch or fmt == "torchscript"
    meta = make_metadata(state, fmt=fmt, dynamic_batch=dynamic)
    pre = meta["preprocessing"]
    source = _int8_source(calibration, state, meta, calibration_images) if int8 else None
    if pre.get("scan"):  # scans: the given ones, else the training data's own
        if int8:
            raise ResNetError("int8 export calibrates on 2-D images; export scan models in fp32")
        sources = images or [state.get("config", {}).get("data", {}).get("source", "")]
        x = scan_samples(pre, sources, num_images)
    elif int8 and not images and str(source) == "fashion-mnist":
        x = fashion_mnist_split(pre, "test", max(num_images, 64))[0]  # held out from calibration
    else:
        x = real_inputs(pre, num_images, images)
    example = x[:2] if dynamic else x[:1]
    data = serialize(
        model, fmt, example, dynamic_batch=dynamic, opset=opset, metadata=meta, exporter=exporter
    )
    if int8:
        data = quantize_onnx(data, calibration_images_of(source, pre, calibration_images))
    run, read_meta = load_serialized(fmt, data)
    if (
        read_meta.get("classes") != meta["classes"]
        or read_meta.get("preprocessing") != meta["preprocessing"]
    ):
        raise ResNetError("metadata did not survive the round trip through the exported file")
    runtime = RUNTIMES[fmt] + (" int8" if int8 else "")
    report = check_parity(
        model,
        run,
        x,
        runtime=runtime,
        batch_sizes=(1, 5) if dynamic else (1,),
        atol=atol,
        rtol=rtol,
        min_agreement=min_int8_agreement if int8 else None,
    )
    atomic_write_bytes(path, lambda f: f.write(data))
    return ExportResult(path=path, format=fmt, metadata=meta, parity=report, size_bytes=len(data))
