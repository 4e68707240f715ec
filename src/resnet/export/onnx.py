"""ONNX export (torch's dynamo exporter) with metadata, and ONNX Runtime sessions to run it.

Why the dynamo exporter (`torch.onnx.export(..., dynamo=True)`, the default since torch 2.9):
with torch 2.14.1 it exports every registered ResNet (option-A slicing shortcuts included) with a
symbolic batch dimension and matches eager to ~1e-6; the TorchScript-based legacy exporter
works too but warns that it is deprecated and will be removed. The legacy path is kept only as a
fallback for a model the dynamo exporter rejects (`exporter="legacy"`), never chosen silently.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ResNetError
from .metadata import INPUT_NAME, OUTPUT_NAME, decode

EXPORTERS = ("dynamo", "legacy")
DYNAMO_MIN_OPSET = 18  # torch 2.14's dynamo exporter has no lower-opset implementations


def onnx_bytes(
    model: torch.nn.Module,
    example: torch.Tensor,
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    metadata: dict[str, Any] | None = None,
    exporter: str = "dynamo",
) -> bytes:
    """Serialises `model` (eval mode) to an ONNX model with input "input" and output "logits".

    Args:
        model: the network; exported as it is (call `.eval()` first).
        example: an input batch (its batch size is the fixed one when `dynamic_batch` is False).
        dynamic_batch: make the batch dimension symbolic ("batch").
        opset: ONNX opset; None takes the exporter's default.
        metadata: written to `metadata_props` ("classes", "preprocessing" as JSON, plus "resnet"
            holding the whole dict).
        exporter: "dynamo" (default) or "legacy" (the deprecated TorchScript-based exporter).
    """
    import onnx  # optional heavy dependency (protobuf schemas): loaded only when exporting

    if exporter not in EXPORTERS:
        raise ResNetError(f"exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    if exporter == "dynamo" and opset is not None and opset < DYNAMO_MIN_OPSET:
        raise ResNetError(
            f"the dynamo exporter writes opset >= {DYNAMO_MIN_OPSET} (its "
            f"down-conversion fails for Pad); for opset {opset} use "
            "--exporter legacy"
        )
    kw: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    if opset is not None:
        kw["opset_version"] = int(opset)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            if exporter == "dynamo":
                if dynamic_batch:
                    batch = torch.export.Dim("batch", min=1)
                    kw["dynamic_shapes"] = ({0: batch},)
                program = torch.onnx.export(
                    model, (example,), dynamo=True, verbose=False, optimize=True, **kw
                )
                proto = program.model_proto
            else:
                if dynamic_batch:
                    kw["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
                buf = io.BytesIO()
                torch.onnx.export(model, (example,), buf, dynamo=False, **kw)
                proto = onnx.load_from_string(buf.getvalue())
        except ResNetError:
            raise
        except Exception as e:  # noqa: BLE001 - exporter errors come in many types
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            hint = " (try exporter='legacy')" if exporter == "dynamo" else ""
            raise ResNetError(f"ONNX export ({exporter}) failed: {msg}{hint}") from None
    if metadata:
        set_metadata(proto, metadata)
    return proto.SerializeToString()


def set_metadata(proto, metadata: dict[str, Any]) -> None:
    """Replaces the model's resnet metadata_props with `metadata`."""
    keep = [p for p in proto.metadata_props if p.key not in ("classes", "preprocessing", "resnet")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in (
        ("classes", metadata["classes"]),
        ("preprocessing", metadata["preprocessing"]),
        ("resnet", metadata),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value, sort_keys=True)


def read_metadata(model: str | os.PathLike | bytes) -> dict[str, Any]:
    """The resnet metadata of an ONNX file (or its bytes)."""
    import onnx  # optional heavy dependency: loaded only when an ONNX file is read

    where = "the ONNX model" if isinstance(model, bytes) else str(model)
    try:
        proto = (
            onnx.load_from_string(model)
            if isinstance(model, bytes)
            else onnx.load(str(model), load_external_data=False)
        )
    except Exception as e:  # noqa: BLE001 - protobuf decode errors
        raise ResNetError(f"{where} is not a readable ONNX model: {str(e)[:120]}") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if "resnet" in props:
        meta = decode(props["resnet"], where)
    else:
        meta = decode(
            json.dumps(
                {k: json.loads(props[k]) for k in ("classes", "preprocessing") if k in props}
            ),
            where,
        )
    return meta


def session(model: str | os.PathLike | bytes, threads: int | None = None, optimize: bool = True):
    """An ONNX Runtime CPU InferenceSession for a file or serialised model."""
    import onnxruntime as ort  # optional heavy dependency: loaded only when a model runs in it

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    src = model if isinstance(model, bytes) else str(Path(model))
    try:
        return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        raise ResNetError(
            f"ONNX Runtime cannot load the model: {str(e).splitlines()[0][:200]}"
        ) from None


class OrtRunner:
    """Calls an ONNX Runtime session like a module: float tensor in, float32 logits out."""

    def __init__(self, sess):
        self.session = sess
        self.input = sess.get_inputs()[0].name
        self.fixed_batch = sess.get_inputs()[0].shape[0]
        if not isinstance(self.fixed_batch, int):
            self.fixed_batch = None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 logits of `batch` (refused when its size differs from a fixed batch)."""
        x = batch.detach().to(torch.float32).contiguous().numpy()
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            raise ResNetError(
                f"this ONNX model has a fixed batch size of {self.fixed_batch} "
                f"(got {x.shape[0]}); re-export with --dynamic-batch"
            )
        return torch.from_numpy(self.session.run(None, {self.input: x})[0])
