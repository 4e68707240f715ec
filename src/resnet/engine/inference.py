"""Prediction on image files with a trained classifier; preprocessing comes from the checkpoint."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..data import eval_transform, load_image
from ..data.images import is_image_file
from ..data.scans import expand_scans, scan_input
from ..errors import ResNetError
from .checkpoint import load_model_or_ensemble


class TorchClassifier:
    """A model with its class names and preprocessing; calling it maps a batch to logits.

    A checkpoint calibrated by `resnet calibrate` carries a temperature: the logits are divided
    by it, so the probabilities are the calibrated ones (the ranking is unchanged).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        classes: list[str],
        preprocessing: dict,
        device: str | torch.device = "cpu",
        temperature: float = 1.0,
    ):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.classes, self.preprocessing = list(classes), dict(preprocessing)
        self.temperature = float(temperature)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | list[str | Path], device: str | torch.device = "cpu"
    ) -> TorchClassifier:
        """A checkpoint, run folder or ensemble folder (or a list: the members' average)."""
        model, state = load_model_or_ensemble(path)
        if "classes" not in state or "preprocessing" not in state:
            raise ResNetError(f"{path} lacks class names or preprocessing; cannot predict with it")
        temperature = state.get("temperature", 1.0)
        return cls(model, state["classes"], state["preprocessing"], device, temperature)

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (float32, on the CPU) for a batch of preprocessed images."""
        return self.model(batch.to(self.device)).float().cpu() / self.temperature


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly, plus every image found (recursively) in named folders."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise ResNetError(f"no such file or folder: {p}")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
            if not found:
                raise ResNetError(f"{p} holds no images")
            paths += found
        else:
            paths.append(p)
    return paths


def class_probabilities(logits: torch.Tensor, pre: dict) -> torch.Tensor:
    """A softmax over classes, or for a multi-label model (`pre["multilabel"]`) a sigmoid per
    label (each label's own probability; they need not sum to 1)."""
    return torch.sigmoid(logits) if pre.get("multilabel") else torch.softmax(logits, dim=1)


def _with_findings(result: dict, probs: torch.Tensor, classifier) -> dict:
    """A multi-label result also lists every label with probability >= 0.5 ("findings")."""
    if classifier.preprocessing.get("multilabel"):
        result["findings"] = [
            c for c, p in zip(classifier.classes, probs.tolist(), strict=True) if p >= 0.5
        ]
    return result


def _ranked(classes: list[str], probs: torch.Tensor, k: int) -> list[dict]:
    """The top-k classes of one probability vector."""
    top = probs.topk(k)
    return [
        {"class": classes[i], "index": int(i), "probability": float(v)}
        for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def predict_scans(
    classifier, inputs: list[str | Path], *, top_k: int = 5, skip_bad: bool = False
) -> tuple[list[dict], list[torch.Tensor], list[torch.Tensor]]:
    """(results, net inputs, displays) for every scan named: DICOM files, series folders,
    NIfTI files, or folders of them. A slice model's scan probability is the mean over its
    slices ("slices" in the result)."""
    if top_k < 1:
        raise ResNetError(f"--top-k must be at least 1, got {top_k}")
    pre, k = classifier.preprocessing, min(top_k, len(classifier.classes))
    results, xs, displays = [], [], []
    for ref in expand_scans(inputs):
        try:
            x, display = scan_input(ref, pre)
        except ResNetError as e:
            if not skip_bad:
                raise
            warnings.warn(f"skipping {e}", stacklevel=2)
            continue
        probs = class_probabilities(classifier(x), pre).mean(0)
        result = {"path": str(ref.path), "predictions": _ranked(classifier.classes, probs, k)}
        if pre["scan"]["mode"] == "slices":
            result["slices"] = len(x)
        results.append(_with_findings(result, probs, classifier))
        xs.append(x)
        displays.append(display)
    return results, xs, displays


def predict_paths(
    classifier, paths: list[Path], *, top_k: int = 5, batch_size: int = 64, skip_bad: bool = False
) -> list[dict]:
    """Top-k classes and probabilities for each image; a bad file is an error unless skip_bad."""
    if top_k < 1:
        raise ResNetError(f"--top-k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise ResNetError(f"--batch-size must be at least 1, got {batch_size}")
    pre = classifier.preprocessing
    tf = eval_transform(pre)
    k = min(top_k, len(classifier.classes))
    results = []
    for start in range(0, len(paths), batch_size):
        chunk, xs = [], []
        for p in paths[start : start + batch_size]:
            try:
                xs.append(tf(load_image(p, pre["in_chans"])))
                chunk.append(p)
            except ResNetError as e:
                if not skip_bad:
                    raise
                warnings.warn(f"skipping {e}", stacklevel=2)
        if not xs:
            continue
        probs = class_probabilities(classifier(torch.stack(xs)), pre)
        for p, row in zip(chunk, probs, strict=True):
            result = {"path": str(p), "predictions": _ranked(classifier.classes, row, k)}
            results.append(_with_findings(result, row, classifier))
    return results
