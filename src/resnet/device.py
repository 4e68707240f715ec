"""Which device and numeric precision a run uses: the one place that probes the hardware."""

from __future__ import annotations

import contextlib
import os

import torch

from .errors import ResNetError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def local_rank() -> int:
    """This process's GPU index on its machine under torchrun (0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def resolve_device(name: str) -> torch.device:
    """`auto` (this process's GPU where there is one, else the CPU), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ResNetError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ResNetError("--device cuda asked for, but no CUDA GPU is available")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())
    return device


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX-512 BF16 or AMX) and oneDNN uses it: bf16
    autocast then runs about twice as fast as fp32 there, and slower than fp32 elsewhere."""
    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:
        return False
    onednn = torch.backends.mkldnn.is_available() and bool(
        getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
    )
    return bool(native) and onednn


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a gradient scaler is needed)."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp32":
        return None, False
    if precision == "fp16" and device.type == "cpu":
        raise ResNetError("fp16 is for GPUs; on the CPU use bf16 or fp32")
    return (torch.bfloat16, False) if precision == "bf16" else (torch.float16, True)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """`torch.autocast` on `device` in `dtype`, or a context that does nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    """`fp32`, `bf16` or `fp16` for an autocast dtype (None is fp32)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
