"""Cross-validation: K folds by group (patient), trained one after another, then summarised.

    runs/cv/
        config.yaml        the run's config (data.folds = K, data.fold unset)
        fold1/ ...         one ordinary run folder per fold (its splits.json, val_clinical.json,
                           roc.png, ...): fold i holds out the i-th group fold
        folds.json         written when every fold is done
        folds.csv          one row per fold: accuracy, AUROC, sensitivity, specificity, ECE
        folds.png          those figures per fold, with their mean
        summary.json       mean and standard deviation over the folds

Training the same config into the same folder again, or `--resume` on it, goes on from the
first unfinished fold.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import ResNetError
from ..storage import atomic_write_text, write_json
from .config import TrainConfig
from .events import Callback, RunEnd
from .parts import prepare_folder, stopped, train_part
from .report import pyplot, save_figure
from .trainer import run_callbacks

MANIFEST = "folds.json"
# The per-fold figures summarised (those a fold's summary has).
FIGURES = ("val_acc", "val_auroc", "val_sensitivity", "val_specificity", "val_ece")


def is_folds_run(path: str | os.PathLike) -> bool:
    """A folder that holds (or was started as) a cross-validation run."""
    path = Path(path)
    if (path / MANIFEST).exists():
        return True
    if not (path / "config.yaml").exists() or (path / "last.pt").exists():
        return False
    data = TrainConfig.read_yaml(path / "config.yaml").get("data", {})
    return int(data.get("folds") or 0) >= 2 and data.get("fold") is None


def train_folds(
    cfg: TrainConfig,
    *,
    callbacks: Iterable[Callback | Callable] | None = None,
    stop: threading.Event | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Trains fold 1..K of `cfg.data.folds` (each holding out one group fold for validation)
    and summarises them; returns the summary. A stopped run goes on from its folder."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ResNetError(
            "cross-validation trains its folds in one process; under torchrun train each fold "
            "with its own --fold and --out"
        )
    if cfg.run.ensemble > 1:
        raise ResNetError("--folds and --ensemble exclude each other: pick one")
    events = run_callbacks(callbacks, progress, log, stop)
    cfg, out = prepare_folder(cfg, "a cross-validation run", is_folds_run, MANIFEST)
    k, folds = cfg.data.folds, []
    for i in range(k):
        if events.stop_requested:
            return stopped(events, out, {"epoch": 0, "step": 0}, fold=i + 1)
        tag = f"fold {i + 1}/{k}"
        try:
            summary = train_part(
                cfg.updated({"data": {"fold": i}}), out / f"fold{i + 1}", tag, events
            )
        except ResNetError:
            if i == 0 and not (out / "fold1").exists():
                _forget(out)
            raise
        if summary.get("status") == "stopped":
            return stopped(events, out, summary, fold=i + 1)
        folds.append(summary)
    summary = _finish(cfg, out, folds)
    events.emit(RunEnd(summary, "finished"))
    return summary


def _forget(out: Path) -> None:
    """Removes the config.yaml of a run refused before its first fold started (more folds than
    patients, a bad column, ...): left there, it would refuse the corrected command as a
    cross-validation run "with another config". The folder goes too when nothing else is in it."""
    (out / "config.yaml").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        out.rmdir()


def _mean_sd(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))
    return {"mean": mean, "sd": sd, "values": values}


def _finish(cfg: TrainConfig, out: Path, folds: list[dict]) -> dict:
    """folds.json, folds.csv, folds.png and the summary (mean and sd of every figure)."""
    k = len(folds)
    write_json(
        out / MANIFEST, {"format": "resnet-folds", "folds": [f"fold{i + 1}" for i in range(k)]}
    )
    present = [f for f in FIGURES if all(s.get(f) is not None for s in folds)]
    rows = [{"fold": i + 1, **{f: s[f] for f in present}} for i, s in enumerate(folds)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["fold", *present], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "folds.csv", buf.getvalue())
    _plot(rows, present, out / "folds.png", f"{cfg.model.name}: {k}-fold cross-validation")
    summary = {
        "model": cfg.model.name,
        "data": cfg.data.source,
        "folds": k,
        "group_by": cfg.data.group_by,
        "train_seconds": round(sum(s["train_seconds"] for s in folds), 2),
        **{f: _mean_sd([float(s[f]) for s in folds]) for f in present},
        "out": str(out),
    }
    write_json(out / "summary.json", summary)
    return summary


def _plot(rows: list[dict], figures: list[str], path: Path, title: str) -> None:
    """Each figure per fold as dots, with its mean as a bar."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 * max(len(figures), 2) + 2, 4))
    for j, f in enumerate(figures):
        values = [r[f] for r in rows]
        ax.bar(j, sum(values) / len(values), color="#9ecae1", width=0.6)
        ax.scatter([j] * len(values), values, color="#08519c", zorder=3, s=18)
    ax.set_xticks(range(len(figures)), [f.removeprefix("val_") for f in figures])
    ax.set(ylim=(0, 1.02), title=title, ylabel="validation fold")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
