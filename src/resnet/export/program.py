"""TorchScript and torch.export ExportedProgram serialisation, metadata carried as an extra file."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ResNetError
from .metadata import EXTRA_FILE, decode, encode


def _source(f: str | os.PathLike | bytes):
    return io.BytesIO(f) if isinstance(f, bytes) else str(Path(f))


def torchscript_bytes(model: torch.nn.Module, metadata: dict[str, Any] | None = None) -> bytes:
    """`torch.jit.script` of `model` (batch size free by construction), metadata as extra file."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        try:
            scripted = torch.jit.script(model)
        except Exception as e:  # noqa: BLE001 - TorchScript frontend errors
            raise ResNetError(
                f"TorchScript export failed: {str(e).splitlines()[0][:200]}"
            ) from None
        extra = {EXTRA_FILE: encode(metadata)} if metadata else {}
        torch.jit.save(scripted, buf, _extra_files=extra)
    return buf.getvalue()


def load_torchscript(f: str | os.PathLike | bytes) -> tuple[torch.jit.ScriptModule, dict]:
    """`(module in eval mode, metadata)` of a TorchScript file written by `torchscript_bytes`."""
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.load(_source(f), map_location="cpu", _extra_files=extra)
        except Exception as e:  # noqa: BLE001
            raise ResNetError(f"cannot load TorchScript: {str(e).splitlines()[0][:160]}") from None
    return module.eval(), decode(extra[EXTRA_FILE], "the TorchScript file")


def program_bytes(
    model: torch.nn.Module,
    example: torch.Tensor,
    *,
    dynamic_batch: bool = True,
    metadata: dict[str, Any] | None = None,
) -> bytes:
    """`torch.export.export` of `model` saved as a .pt2 archive with metadata as an extra file."""
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    try:
        with torch.no_grad():
            ep = torch.export.export(model, (example,), dynamic_shapes=shapes)
    except Exception as e:  # noqa: BLE001 - export errors come in many types
        raise ResNetError(f"torch.export failed: {str(e).strip().splitlines()[0][:200]}") from None
    buf = io.BytesIO()
    torch.export.save(ep, buf, extra_files={EXTRA_FILE: encode(metadata)} if metadata else None)
    return buf.getvalue()


def load_program(f: str | os.PathLike | bytes) -> tuple[torch.nn.Module, dict]:
    """`(callable module, metadata)` of an ExportedProgram archive written by `program_bytes`."""
    extra = {EXTRA_FILE: ""}
    try:
        ep = torch.export.load(_source(f), extra_files=extra)
    except Exception as e:  # noqa: BLE001
        raise ResNetError(
            f"cannot load the ExportedProgram: {str(e).splitlines()[0][:160]}"
        ) from None
    return ep.module(), decode(extra[EXTRA_FILE], "the ExportedProgram file")
