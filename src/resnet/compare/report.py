"""A comparison's report: one row per model (accuracy as mean ± standard deviation over seeds),
written as compare.md, compare.csv and compare.json, and trade-off plots with the Pareto front
marked (accuracy against latency, parameters and training time)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine.report import pyplot, save_figure
from ..storage import atomic_write_text, write_json

CSV_COLUMNS = (
    "model",
    "split",
    "accuracy_mean",
    "accuracy_std",
    "seeds_done",
    "params",
    "macs",
    "epochs_mean",
    "train_seconds_mean",
    "train_img_s",
    "peak_memory_mb",
    "backend",
    "latency_ms",
    "throughput_img_s",
    "agreement",
)
# (file, x key, x label) of each trade-off plot; accuracy is always the y axis.
PLOTS = (
    ("accuracy_vs_latency.png", "latency_ms", "batch-1 latency (ms, fastest agreeing backend)"),
    ("accuracy_vs_params.png", "params", "parameters"),
    ("accuracy_vs_train_time.png", "train_seconds_mean", "training time per run (s)"),
)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def model_row(model: str, seeds: int, record: dict[str, Any]) -> dict[str, Any]:
    """One model's figures: accuracy mean and standard deviation over its finished seeds,
    means of epochs, training time and speed, the largest peak memory, and inference figures."""
    runs = [record["runs"].get(f"{model}/seed{s}") or {} for s in range(seeds)]
    done = [r for r in runs if r.get("status") == "finished"]
    accs = [r["accuracy"] for r in done if r.get("accuracy") is not None]
    peaks = [r["peak_memory_mb"] for r in done if r.get("peak_memory_mb") is not None]
    inf = record["inference"].get(model) or {}
    return {
        "model": model,
        "split": done[0]["split"] if done else None,
        "accuracy_mean": _mean(accs),
        "accuracy_std": statistics.stdev(accs) if len(accs) >= 2 else None,
        "seeds_done": len(done),
        "params": inf.get("params"),
        "macs": inf.get("macs"),
        "epochs_mean": _mean([r["epochs"] for r in done if r.get("epochs") is not None]),
        "train_seconds_mean": _mean([r["train_seconds"] for r in done if r.get("train_seconds")]),
        "train_img_s": _mean([r["train_img_s"] for r in done if r.get("train_img_s")]),
        "peak_memory_mb": max(peaks) if peaks else None,
        "backend": inf.get("backend"),
        "latency_ms": inf.get("latency_ms"),
        "throughput_img_s": inf.get("throughput_img_s"),
        "agreement": inf.get("agreement"),
    }


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) no other point beats: none has a cost as low and
    an accuracy as high with one of the two strictly better. Sorted by cost."""

    def beaten(i: int) -> bool:
        c, a = points[i]
        return any(
            (c2 <= c and a2 >= a) and (c2 < c or a2 > a)
            for j, (c2, a2) in enumerate(points)
            if j != i
        )

    return sorted((i for i in range(len(points)) if not beaten(i)), key=lambda i: points[i])


def _count(n: int | None) -> str:
    """1234567 -> "1.23 M"; None -> "–"."""
    if n is None:
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _accuracy(row: dict[str, Any]) -> str:
    if row["accuracy_mean"] is None:
        return "–"
    std = row["accuracy_std"]
    spread = f" ± {100 * std:.2f}" if std is not None else ""
    return f"{100 * row['accuracy_mean']:.2f}{spread}"


def markdown(rows: list[dict[str, Any]], record: dict[str, Any]) -> str:
    """The comparison as a Markdown table with a short header saying what was measured."""
    s = record["settings"]
    budget = s["run"]["time_budget"]
    plan = f"a time budget of {budget:g} s" if budget else _plural(s["run"]["epochs"], "epoch")
    split = next((r["split"] for r in rows if r["split"]), "test")
    mem = next((r["memory"] for r in record["runs"].values() if r.get("memory")), "rss").startswith(
        "rss"
    )
    lines = [
        f"# Comparison on {s['data']['source']}",
        "",
        f"Every model trained {_plural(record['seeds'], 'time')} (seeds 0 to "
        f"{record['seeds'] - 1}), each run with {plan} and the same data, augmentation and "
        f"schedule. Accuracy: top-1 on the {split} "
        f"split, mean ± standard deviation over seeds. Inference timed on this machine's CPU "
        f"({record.get('machine', {}).get('cpu', 'CPU')}, "
        f"{record.get('machine', {}).get('torch_threads', '?')} threads) in the fastest "
        f"backend whose top-1 agreement with eager fp32 is at least 99 %. Peak memory: "
        f"{'resident set of the training process' if mem else 'CUDA memory allocated'}.",
        "",
        "| model | top-1 % | seeds | params | MACs | epochs | train s | train img/s "
        "| peak MB | backend | latency ms @1 | img/s @32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {_accuracy(r)} | {r['seeds_done']} | {_count(r['params'])} "
            f"| {_count(r['macs'])} | {_num(r['epochs_mean'], '.1f')} "
            f"| {_num(r['train_seconds_mean'], '.1f')} | {_num(r['train_img_s'], '.0f')} "
            f"| {_num(r['peak_memory_mb'], '.0f')} | {r['backend'] or '–'} "
            f"| {_num(r['latency_ms'], '.2f')} | {_num(r['throughput_img_s'], '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV (empty cells where a figure is missing)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else r[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def plot_tradeoff(rows: list[dict[str, Any]], x_key: str, x_label: str, path: Path) -> Path:
    """Accuracy against `x_key`, one point per model (error bar: the standard deviation over
    seeds), the Pareto front (higher accuracy at lower cost) joined and ringed."""
    plt = pyplot()
    pts = [r for r in rows if r[x_key] is not None and r["accuracy_mean"] is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = [r[x_key] for r in pts]
    ys = [100 * r["accuracy_mean"] for r in pts]
    errs = [100 * (r["accuracy_std"] or 0.0) for r in pts]
    ax.errorbar(xs, ys, yerr=errs, fmt="o", color="tab:blue", capsize=3, label="model")
    for r, x, y in zip(pts, xs, ys, strict=True):
        ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = pareto_front(list(zip(xs, ys, strict=True)))
    if front:
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.plot(fx, fy, "-", color="tab:red", lw=1, drawstyle="steps-post")
        ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="tab:red", label="Pareto front")
    if len(xs) >= 2 and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def write_report(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Adds the per-model rows to `record` and writes compare.json, compare.md, compare.csv and
    the plots into `out`; returns the record."""
    out = Path(out)
    rows = [model_row(m, record["seeds"], record) for m in record["models"]]
    record["summary"] = rows
    write_json(out / "compare.json", _finite(record))
    atomic_write_text(out / "compare.md", markdown(rows, record))
    atomic_write_text(out / "compare.csv", csv_text(rows))
    for name, key, label in PLOTS:
        plot_tradeoff(rows, key, label, out / name)
    return record


def _finite(obj: Any) -> Any:
    """`obj` with NaN and infinities as None (JSON has no such numbers)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
