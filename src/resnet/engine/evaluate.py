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


class _ClassSums:
    """Single-label sums: loss, top-5 hits and the confusion matrix."""

    def __init__(self, c: int, device: torch.device):
        self.c, self.k = c, min(5, c)
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.top5 = torch.zeros((), dtype=torch.float64, device=device)
        self.cm = torch.zeros(c, c, dtype=torch.int64, device=device)

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Adds one batch."""
        self.loss += F.cross_entropy(logits, y, reduction="sum").double()
        self.top5 += (logits.topk(self.k, 1).indices == y[:, None]).any(1).sum()
        self.cm += torch.bincount(y * self.c + logits.argmax(1), minlength=self.c**2).view(
            self.c, self.c
        )

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """What is summed over processes."""
        return self.loss, self.top5, self.cm

    def metrics(self) -> dict:
        """The split's figures."""
        return metrics_from_confusion(self.cm.cpu(), float(self.loss), float(self.top5))


class _LabelSums:
    """Multi-label sums: loss (mean over labels), exact matches and per-label tp/fp/fn/tn at 0.5."""

    def __init__(self, c: int, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.exact = torch.zeros((), dtype=torch.float64, device=device)
        self.counts = torch.zeros(4, c, dtype=torch.int64, device=device)  # tp, fp, fn, tn

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Adds one batch."""
        target = y.float()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        self.loss += bce.mean(1).sum().double()
        pred, truth = logits > 0, y > 0
        self.exact += (pred == truth).all(1).sum()
        self.counts += torch.stack(
            [(pred & truth), (pred & ~truth), (~pred & truth), (~pred & ~truth)]
        ).sum(1)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """What is summed over processes."""
        return self.loss, self.exact, self.counts

    def metrics(self) -> dict:
        """The split's figures."""
        return multilabel_metrics(self.counts.cpu(), float(self.loss), float(self.exact))


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
    """Runs `model` over `loader`; sums are reduced over processes when distributed. Multi-hot
    labels ([N, L]) give the multi-label figures (`multilabel_metrics`)."""
    was_training = model.training
    model.eval()
    sums = None
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = predict_logits(model, x, amp_dtype, tta, tta_shift)
        if sums is None:
            sums = (_LabelSums if y.dim() == 2 else _ClassSums)(num_classes, device)
        sums.add(logits, y)
    if sums is None:
        sums = _ClassSums(num_classes, device)
    for t in sums.tensors():
        distributed.all_reduce_sum(t)
    model.train(was_training)
    return sums.metrics()


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
    logits [N, C] and labels [N] (multi-hot labels [N, L]: the multi-label figures)."""
    c = logits.shape[1]
    if labels.dim() == 2:
        sums = _LabelSums(c, logits.device)
        sums.add(logits.float(), labels)
        return sums.metrics()
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


def _prf(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Precision, recall and F1 from counts (0 where undefined)."""
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    zero = torch.zeros_like(tp)
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), zero)
    recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), zero)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), zero)
    return precision, recall, f1


def multilabel_metrics(counts: torch.Tensor, loss_sum: float = 0.0, exact: float = 0.0) -> dict:
    """Multi-label figures from per-label counts [4, L] (tp, fp, fn, tn at probability 0.5):
    "top1" is the mean per-label accuracy, "exact_match" the share of samples with every label
    right, precision / recall / F1 per label and their macro F1 (labels that occur or are
    predicted). There is no top-5 and no confusion matrix."""
    tp, fp, fn, tn = counts
    n = int(counts[:, 0].sum())
    precision, recall, f1 = _prf(tp, fp, fn)
    seen = (tp + fp + fn) > 0
    return {
        "samples": n,
        "multilabel": True,
        "loss": loss_sum / max(n, 1),
        "top1": float((tp + tn).sum()) / max(n * counts.shape[1], 1),
        "exact_match": exact / max(n, 1),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "label_counts": {
            "tp": tp.tolist(),
            "fp": fp.tolist(),
            "fn": fn.tolist(),
            "tn": tn.tolist(),
        },
    }
