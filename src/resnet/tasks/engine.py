"""Train, evaluate and predict for the backbone tasks (detection, segmentation), run-folder style.

A run folder holds `config.yaml`, `metrics.csv`, `steps.csv`, `summary.json`, `last.pt`,
`best.pt` and `curves.png`, as the classifier's do. Task checkpoints are ordinary resnet
checkpoints (`resnet.engine.checkpoint`): "model" is the ResNet backbone itself, so any tool that
reads a classifier checkpoint can reuse it; "task", "head" and "task_state" rebuild the rest.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.checkpoint import build_model, load_checkpoint
from ..errors import ResNetError
from ..storage import atomic_write_bytes, atomic_write_text

TASKS = ("detect", "segment")
METRIC = {"detect": "map", "segment": "miou"}

DEFAULTS: dict[str, Any] = dict(
    task="detect",
    model="resnet18",          # backbone: any registered name (plain18 for the plain twin)
    weights=None,              # passed to resnet.create(weights=...)
    small_input=False,
    norm="batch",
    data="composite",          # "composite", a COCO .json / folder, or an images/ + masks/ folder
    val_data=None,             # default: the composite's own val set, or val_split of `data`
    val_split=0.2,
    num_train=512, num_val=128, size=128, classes=None, data_seed=0,  # the composite set
    epochs=4, max_steps=None, batch_size=8,
    lr=2e-3, weight_decay=1e-4, warmup_steps=20, grad_clip=10.0,
    flip=True,                 # random horizontal flips
    seed=0,
    out=None,                  # default runs/<task>-<model>
    progress=True,
    # detection
    neck="fpn", out_channels=64, out_indices=[2, 3, 4], extra=None, head_convs=2,
    score_thresh=0.05,
    # segmentation
    long_skips=True,
    dice_weight=1.0,           # loss = cross-entropy + dice_weight * soft Dice (foreground)
)


# The classifier's nested TrainConfig (what `resnet train` builds) -> our flat keys.
_FROM_TRAIN_CONFIG = {
    ("model", "name"): "model", ("data", "source"): "data", ("data", "val_split"): "val_split",
    ("data", "subset"): "num_train", ("data", "flip"): "flip",
    ("data", "batch_size"): "batch_size", ("data", "image_size"): "size",
    ("optim", "lr"): "lr", ("optim", "weight_decay"): "weight_decay",
    ("optim", "clip_grad"): "grad_clip", ("finetune", "weights"): "weights",
    ("run", "epochs"): "epochs", ("run", "seed"): "seed", ("run", "out"): "out",
}


def from_train_config(nested: dict[str, Any]) -> dict[str, Any]:
    """Flat task keys from a `resnet.engine.config.TrainConfig` dict.

    Only values that differ from TrainConfig's defaults are taken (its defaults are the
    classifier's: resnet20, Fashion-MNIST, SGD at 0.1), so ours apply otherwise. Model options
    (`--opt KEY=VALUE`) may also carry task keys such as `neck=none` or `long_skips=false`;
    settings that mean nothing here (optimizer, schedule, ...) raise.
    """
    from ..engine.config import TrainConfig

    defaults = TrainConfig().to_dict()
    flat: dict[str, Any] = {}
    ignored = []
    for section, values in nested.items():
        if not isinstance(values, dict):
            raise ResNetError(f"task config: section {section!r} must be a mapping")
        for key, value in values.items():
            if key == "options" and section == "model":
                for k, v in (value or {}).items():
                    if k in DEFAULTS:
                        flat[k] = v
                    else:
                        raise ResNetError(f"unknown option {k!r} for a task backbone; known: "
                                          f"small_input, norm, {', '.join(_TASK_KEYS)}")
                continue
            if value == defaults.get(section, {}).get(key):
                continue
            if (section, key) in _FROM_TRAIN_CONFIG:
                mapped = _FROM_TRAIN_CONFIG[(section, key)]
                flat[mapped] = "composite" if mapped == "data" and value == "fashion-mnist" \
                    else value
            elif not (section == "run" and key in ("precision", "device", "channels_last")):
                ignored.append(f"{section}.{key}")
    if ignored:
        raise ResNetError(f"not used by detection/segmentation: {', '.join(ignored)}")
    return flat


_TASK_KEYS = ("neck", "out_channels", "out_indices", "extra", "head_convs", "score_thresh",
              "long_skips", "dice_weight", "num_train", "num_val", "classes", "data_seed",
              "max_steps", "warmup_steps", "val_data")


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS updated by `config`; unknown keys and nonsensical values raise ResNetError.

    `config` is flat (keys of DEFAULTS) or a nested TrainConfig dict (see `from_train_config`).
    """
    if any(isinstance(config.get(k), dict) for k in ("model", "data", "optim", "run")):
        task = config.get("task")
        config = from_train_config({k: v for k, v in config.items() if k != "task"})
        if task is not None:
            config["task"] = task
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ResNetError(f"unknown task config keys: {', '.join(sorted(unknown))}")
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None or k == "max_steps"}}
    if cfg["task"] not in TASKS:
        raise ResNetError(f"task must be one of {', '.join(TASKS)}, not {cfg['task']!r}")
    for key in ("epochs", "batch_size", "num_train", "num_val", "size"):
        if int(cfg[key]) < 1:
            raise ResNetError(f"{key} must be >= 1, got {cfg[key]}")
    if cfg["max_steps"] is not None and int(cfg["max_steps"]) < 1:
        raise ResNetError(f"max_steps must be >= 1, got {cfg['max_steps']}")
    if not cfg["lr"] > 0 or not 0 < cfg["val_split"] < 1:
        raise ResNetError("lr must be > 0 and val_split in (0, 1)")
    if cfg["out"] is None:
        cfg["out"] = f"runs/{cfg['task']}-{cfg['model']}"
    cfg["out_indices"] = list(cfg["out_indices"])
    return cfg


# ---------------------------------------------------------------------------- data


def build_datasets(cfg: dict[str, Any]):
    """`(train, val)` datasets for a resolved config."""
    from ..data.coco import open_dataset
    from ..data.composite import CompositeSet
    from .detection import Subset

    if cfg["data"] == "composite":
        common = dict(size=cfg["size"], seed=cfg["data_seed"], classes=cfg["classes"])
        train = CompositeSet(cfg["num_train"], split="train", **common)
        val = (CompositeSet(cfg["num_val"], split="val", **common) if cfg["val_data"] is None
               else open_dataset(cfg["val_data"]))
        return train, val
    data = open_dataset(cfg["data"])
    if cfg["val_data"] is not None:
        return data, open_dataset(cfg["val_data"])
    if len(data) < 2:
        raise ResNetError(f"{cfg['data']} holds {len(data)} image; need 2 or more to split")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg["data_seed"]))
    n_val = max(1, round(len(data) * cfg["val_split"]))
    return Subset(data, order[n_val:].tolist()), Subset(data, order[:n_val].tolist())


def _batch(dataset, indices, cfg, gen: torch.Generator | None):
    """Images (list of uint8 tensors) and targets; resized for segmentation, flipped if `gen`."""
    from torchvision.transforms.v2 import functional as TF

    images, targets = [], []
    for i in indices:
        image, target = dataset[i]
        if cfg["task"] == "segment" and tuple(image.shape[-2:]) != (cfg["size"],) * 2:
            image = TF.resize(image, [cfg["size"]] * 2, antialias=True)
            semantic = TF.resize(target["semantic"][None], [cfg["size"]] * 2,
                                 interpolation=TF.InterpolationMode.NEAREST_EXACT)[0]
            target = dict(target, semantic=semantic)
        if gen is not None and cfg["flip"] and torch.rand((), generator=gen) < 0.5:
            w = image.shape[-1]
            image = image.flip(-1)
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
            target = dict(target, boxes=boxes, semantic=target["semantic"].flip(-1))
        images.append(image)
        targets.append(target)
    return images, targets


# ---------------------------------------------------------------------------- models


def build_task_model(task: str, num_classes: int, cfg: dict[str, Any] | None = None,
                     *, head: dict[str, Any] | None = None, body=None) -> nn.Module:
    """A Detector or UNet from a training config, or from a checkpoint's `head` + `body`."""
    from .detection import Detector
    from .segmentation import UNet

    if head is not None:
        return (Detector if task == "detect" else UNet)(body=body, **head)
    options = dict(weights=cfg["weights"], norm=cfg["norm"])
    if cfg["small_input"]:
        options["small_input"] = True
    if task == "detect":
        from ..models import get_entry

        indices = cfg["out_indices"]
        stages = len(get_entry(cfg["model"]).spec.depths)
        if indices == DEFAULTS["out_indices"] and stages == 3:
            indices = [1, 2, 3]  # CIFAR-style nets: their three stages
        return Detector(cfg["model"], num_classes, neck=cfg["neck"],
                        out_channels=cfg["out_channels"], out_indices=indices,
                        extra=cfg["extra"], head_convs=cfg["head_convs"], size=cfg["size"],
                        score_thresh=cfg["score_thresh"], **options)
    return UNet(cfg["model"], num_classes, long_skips=cfg["long_skips"], size=cfg["size"],
                **options)


def _body_prefixes(model: nn.Module) -> tuple[str, ...]:
    return tuple(f"{n}." for n, m in model.named_modules() if m is model.body)


def task_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The task model's weights outside its ResNet body."""
    prefixes = _body_prefixes(model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()
            if not k.startswith(prefixes)}


def load_task_model(checkpoint_path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """`(task model in eval mode, checkpoint dict)` from a task checkpoint or run folder."""
    state = load_checkpoint(checkpoint_path)
    task = state.get("task")
    if task not in TASKS:
        raise ResNetError(f"{checkpoint_path} is not a detection or segmentation checkpoint "
                          f"(task {task!r}); use the classifier's commands for it")
    model = build_task_model(task, 0, head=state["head"], body=build_model(state))
    missing, unexpected = model.load_state_dict(state["task_state"], strict=False)
    prefixes = _body_prefixes(model)
    missing = [k for k in missing if not k.startswith(prefixes)]
    if missing or unexpected:
        raise ResNetError(f"task weights do not fit the {task} model: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}")
    return model.eval(), state


# ---------------------------------------------------------------------------- loop pieces


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5 % of the base rate: a pure function of the step."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _optimizer(model: nn.Module, lr: float, wd: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no decay on norms and biases
    return torch.optim.AdamW([dict(params=decay, weight_decay=wd),
                              dict(params=no_decay, weight_decay=0.0)], lr=lr)


def _loss(model, task, images, targets, dice_weight: float = 0.0
          ) -> tuple[torch.Tensor, dict[str, float]]:
    from .detection import detection_targets

    if task == "detect":
        parts = model([im.float() / 255 for im in images], detection_targets(targets))
        return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}
    from .segmentation import soft_dice_loss

    x = torch.stack(images).float() / 255
    y = torch.stack([t["semantic"] for t in targets]).long()
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    if not dice_weight:
        return ce, {"ce": float(ce.detach())}
    dice = soft_dice_loss(logits, y)
    return ce + dice_weight * dice, {"ce": float(ce.detach()), "dice": float(dice.detach())}


@torch.no_grad()
def evaluate_model(model: nn.Module, task: str, dataset, cfg: dict[str, Any],
                   progress: bool = False) -> dict[str, Any]:
    """Detection: COCO mAP; segmentation: mIoU, Dice, pixel accuracy (on `cfg["size"]` images)."""
    from tqdm import tqdm

    from .detection import coco_map
    from .segmentation import confusion, segmentation_metrics

    model.eval()
    bs = cfg["batch_size"]
    starts = range(0, len(dataset), bs)
    preds, conf = [], None
    for s in tqdm(starts, desc="val", disable=not progress, leave=False):
        images, targets = _batch(dataset, range(s, min(s + bs, len(dataset))), cfg, None)
        if task == "detect":
            preds += model([im.float() / 255 for im in images])
        else:
            logits = model(torch.stack(images).float() / 255)
            k = logits.shape[1]
            c = confusion(logits.argmax(1), torch.stack([t["semantic"] for t in targets]), k)
            conf = c if conf is None else conf + c
    if task == "detect":
        return coco_map(dataset, preds)
    return segmentation_metrics(conf, list(dataset.classes))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def plot_curves(path: Path, rows: list[dict[str, Any]], steps: list[float], task: str) -> None:
    """Training loss (per step and per epoch) and the validation metrics, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(range(1, len(steps) + 1), steps, lw=0.6, alpha=0.5, label="step")
    window = max(1, len(steps) // 20)
    smooth = [sum(steps[max(0, i - window + 1):i + 1]) / len(steps[max(0, i - window + 1):i + 1])
              for i in range(len(steps))]
    a.plot(range(1, len(steps) + 1), smooth, lw=1.5, label=f"mean of {window}")
    a.set(xlabel="step", ylabel="training loss", title="loss")
    a.legend()
    keys = ("map", "map50") if task == "detect" else ("miou", "dice")
    for k in keys:
        b.plot([r["epoch"] for r in rows], [r[f"val_{k}"] for r in rows], marker="o", label=k)
    b.set(xlabel="epoch", ylabel="validation", title="validation", ylim=(0, 1))
    b.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


# ---------------------------------------------------------------------------- entry points


def train_task(task: str, config: dict[str, Any]) -> dict[str, Any]:
    """Trains a detector or a segmenter on a ResNet backbone and fills a run folder.

    Args:
        task: "detect" or "segment".
        config: keys of `DEFAULTS` (unknown keys raise); `task` here wins over `config["task"]`.

    Returns:
        The summary (also written to `summary.json`), plus `step_losses`, the loss of every step.
    """
    import yaml
    from tqdm import tqdm

    from ..engine.checkpoint import save_checkpoint

    cfg = resolve_config({**config, "task": task})
    out = Path(cfg["out"])
    torch.manual_seed(cfg["seed"])
    train_ds, val_ds = build_datasets(cfg)
    classes = list(train_ds.classes)
    model = build_task_model(task, len(classes), cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))

    bs = cfg["batch_size"]
    per_epoch = max(1, len(train_ds) // bs)  # drop the last partial batch (BatchNorm)
    total = cfg["max_steps"] or cfg["epochs"] * per_epoch
    epochs = math.ceil(total / per_epoch)
    opt = _optimizer(model, cfg["lr"], cfg["weight_decay"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    metric = METRIC[task]
    mean, std = model.head_config["mean"], model.head_config["std"]
    preprocessing = dict(in_chans=3, size=[cfg["size"]] * 2, mean=mean, std=std,
                         resize=cfg["size"], crop=None)
    rows: list[dict[str, Any]] = []
    step_losses: list[float] = []
    step_rows: list[dict[str, Any]] = []
    best, best_epoch, step, seen, t0 = -1.0, 0, 0, 0, time.perf_counter()
    train_seconds = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_ds), generator=gen).tolist()
        n_steps = min(per_epoch, total - step)
        bar = tqdm(range(n_steps), desc=f"{task} epoch {epoch}/{epochs}",
                   disable=not cfg["progress"])
        e_loss, t_epoch = 0.0, time.perf_counter()
        for j in bar:
            lr = lr_at(step, total, cfg["lr"], min(cfg["warmup_steps"], total // 4))
            for g in opt.param_groups:
                g["lr"] = lr
            t_step = time.perf_counter()
            images, targets = _batch(train_ds, order[j * bs:(j + 1) * bs], cfg, gen)
            loss, parts = _loss(model, task, images, targets, cfg["dice_weight"])
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ResNetError(f"the loss became {value} at step {step + 1}; stopped "
                                  f"(last good checkpoint kept in {out}); try a lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["grad_clip"]:
                nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            opt.step()
            step += 1
            seen += len(images)
            step_losses.append(value)
            step_rows.append(dict(step=step, epoch=epoch, lr=lr, loss=value, **parts,
                                  seconds=round(time.perf_counter() - t_step, 4)))
            e_loss += value
            bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}")
        train_seconds += time.perf_counter() - t_epoch
        metrics = evaluate_model(model, task, val_ds, cfg, cfg["progress"])
        row = dict(epoch=epoch, step=step, lr=lr, train_loss=e_loss / max(1, n_steps),
                   **{f"val_{k}": v for k, v in metrics.items() if k != "per_class"},
                   seconds=round(time.perf_counter() - t0, 2))
        rows.append(row)
        ckpt = dict(task=task, head=model.head_config, task_state=task_state(model),
                    classes=classes, preprocessing=preprocessing, config=cfg, epoch=epoch,
                    step=step, metrics=metrics, data=getattr(val_ds, "params", {}))
        save_checkpoint(out / "last.pt", model.body, **ckpt)
        if metrics[metric] > best:
            best, best_epoch = metrics[metric], epoch
            tmp = out / ".best.pt.tmp"
            shutil.copyfile(out / "last.pt", tmp)
            os.replace(tmp, out / "best.pt")
        _write_csv(out / "metrics.csv", rows)
        _write_csv(out / "steps.csv", step_rows)
        plot_curves(out / "curves.png", rows, step_losses, task)
        shown = "  ".join(f"{k}={v:.4f}" for k, v in row.items()
                          if isinstance(v, float) and k.startswith("val_"))
        if cfg["progress"]:
            print(f"epoch {epoch}/{epochs}  loss={row['train_loss']:.4f}  {shown}", flush=True)
        if step >= total:
            break
    k = max(1, min(10, len(step_losses) // 4))
    summary = dict(
        task=task, model=cfg["model"], neck=cfg["neck"] if task == "detect" else None,
        long_skips=cfg["long_skips"] if task == "segment" else None, classes=classes,
        epochs=len(rows), steps=step, images_seen=seen, batch_size=bs,
        train_images=len(train_ds), val_images=len(val_ds),
        **{f"best_{metric}": best, "best_epoch": best_epoch},
        final={k2: v for k2, v in rows[-1].items() if k2.startswith("val_")},
        first_loss=sum(step_losses[:k]) / k, last_loss=sum(step_losses[-k:]) / k,
        train_seconds=round(train_seconds, 2),
        train_img_s=round(seen / max(train_seconds, 1e-9), 2),
        torch_threads=torch.get_num_threads(), out=str(out),
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return {**summary, "step_losses": step_losses}


def _eval_data(state: dict[str, Any], data):
    from ..data.coco import open_dataset
    from ..data.composite import CompositeSet

    if data is not None and not (isinstance(data, str) and data == "composite"):
        return open_dataset(data) if isinstance(data, str | os.PathLike) else data
    cfg = resolve_config(state.get("config") or {})
    if cfg["data"] == "composite" or data == "composite":
        return CompositeSet(cfg["num_val"], size=cfg["size"], split="val", seed=cfg["data_seed"],
                            classes=state.get("classes"))
    return build_datasets(cfg)[1]


def evaluate_task(checkpoint_path: str | os.PathLike, data=None, *, batch_size: int = 8,
                  out_dir: str | os.PathLike | None = None, progress: bool = True
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
    dataset = _eval_data(state, data)
    if list(dataset.classes) != list(state["classes"]):
        raise ResNetError(f"the data's classes {list(dataset.classes)} differ from the "
                          f"checkpoint's {state['classes']}")
    cfg = dict(task=task, batch_size=batch_size, size=model.head_config["size"], flip=False)
    metrics = evaluate_model(model, task, dataset, cfg, progress)
    metrics = dict(task=task, images=len(dataset), checkpoint=str(checkpoint_path), **metrics)
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "val_metrics.json", json.dumps(metrics, indent=2))
    return metrics


def _image_files(images) -> list[Path]:
    from ..data.coco import IMAGE_SUFFIXES

    if isinstance(images, str | os.PathLike):
        images = [images]
    files = []
    for p in map(Path, images):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ResNetError(f"{p} holds no images")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ResNetError(f"image not found: {p}")
    return files


@torch.no_grad()
def predict_task(checkpoint_path: str | os.PathLike, images, out_dir: str | os.PathLike,
                 *, score_thresh: float = 0.3) -> list[dict[str, Any]]:
    """Runs a task checkpoint on images and writes each with its boxes or masks drawn, as PNG.

    Args:
        checkpoint_path: a task checkpoint or its run folder.
        images: an image path, a folder, or a list of them.
        out_dir: where `<name>.png` (the drawing) goes for each image.
        score_thresh: detections below this score are neither drawn nor listed.

    Returns:
        One dict per image: `image`, `output` (the PNG) and `detections` (label, class, score,
        box) or `classes` (fraction of the image each predicted class covers).
    """
    from torchvision.transforms.v2 import functional as TF

    from ..data.coco import _read_rgb, _write_png
    from .detection import detections_to_list, draw_detections
    from .segmentation import draw_masks

    files = _image_files(images)
    model, state = load_task_model(checkpoint_path)
    task, classes = state["task"], list(state["classes"])
    size = model.head_config["size"]
    out = Path(out_dir)
    results = []
    for path in files:
        image = _read_rgb(path)
        target = out / f"{path.stem}.png"
        if task == "detect":
            pred = model([image.float() / 255])[0]
            drawn = draw_detections(image, pred, classes, score_thresh)
            entry = dict(detections=detections_to_list(pred, classes, score_thresh))
        else:
            x = TF.resize(image, [size, size], antialias=True).float()[None] / 255
            logits = F.interpolate(model(x), size=image.shape[-2:], mode="bilinear",
                                   align_corners=False)
            semantic = logits.argmax(1)[0]
            drawn = draw_masks(image, semantic)
            counts = torch.bincount(semantic.flatten(), minlength=len(classes) + 1)
            frac = (counts / semantic.numel()).tolist()
            entry = dict(classes={classes[c - 1]: round(frac[c], 4)
                                  for c in range(1, len(classes) + 1) if counts[c] > 0})
        _write_png(target, drawn.permute(1, 2, 0).numpy())
        results.append(dict(image=str(path), output=str(target), **entry))
    return results
