"""`resnet analyze gradients|responses|deep`: gradient flow, layer responses, very deep nets."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from ..analysis import deep, gradients, responses
from ..analysis.degradation import Recipe, load_tensors
from ..errors import ResNetError
from ..models import get_entry


def _common(p, steps_default: int) -> None:
    p.add_argument(
        "--steps",
        type=int,
        default=steps_default,
        help=f"training steps before the second measurement (default {steps_default})",
    )
    p.add_argument(
        "--plain",
        default=None,
        metavar="NAME",
        help="compare against this net instead of MODEL's plain twin",
    )
    p.add_argument(
        "--data",
        default="fashion-mnist",
        help="fashion-mnist, an image folder or a CSV (must fit in memory)",
    )
    p.add_argument("--batch-size", type=int, default=128, help="batch of the training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/analysis", help="output folder")
    p.add_argument("--no-progress", action="store_true")


def add_parser(sub) -> None:
    """Adds `resnet analyze gradients|responses|deep` to the CLI's subcommands."""
    p = sub.add_parser("analyze", help="gradient flow, layer responses, very deep nets")
    asub = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")

    g = asub.add_parser("gradients", help="loss-gradient norm at every layer, residual vs plain")
    g.add_argument("model", help="a registered net, e.g. resnet110 or preact_resnet1001")
    _common(g, 0)
    g.add_argument("--probe-size", type=int, default=64, help="images in the probe batch")
    g.set_defaults(run=run_gradients)

    r = asub.add_parser("responses", help="std of each residual branch's response (Fig. 7)")
    r.add_argument("model", help="a registered net, e.g. resnet56")
    _common(r, 0)
    r.add_argument("--probe-size", type=int, default=500, help="test images measured")
    r.set_defaults(run=run_responses)

    d = asub.add_parser("deep", help="peak memory with/without checkpointing; loss of a short run")
    d.add_argument(
        "--models",
        default=",".join(deep.DEEP_MODELS),
        help="comma-separated nets (default preact_resnet1001,resnet1202)",
    )
    d.add_argument(
        "--memory-batch",
        type=int,
        default=16,
        help="batch of the measured step (0: skip the memory table)",
    )
    d.add_argument("--steps", type=int, default=30, help="training steps (0: no training)")
    d.add_argument("--batch-size", type=int, default=32, help="batch of the training steps")
    d.add_argument("--lr", type=float, default=0.1, help="peak learning rate (warm-up from lr/10)")
    d.add_argument(
        "--zero-init-residual",
        action="store_true",
        help="start every block as the identity (Goyal et al. 2017)",
    )
    d.add_argument("--data", default="fashion-mnist")
    d.add_argument("--out", default="runs/analysis", help="output folder")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(run=run_deep)


def _recipe(args) -> Recipe:
    if args.batch_size < 1 or args.steps < 0 or getattr(args, "probe_size", 1) < 1:
        raise ResNetError("need --batch-size >= 1, --probe-size >= 1 and --steps >= 0")
    return replace(Recipe(), batch_size=args.batch_size, seed=getattr(args, "seed", 0))


def run_gradients(args) -> int:
    """`resnet analyze gradients`: writes the gradient-flow CSV, plot and summary."""
    return _twin_study(
        args,
        gradients.gradient_flow,
        gradients.write_gradient_flow,
        gradients.format_summary,
        "gradients",
    )


def run_responses(args) -> int:
    """`resnet analyze responses`: writes the layer-response CSV, plot and summary."""
    return _twin_study(
        args,
        responses.response_study,
        responses.write_responses,
        responses.format_responses,
        "responses",
    )


def _twin_study(args, study, write, summarise, stem: str) -> int:
    """Runs one study of a net and its plain twin, writes its files and prints its summary."""
    pair = gradients.twin_names(args.model, args.plain)  # fail fast on a bad name
    recipe = _recipe(args)
    t0 = time.perf_counter()
    data = load_tensors(args.data)
    result = study(
        args.model,
        data,
        steps=args.steps,
        plain=args.plain,
        probe_size=args.probe_size,
        recipe=recipe,
        progress=not args.no_progress,
    )
    paths = write(result, args.out, f"{stem}_{pair[0]}_vs_{pair[1]}")
    print(summarise(result))
    print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - t0:.0f} s")
    return 0


def run_deep(args) -> int:
    """`resnet analyze deep`: the memory table and the loss of short very-deep runs."""
    names = [get_entry(n).name for n in args.models.split(",") if n.strip()]
    if not names or args.memory_batch < 0 or args.steps < 0 or args.batch_size < 1:
        raise ResNetError("need --models, --memory-batch >= 0, --steps >= 0, --batch-size >= 1")
    t0 = time.perf_counter()
    memory = []
    if args.memory_batch:
        memory = deep.memory_table(names, args.memory_batch, progress=not args.no_progress)
        print(deep.format_memory(memory))
        deep.write_deep(memory, [], Path(args.out))  # kept if the training below is stopped
    runs = []
    if args.steps:
        data = load_tensors(args.data)
        recipe = replace(Recipe(), batch_size=args.batch_size, lr=args.lr)
        for name in names:
            run = deep.train_deep(
                name,
                data,
                args.steps,
                recipe=recipe,
                zero_init_residual=args.zero_init_residual,
                progress=not args.no_progress,
            )
            k = max(1, args.steps // 5)
            first, last = run["losses"][:k], run["losses"][-k:]
            print(
                f"{run['model']}: loss {sum(first) / len(first):.3f} (first {k} steps) -> "
                f"{sum(last) / len(last):.3f} (last {k}) in {run['seconds']:.0f} s"
            )
            runs.append(run)
            deep.write_deep([], runs, Path(args.out))
    paths = deep.write_deep(memory, runs, Path(args.out))
    print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - t0:.0f} s")
    return 0
