"""`resnet experiment degradation`: the paper's Fig. 6, plain vs residual twins, one command."""

from __future__ import annotations

import time
from dataclasses import replace

from ..analysis import degradation as dg
from ..errors import ResNetError


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ResNetError(f"expected comma-separated integers, got {text!r}") from None


def add_parser(sub) -> None:
    """Adds `resnet experiment degradation` to the CLI's subcommands."""
    p = sub.add_parser("experiment", help="reproduce the paper's experiments (degradation)")
    esub = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    d = esub.add_parser(
        "degradation",
        help="train plain and residual twins of several depths under one recipe (Fig. 6)",
        description="Trains resnetD and plainD for each depth D on the same batches and writes "
        "training_error.png, test_error.png, curves.csv, verdict.md and verdict.json.",
    )
    d.add_argument(
        "--depths",
        default=None,
        help="comma-separated depths (default 20,32,44,56; --quick: 20,56)",
    )
    d.add_argument(
        "--family",
        default="resnet",
        choices=("resnet", "preact_resnet"),
        help="resnet: CIFAR nets of the 2015 paper; preact_resnet: 2016 pre-activation",
    )
    d.add_argument(
        "--data",
        default="fashion-mnist",
        help="fashion-mnist, an image folder or a CSV (must fit in memory)",
    )
    d.add_argument("--subset", type=int, default=None, help="train on the first N training images")
    d.add_argument(
        "--budget",
        type=int,
        default=None,
        help=f"iterations per run (default {dg.Recipe.iterations}; --quick: "
        f"{dg.QUICK['iterations']})",
    )
    d.add_argument(
        "--quick",
        action="store_true",
        help="depths 20,56 and a short budget: about 5 minutes on 2 idle CPU cores",
    )
    d.add_argument("--schedule", choices=dg.SCHEDULES, default="step")
    d.add_argument("--batch-size", type=int, default=128)
    d.add_argument("--lr", type=float, default=0.1)
    d.add_argument("--eval-every", type=int, default=None, help="iterations between evaluations")
    d.add_argument(
        "--eval-size", type=int, default=None, help="training-subset and test images per evaluation"
    )
    d.add_argument("--fp32", action="store_true", help="no bfloat16 autocast")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/degradation", help="output folder")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(run=run)


def recipe_from_args(args) -> dg.Recipe:
    """The shared training recipe from the flags (`--quick` scales it down)."""
    base = dg.Recipe(**dg.QUICK) if args.quick else dg.Recipe()
    iters = base.iterations if args.budget is None else args.budget
    if iters < 1:
        raise ResNetError(f"--budget must be at least 1 iteration, got {iters}")
    changes = dict(
        iterations=iters,
        schedule=args.schedule,
        batch_size=args.batch_size,
        lr=args.lr,
        bf16=not args.fp32,
        seed=args.seed,
        warmup=min(base.warmup, max(iters // 20, 1)),
    )
    if args.eval_every is not None:
        changes["eval_every"] = args.eval_every
    elif args.budget is not None:
        changes["eval_every"] = max(iters // 16, 1)
    if args.eval_size is not None:
        changes["train_eval_size"] = changes["test_eval_size"] = args.eval_size
    return replace(base, **changes)


def run(args) -> int:
    """Runs the degradation experiment and prints its verdict."""
    depths = _ints(args.depths) if args.depths else ([20, 56] if args.quick else [20, 32, 44, 56])
    recipe = recipe_from_args(args)
    if len(set(depths)) < 2:
        raise ResNetError("the degradation experiment needs at least two depths, e.g. 20,56")
    dg.twin_names(depths, args.family)  # fail on an unknown depth before loading any data
    start = time.perf_counter()
    data = dg.load_tensors(args.data, args.subset)
    print(
        f"{data.name}: {len(data.train_y)} training / {len(data.test_y)} test images; "
        f"{recipe.iterations} iterations per run, batch {recipe.batch_size}, "
        f"{len(depths) * 2} runs"
    )
    result = dg.run_degradation(
        data, depths, recipe, args.out, family=args.family, progress=not args.no_progress
    )
    print(dg.verdict_markdown(result.verdict))
    print(
        f"wrote {args.out}/ (training_error.png, test_error.png, curves.csv, verdict.md, "
        f"verdict.json) in {time.perf_counter() - start:.0f} s"
    )
    return 0
