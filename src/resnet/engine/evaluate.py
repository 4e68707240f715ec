"""Evaluation: loss, top-1/top-5, confusion matrix and per-class precision / recall / F1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..device import autocast
from . import distributed


def _mirrored(model: nn.Module, x: torch.Tensor, flip: bool) -> torch.Tensor:
    out = model(x).float()
    return (out + model(x.flip(-1)).float()) / 2 if flip else out  # the last axis: width


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    x: torch.Tensor,
    amp_dtype: torch.dtype | None = None,
    tta: bool = False,
    shift: int = 0,
) -> torch.Tensor:
    """Logits in float32; with `tta`, averaged with those of the mirrored image.

    `shift` > 0 adds two views moved by that many pixels along both axes, one each way (edges
    reflected), weighted 1/4 each against 1/2 for the centred view, as airbench does.
    """
    with autocast(x.device, amp_dtype):
        out = _mirrored(model, x, tta)
        if shift:
            h, w = x.shape[-2:]
            if shift >= min(h, w):
                raise ValueError(f"a TTA shift of {shift} px needs images larger than {h}x{w}")
            padded = F.pad(x, (shift, shift, shift, shift), mode="reflect")
            down = _mirrored(model, padded[..., :h, :w], tta)
            up = _mirrored(model, padded[..., 2 * shift :, 2 * shift :], tta)
            out = 0.5 * out + 0.25 * (down + up)
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    num_classes: int,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    tta: bool = False,
    tta_shift: int = 0,
    progress: bool = False,
    desc: str = "eval",
) -> dict:
    """Runs `model` over `loader`; sums are reduced over processes when distributed."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.float64, device=device)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    k = min(5, num_classes)
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = predict_logits(model, x, amp_dtype, tta, tta_shift)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        top5 += (logits.topk(k, 1).indices == y[:, None]).any(1).sum()
        cm += torch.bincount(
            y * num_classes + logits.argmax(1), minlength=num_classes * num_classes
        ).view(num_classes, num_classes)
    for t in (loss_sum, top5, cm):
        distributed.all_reduce_sum(t)
    model.train(was_training)
    return metrics_from_confusion(cm.cpu(), float(loss_sum), float(top5))


@torch.no_grad()
def collect_logits(
    model: nn.Module,
    loader,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    tta: bool = False,
    tta_shift: int = 0,
    progress: bool = False,
    desc: str = "logits",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, C] float32, labels [N]) of a whole split on the CPU, in the loader's order
    (one process: clinical metrics and temperature scaling need every prediction)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
        x = x.to(device, non_blocking=True)
        logits.append(predict_logits(model, x, amp_dtype, tta, tta_shift).cpu())
        labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """The figures of `evaluate` (loss, top-1/top-5, per-class F1, confusion) from a split's
    logits [N, C] and labels [N]."""
    c = logits.shape[1]
    loss = float(F.cross_entropy(logits.float(), labels, reduction="sum"))
    top5 = float((logits.topk(min(5, c), 1).indices == labels[:, None]).any(1).sum())
    cm = torch.bincount(labels * c + logits.argmax(1), minlength=c * c).view(c, c)
    return metrics_from_confusion(cm, loss, top5)


def metrics_from_confusion(cm: torch.Tensor, loss_sum: float = 0.0, top5_hits: float = 0.0) -> dict:
    """Top-1, per-class precision / recall / F1, macro F1 and the mean loss from a confusion
    matrix (rows: the true class)."""
    n = int(cm.sum())
    tp = cm.diag().double()
    predicted, actual = cm.sum(0).double(), cm.sum(1).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp)
    )
    return {
        "samples": n,
        "loss": loss_sum / max(n, 1),
        "top1": float(tp.sum()) / max(n, 1),
        "top5": top5_hits / max(n, 1),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        # Classes with neither examples nor predictions in this split do not count.
        "macro_f1": float(f1[(actual + predicted) > 0].mean()) if n else 0.0,
        "confusion_matrix": cm.tolist(),
    }
