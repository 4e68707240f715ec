"""How accuracy grows with the number of ensemble members, on the validation split only.

Trains one member per seed with a recipe (held-out `val_split`, never the test set), keeps each
member's validation probabilities (flip TTA, as the recipe evaluates) and reports the accuracy of
the mean probability over every subset of k members, for each k: a curve without the luck of one
member order. (Each member's two views are averaged before the members are; `Ensemble` under
TTA averages the members first, so `resnet val` may differ in the last decimal.)

    .venv/bin/python benchmarks/ensemble_size.py --recipe speedrun --seeds 2,3,4,5,6,7,8,9

Writes benchmarks/results/ensemble_size.json; the probabilities go to
runs/ensemble_size_probs.pt (not committed), from which `--analyse-only` redoes the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
from datetime import datetime
from pathlib import Path

import torch

from resnet.engine import Trainer
from resnet.engine.evaluate import predict_logits
from resnet.engine.recipes import load_recipe
from resnet.storage import atomic_write_bytes, atomic_write_text, torch_load_safe


def member_probabilities(recipe: str, seed: int, epochs: int | None):
    cfg = load_recipe(recipe).updated(
        {"run": {"seed": seed, "ensemble": 1, "out": tempfile.mkdtemp()}}
    )
    if epochs:
        cfg = cfg.updated({"run": {"epochs": epochs}})
    tr = Trainer(cfg, progress=True, log=lambda *a: None)
    epoch = -1
    while epoch + 1 < tr.planned_epochs:  # run.epochs, or what fits run.time_budget
        epoch += 1
        tr.train_one_epoch(epoch)
        tr.plan(epoch + 1)
    seconds = tr.train_seconds
    model, probs, labels = tr.eval_model().eval(), [], []
    with torch.no_grad():
        for x, y in tr.eval_loaders["val"]:
            logits = predict_logits(
                model,
                x.to(tr.device),
                tr.amp_dtype,
                cfg.run.tta and cfg.data.flip,
                cfg.run.tta_shift,
            )
            probs.append(logits.softmax(1).cpu())
            labels.append(y)
    return torch.cat(probs), torch.cat(labels), seconds


def subset_table(probs: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """Mean / min / max accuracy (%) of the averaged probabilities over all k-subsets."""
    rows = []
    for k in range(1, len(probs) + 1):
        accs = [
            100 * (probs[list(c)].mean(0).argmax(1) == labels).float().mean().item()
            for c in itertools.combinations(range(len(probs)), k)
        ]
        rows.append(
            {
                "members": k,
                "subsets": len(accs),
                "mean": statistics.mean(accs),
                "min": min(accs),
                "max": max(accs),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="speedrun")
    ap.add_argument("--seeds", default="2,3,4,5,6,7,8,9")
    ap.add_argument("--epochs", type=int, help="instead of the recipe's")
    ap.add_argument("--out", default="benchmarks/results/ensemble_size.json")
    ap.add_argument("--probs", default="runs/ensemble_size_probs.pt")
    ap.add_argument(
        "--analyse-only",
        action="store_true",
        help="recompute the table from the saved probabilities",
    )
    args = ap.parse_args()
    saved = Path(args.probs)
    if args.analyse_only:
        data = torch_load_safe(saved, "probabilities file")
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        probs, seconds, labels = [], [], None
        for seed in seeds:
            p, labels, s = member_probabilities(args.recipe, seed, args.epochs)
            probs.append(p)
            seconds.append(s)
            acc = 100 * (p.argmax(1) == labels).float().mean().item()
            print(f"member seed {seed}: val {acc:.2f} %, {s:.0f} s", flush=True)
        data = {
            "probs": torch.stack(probs),
            "labels": labels,
            "seeds": torch.tensor(seeds),
            "train_s": torch.tensor(seconds),
        }
        atomic_write_bytes(saved, lambda f: torch.save(data, f))
    table = subset_table(data["probs"], data["labels"])
    for row in table:
        print(
            f"{row['members']} members: val {row['mean']:.2f} % (mean of {row['subsets']} "
            f"subsets; {row['min']:.2f}-{row['max']:.2f})"
        )
    result = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "recipe": args.recipe,
        "epochs": args.epochs,
        "seeds": data["seeds"].tolist(),
        "member_val_acc": [
            100 * (p.argmax(1) == data["labels"]).float().mean().item() for p in data["probs"]
        ],
        "member_train_s": data["train_s"].tolist(),
        "by_members": table,
        "command": f".venv/bin/python benchmarks/ensemble_size.py --recipe {args.recipe} "
        f"--seeds {','.join(map(str, data['seeds'].tolist()))}"
        + (f" --epochs {args.epochs}" if args.epochs else ""),
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
