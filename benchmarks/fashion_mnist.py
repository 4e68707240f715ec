"""Fashion-MNIST recipes over several seeds: mean ± std of test accuracy and wall time, and the
training time at which the test accuracy first reached 93 / 94 / 95 %.

    .venv/bin/python benchmarks/fashion_mnist.py --recipe speedrun --seeds 0,1,2
    .venv/bin/python benchmarks/fashion_mnist.py --recipe best --seeds 0

Tuning never looks at the test set: `--tune` trains on the recipe's training part (its
`val_split` held out) and reports only the validation accuracy; `--set` tries a change, e.g.

    .venv/bin/python benchmarks/fashion_mnist.py --recipe speedrun --tune --set optim.lr=0.3

The report evaluates the test set after every epoch to find the time-to-accuracy points (that
evaluation is not counted as training time). Results merge into
benchmarks/results/fashion_mnist.json under the recipe's name (an earlier report of that recipe
moves to "earlier"); tuning runs append one line each
to benchmarks/results/fashion_mnist_tuning.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

import torch
import yaml

from resnet.engine import Trainer
from resnet.engine.recipes import load_recipe
from resnet.models.ensemble import Ensemble
from resnet.storage import atomic_write_text

TARGETS = (0.93, 0.94, 0.95)


def overrides(items: list[str]) -> dict:
    """["optim.lr=0.3", "model.name=resnet20"] -> {"optim": {"lr": 0.3}, "model": {...}}."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set takes SECTION.KEY=VALUE, got {item!r}")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def run_seed(recipe: str, seed: int, changes: dict, tune: bool) -> dict:
    cfg = load_recipe(recipe).updated(changes)
    if not tune:  # the report trains on every training image; tuning holds out val_split
        cfg = cfg.updated({"data": {"val_split": 0.0}})
    k = cfg.run.ensemble  # an ensemble of k: members seeded seed*k .. seed*k+k-1 (disjoint)
    cfg = cfg.updated({"run": {"seed": seed * k if k > 1 else seed, "ensemble": 1}})
    split = "val" if tune else "test"
    t_start = time.perf_counter()
    train_s, curve, reached, members = 0.0, [], {}, []
    acc = float("nan")
    for member in range(k):
        mcfg = cfg.updated({"run": {"seed": cfg.run.seed + member, "out": tempfile.mkdtemp()}})
        tr = Trainer(mcfg, progress=True, log=lambda *a: None)
        epoch = -1
        while epoch + 1 < tr.planned_epochs:  # run.epochs, or what fits run.time_budget
            epoch += 1
            row = tr.train_one_epoch(epoch)
            train_s += row["seconds"]
            last = epoch + 1 >= tr.plan(epoch + 1)
            point = {
                "epoch": epoch + 1,
                "train_seconds": round(train_s, 2),
                "train_loss": round(row["train_loss"], 4),
                "img_s": round(row["img_s"]),
            }
            if k > 1:
                point = {"member": member + 1} | point
            # The test set after every epoch of the first net, then after each further member
            # (the ensemble so far): the accuracy the run would give if stopped there.
            if last or (not tune and member == 0):
                model = tr.eval_model() if member == 0 else Ensemble([*members, tr.eval_model()])
                acc = tr.evaluate(split, model)["top1"]
                point[f"{split}_acc"] = acc
                for t in TARGETS:
                    if acc >= t and t not in reached:
                        reached[t] = train_s
            curve.append(point)
            print(
                f"seed {seed}{f' member {member + 1}/{k}' if k > 1 else ''} epoch {epoch + 1}: "
                f"loss {row['train_loss']:.4f}, {row['img_s']:.0f} img/s, {train_s:.0f} s"
                + (f", {split} {100 * acc:.2f}%" if f"{split}_acc" in point else ""),
                flush=True,
            )
        members.append(tr.eval_model())
    final = members[0] if k == 1 else Ensemble(members)
    views = {}
    if tune:  # the same weights under each test-time augmentation, for the log
        from resnet.engine.evaluate import evaluate

        for name, flip, shift in (("none", False, 0), ("flip", True, 0), ("flip+shift1", True, 1)):
            views[name] = evaluate(
                final,
                tr.eval_loaders["val"],
                len(tr.data.classes),
                tr.device,
                amp_dtype=tr.amp_dtype,
                tta=flip,
                tta_shift=shift,
            )["top1"]
    return {
        "seed": seed,
        f"{split}_acc": acc,
        **({"val_acc_by_tta": views} if tune else {}),
        "train_s": train_s,
        "wall_s": time.perf_counter() - t_start,
        "curve": curve,
        **({} if tune else {f"time_to_{round(100 * t)}_s": reached.get(t) for t in TARGETS}),
    }


def cpu_name() -> str:
    """The CPU's model name (Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--tune", action="store_true", help="report validation accuracy only")
    ap.add_argument("--note", default="", help="what this tuning run changes (logged)")
    ap.add_argument("--out", default="benchmarks/results/fashion_mnist.json")
    args = ap.parse_args()
    changes = overrides(args.set)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [run_seed(args.recipe, s, changes, args.tune) for s in seeds]
    command = (
        f".venv/bin/python benchmarks/fashion_mnist.py --recipe {args.recipe} "
        f"--seeds {args.seeds}"
        + "".join(f" --set {s}" for s in args.set)
        + (" --tune" if args.tune else "")
    )
    if args.tune:
        accs = [100 * r["val_acc"] for r in runs]
        secs = [r["train_s"] for r in runs]
        by_tta = {
            k: [100 * r["val_acc_by_tta"][k] for r in runs] for k in runs[0]["val_acc_by_tta"]
        }
        print(
            f"TUNE {args.recipe} {' '.join(args.set)}: val {summarize(accs)} %, "
            f"training {summarize(secs)} s; by TTA: "
            + ", ".join(f"{k} {summarize(v)}" for k, v in by_tta.items())
        )
        line = {
            "when": datetime.now().isoformat(timespec="seconds"),
            "recipe": args.recipe,
            "set": args.set,
            "note": args.note,
            "val_acc": accs,
            "train_s": secs,
            "val_acc_by_tta": by_tta,
            "img_s": [r["curve"][-1]["img_s"] for r in runs],
            "train_loss": [r["curve"][-1]["train_loss"] for r in runs],
            "command": command,
        }
        with open(Path(args.out).with_name("fashion_mnist_tuning.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")
        return
    result = {
        "test_acc": [r["test_acc"] for r in runs],
        "wall_s": [r["wall_s"] for r in runs],
        "train_s": [r["train_s"] for r in runs],
        **{
            f"time_to_{round(100 * t)}_s": [r[f"time_to_{round(100 * t)}_s"] for r in runs]
            for t in TARGETS
        },
        "runs": runs,
        "command": command,
        # the recipe as it was that day (the command names a file that may change since);
        # the report trains it on every training image (val_split 0)
        "recipe": load_recipe(args.recipe).updated(changes).to_dict(),
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
    if args.recipe in data:  # an earlier report of this recipe is kept, not overwritten
        old = data.pop(args.recipe)
        old.setdefault("date", data.get("date"))
        data.setdefault("earlier", {}).setdefault(args.recipe, []).append(old)
    data[args.recipe] = result | {"date": date.today().isoformat()}
    data |= {
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": date.today().isoformat(),
    }
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
