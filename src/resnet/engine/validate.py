"""`validate(checkpoint)`: a checkpoint evaluated on a split, with its metrics written to disk."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import eval_loader
from ..errors import ResNetError
from .checkpoint import load_model
from .evaluate import evaluate
from .report import plot_confusion, write_json


def validate(
    checkpoint: str | Path,
    *,
    data: str | None = None,
    split: str | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    tta: bool = False,
    out: Path | None = None,
    device: str = "cpu",
) -> dict:
    model, state = load_model(checkpoint)
    data_cfg = state.get("config", {}).get("data", {})
    source = data or data_cfg.get("source")
    if not source:
        raise ResNetError("this checkpoint does not name its data; pass --data")
    if split is None:
        has_test = source == "fashion-mnist" or (Path(source) / "test").is_dir()
        split = "test" if has_test else "val"
    pre, classes = state["preprocessing"], state["classes"]
    loader = eval_loader(
        source,
        split,
        pre,
        classes,
        val_split=data_cfg.get("val_split", 0.1),
        batch_size=batch_size,
        workers=workers,
    )
    dev = torch.device(device)
    metrics = evaluate(model.to(dev), loader, len(classes), dev, tta=tta, progress=True, desc=split)
    ckpt = Path(checkpoint)
    run_dir = ckpt if ckpt.is_dir() else ckpt.parent
    out = out or run_dir / f"val-{split}"
    metrics = {
        "checkpoint": str(checkpoint),
        "data": source,
        "split": split,
        "classes": classes,
        **metrics,
        "out": str(out),
    }
    write_json(out / "metrics.json", metrics)
    plot_confusion(
        torch.tensor(metrics["confusion_matrix"]),
        classes,
        out / "confusion_matrix.png",
        f"{state.get('arch', 'model')}, {split}: {100 * metrics['top1']:.2f}% top-1",
    )
    return metrics
