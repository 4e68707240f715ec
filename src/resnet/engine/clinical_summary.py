"""The clinical report of a held-out split, for a run's summary and for `resnet val`.

From a split's logits: per-class AUROC and average precision, sensitivity and specificity at the
operating point, each with a bootstrap 95 % interval, the expected calibration error, and the
ROC, precision-recall and reliability PNGs (`engine.clinical`). The operating point is a fixed
probability, or Youden's point; for a test split, Youden's point is picked on the validation
split's predictions (binary tasks) rather than on the test data it is reported on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ResNetError
from ..storage import write_json
from .clinical import clinical_report, operating_point

# Bootstrap resamples of the intervals; above this many predictions x classes, fewer (the
# interval of a large split is narrow and its resampling slow).
RESAMPLES = 1000
LARGE = 200_000


def probabilities(
    logits: torch.Tensor, temperature: float = 1.0, multilabel: bool = False
) -> torch.Tensor:
    """Probabilities of logits divided by a (calibration) temperature: a softmax over classes,
    or a sigmoid per label."""
    z = logits.double() / temperature
    return torch.sigmoid(z) if multilabel else torch.softmax(z, dim=1)


def per_scan(
    logits: torch.Tensor, labels: torch.Tensor, owners: torch.Tensor | None, multilabel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice predictions pooled per scan (the mean probability of its slices, returned as log
    probabilities so the report's softmax gives it back; log-odds for a sigmoid): a scan, not
    a slice, is the unit a clinical figure counts. Unchanged when `owners` is None."""
    if owners is None:
        return logits, labels
    n = int(owners.max()) + 1
    probs = probabilities(logits, 1.0, multilabel)
    pooled = torch.zeros(n, probs.shape[1], dtype=probs.dtype).index_add_(0, owners, probs)
    pooled /= torch.bincount(owners, minlength=n).to(probs.dtype)[:, None]
    first = torch.full((n,), len(owners), dtype=torch.long).scatter_reduce(
        0, owners, torch.arange(len(owners)), "amin"
    )
    pooled = pooled.clamp(1e-12, 1 - 1e-12)
    out = torch.logit(pooled) if multilabel else pooled.log()
    return out.float(), labels[first]


def youden_threshold(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0):
    """Youden's threshold on these predictions for a binary task, else "youden" (per class on
    the data it is applied to)."""
    if logits.shape[1] != 2 or labels.dim() == 2:
        return "youden"
    try:
        return operating_point(probabilities(logits, temperature), labels, "youden")[0]["threshold"]
    except ResNetError:  # one class only in the validation split
        return "youden"


def _flat(report: dict, split: str) -> dict:
    """The summary's headline figures from a report."""
    macro = report["macro"]
    flat = {
        f"{split}_auroc": macro["auroc"]["value"],
        f"{split}_auroc_ci95": macro["auroc"]["ci95"],
        f"{split}_average_precision": macro["average_precision"]["value"],
        f"{split}_ece": report["ece"],
    }
    if report["task"] == "binary":
        (entry,) = report["classes"].values()
        if entry.get("auroc") is not None:
            flat |= {
                f"{split}_threshold": entry["threshold"],
                f"{split}_sensitivity": entry["sensitivity"]["value"],
                f"{split}_sensitivity_ci95": entry["sensitivity"]["ci95"],
                f"{split}_specificity": entry["specificity"]["value"],
                f"{split}_specificity_ci95": entry["specificity"]["ci95"],
            }
    return flat


def clinical_outputs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    out: Path,
    split: str,
    *,
    threshold: float | str = "youden",
    temperature: float = 1.0,
    unit: str = "image",
) -> dict:
    """Writes `<split>_clinical.json` and roc.png, pr.png, calibration.png into `out`; returns
    the headline figures for a summary (empty when the split has one class only). `unit` names
    what one prediction is ("image", or "scan": a volume, or a scan's slices pooled)."""
    n_boot = RESAMPLES if logits.numel() <= LARGE else 200
    try:
        report = clinical_report(
            probabilities(logits, temperature, labels.dim() == 2).numpy(),
            labels.numpy(),
            classes,
            threshold=threshold,
            out_dir=out,
            n_boot=n_boot,
        )
    except ResNetError as e:
        if "one only" in str(e):  # no negatives (or positives) at all: nothing to rank
            return {}
        raise
    report["temperature"] = temperature
    report["unit"] = unit  # what one prediction is: an image, or a scan (slices pooled)
    write_json(out / f"{split}_clinical.json", report)
    return _flat(report, split) | {f"{split}_clinical_unit": unit}
