"""Int8 post-training quantization: ONNX Runtime static QDQ, calibrated on training images.

Why ONNX Runtime and not PyTorch's PT2E x86 path: PT2E now lives in the `torchao` package, which
is not a dependency; ONNX Runtime's static QDQ quantizer is already installed, runs int8 convs
through its VNNI kernels, and measured here as fast as PT2E + `torch.compile` (ANCHORS.md).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import ResNetError
from .metadata import INPUT_NAME


def _reader(calibration: torch.Tensor, batch_size: int):
    """An ONNX Runtime calibration reader over `calibration` in batches of `batch_size`."""
    # onnxruntime is an optional heavy dependency: loaded only when a model is quantized.
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds calibration batches to the quantizer's observers."""

        def __init__(self):
            self._it: Iterator | None = None

        def _batches(self):
            for i in range(0, len(calibration), batch_size):
                yield {INPUT_NAME: calibration[i : i + batch_size].float().contiguous().numpy()}

        def get_next(self):
            """The next calibration batch, or None after the last."""
            if self._it is None:
                self._it = self._batches()
            return next(self._it, None)

        def rewind(self):
            """Starts again from the first batch."""
            self._it = None

    return Reader()


def _calibration_options(batches: int) -> dict:
    """Folds observed ranges every k batches instead of keeping every activation of every
    calibration batch in memory (gigabytes for resnet50 at 224 px). ONNX Runtime 1.32 fails
    ("No data is collected") when the batch count is a multiple of k, so k avoids that."""
    for k in range(4, batches):
        if batches % k:
            return {"CalibMaxIntermediateOutputs": k}
    return {}


def _end_nodes(path: Path) -> list[str]:
    """Names of the first and last compute nodes (Conv, Gemm, MatMul) of an ONNX file."""
    import onnx  # optional heavy dependency: loaded only when quantizing

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    compute = [n.name for n in nodes if n.op_type in ("Conv", "Gemm", "MatMul")]
    return [compute[0], compute[-1]] if len(compute) > 2 else []


def quantize_onnx(
    model: bytes | str | os.PathLike,
    calibration: torch.Tensor,
    *,
    per_channel: bool = True,
    batch_size: int = 8,
    method: str = "minmax",
    keep_ends_fp32: bool = True,
) -> bytes:
    """Statically quantizes an fp32 ONNX classifier to int8 (QDQ: int8 weights per channel,
    uint8 activations), with ranges observed on `calibration` (preprocessed training images).

    Args:
        model: the fp32 ONNX model (bytes or path), with a dynamic batch or batch `batch_size`.
        calibration: preprocessed input batch [N, C, H, W]; a few dozen to a few hundred images.
        per_channel: per-output-channel weight scales (keeps accuracy of depthwise-ish layers).
        batch_size: calibration batch size.
        method: "minmax", "entropy" or "percentile" (ONNX Runtime's calibrators).
        keep_ends_fp32: leave the first convolution and the classifier in fp32 (common practice:
            the raw-pixel input and the logits are the most range-sensitive; on a trained
            resnet20 it raised agreement with fp32 from 99.6 to 99.8 % at the same latency).

    Returns:
        The quantized model's bytes, metadata_props kept.
    """
    # onnx and onnxruntime are optional heavy dependencies: loaded only when quantizing.
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ResNetError(f"calibration method must be one of {', '.join(methods)}")
    if len(calibration) == 0:
        raise ResNetError("int8 quantization needs calibration images (got none)")
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    props = list(onnx.load_from_string(data).metadata_props)
    with tempfile.TemporaryDirectory(prefix="resnet-int8-") as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(data)
        try:  # shape inference + graph optimisation (folds BN into convs) before quantizing
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize as is
            pre = src
        exclude = _end_nodes(pre) if keep_ends_fp32 else []
        quantize_static(
            str(pre),
            str(dst),
            _reader(calibration, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            nodes_to_exclude=exclude,
            extra_options=_calibration_options(-(-len(calibration) // batch_size)),
        )
        proto = onnx.load(str(dst))
    del proto.metadata_props[:]
    proto.metadata_props.extend(props)
    return proto.SerializeToString()
