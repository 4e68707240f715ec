"""Fashion-MNIST recipes over several seeds: mean ± std of test accuracy and wall time, and the
training time at which the test accuracy first reached 93 / 94 / 95 % (evaluated after every
epoch for this report only; recipes are tuned on the validation split, never on the test set).

    .venv/bin/python benchmarks/fashion_mnist.py --recipe speedrun --seeds 0,1,2
    .venv/bin/python benchmarks/fashion_mnist.py --recipe best --seeds 0,1,2

Results merge into benchmarks/results/fashion_mnist.json under the recipe's name.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from resnet.engine.checkpoint import atomic_write_text
from resnet.engine.recipes import load_recipe
from resnet.engine.trainer import Trainer

TARGETS = (0.93, 0.94, 0.95)


def run_seed(recipe: str, seed: int) -> dict:
    cfg = load_recipe(recipe).updated({"run": {"seed": seed, "out": tempfile.mkdtemp()}})
    t_start = time.perf_counter()
    tr = Trainer(cfg, progress=True, log=lambda *a: None)
    train_s, curve, reached = 0.0, [], {}
    for epoch in range(cfg.run.epochs):
        row = tr.train_one_epoch(epoch)
        train_s += row["seconds"]
        acc = tr.evaluate("test")["top1"]
        curve.append({"epoch": epoch + 1, "train_seconds": round(train_s, 2), "test_acc": acc})
        for t in TARGETS:
            if acc >= t and t not in reached:
                reached[t] = train_s
        print(f"seed {seed} epoch {epoch + 1}: test {100 * acc:.2f}% after {train_s:.0f}s")
    return {
        "seed": seed,
        "test_acc": acc,
        "train_s": train_s,
        "wall_s": time.perf_counter() - t_start,
        "curve": curve,
        **{f"time_to_{round(100 * t)}_s": reached.get(t) for t in TARGETS},
    }


def summarize(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "not reached"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    missing = len(values) - len(vals)
    return f"{statistics.mean(vals):.2f} ± {sd:.2f}" + (
        f" ({missing} not reached)" if missing else ""
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="speedrun")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="benchmarks/results/fashion_mnist.json")
    args = ap.parse_args()
    runs = [run_seed(args.recipe, int(s)) for s in args.seeds.split(",")]
    result = {
        "test_acc": [r["test_acc"] for r in runs],
        "wall_s": [r["wall_s"] for r in runs],
        "train_s": [r["train_s"] for r in runs],
        **{
            f"time_to_{round(100 * t)}_s": [r[f"time_to_{round(100 * t)}_s"] for r in runs]
            for t in TARGETS
        },
        "runs": runs,
        "command": f".venv/bin/python benchmarks/fashion_mnist.py --recipe {args.recipe} "
        f"--seeds {args.seeds}",
    }
    print(
        f"{args.recipe}: test accuracy {summarize([100 * a for a in result['test_acc']])} %, "
        f"training {summarize(result['train_s'])} s, "
        + ", ".join(
            f"time to {round(100 * t)} %: {summarize(result[f'time_to_{round(100 * t)}_s'])} s"
            for t in TARGETS
        )
    )
    path = Path(args.out)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[args.recipe] = result
    data |= {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "date": date.today().isoformat(),
    }
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
