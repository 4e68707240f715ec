"""Decoded pixels to logits: resnet50 int8 in OpenVINO with the preprocessing in the graph, against
OpenVINO's own int8 pipeline and torchvision, each fed the same 8-bit images.

A deployment starts from decoded frames (uint8), not from normalised float tensors. Each pipeline
here is timed from there:

- torchvision eager fp32 (the anchor): uint8 [N, C, H, W] (as torchvision's decode_image gives
  them) -> float, /255, normalise -> model;
- OpenVINO's own int8 pipeline (`openvino.convert_model` + NNCF defaults): the same torch
  preprocessing -> the compiled model;
- ours, float input: the same torch preprocessing -> our int8 IR (mode openvino_int8);
- ours, pixels: uint8 [N, H, W, C] (as PIL, OpenCV and cameras give them) -> our int8 IR with the
  preprocessing embedded (`resnet export --format openvino --int8 --embed-preprocessing`).

Rounds are interleaved; each round's time of a pipeline is divided into the reference's of the
same round, and the median of those paired ratios is reported with their range.

    .venv/bin/python benchmarks/pixel_pipelines.py [--threads 1] [--min-seconds 20 --rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from resnet.data.transforms import ToModelInput
from resnet.export import fast
from resnet.export import onnx as onnx_export
from resnet.export import openvino as ov_export
from resnet.export.benchmark import machine, subject, time_interleaved
from resnet.export.samples import real_inputs
from resnet.storage import atomic_write_text

OUT = Path(__file__).parent / "results" / "pixel_pipelines.json"
REFERENCE = "openvino_int8_reference"


def pixels_of(batch: torch.Tensor, pre: dict) -> torch.Tensor:
    """The uint8 RGB pixels [N, H, W, C] of a normalised batch."""
    return torch.from_numpy(ov_export.to_pixels(batch, pre))


def pipelines(s, threads: int, calibration: torch.Tensor, example: torch.Tensor) -> dict:
    """name -> callable((pixels NHWC, the same NCHW), both uint8) -> logits, each pipeline
    taking the layout it prefers and doing its own preprocessing."""
    pre = s.preprocessing
    normalise = ToModelInput(pre)

    def torch_prep(u: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return normalise(u[1].float().div_(255.0))

    reference = fast.build(
        s.model, REFERENCE, example=example, calibration=calibration, threads=threads
    )
    onnx_model = onnx_export.onnx_bytes(s.model, example[:2], dynamic_batch=True)
    ir = ov_export.quantize_ir(ov_export.ir_bytes(ov_export.from_onnx(onnx_model)), calibration)
    precision = fast.openvino_precision("openvino_int8")
    floats = ov_export.runner(ov_export.read_model(ir), threads, precision, example)
    embedded = ov_export.read_model(ov_export.embed_preprocessing(ir, pre))
    pixels = ov_export.runner(embedded, threads, precision, pixels_of(example[:1], pre), pre)
    anchor = s.anchor or s.model
    return {
        "torchvision_eager_fp32": lambda u: anchor(torch_prep(u)),
        REFERENCE: lambda u: reference(torch_prep(u)),
        "ours_openvino_int8_float_input": lambda u: floats(torch_prep(u)),
        "ours_openvino_int8_pixels": lambda u: pixels(u[0]),
    }


def both_layouts(nhwc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same pixels as [N, H, W, C] and as contiguous [N, C, H, W]."""
    return nhwc, nhwc.permute(0, 3, 1, 2).contiguous()


def agreement(runs: dict, photos: torch.Tensor, pre: dict) -> dict:
    """Top-1 agreement of each int8 pipeline with eager fp32 on the same pixel-grid photos."""
    u = both_layouts(pixels_of(photos, pre))
    with torch.inference_mode():
        truth = runs["torchvision_eager_fp32"](u).argmax(1)
        return {
            name: round(float((fn(u).argmax(1) == truth).float().mean()), 4)
            for name, fn in runs.items()
            if name != "torchvision_eager_fp32"
        }


def timings(runs: dict, u: torch.Tensor, min_seconds: float, rounds: int) -> dict:
    """Median ms per call of each pipeline, and its paired speed-ups per round against the
    reference and the anchor (median, min, max)."""
    with torch.inference_mode():
        per_call = time_interleaved(runs, u, min_seconds, rounds)
    out = {}
    for name, times in per_call.items():
        row = {"median_ms": round(statistics.median(times) * 1e3, 3)}
        for base in (REFERENCE, "torchvision_eager_fp32"):
            ratios = [b / t for b, t in zip(per_call[base], times, strict=True)]
            row[f"vs_{base}"] = {
                "median": round(statistics.median(ratios), 3),
                "min": round(min(ratios), 3),
                "max": round(max(ratios), 3),
            }
        out[name] = row
    return out


def measure(threads: int, min_seconds: float, rounds: int, batch_sizes=(1, 32), log=None) -> dict:
    """The four pipelines' top-1 agreement and their timings at each batch size."""
    s = subject("resnet50")
    pre = s.preprocessing
    calibration = real_inputs(pre, 64, seed=1000)
    example = ov_export.on_pixel_grid(real_inputs(pre, 2, seed=5), pre)
    runs = pipelines(s, threads, calibration, example)
    photos = ov_export.on_pixel_grid(real_inputs(pre, 64, seed=3000), pre)
    result = {
        "threads": threads,
        "model": "resnet50, 224 px, random weights (BatchNorm statistics from photo crops)",
        "top1_agreement_with_fp32": agreement(runs, photos, pre),
        "note": "every pipeline starts from the same uint8 pixels in the layout it takes: "
        "[N, C, H, W] for the torch preprocessing, [N, H, W, C] for the embedded one; "
        "speed-ups are medians of per-round paired ratios (min and max beside them)",
    }
    for b in batch_sizes:
        u = both_layouts(pixels_of(real_inputs(pre, b, seed=6), pre))
        result[f"batch{b}"] = timings(runs, u, min_seconds, rounds)
        if log:
            log(f"pixels to logits: batch {b} timed")
    return result


def main(argv: list[str] | None = None) -> int:
    """Measures the four pipelines at batch 1 and 32 and writes the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--min-seconds", type=float, default=20.0, help="per batch size, all rounds")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    sizes = tuple(int(v) for v in args.batch_sizes.split(","))
    result = {"machine": machine()} | measure(
        args.threads,
        args.min_seconds,
        args.rounds,
        sizes,
        lambda m: print(f"[{time.perf_counter() - t0:5.0f}s] {m}", file=sys.stderr),
    )
    result["command"] = "python benchmarks/pixel_pipelines.py " + " ".join(argv or sys.argv[1:])
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
