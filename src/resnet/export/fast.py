"""Fast CPU inference modes: channels_last, bf16 autocast, `torch.compile` with frozen weights,
ONNX Runtime fp32 and int8, OpenVINO fp32 and int8 (NNCF), LiteRT fp32 and int8 (ai-edge-litert,
batch 1 image by image). Each mode turns an eager model into a callable batch -> logits."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from pathlib import Path

import torch
import torch._inductor.config as inductor_config

from ..device import cpu_has_bf16
from ..errors import ResNetError
from . import litert as litert_export
from . import onnx as onnx_export
from . import openvino as openvino_export
from .quantize import quantize_onnx

MODES = (
    "eager_fp32",
    "channels_last",
    "bf16",
    "compile_bf16",
    "onnxruntime_fp32",
    "onnxruntime_int8",
    "openvino_fp32",
    "openvino_bf16",
    "openvino_int8",
    "openvino_int8_reference",
    "litert_fp32",
    "litert_int8",
)
# Modes that run a LiteRT (.tflite) conversion of the model (litert-torch; no ONNX).
LITERT_BASED = ("litert_fp32", "litert_int8")
# Modes that run an ONNX export of the model (OpenVINO converts it to its IR).
ONNX_BASED = (
    "onnxruntime_fp32",
    "onnxruntime_int8",
    "openvino_fp32",
    "openvino_bf16",
    "openvino_int8",
)
# The numeric type each mode computes in (for the fraction of the matching matmul peak).
COMPUTE_DTYPE = {
    "eager_fp32": "fp32",
    "channels_last": "fp32",
    "bf16": "bf16",
    "compile_bf16": "bf16",
    "onnxruntime_fp32": "fp32",
    "onnxruntime_int8": "int8",
    "openvino_fp32": "fp32",
    "openvino_bf16": "bf16",
    "openvino_int8": "int8",
    "openvino_int8_reference": "int8",
    "litert_fp32": "fp32",
    "litert_int8": "int8",
}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


class Runner:
    """A callable `batch -> float32 logits` for one mode, in inference mode."""

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        mode: str,
        *,
        channels_last: bool = False,
        bf16: bool = False,
        compiled: bool = False,
    ):
        self.fn, self.mode = fn, mode
        self.channels_last, self.bf16, self.compiled = channels_last, bf16, compiled

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a preprocessed batch, run the way the mode prescribes."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        grad = torch.no_grad() if self.compiled else torch.inference_mode()
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        if self.compiled:
            frozen = inductor_config.patch(freezing=True)
        else:
            frozen = contextlib.nullcontext()
        with grad, amp, frozen:
            return self.fn(batch).float()


def build(
    model: torch.nn.Module,
    mode: str,
    *,
    example: torch.Tensor,
    calibration: torch.Tensor | None = None,
    threads: int | None = None,
    onnx_model: bytes | None = None,
) -> Runner:
    """Prepares `model` (eval mode, not modified) for inference in `mode`.

    Args:
        model: the eager network.
        mode: one of MODES.
        example: an input batch (ONNX export traces with it).
        calibration: preprocessed training images, needed by the int8 modes.
        threads: ONNX Runtime intra-op / OpenVINO inference / LiteRT XNNPACK threads
            (PyTorch uses torch.get_num_threads()).
        onnx_model: an fp32 ONNX export of `model` to reuse (saves exporting twice).
    """
    if mode not in MODES:
        raise ResNetError(f"unknown inference mode {mode!r}; choose from {', '.join(MODES)}")
    model = model.eval()
    if mode == "eager_fp32":
        return Runner(model, mode)
    if mode in ("bf16", "compile_bf16") and not cpu_has_bf16():
        raise ResNetError(
            f"mode {mode} needs a CPU with AVX-512 BF16 or AMX (this one has "
            "neither); use channels_last or onnxruntime_int8"
        )
    if mode in ("channels_last", "bf16", "compile_bf16"):
        m = copy.deepcopy(model).to(memory_format=torch.channels_last)
        if mode == "compile_bf16":
            compiled = torch.compile(m, dynamic=False)
            return Runner(compiled, mode, channels_last=True, bf16=True, compiled=True)
        return Runner(m, mode, channels_last=True, bf16=mode == "bf16")
    if mode in ("onnxruntime_int8", "openvino_int8", "openvino_int8_reference", "litert_int8") and (
        calibration is None or len(calibration) == 0
    ):
        raise ResNetError(f"{mode} needs calibration images")
    if mode in LITERT_BASED:
        data = litert_export.tflite_bytes(model, example[:1])
        if mode == "litert_int8":
            data = litert_export.quantize_tflite(data, calibration, threads)
        return Runner(litert_export.LiteRTRunner(litert_export.interpreter(data, threads)), mode)
    if mode == "openvino_int8_reference":  # OpenVINO's own pipeline, from the eager model
        compiled = openvino_export.reference_int8(model, example, calibration, threads)
        return Runner(openvino_export.OVRunner(compiled), mode)
    if mode.startswith("openvino"):
        openvino_export.require_openvino()  # before the ONNX export: fail fast when absent
    if onnx_model is None:
        onnx_model = onnx_export.onnx_bytes(model, example[:2], dynamic_batch=True)
    if mode.startswith("openvino"):
        ir = openvino_export.ir_bytes(openvino_export.from_onnx(onnx_model))
        if mode == "openvino_int8":
            ir = openvino_export.quantize_ir(ir, calibration)
        model = openvino_export.read_model(ir)
        precision = openvino_precision(mode)
        return Runner(openvino_export.runner(model, threads, precision, example), mode)
    if mode == "onnxruntime_int8":
        onnx_model = quantize_onnx(onnx_model, calibration)
    return Runner(onnx_export.OrtRunner(onnx_export.session(onnx_model, threads)), mode)


def openvino_precision(mode: str) -> str:
    """The inference precision an OpenVINO mode compiles in: bf16 for openvino_bf16, and for
    openvino_int8 where the CPU computes bf16 natively (its unquantized layers: the
    classifier, a cheap first convolution; on a trained Fashion-MNIST resnet20 that kept
    99.65 % top-1 agreement with fp32, f32 99.6 %); else f32."""
    if mode == "openvino_bf16" or (mode == "openvino_int8" and cpu_has_bf16()):
        return "bf16"
    return "f32"
