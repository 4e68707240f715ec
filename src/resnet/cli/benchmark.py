"""`resnet benchmark [MODEL ...]`: CPU inference speed of each mode vs torchvision eager fp32."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ResNetError
from ..export.benchmark import fashion_mnist_split, format_table, run_benchmark, subject
from ..export.fast import MODES
from ..storage import atomic_write_text


def _ints(text: str) -> list[int]:
    """Comma-separated positive integers (argparse type)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be positive integers")
    return values


def add_parser(sub) -> None:
    """Adds `resnet benchmark` to the sub-command parsers `sub`."""
    p = sub.add_parser(
        "benchmark",
        help="inference latency/throughput of each CPU mode vs torchvision eager",
        description="Times torchvision's eager fp32 model (the anchor; our eager fp32 where "
        "torchvision has no twin) and each inference mode in one process: batch-1 latency, "
        "largest-batch throughput, GFLOP/s and the fraction of a matmul peak measured in the "
        "same run, and each mode's top-1 agreement with fp32 on real images.",
    )
    p.add_argument(
        "models",
        nargs="*",
        default=["resnet50"],
        help="registered names (random weights) or checkpoints (default: resnet50)",
    )
    p.add_argument("--batch-sizes", type=_ints, default=[1, 32], help="default: 1,32")
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, from {', '.join(MODES)} (default: all)",
    )
    p.add_argument("--image-size", type=int, help="input size for named models (default: native)")
    p.add_argument("--in-chans", type=int, help="input channels for named models (default 3)")
    p.add_argument("--num-classes", type=int, help="classes for named models (default: paper's)")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for PyTorch, ONNX Runtime and OpenVINO (default: torch's, which "
        "follows OMP_NUM_THREADS)",
    )
    p.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="time each setting at least this long (default 1)",
    )
    p.add_argument(
        "--agreement-images",
        type=int,
        default=32,
        help="real photo crops for the top-1 agreement (default 32)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="timing rounds; each calls every mode in turn (default 3)",
    )
    p.add_argument(
        "--test-data",
        choices=("fashion-mnist",),
        help="also measure accuracy and agreement on this test split, and calibrate "
        "int8 on its training split (checkpoints trained on it)",
    )
    p.add_argument("--test-images", type=int, default=2000, help="test images (default 2000)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", help="also write the JSON here (atomically)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    """Benchmarks each model given and prints a table (or JSON); returns the exit code."""
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ResNetError(
            f"unknown mode(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODES)}"
        )
    if min(args.agreement_images, args.test_images, args.rounds) < 1 or args.min_seconds < 0:
        raise ResNetError(
            "--min-seconds must be >= 0; --agreement-images, --test-images and --rounds >= 1"
        )
    subjects = []
    for spec in args.models:
        s = subject(
            spec, image_size=args.image_size, in_chans=args.in_chans, num_classes=args.num_classes
        )
        if args.test_data == "fashion-mnist":
            s.test = fashion_mnist_split(s.preprocessing, "test", args.test_images)
            s.calibration = fashion_mnist_split(s.preprocessing, "train", 256, seed=1)[0]
        subjects.append(s)
    log = (lambda m: print(m, file=sys.stderr)) if args.progress and not args.json else None
    result = run_benchmark(
        subjects,
        batch_sizes=args.batch_sizes,
        modes=modes,
        threads=args.threads,
        agreement_images=args.agreement_images,
        min_seconds=args.min_seconds,
        rounds=args.rounds,
        progress=args.progress,
        log=log,
    )
    text = json.dumps(result, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    print(text if args.json else format_table(result))
    return 0
