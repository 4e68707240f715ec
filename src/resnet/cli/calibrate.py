"""`resnet calibrate RUN`: fit a softmax temperature on the run's validation split."""

from __future__ import annotations

import json

from ..engine.calibrate import calibrate


def add_parser(sub) -> None:
    """Adds `resnet calibrate` to the sub-command parsers `sub`."""
    p = sub.add_parser(
        "calibrate",
        help="fit a softmax temperature on a run's validation split (temperature scaling)",
    )
    p.add_argument(
        "path",
        metavar="RUN",
        help="run folder (its best.pt) or checkpoint file; not an ensemble",
    )
    p.add_argument("--data", help="data source (default: the one it was trained on)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto (the GPU where there is one), cpu, cuda…")
    p.add_argument("--json", action="store_true", help="print calibration.json")
    p.set_defaults(run=run)


def run(args) -> int:
    """Fits and stores the temperature, then prints one line (or the JSON); returns 0."""
    result = calibrate(
        args.path,
        data=args.data,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"temperature {result['temperature']:.2f}: "
        f"NLL {result['nll_before']:.3f} -> {result['nll_after']:.3f}, "
        f"ECE {result['ece_before']:.3f} -> {result['ece_after']:.3f} "
        f"({result['split']}, {result['samples']} images); wrote {result['out']}/"
    )
    return 0
