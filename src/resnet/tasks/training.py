"""Train and evaluate detectors and segmenters on a ResNet backbone, run-folder style.

A run folder holds `config.yaml`, `metrics.csv`, `steps.csv`, `summary.json`, `last.pt`,
`best.pt` and `curves.png`, as the classifier's do, written by the engine's own helpers
(`resnet.engine.report`, `resnet.engine.checkpoint`). The learning rate is the engine's
schedule (`resnet.engine.optim.lr_factor`): linear warm-up, then cosine decay to 5 %.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..engine.checkpoint import save_checkpoint
from ..engine.optim import lr_factor, param_groups, set_lr
from ..engine.report import Panel, plot_curves, write_metrics_csv
from ..errors import ResNetError
from ..storage import write_json
from .config import METRIC, TaskConfig, task_config
from .data import build_datasets, eval_dataset, make_batch
from .detection import coco_map, detection_targets
from .model import build_task_model, load_task_model, task_state
from .segmentation import confusion, segmentation_metrics, soft_dice_loss

# The cosine decay ends at this fraction of the base rate, not at zero.
LR_FLOOR = 0.05
# What the right-hand panel of `curves.png` draws, per task.
VAL_PANELS = {
    "detect": Panel(
        "validation", "validation", (("val_map", "map"), ("val_map50", "map50")), ylim=(0, 1)
    ),
    "segment": Panel(
        "validation", "validation", (("val_miou", "miou"), ("val_dice", "dice")), ylim=(0, 1)
    ),
}


def task_loss(
    model: nn.Module, task: str, images, targets, dice_weight: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of one batch and its parts (FCOS's three, or cross-entropy + Dice)."""
    if task == "detect":
        parts = model([im.float() / 255 for im in images], detection_targets(targets))
        return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}
    x = torch.stack(images).float() / 255
    y = torch.stack([t["semantic"] for t in targets]).long()
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    if not dice_weight:
        return ce, {"ce": float(ce.detach())}
    dice = soft_dice_loss(logits, y)
    return ce + dice_weight * dice, {"ce": float(ce.detach()), "dice": float(dice.detach())}


@torch.no_grad()
def evaluate_model(
    model: nn.Module, task: str, dataset, *, batch_size: int, size: int, progress: bool = False
) -> dict[str, Any]:
    """Detection: COCO mAP; segmentation: mIoU, Dice, pixel accuracy (on `size` images)."""
    model.eval()
    preds, conf = [], None
    for s in tqdm(
        range(0, len(dataset), batch_size), desc="val", disable=not progress, leave=False
    ):
        images, targets = make_batch(
            dataset, range(s, min(s + batch_size, len(dataset))), task, size
        )
        if task == "detect":
            preds += model([im.float() / 255 for im in images])
            continue
        logits = model(torch.stack(images).float() / 255)
        semantic = torch.stack([t["semantic"] for t in targets])
        c = confusion(logits.argmax(1), semantic, logits.shape[1])
        conf = c if conf is None else conf + c
    if task == "detect":
        return coco_map(dataset, preds)
    return segmentation_metrics(conf, list(dataset.classes))


@dataclass
class _Run:
    """What the loop carries from step to step and from epoch to epoch."""

    cfg: TaskConfig
    model: nn.Module
    opt: torch.optim.Optimizer
    total: int
    out: Path
    step: int = 0
    seen: int = 0
    lr: float = 0.0
    best: float = -1.0
    best_epoch: int = 0
    train_seconds: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    rows: list[dict[str, Any]] = field(default_factory=list)
    step_rows: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)


def _train_step(run: _Run, images, targets, epoch: int) -> float:
    """One AdamW step at the scheduled rate; records the step's row."""
    cfg = run.cfg
    warmup = min(cfg.warmup_steps, run.total // 4)
    factor = lr_factor(run.step, run.total, "cosine", warmup, floor=LR_FLOOR)
    run.lr = set_lr(run.opt, cfg.lr, factor)
    t_step = time.perf_counter()
    loss, parts = task_loss(run.model, cfg.task, images, targets, cfg.dice_weight)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise ResNetError(
            f"the loss became {value} at step {run.step + 1}; stopped "
            f"(last good checkpoint kept in {run.out}); try a lower --lr"
        )
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.opt.step()
    run.step += 1
    run.seen += len(images)
    run.step_losses.append(value)
    seconds = round(time.perf_counter() - t_step, 4)
    run.step_rows.append(
        dict(step=run.step, epoch=epoch, lr=run.lr, loss=value, **parts, seconds=seconds)
    )
    return value


def _train_epoch(run: _Run, train_ds, gen: torch.Generator, epoch: int, epochs: int) -> float:
    """The epoch's steps (at most one pass, none past `total`); returns their mean loss."""
    cfg = run.cfg
    bs = cfg.batch_size
    run.model.train()
    order = torch.randperm(len(train_ds), generator=gen).tolist()
    n_steps = min(max(1, len(train_ds) // bs), run.total - run.step)
    bar = tqdm(range(n_steps), desc=f"{cfg.task} epoch {epoch}/{epochs}", disable=not cfg.progress)
    e_loss, t_epoch = 0.0, time.perf_counter()
    for j in bar:
        flips = gen if cfg.flip else None
        images, targets = make_batch(
            train_ds, order[j * bs : (j + 1) * bs], cfg.task, cfg.size, flips
        )
        value = _train_step(run, images, targets, epoch)
        e_loss += value
        bar.set_postfix(loss=f"{value:.3f}", lr=f"{run.lr:.2e}")
    run.train_seconds += time.perf_counter() - t_epoch
    return e_loss / max(1, n_steps)


def _end_epoch(run: _Run, epoch: int, train_loss: float, metrics: dict, extra: dict) -> dict:
    """Saves last.pt (and best.pt), the CSVs and the curves; returns the epoch's row."""
    cfg, out, model = run.cfg, run.out, run.model
    row = dict(
        epoch=epoch,
        step=run.step,
        lr=run.lr,
        train_loss=train_loss,
        **{f"val_{k}": v for k, v in metrics.items() if k != "per_class"},
        seconds=round(time.perf_counter() - run.start, 2),
    )
    run.rows.append(row)
    ckpt = dict(
        task=cfg.task,
        head=model.head_config,
        task_state=task_state(model),
        classes=extra["classes"],
        preprocessing=extra["preprocessing"],
        config=cfg.to_dict(),
        epoch=epoch,
        step=run.step,
        metrics=metrics,
        data=extra["data"],
    )
    save_checkpoint(out / "last.pt", model.body, **ckpt)
    metric = METRIC[cfg.task]
    if metrics[metric] > run.best:
        run.best, run.best_epoch = metrics[metric], epoch
        tmp = out / ".best.pt.tmp"
        shutil.copyfile(out / "last.pt", tmp)
        os.replace(tmp, out / "best.pt")
    write_metrics_csv(out / "metrics.csv", run.rows, list(run.rows[0]))
    write_metrics_csv(out / "steps.csv", run.step_rows, list(run.step_rows[0]))
    plot_curves(
        run.rows,
        out / "curves.png",
        f"{cfg.task}: {cfg.model}",
        (VAL_PANELS[cfg.task],),
        steps=run.step_losses,
    )
    return row


def _summary(run: _Run, classes: list[str], train_ds, val_ds) -> dict[str, Any]:
    """What `summary.json` holds."""
    cfg, losses = run.cfg, run.step_losses
    k = max(1, min(10, len(losses) // 4))
    metric = METRIC[cfg.task]
    return dict(
        task=cfg.task,
        model=cfg.model,
        neck=cfg.neck if cfg.task == "detect" else None,
        long_skips=cfg.long_skips if cfg.task == "segment" else None,
        classes=classes,
        epochs=len(run.rows),
        steps=run.step,
        images_seen=run.seen,
        batch_size=cfg.batch_size,
        train_images=len(train_ds),
        val_images=len(val_ds),
        **{f"best_{metric}": run.best, "best_epoch": run.best_epoch},
        final={k2: v for k2, v in run.rows[-1].items() if k2.startswith("val_")},
        first_loss=sum(losses[:k]) / k,
        last_loss=sum(losses[-k:]) / k,
        train_seconds=round(run.train_seconds, 2),
        train_img_s=round(run.seen / max(run.train_seconds, 1e-9), 2),
        torch_threads=torch.get_num_threads(),
        out=str(run.out),
    )


def train_task(task: str, config: TaskConfig | dict[str, Any]) -> dict[str, Any]:
    """Trains a detector or a segmenter on a ResNet backbone and fills a run folder.

    Args:
        task: "detect" or "segment".
        config: a `TaskConfig`, its keys as a mapping (unknown keys raise) or a nested
            `TrainConfig` dict; `task` here wins over the config's.

    Returns:
        The summary (also written to `summary.json`), plus `step_losses`, the loss of every step.
    """
    cfg = task_config(config, task)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    train_ds, val_ds = build_datasets(cfg)
    classes = list(train_ds.classes)
    model = build_task_model(task, len(classes), cfg)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    per_epoch = max(1, len(train_ds) // cfg.batch_size)  # drop the last partial batch (BatchNorm)
    total = cfg.max_steps or cfg.epochs * per_epoch
    epochs = math.ceil(total / per_epoch)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    run = _Run(cfg, model, opt, total, out)
    gen = torch.Generator().manual_seed(cfg.seed)
    mean, std = model.head_config["mean"], model.head_config["std"]
    preprocessing = dict(
        in_chans=3, size=[cfg.size] * 2, mean=mean, std=std, resize=cfg.size, crop=None
    )
    extra = dict(classes=classes, preprocessing=preprocessing, data=getattr(val_ds, "params", {}))
    for epoch in range(1, epochs + 1):
        train_loss = _train_epoch(run, train_ds, gen, epoch, epochs)
        metrics = evaluate_model(
            model, task, val_ds, batch_size=cfg.batch_size, size=cfg.size, progress=cfg.progress
        )
        row = _end_epoch(run, epoch, train_loss, metrics, extra)
        if cfg.progress:
            shown = "  ".join(
                f"{k}={v:.4f}"
                for k, v in row.items()
                if isinstance(v, float) and k.startswith("val_")
            )
            print(f"epoch {epoch}/{epochs}  loss={train_loss:.4f}  {shown}", flush=True)
        if run.step >= total:
            break
    summary = _summary(run, classes, train_ds, val_ds)
    write_json(out / "summary.json", summary)
    return {**summary, "step_losses": run.step_losses}


def evaluate_task(
    checkpoint_path: str | os.PathLike,
    data=None,
    *,
    batch_size: int = 8,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores a task checkpoint: COCO mAP (detect) or mIoU / Dice (segment).

    Args:
        checkpoint_path: a task checkpoint (`best.pt`/`last.pt`) or its run folder.
        data: None (the validation set the run used, rebuilt from its config), "composite", a
            COCO .json / folder, an images/ + masks/ folder, or a dataset object.
        batch_size: images per forward pass.
        out_dir: also write `val_metrics.json` there.
        progress: show a progress bar.

    Returns:
        The metrics, with `task`, `images` and `checkpoint`.
    """
    model, state = load_task_model(checkpoint_path)
    task = state["task"]
    dataset = eval_dataset(state, data)
    if list(dataset.classes) != list(state["classes"]):
        raise ResNetError(
            f"the data's classes {list(dataset.classes)} differ from the "
            f"checkpoint's {state['classes']}"
        )
    size = model.head_config["size"]
    metrics = evaluate_model(
        model, task, dataset, batch_size=batch_size, size=size, progress=progress
    )
    metrics = dict(task=task, images=len(dataset), checkpoint=str(checkpoint_path), **metrics)
    if out_dir is not None:
        write_json(Path(out_dir) / "val_metrics.json", metrics)
    return metrics
