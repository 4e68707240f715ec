"""`resnet compare`: flags -> a shared TrainConfig (as `resnet train` builds it) and a
ComparePlan -> `resnet.compare.compare`."""

from __future__ import annotations

import argparse

from ..compare import ComparePlan, compare
from ..errors import ResNetError
from .train import config_from_args, data_flags, duration, optim_flags

# With --time-budget alone, epochs only caps the plan: as many as fit the budget.
BUDGET_EPOCH_CAP = 10_000
S = argparse.SUPPRESS


def _positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def add_parser(sub) -> None:
    """Adds `resnet compare` and its flags: what to compare, the shared data, optimisation and
    run settings (`resnet train`'s), and how inference is timed."""
    p = sub.add_parser(
        "compare",
        help="train several models on the same data and budget; compare them on this machine",
        description="Trains each model x seed with the same data, augmentation, schedule and "
        "budget into OUT/<model>/seed<k>/, then measures accuracy (mean ± std over seeds), "
        "parameters, MACs, training speed, peak memory and inference latency / throughput on "
        "this machine. Writes OUT/compare.md, compare.csv, compare.json and trade-off plots. "
        "Run it again after an interruption: finished runs are kept, unfinished ones resume.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=None,
    )
    _what_flags(p.add_argument_group("what"))
    data_flags(p.add_argument_group("data (shared by every run)"))
    optim_flags(p.add_argument_group("optimisation (shared by every run)"))
    _run_flags(p.add_argument_group("run"))
    p.set_defaults(run=run, model=None)


def _what_flags(g) -> None:
    g.add_argument(
        "--models",
        required=True,
        help="comma-separated model names, e.g. resnet20,resnet56 (`resnet models`)",
    )
    g.add_argument("--data", help="fashion-mnist, an image folder, or a CSV of path,label")
    g.add_argument("--seeds", type=_positive_int, default=3, help="runs per model (seeds 0..N-1)")
    g.add_argument("--out", default="runs/compare", help="the comparison folder")
    g.add_argument(
        "--recipe", help="a named recipe every run starts from (`resnet train --recipes`)"
    )
    g.add_argument("--config", help="YAML config every run starts from (sections as in train)")
    g.add_argument(
        "--opt",
        action="append",
        metavar="KEY=VALUE",
        default=None,
        help="model option for every model, e.g. --opt drop_path_rate=0.1",
    )


def _run_flags(r) -> None:
    r.add_argument("--epochs", type=int, help="epochs of every run (with --time-budget: at most)")
    r.add_argument(
        "--time-budget",
        type=duration,
        metavar="TIME",
        help="training time of every run (90s, 5m, 1h): as many epochs as fit, the "
        "learning-rate schedule ending when the budget is spent",
    )
    r.add_argument("--size", dest="image_size", type=int, help="input side in pixels")
    r.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    r.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    r.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=S)
    r.add_argument(
        "--backends",
        default="auto",
        help="inference modes to time: auto (the fastest of every mode that agrees with eager "
        "fp32 to 99 %%), eager (quick), or a comma list such as channels_last,onnxruntime_int8",
    )
    r.add_argument(
        "--timing-seconds",
        type=float,
        default=0.5,
        help="inference timing per mode and batch size",
    )
    r.add_argument("--quiet", action="store_true", default=S, help="no progress bars")


def plan_from_args(args) -> ComparePlan:
    """The ComparePlan the flags describe."""
    return ComparePlan(
        models=tuple(args.models.split(",")),
        seeds=args.seeds,
        out=args.out,
        backends=args.backends,
        timing_seconds=args.timing_seconds,
    )


def run(args) -> int:
    """`resnet compare`: checks every model, trains what is not trained yet, reports."""
    if args.epochs is None and args.time_budget is None:
        raise ResNetError("give the budget of every run: --epochs N or --time-budget TIME")
    if args.time_budget is not None and args.epochs is None:
        args.epochs = BUDGET_EPOCH_CAP
    plan = plan_from_args(args)
    base = config_from_args(args)
    record = compare(base, plan, progress=not getattr(args, "quiet", False))
    print(f"compare: wrote {plan.out}/compare.md, compare.csv, compare.json and the plots")
    for row in record["summary"]:
        acc = row["accuracy_mean"]
        std = row["accuracy_std"]
        shown = "–" if acc is None else f"{100 * acc:.2f}%" + (f" ± {100 * std:.2f}" if std else "")
        print(f"  {row['model']:<24} {shown:>16}  ({row['seeds_done']} seed(s))")
    return 0
