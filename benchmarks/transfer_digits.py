"""Transfer experiment: scikit-learn's digits from our Fashion-MNIST weights versus from scratch.

1,797 real 8x8 handwritten digits, upsampled to 28x28 grey (the Fashion-MNIST model's input), a
fixed stratified test set, and training sets of 10, 50 and all labels per class. Each setting runs
with 3 seeds; the table gives mean +- std of the test accuracy.

    .venv/bin/python benchmarks/transfer_digits.py                      # shipped weights
    .venv/bin/python benchmarks/transfer_digits.py --weights runs/x/best.pt

Writes benchmarks/results/transfer_digits.json and docs/transfer_digits.png.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import resnet
from resnet.data.transforms import BatchAugment
from resnet.engine.finetune import apply_freeze, eval_preprocessing_for, set_bn_eval
from resnet.engine.optim import param_groups
from resnet.storage import atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("scratch", "fine-tune", "linear probe")


def digits(test_fraction: float = 0.3, seed: int = 0):
    """(x_train, y_train, x_test, y_test): [N, 1, 28, 28] floats in [0, 1], fixed split."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(d.target)
    tr, te = train_test_split(
        np.arange(len(y)), test_size=test_fraction, stratify=d.target, random_state=seed
    )
    return x[tr], y[tr], x[te], y[te]


def per_class(y: torch.Tensor, k: int | None, seed: int) -> torch.Tensor:
    """Indices of k random examples of each class (all when k is None)."""
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in range(10):
        members = (y == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        idx.append(members if k is None else members[:k])
    return torch.cat(idx)


def normalise(x: torch.Tensor, pre: dict) -> torch.Tensor:
    return (x - pre["mean"][0]) / pre["std"][0]


def run_one(
    arm: str, weights: str, x, y, x_test, y_test, *, steps: int, batch: int, lr: float, seed: int
) -> float:
    torch.manual_seed(seed)
    data_pre = {
        "in_chans": 1,
        "size": [28, 28],
        "mean": [x.mean().item()],
        "std": [x.std().item()],
        "resize": None,
        "crop": None,
    }
    if arm == "scratch":
        model, pre = resnet.create("resnet20", in_chans=1, num_classes=10), data_pre
    else:
        model = resnet.create("resnet20", weights=weights)
        model.reset_classifier(10)  # digits are not Fashion-MNIST's classes: a fresh head
        pre = eval_preprocessing_for(model, data_pre)
        apply_freeze(model, "backbone" if arm == "linear probe" else "none")
    xs, xt = normalise(x, pre), normalise(x_test, pre)
    opt = torch.optim.SGD(
        param_groups(model, 5e-4, lr=lr, include_frozen=True), lr=lr, momentum=0.9, nesterov=True
    )
    aug = BatchAugment("paper", 28, flip=False)  # +-3 px translations; digits are not flipped
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_mult"] * 0.5 * (1 + math.cos(math.pi * step / steps))
        model.train()
        set_bn_eval(model, only_frozen=True)
        idx = torch.randint(0, len(xs), (min(batch, len(xs)),), generator=g)
        xb = aug.apply(xs[idx], aug.sample(len(idx), g, 28, 28))
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i : i + 256]).argmax(1) for i in range(0, len(xt), 256)])
    return (pred == y_test).float().mean().item()


def fashion_mnist_test_acc(model, weights: str) -> float | None:
    """The weights' measured Fashion-MNIST test accuracy (shipped metadata or summary.json)."""
    acc = model.pretrained_cfg.get("test_acc")
    summary = Path(weights).parent / "summary.json"
    if acc is None and summary.exists():
        acc = json.loads(summary.read_text()).get("test_acc")
    return acc


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = list(results["settings"])
    xs = [results["settings"][s]["labels_per_class"] for s in labels]
    for arm, marker in zip(ARMS, "osd", strict=True):
        rows = [results["settings"][s][arm] for s in labels]
        ax.errorbar(
            xs,
            [100 * r["mean"] for r in rows],
            yerr=[100 * r["std"] for r in rows],
            marker=marker,
            capsize=3,
            label=arm,
        )
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{s}\n({x}/class)" for s, x in zip(labels, xs, strict=True)])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits (8x8 -> 28x28): resnet20 from Fashion-MNIST vs scratch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--weights",
        default="fashion-mnist",
        help="our Fashion-MNIST resnet20: shipped name or checkpoint path",
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per run (same for all)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/transfer_digits.json"))
    p.add_argument("--plot", default=str(ROOT / "docs/transfer_digits.png"))
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared 2-core machine 2 threads ran 10x slower)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    probe = resnet.create("resnet20", weights=args.weights)  # fails early, in one line
    x, y, x_test, y_test = digits()
    settings = {"10": 10, "50": 50, "all": None}
    runs = [(s, arm, seed) for s in settings for arm in ARMS for seed in range(args.seeds)]
    acc: dict[tuple[str, str], list[float]] = {}
    t0 = time.perf_counter()
    for s, arm, seed in tqdm(runs, desc="transfer runs", unit="run"):
        idx = per_class(y, settings[s], seed)
        a = run_one(
            arm,
            args.weights,
            x[idx],
            y[idx],
            x_test,
            y_test,
            steps=args.steps,
            batch=args.batch,
            lr=args.lr,
            seed=seed,
        )
        acc.setdefault((s, arm), []).append(a)
    seconds = time.perf_counter() - t0

    out = {
        "experiment": "digits transfer",
        "model": "resnet20",
        "weights": str(args.weights),
        "weights_fashion_mnist_test_acc": fashion_mnist_test_acc(probe, args.weights),
        "train_pool": len(y),
        "test_images": len(y_test),
        "image": "8x8 -> 28x28 bilinear, grey",
        "recipe": {
            "steps": args.steps,
            "batch": args.batch,
            "lr": args.lr,
            "schedule": "cosine",
            "optimizer": "SGD nesterov 0.9, wd 5e-4 (not on norms/biases)",
            "augment": "+-3 px translation, no flips",
            "seeds": args.seeds,
            "threads": args.threads,
        },
        "settings": {},
        "seconds": round(seconds, 1),
        "machine": platform.machine(),
        "torch": str(torch.__version__),
        "date": str(date.today()),
    }
    for s, k in settings.items():
        row: dict = {
            "labels_per_class": k if k is not None else round(len(y) / 10),
            "train_images": 10 * k if k is not None else len(y),
        }
        for arm in ARMS:
            v = acc[(s, arm)]
            std = statistics.stdev(v) if len(v) > 1 else 0.0
            row[arm] = {"mean": statistics.fmean(v), "std": std, "runs": v}
        out["settings"][s] = row
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
    plot(out, Path(args.plot))
    print(f"{'labels/class':>12} " + " ".join(f"{a:>18}" for a in ARMS))
    for s, row in out["settings"].items():
        print(
            f"{s:>12} "
            + " ".join(f"{100 * row[a]['mean']:>10.2f} +- {100 * row[a]['std']:4.2f}" for a in ARMS)
        )
    print(f"{len(runs)} runs in {seconds:.0f} s; wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
