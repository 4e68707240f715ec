"""Run outputs a person reads: metrics CSVs, curves, confusion matrices, each figure saved once.

Every training stack writes through these: the classifier (`metrics.csv`, `curves.png`,
`confusion_matrix.png`), the detection and segmentation tasks and the residual-learning
analyses. matplotlib loads only when a figure is drawn.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
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


def write_metrics_csv(
    path: Path,
    history: list[dict],
    columns: Sequence[str] = METRIC_COLUMNS,
    *,
    lineterminator: str = "\r\n",
) -> Path:
    """Writes one CSV row per dict of `history`, atomically.

    Args:
        path: the CSV file.
        history: the rows; keys outside `columns` are left out, missing or None values are empty.
        columns: the header, in order (default: the classifier's metrics).
        lineterminator: the csv module's line ending ("\\r\\n", its default, or "\\n").
    """
    buf = io.StringIO()
    w = csv.DictWriter(
        buf, fieldnames=columns, extrasaction="ignore", lineterminator=lineterminator
    )
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib  # optional heavy dependency: loaded only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: float | str | None = 120) -> Path:
    """Writes a matplotlib figure as a PNG atomically (tight bounding box) and releases it.

    Args:
        fig: a pyplot figure (closed afterwards) or a bare `Figure` on its own canvas.
        path: the PNG file.
        dpi: resolution; None takes matplotlib's `savefig.dpi` setting.
    """

    def write(f):
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")

    try:
        return atomic_write_bytes(path, write)
    finally:  # written or not (a full disk), a pyplot figure leaves pyplot's registry
        if fig.canvas.manager is not None:
            pyplot().close(fig)


@dataclass(frozen=True)
class Panel:
    """One axes of a curves figure: per-epoch columns of the history drawn against `epoch`.

    Attributes:
        title: the axes' title.
        ylabel: the y-axis label.
        series: `(column, legend label)` pairs; rows where a column is missing or None are
            skipped, and a column with no values is not drawn.
        scale: multiplies every value (100 for fractions shown as percentages).
        ylim: fixed y-axis limits, or None.
    """

    title: str
    ylabel: str
    series: tuple[tuple[str, str], ...]
    scale: float = 1.0
    ylim: tuple[float, float] | None = None


CLASSIFY_PANELS = (
    Panel("loss", "loss", (("train_loss", "train"), ("val_loss", "val"))),
    Panel("top-1 accuracy", "accuracy %", (("train_acc", "train"), ("val_acc", "val")), 100),
)
STYLES = ("o-", "s-", "^-", "d-", "v-")


def moving_average(values: list[float], k: int) -> list[float]:
    """The mean of each value and the `k - 1` before it (fewer at the start)."""
    out = []
    for i in range(len(values)):
        window = values[max(0, i - k + 1) : i + 1]
        out.append(sum(window) / len(window))
    return out


def _plot_steps(ax, steps: list[float]) -> None:
    """The training loss of every step, raw and smoothed over a twentieth of the run."""
    x = range(1, len(steps) + 1)
    ax.plot(x, steps, lw=0.6, alpha=0.5, label="step")
    window = max(1, len(steps) // 20)
    ax.plot(x, moving_average(steps, window), lw=1.5, label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="training loss", title="loss")


def _plot_panel(ax, history: list[dict], panel: Panel) -> None:
    for (key, label), style in zip(panel.series, STYLES, strict=False):
        pts = [r for r in history if r.get(key) is not None]
        if pts:
            ax.plot(
                [r["epoch"] for r in pts], [panel.scale * r[key] for r in pts], style, label=label
            )
    ax.set(xlabel="epoch", ylabel=panel.ylabel, title=panel.title)
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)


def plot_curves(
    history: list[dict],
    path: Path,
    title: str = "",
    panels: Sequence[Panel] = CLASSIFY_PANELS,
    *,
    steps: list[float] | None = None,
) -> None:
    """Per-epoch curves, one panel each, side by side (default: loss and top-1 accuracy).

    Args:
        history: one dict per epoch, with `epoch` and the panels' columns.
        path: the PNG file.
        title: the figure's title.
        panels: what each axes draws.
        steps: the training loss of every step; given, a first panel draws it.
    """
    plt = pyplot()
    n = len(panels) + (steps is not None)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    axes = list(axes[0])
    if steps is not None:
        _plot_steps(axes.pop(0), steps)
    for ax, panel in zip(axes, panels, strict=True):
        _plot_panel(ax, history, panel)
    for ax in fig.axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, path)


def plot_confusion(cm: torch.Tensor, classes: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix with counts, true classes as rows."""
    plt = pyplot()
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
    save_figure(fig, path)
