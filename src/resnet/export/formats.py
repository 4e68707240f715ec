"""`resnet export`'s engine: a checkpoint to ONNX / TorchScript / ExportedProgram / OpenVINO IR /
Keras / LiteRT (.tflite), parity-checked on real images before the file is written."""

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
from . import keras_export, program
from . import litert as litert_export
from . import onnx as onnx_export
from . import openvino as openvino_export
from .metadata import make_metadata
from .parity import ParityReport, check_parity
from .quantize import quantize_onnx
from .samples import calibration_images as calibration_images_of
from .samples import fashion_mnist_split, real_inputs

FORMATS = ("onnx", "torchscript", "exported-program", "openvino", "keras", "tflite")
SUFFIXES = {
    "onnx": ".onnx",
    "torchscript": ".torchscript.pt",
    "exported-program": ".pt2",
    "openvino": ".openvino.xml",  # and its weights beside it: .openvino.bin
    "keras": ".keras",
    "tflite": ".tflite",
}
RUNTIMES = {
    "onnx": "onnxruntime",
    "torchscript": "torch.jit.load",
    "exported-program": "torch.export.load",
    "openvino": "openvino CPU",
    "keras": "keras.saving.load_model",
    "tflite": "ai-edge-litert",
}
INT8_FORMATS = ("onnx", "openvino", "tflite")
INT8_METHODS = {
    "onnx": "onnxruntime static QDQ, int8 weights per channel, uint8 activations, "
    "MinMax calibration",
    "openvino": "NNCF post-training quantization, int8 weights per channel and activations, "
    "full bias correction, classifier kept out of int8 (and the first convolution when under 1 % "
    "of the multiply-accumulates)",
    "tflite": "ai-edge-quantizer static_wi8_ai8, int8 weights per channel, int8 activations, "
    "input and output, MinMax calibration",
}


@dataclass
class ExportResult:
    """What `export_checkpoint` wrote.

    Attributes:
        path: the written file (an OpenVINO IR's .xml; its .bin lies beside it).
        format: one of FORMATS.
        metadata: what the file carries besides its graph (classes, preprocessing, ...).
        parity: the parity check the export passed before it was written.
        size_bytes: the file's size (an IR's .xml and .bin together).
    """

    path: Path
    format: str
    metadata: dict[str, Any]
    parity: ParityReport
    size_bytes: int

    @property
    def paths(self) -> list[Path]:
        """Every file written: the one file, or an OpenVINO IR's .xml and .bin."""
        if self.format == "openvino":
            return [self.path, openvino_export.weights_path(self.path)]
        return [self.path]


def serialize(
    model: torch.nn.Module,
    fmt: str,
    example: torch.Tensor,
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    metadata: dict[str, Any] | None = None,
    exporter: str = "dynamo",
) -> bytes | openvino_export.IR:
    """The bytes of `model` exported to `fmt` (one of FORMATS); an OpenVINO IR is two files,
    returned as an `IR` (its .xml and .bin bytes), converted from the ONNX export."""
    if fmt == "openvino":
        openvino_export.require_openvino()  # before the ONNX export: fail fast when absent
        onnx_model = onnx_export.onnx_bytes(
            model, example, dynamic_batch=dynamic_batch, opset=opset, exporter=exporter
        )
        return openvino_export.ir_bytes(openvino_export.from_onnx(onnx_model), metadata)
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
    if fmt == "tflite":  # batch 1 unless asked: the runner then feeds images one by one
        batch = example if dynamic_batch else example[:1]
        return litert_export.tflite_bytes(model, batch, metadata, dynamic_batch=dynamic_batch)
    if fmt == "keras":
        return keras_export.keras_bytes(model, metadata or {})
    if fmt == "torchscript":
        return program.torchscript_bytes(model, metadata)
    if fmt == "exported-program":
        return program.program_bytes(model, example, dynamic_batch=dynamic_batch, metadata=metadata)
    raise ResNetError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")


def load_serialized(
    fmt: str, data: bytes | openvino_export.IR | str | os.PathLike, threads: int | None = None
) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """`(callable: input batch -> logits, metadata)` for an exported model's bytes or file.

    `threads`: ONNX Runtime intra-op threads, or OpenVINO inference threads (None: all cores),
    or LiteRT's XNNPACK threads (None: torch.get_num_threads()).
    """
    if fmt == "openvino":
        return openvino_export.load(data, threads)
    if fmt == "tflite":
        return litert_export.load(data, threads)
    if fmt == "onnx":
        return (
            onnx_export.OrtRunner(onnx_export.session(data, threads)),
            onnx_export.read_metadata(data),
        )
    if fmt == "keras":
        return keras_export.load(data)
    if fmt == "torchscript":
        return program.load_torchscript(data)
    if fmt == "exported-program":
        return program.load_program(data)
    raise ResNetError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")


def default_output(
    checkpoint: str | os.PathLike, fmt: str, int8: bool = False, pixels: bool = False
) -> Path:
    """Where an export goes by default: beside the checkpoint, or in the run folder
    (`.int8` and `.pixels`, embedded preprocessing, in the name where they apply)."""
    path = Path(checkpoint)
    suffix = (".int8" if int8 else "") + (".pixels" if pixels else "") + SUFFIXES[fmt]
    if path.is_dir():
        return path / ("model" + suffix)
    return path.with_name(path.name.removesuffix(".pt") + suffix)


def _check_request(
    checkpoint: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None,
    num_images: int,
    int8: bool,
    pixels: bool = False,
) -> Path:
    """Refuses an export request that cannot work; returns the output path."""
    if fmt not in FORMATS:
        raise ResNetError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if pixels and fmt != "openvino":
        raise ResNetError("--embed-preprocessing applies to --format openvino")
    if num_images < 1:
        raise ResNetError(f"need at least one image for the parity check (got {num_images})")
    if int8 and fmt not in INT8_FORMATS:
        raise ResNetError(
            "--int8 needs --format onnx (ONNX Runtime static quantization), openvino (NNCF) "
            "or tflite (ai-edge-quantizer)"
        )
    if fmt == "openvino":  # before any work: a missing package or a bad name fails at once
        openvino_export.require_openvino()
        if int8:
            openvino_export.require_nncf()
    if fmt == "keras":
        keras_export.require_keras()
    if fmt == "tflite":
        litert_export.require_litert(convert=True)
    path = Path(out) if out else default_output(checkpoint, fmt, int8, pixels)
    if path.is_dir():
        raise ResNetError(f"output {path} is a folder")
    if fmt == "openvino" and path.suffix.lower() != ".xml":
        raise ResNetError(f"an OpenVINO IR is an .xml + .bin pair: name the output *.xml ({path})")
    if fmt == "keras" and path.suffix.lower() != ".keras":
        raise ResNetError(
            f"keras.saving.load_model opens only *.keras files: name the output so ({path})"
        )
    return path


def _int8_source(
    calibration: str | os.PathLike | None,
    state: dict[str, Any],
    meta: dict[str, Any],
    calibration_images: int,
    fmt: str,
) -> str | os.PathLike:
    """The int8 calibration source (given, or the checkpoint's data source), noted in `meta`."""
    source = calibration or (state.get("config") or {}).get("data", {}).get("source")
    if not source:
        raise ResNetError(
            "--int8 needs training images to calibrate on: --calibration "
            "fashion-mnist|FOLDER (the checkpoint records no data source)"
        )
    meta["quantization"] = {
        "method": INT8_METHODS[fmt],
        "calibration": str(source),
        "images": calibration_images,
    }
    return source


def export_checkpoint(
    checkpoint: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None = None,
    *,
    dynamic_batch: bool | None = None,
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
    embed_preprocessing: bool = False,
) -> ExportResult:
    """Exports a resnet checkpoint, checks parity on real images, then writes the file atomically.

    The exported bytes are loaded back in their runtime (ONNX Runtime, `torch.jit.load`,
    `torch.export.load`, OpenVINO's CPU plugin, `keras.saving.load_model`, ai-edge-litert's
    Interpreter) and compared with the eager model on `num_images` real images (the given
    `images`, or crops of the bundled sample photos) fed at batch 1 and 5 (batch-1 only when
    the batch is fixed). Only a passing export is written; a failing one raises ParityError
    and leaves any existing file (or IR pair) at `out` untouched.

    Args:
        checkpoint: a resnet checkpoint file, run folder or ensemble folder (exported as one
            graph whose output is the log of the members' mean probability).
        fmt: "onnx", "torchscript", "exported-program", "openvino" (an IR: `out` is its
            .xml, the .bin is written beside it; converted from the ONNX export, so `opset`
            and `exporter` apply too), "keras" (a .keras archive of a Keras functional
            model that takes NHWC RGB in [0, 1]; see `keras_export`) or "tflite" (a LiteRT
            flatbuffer converted by litert-torch; see `litert`).
        out: output path; default beside the checkpoint (best.pt -> best.onnx,
            best.torchscript.pt, best.pt2, best.openvino.xml, best.keras, best.tflite;
            best.int8.onnx, best.int8.openvino.xml, best.int8.tflite with `int8`).
        dynamic_batch: symbolic batch dimension; None (default): on for every format but
            tflite, whose file has a batch of 1 unless asked (phones run one image; on a CPU a
            batched invoke ran no faster). TorchScript and Keras are always batch-free; a
            batch-1 .tflite is still parity-checked at batch 1 and 5, fed image by image.
        opset: ONNX opset (None: the exporter's default).
        images: image files for the parity check.
        num_images: images in the parity check.
        exporter: ONNX exporter, "dynamo" or "legacy".
        atol, rtol: parity tolerance on logits: atol + rtol * max |logit|.
        int8: ONNX, OpenVINO and LiteRT: static int8 quantization (ONNX Runtime QDQ, NNCF
            for OpenVINO, ai-edge-quantizer for LiteRT) calibrated on training images;
            parity then means top-1 agreement >= `min_int8_agreement` on held-out images
            (the test split for Fashion-MNIST, else `images` or the sample photos).
        calibration: "fashion-mnist" or a folder of training images; default: the data source
            recorded in the checkpoint's training config.
        calibration_images: how many training images calibrate the int8 ranges.
        min_int8_agreement: with `int8`, the top-1 agreement with the eager model to pass.
        embed_preprocessing: OpenVINO only: the IR takes uint8 RGB pixels [N, H, W, C] at
            the model's size and normalises them in the graph (`openvino.embed_preprocessing`);
            the parity images are then snapped to 8-bit pixels for eager too.
    """
    pixels = embed_preprocessing
    path = _check_request(checkpoint, fmt, out, num_images, int8, pixels)
    model, state = load_model_or_ensemble(checkpoint)  # an ensemble folder: one graph of all
    if fmt == "keras":  # before any images are read: an unsupported net is one line
        keras_export.check_supported(model, str(state.get("arch", "the model")))
    if fmt == "tflite":
        litert_export.check_supported(model, str(state.get("arch", "the model")))
    if dynamic_batch is None:
        dynamic_batch = fmt != "tflite"
    dynamic = dynamic_batch or fmt in ("torchscript", "keras")  # those two are batch-free
    meta = make_metadata(state, fmt=fmt, dynamic_batch=dynamic)
    pre = meta["preprocessing"]
    source = _int8_source(calibration, state, meta, calibration_images, fmt) if int8 else None
    if pre.get("scan"):  # scans: the given ones, else the training data's own
        if int8:
            raise ResNetError("int8 export calibrates on 2-D images; export scan models in fp32")
        sources = images or [state.get("config", {}).get("data", {}).get("source", "")]
        x = scan_samples(pre, sources, num_images)
    elif int8 and not images and str(source) == "fashion-mnist":
        x = fashion_mnist_split(pre, "test", max(num_images, 64))[0]  # held out from calibration
    else:
        x = real_inputs(pre, num_images, images)
    if pixels:
        if pre.get("scan"):
            raise ResNetError("--embed-preprocessing applies to 2-D image models, not scans")
        meta[openvino_export.PIXEL_INPUT] = True
        x = openvino_export.on_pixel_grid(x, pre)
    example = x[:2] if dynamic else x[:1]
    data = serialize(
        model, fmt, example, dynamic_batch=dynamic, opset=opset, metadata=meta, exporter=exporter
    )
    if int8:
        calibration_set = calibration_images_of(source, pre, calibration_images)
        if fmt == "openvino":
            data = openvino_export.quantize_ir(data, calibration_set)
        elif fmt == "tflite":
            data = litert_export.quantize_tflite(data, calibration_set)
        else:
            data = quantize_onnx(data, calibration_set)
    if pixels:
        data = openvino_export.embed_preprocessing(data, pre)
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
        batch_sizes=(1, 5) if dynamic or fmt == "tflite" else (1,),
        atol=atol,
        rtol=rtol,
        min_agreement=min_int8_agreement if int8 else None,
    )
    if fmt == "openvino":
        openvino_export.write_ir(path, data)  # both files or neither (see write_ir)
        size = data.size_bytes
    else:
        atomic_write_bytes(path, lambda f: f.write(data))
        size = len(data)
    return ExportResult(path=path, format=fmt, metadata=meta, parity=report, size_bytes=size)
