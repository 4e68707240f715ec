"""OpenVINO IR export (.xml + .bin) with metadata in rt_info, NNCF int8, and CPU inference.

Why convert from our ONNX export and not from the eager model: `openvino.convert_model` reads the
ONNX bytes in about a second and keeps what the dynamo exporter already guarantees (a symbolic
batch dimension, the "input" / "logits" names, every registered ResNet and ensemble as one graph,
3-D nets); converting the eager model traces it a second time through OpenVINO's PyTorch frontend
for the same graph. Both match eager fp32 to ~1e-6 when the CPU plugin is told to compute in f32:
on CPUs with AMX or AVX-512 BF16 its default precision hint is bf16 (logits off by ~1e-2), so
every model here is compiled with INFERENCE_PRECISION_HINT f32.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ResNetError
from ..storage import sha256_file
from .metadata import decode

RT_SECTION = "resnet"  # rt_info keys: resnet/classes, resnet/preprocessing, resnet/metadata, ...
WEIGHTS_KEY = "weights_sha256"
PRECISION_KEY = "inference_precision"  # rt_info: the precision `load` compiles in (default f32)
# An IR's .xml opens with an optional XML declaration (and comments), then its <net> element.
_IR_HEAD = re.compile(rb"^\s*(<\?xml[^>]*\?>\s*)?(<!--.*?-->\s*)*<net[\s>]", re.S)
# Where `ir_bytes` records the SHA-256 of the .bin in the .xml's rt_info section.
_WEIGHTS_HASH = re.compile(rb'<weights_sha256 value="([0-9a-f]{64})"')


@dataclass(frozen=True)
class IR:
    """An OpenVINO IR in memory: the .xml (graph and rt_info) and the .bin (weights) bytes."""

    xml: bytes
    weights: bytes

    @property
    def size_bytes(self) -> int:
        """Both files' size together."""
        return len(self.xml) + len(self.weights)


def require_openvino():
    """The `openvino` module, or a one-line ResNetError saying how to install it."""
    try:
        import openvino  # optional heavy dependency: loaded only when a model meets OpenVINO
    except ImportError:
        raise ResNetError(
            "OpenVINO export and inference need the openvino package: pip install openvino"
        ) from None
    return openvino


def _message(e: Exception) -> str:
    """The informative line of an OpenVINO exception (they open with C++ source locations)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return ((useful or lines or [type(e).__name__])[-1])[:200]


def from_onnx(onnx_model: bytes):
    """An `openvino.Model` converted from ONNX bytes (names and dynamic batch kept)."""
    ov = require_openvino()
    try:
        return ov.convert_model(io.BytesIO(onnx_model))
    except Exception as e:  # noqa: BLE001 - the converter raises plain RuntimeErrors
        raise ResNetError(f"OpenVINO conversion failed: {_message(e)}") from None


def set_metadata(model, metadata: dict[str, Any]) -> None:
    """Writes `metadata` into the model's rt_info: resnet/classes and resnet/preprocessing as
    JSON (for other tools), resnet/metadata holding the whole dict."""
    for key, value in (
        ("classes", metadata["classes"]),
        ("preprocessing", metadata["preprocessing"]),
        ("metadata", metadata),
    ):
        model.set_rt_info(json.dumps(value, sort_keys=True), [RT_SECTION, key])


def _rt_text(model, key: str) -> str | None:
    """The rt_info string at resnet/`key`, or None."""
    if not model.has_rt_info([RT_SECTION, key]):
        return None
    return model.get_rt_info([RT_SECTION, key]).astype(str)


def read_metadata(model, where: str = "the OpenVINO model") -> dict[str, Any]:
    """The resnet metadata stored in an `openvino.Model`'s rt_info."""
    text = _rt_text(model, "metadata")
    if text is None:
        parts = {k: _rt_text(model, k) for k in ("classes", "preprocessing")}
        text = json.dumps({k: json.loads(v) for k, v in parts.items() if v is not None})
    return decode(text, where)


def _save(model, folder: Path, name: str) -> tuple[bytes, bytes]:
    """`(xml, bin)` bytes of `model` saved uncompressed (save_model's default halves the weights
    to fp16, which would break parity)."""
    ov = require_openvino()
    xml = folder / f"{name}.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def ir_bytes(model, metadata: dict[str, Any] | None = None) -> IR:
    """Serialises an `openvino.Model` to IR bytes, with `metadata` in rt_info.

    The .xml also records the SHA-256 of its .bin, so a pair whose halves come from two
    different exports is refused when read (see `write_ir`). Saving is deterministic: the
    model is saved once to hash the weights and once more with the hash in rt_info.
    """
    if metadata:
        set_metadata(model, metadata)
    with tempfile.TemporaryDirectory(prefix="resnet-openvino-") as tmp:
        _, weights = _save(model, Path(tmp), "first")
        digest = hashlib.sha256(weights).hexdigest()
        model.set_rt_info(digest, [RT_SECTION, WEIGHTS_KEY])
        xml, again = _save(model, Path(tmp), "second")
    if hashlib.sha256(again).hexdigest() != digest:
        raise ResNetError("OpenVINO wrote different weights for the same model twice")
    return IR(xml=xml, weights=again)


def weights_path(xml: str | os.PathLike) -> Path:
    """The .bin beside an IR's .xml (the name OpenVINO looks for)."""
    return Path(xml).with_suffix(".bin")


def _check_ir_files(path: Path) -> Path:
    """Refuses, in one line, an .xml that is missing, is not an IR, or has no .bin; returns
    the .bin's path."""
    if not path.is_file():
        raise ResNetError(f"OpenVINO IR not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4096)
    if not _IR_HEAD.match(head):
        raise ResNetError(f"{path} is not an OpenVINO IR (no <net> element at the top)")
    weights = weights_path(path)
    if not weights.is_file():
        raise ResNetError(
            f"{path} has no weights file {weights.name} beside it (an IR is an .xml + .bin pair)"
        )
    return weights


def read_model(source: IR | str | os.PathLike):
    """An `openvino.Model` from IR bytes or an .xml file (its .bin beside it).

    Raises:
        ResNetError: missing or corrupt files, a non-IR .xml, or an .xml whose .bin is not the
            one it was exported with.
    """
    ov = require_openvino()
    core = ov.Core()
    if isinstance(source, IR):
        try:
            return core.read_model(model=source.xml, weights=source.weights)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises plain RuntimeErrors
            raise ResNetError(f"OpenVINO cannot read the IR: {_message(e)}") from None
    path = Path(source)
    weights = _check_ir_files(path)
    xml = path.read_bytes()
    recorded = _WEIGHTS_HASH.search(xml, max(0, xml.rfind(b"<rt_info>")))
    if recorded and sha256_file(weights) != recorded.group(1).decode():
        # checked before OpenVINO reads the pair: a mismatched .bin can crash its reader
        raise ResNetError(
            f"{weights.name} is not the weights file {path.name} was exported with "
            "(a half-replaced pair?); export the model again"
        )
    try:
        return core.read_model(str(path), str(weights))  # the .bin memory-mapped
    except Exception as e:  # noqa: BLE001
        raise ResNetError(f"{path} is not a readable OpenVINO IR: {_message(e)}") from None


def _temp_copy(target: Path, data: bytes) -> str:
    """Writes `data` to a new temp file beside `target` (synced, group-readable); its name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # as storage.atomic_write_bytes: results are for the group too
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_ir(path: str | os.PathLike, ir: IR) -> Path:
    """Writes an IR pair (`path` .xml and its .bin) so that a failure writes nothing.

    Two files cannot be replaced in one atomic step, so both are first written in full to temp
    names beside their targets (a failure there removes them and leaves any old pair as it
    was); then the .bin is renamed into place and the .xml last. The .xml is the file that is
    opened (and the one whose presence says an export is there), so a new pair appears only
    when it is complete. In the one instant between the two renames an old .xml faces the new
    .bin: the SHA-256 of its own .bin that every .xml carries makes a reader refuse that mix
    instead of running old graph on new weights, and the next rename ends it.
    """
    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise ResNetError(
            f"an OpenVINO IR is written as an .xml + .bin pair: name it *.xml ({path})"
        )
    weights = weights_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temps: list[str] = []
    try:
        temps.append(_temp_copy(weights, ir.weights))
        temps.append(_temp_copy(path, ir.xml))
        os.replace(temps[0], weights)
        os.replace(temps[1], path)
    except BaseException:
        for t in temps:
            Path(t).unlink(missing_ok=True)
        raise
    return path


def compile_model(
    model, threads: int | None = None, precision: str = "f32", hint: str | None = None
):
    """An `openvino.CompiledModel` on the CPU.

    Args:
        model: an `openvino.Model`.
        threads: inference threads (None: OpenVINO's default, all cores).
        precision: INFERENCE_PRECISION_HINT, "f32" (default, see the module note) or "bf16"
            (AMX / AVX-512 BF16; refused on a CPU without them).
        hint: PERFORMANCE_HINT, "LATENCY" or "THROUGHPUT" (None: OpenVINO's default).
    """
    ov = require_openvino()
    if precision == "bf16" and "BF16" not in _cpu_capabilities(ov):
        raise ResNetError(
            "OpenVINO bf16 needs a CPU with AVX-512 BF16 or AMX (this one has neither)"
        )
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if hint:
        config["PERFORMANCE_HINT"] = hint
    try:
        return ov.Core().compile_model(model, "CPU", config)
    except Exception as e:  # noqa: BLE001
        raise ResNetError(f"OpenVINO cannot compile the model: {_message(e)}") from None


def _cpu_capabilities(ov) -> list[str]:
    """The CPU plugin's OPTIMIZATION_CAPABILITIES (FP32, BF16, INT8, ...)."""
    try:
        return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - an older plugin without the property
        return []


class OVRunner:
    """Calls a compiled OpenVINO model like a module: float tensor in, float32 logits out.

    With `batch_compiled` (the same model, dynamic batch, compiled with the THROUGHPUT hint and
    several streams), a batch of two or more images is split across the streams and run in
    parallel: each stream runs on its own cores without synchronising with the others, which
    beat one request on all cores at batch 32 (BENCHMARKS.md). Batch 1 then runs on
    `compiled`, which may be compiled for batch 1 only (static shapes run a little faster).
    """

    def __init__(self, compiled, batch_compiled=None, pixels: dict[str, Any] | None = None):
        self.compiled = compiled
        self.pixels = pixels  # the preprocessing of an IR that takes uint8 pixels (embedded)
        self.request = compiled.create_infer_request()
        dim = (batch_compiled or compiled).inputs[0].get_partial_shape()[0]
        self.fixed_batch = dim.get_length() if dim.is_static else None
        self.queue, self.streams, self._outputs = None, 1, {}
        if batch_compiled is not None and self.fixed_batch is None:
            ov = require_openvino()
            self.streams = int(batch_compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self.queue = ov.AsyncInferQueue(batch_compiled, self.streams)
            self.queue.set_callback(self._keep)

    def tune(self, example: torch.Tensor, candidates=(), seconds: float = 0.2) -> int:
        """Keeps for batch 1 whichever ran `example[:1]` fastest here: `compiled` or one of
        `candidates` (other compiles of the same model, e.g. on fewer threads: on this 2-core
        machine a small net's batch 1 ran ~2x faster on one thread than on two, whose
        per-layer waits cost more than the work). Returns the index picked (0: `compiled`)."""
        x = self._input(example[:1])
        requests = [self.request] + [c.create_infer_request() for c in candidates]
        best = [float("inf")] * len(requests)
        for _ in range(3):  # interleaved rounds, best of each
            for i, request in enumerate(requests):
                calls, t0 = 0, time.perf_counter()
                while calls < 2 or time.perf_counter() - t0 < seconds / (3 * len(requests)):
                    request.infer({0: x}, share_inputs=True)
                    calls += 1
                best[i] = min(best[i], (time.perf_counter() - t0) / calls)
        pick = best.index(min(best))
        self.request = requests[pick]
        return pick

    def _keep(self, request, index: int) -> None:
        """AsyncInferQueue callback: copies a finished chunk's logits out of its request."""
        self._outputs[index] = np.array(request.get_output_tensor(0).data, dtype=np.float32)

    def _split(self, x: np.ndarray) -> np.ndarray:
        """Logits of `x` run as one chunk per stream, in parallel."""
        self._outputs = {}
        chunks = np.array_split(x, min(self.streams, len(x)))
        for i, chunk in enumerate(chunks):
            self.queue.start_async({0: chunk}, userdata=i, share_inputs=True)
        self.queue.wait_all()
        return np.concatenate([self._outputs[i] for i in range(len(chunks))])

    def _input(self, batch: torch.Tensor) -> np.ndarray:
        """What the compiled model takes: float32 [N, C, H, W]; for an IR with embedded
        preprocessing, uint8 pixels [N, H, W, C] (given as such, or recovered from a
        normalised float batch)."""
        if self.pixels is None:
            return batch.detach().to(torch.float32).contiguous().numpy()
        if batch.dtype == torch.uint8:
            return batch.detach().contiguous().numpy()
        return to_pixels(batch, self.pixels)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 logits of `batch` (refused when its size differs from a fixed batch)."""
        x = self._input(batch)
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            raise ResNetError(
                f"this OpenVINO model has a fixed batch size of {self.fixed_batch} "
                f"(got {x.shape[0]}); re-export with --dynamic-batch"
            )
        if self.queue is not None and len(x) > 1:
            return torch.from_numpy(self._split(x))
        # the input is read in place (the call is synchronous); the output is a copy
        out = self.request.infer({0: x}, share_inputs=True)[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


# metadata["pixel_input"]: the IR takes uint8 pixels [N, H, W, C] and normalises them itself.
PIXEL_INPUT = "pixel_input"


def embed_preprocessing(ir: IR, preprocessing: dict[str, Any]) -> IR:
    """The IR with its preprocessing inside the graph: it takes what image decoders give,
    uint8 pixels [N, H, W, C] in RGB (grey: C = 1), already resized to the model's size, and
    converts, reorders (BGR weights) and normalises them itself (OpenVINO's PrePostProcessor).

    A deployment then hands decoded frames straight to OpenVINO: no float copy and no
    normalisation pass in Python; the CPU plugin runs conversion, shift and scale as one
    fused element-wise pass (BENCHMARKS.md, "From decoded pixels").
    `metadata["pixel_input"]` marks the file; `load` accepts our usual normalised float
    batches for it too (they are turned back into pixels), so predict, val and the parity
    check run it unchanged.
    """
    ov = require_openvino()
    from openvino.preprocess import PrePostProcessor

    if preprocessing.get("scan"):
        raise ResNetError("--embed-preprocessing applies to 2-D image models, not scans")
    model = read_model(ir)
    meta = read_metadata(model) if _rt_text(model, "metadata") else None  # kept when there
    ppp = PrePostProcessor(model)
    put = ppp.input()
    put.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    put.model().set_layout(ov.Layout("NCHW"))
    steps = put.preprocess().convert_element_type(ov.Type.f32)
    if str(preprocessing.get("channel_order") or "rgb").lower() == "bgr":
        steps.reverse_channels()
    steps.mean([255.0 * m for m in preprocessing["mean"]])
    steps.scale([255.0 * s for s in preprocessing["std"]])
    try:
        fused = ppp.build()
    except Exception as e:  # noqa: BLE001 - OpenVINO raises plain RuntimeErrors
        raise ResNetError(f"OpenVINO cannot embed the preprocessing: {_message(e)}") from None
    return ir_bytes(fused, meta and meta | {PIXEL_INPUT: True})


def _normalisation(preprocessing: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(mean, std) as [1, C, 1, 1] tensors, and whether the weights want BGR."""
    mean = torch.tensor(preprocessing["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return mean, std, str(preprocessing.get("channel_order") or "rgb").lower() == "bgr"


def to_pixels(batch: torch.Tensor, preprocessing: dict[str, Any]) -> np.ndarray:
    """A normalised float batch [N, C, H, W] back as the uint8 RGB pixels [N, H, W, C] an IR
    with embedded preprocessing takes (the inverse of the eval transform's normalisation)."""
    mean, std, bgr = _normalisation(preprocessing)
    x = batch.detach().float() * std + mean
    if bgr:
        x = x.flip(1)  # the graph takes RGB and reorders itself
    pixels = x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().numpy()


def on_pixel_grid(batch: torch.Tensor, preprocessing: dict[str, Any]) -> torch.Tensor:
    """`batch` (normalised float [N, C, H, W]) with each value moved to the nearest 8-bit
    pixel's: what eager sees is then exactly what an IR with embedded preprocessing is fed."""
    mean, std, bgr = _normalisation(preprocessing)
    pixels = torch.from_numpy(to_pixels(batch, preprocessing)).permute(0, 3, 1, 2).float()
    if bgr:
        pixels = pixels.flip(1)
    return (pixels / 255.0 - mean) / std


def with_batch_one(model):
    """A copy of an `openvino.Model` with its batch dimension fixed to 1."""
    shape = model.inputs[0].get_partial_shape()
    shape[0] = 1
    one = model.clone()
    one.reshape({one.inputs[0]: shape})
    return one


def runner(
    model,
    threads: int | None = None,
    precision: str = "f32",
    example: torch.Tensor | None = None,
    pixels: dict[str, Any] | None = None,
) -> OVRunner:
    """An OVRunner for an `openvino.Model` on the CPU.

    With a dynamic batch, batches of two or more are split across the streams of a
    THROUGHPUT-hint compile, and batch 1 runs on a LATENCY-hint compile for batch 1, on all
    `threads` or on one, whichever ran `example` (default: a blank input of the model's shape)
    faster here (`OVRunner.tune`). A fixed batch is one LATENCY-hint compile.

    Args:
        model: the model (fp32, bf16 or int8 IR read by `read_model`).
        threads: inference threads (None: all cores).
        precision: "f32" or "bf16" (see `compile_model`).
        example: an input batch for the tuning (normalised float, or pixels).
        pixels: the preprocessing of an IR with embedded preprocessing (`embed_preprocessing`).
    """
    if model.inputs[0].get_partial_shape()[0].is_static:
        return OVRunner(compile_model(model, threads, precision, "LATENCY"), pixels=pixels)
    one = with_batch_one(model)
    latency = compile_model(one, threads, precision, "LATENCY")
    batch = compile_model(model, threads, precision, "THROUGHPUT")
    run = OVRunner(latency, batch, pixels)
    if (threads or os.cpu_count() or 1) > 1:
        if example is None:
            example = _blank_input(one)
        run.tune(example, [compile_model(one, 1, precision, "LATENCY")])
    return run


def _blank_input(model) -> torch.Tensor:
    """Zeros of a batch-1 model's input shape and type (pixels stay uint8)."""
    shape = [d.get_length() for d in model.inputs[0].get_partial_shape()]
    u8 = model.inputs[0].get_element_type().get_type_name() == "u8"
    return torch.zeros(shape, dtype=torch.uint8 if u8 else torch.float32)


def load(source: IR | str | os.PathLike, threads: int | None = None) -> tuple[OVRunner, dict]:
    """`(runner, metadata)` for IR bytes or an .xml file (see `runner`), compiled for the CPU
    in the precision its rt_info asks for (`set_inference_precision`; f32 otherwise)."""
    where = "the OpenVINO IR" if isinstance(source, IR) else str(source)
    model = read_model(source)
    meta = read_metadata(model, where)
    precision = _rt_text(model, PRECISION_KEY) or "f32"
    pixels = meta["preprocessing"] if meta.get(PIXEL_INPUT) else None
    return runner(model, threads, precision, pixels=pixels), meta


def set_inference_precision(path: str | os.PathLike, precision: str) -> Path:
    """Rewrites an IR pair so that `load` compiles it in `precision` ("bf16" or "f32"): the
    graph and weights stay as they are, the request is kept in rt_info."""
    if precision not in ("f32", "bf16"):
        raise ResNetError(f"inference precision must be f32 or bf16, not {precision!r}")
    model = read_model(path)
    model.set_rt_info(precision, [RT_SECTION, PRECISION_KEY])
    return write_ir(path, ir_bytes(model))


def require_nncf():
    """The `nncf` module, or a one-line ResNetError saying how to install it."""
    try:
        import nncf  # optional heavy dependency: loaded only when a model is quantized
    except ImportError:
        raise ResNetError("OpenVINO int8 export needs NNCF: pip install nncf") from None
    return nncf


# The first convolution stays out of int8 only while it is this small a share of the compute.
FIRST_CONV_SHARE = 0.01


def _macs(op) -> int:
    """Multiply-accumulates per image of a convolution or matmul (0 where shapes are dynamic)."""
    weights, out = op.input(1).get_partial_shape(), op.output(0).get_partial_shape()
    if not weights.is_static or out.rank.is_dynamic or any(d.is_dynamic for d in out[1:]):
        return 0
    per_output = int(np.prod([d.get_length() for d in weights])) // max(1, weights[0].get_length())
    return per_output * int(np.prod([d.get_length() for d in out[1:]]))


def _end_nodes(model) -> list[str]:
    """Names of the layers kept out of int8: the last matmul (the classifier), and the first
    convolution when it is under FIRST_CONV_SHARE of the multiply-accumulates. On the trained
    Fashion-MNIST resnet20 (first conv 0.4 % of the compute) keeping it raised top-1 agreement
    with fp32 from 99.35 to 99.6 %; resnet50's 7x7 stem (2.9 %) ran 3-15 % slower kept."""
    ops = [
        op
        for op in model.get_ordered_ops()
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
    ]
    if len(ops) <= 2:
        return []
    macs = [_macs(op) for op in ops]
    kept = [ops[-1].get_friendly_name()]
    if sum(macs) and macs[0] < FIRST_CONV_SHARE * sum(macs):
        kept.insert(0, ops[0].get_friendly_name())
    return kept


def quantize_ir(
    ir: IR,
    calibration: torch.Tensor,
    *,
    keep_ends_fp32: bool = True,
    fast_bias_correction: bool = False,
) -> IR:
    """NNCF post-training int8 quantization of an fp32 IR, ranges observed on `calibration`
    (preprocessed training images, fed one at a time); the IR's resnet metadata, if any, is
    kept.

    Args:
        ir: the fp32 model, with a dynamic batch or batch 1.
        calibration: preprocessed input batch [N, C, H, W]; a few dozen to a few hundred images.
        keep_ends_fp32: leave the classifier, and a cheap first convolution, out of int8
            (see `_end_nodes`; the raw-pixel input and the logits are the most range-sensitive).
        fast_bias_correction: NNCF's quick bias correction instead of the full one. On the
            tiny digits net of the tests, top-1 agreement with fp32 on 397 held-out digits was
            91 % with NNCF's defaults (fast, all layers), 95 % with the ends kept, 99.5 % with
            the ends kept and the full correction, at no measurable cost in time there.
    """
    nncf = require_nncf()
    if len(calibration) == 0:
        raise ResNetError("int8 quantization needs calibration images (got none)")
    model = read_model(ir)
    meta = read_metadata(model) if _rt_text(model, "metadata") else None  # kept when there
    ends = _end_nodes(model) if keep_ends_fp32 else []
    data = nncf.Dataset(
        [calibration[i : i + 1].float().contiguous().numpy() for i in range(len(calibration))]
    )
    with _quiet_nncf():
        quantized = nncf.quantize(
            model,
            data,
            subset_size=len(calibration),
            fast_bias_correction=fast_bias_correction,
            ignored_scope=nncf.IgnoredScope(names=ends, validate=False),
        )
    return ir_bytes(quantized, meta)


def reference_int8(
    model: torch.nn.Module,
    example: torch.Tensor,
    calibration: torch.Tensor,
    threads: int | None = None,
):
    """OpenVINO's own off-the-shelf int8 pipeline, compiled: `openvino.convert_model` straight
    from the eager model, `nncf.quantize` with its defaults (all layers, performance preset,
    fast bias correction), compiled with the CPU plugin's defaults (only the thread count set).
    The benchmark holds our int8 path to this anchor."""
    ov, nncf = require_openvino(), require_nncf()
    if len(calibration) == 0:
        raise ResNetError("int8 quantization needs calibration images (got none)")
    try:
        converted = ov.convert_model(model.eval(), example_input=example[:1])
    except Exception as e:  # noqa: BLE001 - the PyTorch frontend raises many types
        raise ResNetError(f"OpenVINO conversion failed: {_message(e)}") from None
    data = nncf.Dataset([calibration[i : i + 1].float().numpy() for i in range(len(calibration))])
    with _quiet_nncf():
        quantized = nncf.quantize(converted, data, subset_size=min(300, len(calibration)))
    config = {"INFERENCE_NUM_THREADS": int(threads)} if threads else {}
    return ov.Core().compile_model(quantized, "CPU", config)


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF's progress bars off stdout (which `--json` output must not contain), its log at
    ERROR, and its failures as one-line ResNetErrors."""
    from nncf.common.logging.logger import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except ResNetError:
        raise
    except Exception as e:  # noqa: BLE001 - NNCF errors come in many types
        raise ResNetError(f"NNCF quantization failed: {_message(e)}") from None
    finally:
        nncf_logger.setLevel(level)
