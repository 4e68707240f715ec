"""Run outputs a person reads: metrics.csv, summary.json, curves.png, confusion_matrix.png."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from ..storage import atomic_write_bytes, atomic_write_text

METRIC_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_top5",
    "seconds",
)


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    def write(f):
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")

    atomic_write_bytes(path, write)
    plt.close(fig)


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
    b.plot(ep, [100 * r["train_acc"] for r in history], "o-", label="train")
    val = [r for r in history if r.get("val_loss") is not None]
    if val:
        a.plot([r["epoch"] for r in val], [r["val_loss"] for r in val], "s-", label="val")
        b.plot([r["epoch"] for r in val], [100 * r["val_acc"] for r in val], "s-", label="val")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    b.set(xlabel="epoch", ylabel="accuracy %", title="top-1 accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    _save_figure(fig, path)


def plot_confusion(cm: torch.Tensor, classes: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix with counts, true classes as rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    cm = cm.double()
    norm = cm / cm.sum(1, keepdim=True).clamp_min(1)
    size = max(5.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    int(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    _save_figure(fig, path)
