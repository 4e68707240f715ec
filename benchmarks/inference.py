"""CPU inference: torchvision's eager fp32 against each of our modes, in one process.

Subjects: resnet50 at 224 px (random weights; torchvision's resnet50 gets the same weights, so
both compute the same function) and the default Fashion-MNIST model (resnet20, 1x28x28): the
trained checkpoint when one exists (accuracy and agreement on the test split, int8 calibrated on
training images), else random weights. Top-1 agreement with fp32 is measured on random crops and
flips of the photos scikit-learn ships. Writes benchmarks/results/inference.json, with each
speed goal, the figure measured for it and whether it was met under "goals".

    .venv/bin/python benchmarks/inference.py [--checkpoint runs/demo/best.pt] [--modes ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pixel_pipelines
import torch

from resnet.export.benchmark import (
    fashion_mnist_split,
    format_table,
    pick_best,
    pooled,
    run_benchmark,
    subject,
)
from resnet.export.fast import MODES
from resnet.storage import atomic_write_text

OUT = Path(__file__).parent / "results" / "inference.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--checkpoint",
        default="runs/demo/best.pt",
        help="trained Fashion-MNIST checkpoint (default runs/demo/best.pt)",
    )
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument(
        "--agreement-images",
        type=int,
        default=64,
        help="photo crops for top-1 agreement (default 64)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument(
        "--pixels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time resnet50 from decoded pixels: OpenVINO int8 with the preprocessing "
        "embedded against OpenVINO's own int8 pipeline (benchmarks/pixel_pipelines.py)",
    )
    ap.add_argument("--pixel-seconds", type=float, default=20.0, help="per batch size")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    big = subject("resnet50")
    big.label = "resnet50"
    ckpt = Path(args.checkpoint)
    if ckpt.exists():
        small = subject(str(ckpt))
        small.test = fashion_mnist_split(small.preprocessing, "test", args.test_images)
        small.calibration = fashion_mnist_split(small.preprocessing, "train", 256, seed=1)[0]
        small.notes.append(
            f"trained checkpoint {ckpt}; test = {args.test_images} stratified "
            "Fashion-MNIST test images; int8 calibrated on 256 training images"
        )
    else:
        small = subject("resnet20", in_chans=1, image_size=28, num_classes=10)
        small.notes.append(f"{ckpt} not found: random weights, so no accuracy figures")
    small.label = "fashion_mnist_resnet20"

    result = run_benchmark(
        [big, small],
        modes=args.modes.split(","),
        min_seconds=args.min_seconds,
        agreement_images=args.agreement_images,
        rounds=args.rounds,
        threads=args.threads,
        log=lambda m: print(f"[{time.perf_counter() - t0:5.0f}s] {m}", file=sys.stderr, flush=True),
    )
    if small.test is not None:
        # A random-weight resnet50 gives near-tie logits (see info.median_fp32_top2_margin), so
        # its own photo agreement understates what a trained net keeps. The mode's numerics
        # are judged on the trained Fashion-MNIST model instead (its test images and photos);
        # the strict pick by resnet50's own photo agreement is kept beside it.
        entry, fm = result["resnet50"], result["fashion_mnist_resnet20"]
        strict = entry.pop("best", None)
        evidence = {
            m: row["top1_agreement"]
            for m, row in fm.items()
            if isinstance(row, dict) and "top1_agreement" in row
        }
        pick_best(
            entry,
            entry["info"]["anchor"],
            evidence,
            fm["info"]["agreement_images"],
            rule="highest geometric-mean speed-up among modes whose top-1 agreement with "
            "fp32 is >= 99 % for the trained Fashion-MNIST model in the same mode "
            "(all its test images and photo crops); no trained resnet50 is available "
            "offline",
        )
        entry["best_strict_random_weights"] = strict
    if args.pixels and "openvino_int8_reference" in args.modes.split(","):
        result["resnet50_pixels_to_logits"] = pixel_pipelines.measure(
            args.threads or torch.get_num_threads(),
            args.pixel_seconds,
            max(args.rounds, 5),
            log=lambda m: print(f"[{time.perf_counter() - t0:5.0f}s] {m}", file=sys.stderr),
        )
    result["goals"] = goals(result)
    result["command"] = "python benchmarks/inference.py " + " ".join(argv or sys.argv[1:])
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    result["notes"] = (
        "2-core machine shared with other agents' jobs while measuring: absolute "
        "times are noisy; compare ratios against the anchor of the same run"
    )
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(json.dumps(result["goals"], indent=2))
    print(
        f"wrote {args.out} in {result['wall_seconds']:.0f} s (torch threads "
        f"{torch.get_num_threads()})"
    )
    return 0


def goals(result: dict) -> dict:
    """Each speed goal, the figure measured for it in this run, and whether it was met."""
    out: dict = {}
    entry = result.get("resnet50", {})
    best = entry.get("best")
    ref = entry.get("openvino_int8_reference")
    if best:
        row = entry[best["mode"]]
        out["resnet50_batch1_5x"] = _goal(row["latency_speedup"], 5.0)
        out["resnet50_batch32_9x"] = _goal(row["throughput_speedup"], 9.0)
        out["resnet50_agreement_99"] = _goal(best["top1_agreement"], 0.99)
        out["resnet50_best_mode"] = best["mode"]
        if ref:
            out["not_slower_than_openvino_reference_batch1"] = _goal(
                ref["latency_ms"] / row["latency_ms"], 1.0
            )
            out["not_slower_than_openvino_reference_batch32"] = _goal(
                row["throughput_img_s"] / ref["throughput_img_s"], 1.0
            )
    pixels = result.get("resnet50_pixels_to_logits", {})
    for b in (1, 32):
        row = pixels.get(f"batch{b}", {}).get("ours_openvino_int8_pixels")
        if row:
            out[f"not_slower_than_openvino_reference_from_pixels_batch{b}"] = _goal(
                row["vs_openvino_int8_reference"]["median"], 1.0
            )
    fm = result.get("fashion_mnist_resnet20", {})
    counts = fm.get("info", {}).get("agreement_images", {})
    agreeing = [
        (row["latency_ms"], name)
        for name, row in fm.items()
        if name != "info"
        and not name.startswith("best")
        and isinstance(row, dict)
        # the anchor has no agreement of its own: it is the reference
        and ("top1_agreement" not in row or pooled(row["top1_agreement"], counts) >= 0.99)
    ]
    if agreeing:
        ms, name = min(agreeing)
        out["fashion_mnist_batch1_0.25ms"] = {
            "value": ms,
            "target": 0.25,
            "met": ms <= 0.25,
            "mode": name,
        }
    return out


def _goal(value: float, target: float) -> dict:
    """{value, target, met}: met when value >= target."""
    return {"value": round(value, 3), "target": target, "met": bool(value >= target)}


if __name__ == "__main__":
    raise SystemExit(main())
