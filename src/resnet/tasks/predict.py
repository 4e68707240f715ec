"""Predictions of a task checkpoint on image files, drawn to PNG: boxes or class masks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..data import read_rgb, write_png
from .data import image_files
from .detection import detections_to_list, draw_detections
from .model import load_task_model
from .segmentation import draw_masks


def _segment(model, image: torch.Tensor, size: int, classes: list[str]):
    """The drawn masks of one image and the fraction of it each predicted class covers."""
    x = TF.resize(image, [size, size], antialias=True).float()[None] / 255
    logits = F.interpolate(model(x), size=image.shape[-2:], mode="bilinear", align_corners=False)
    semantic = logits.argmax(1)[0]
    counts = torch.bincount(semantic.flatten(), minlength=len(classes) + 1)
    frac = (counts / semantic.numel()).tolist()
    found = {classes[c - 1]: round(frac[c], 4) for c in range(1, len(classes) + 1) if counts[c] > 0}
    return draw_masks(image, semantic), dict(classes=found)


@torch.no_grad()
def predict_task(
    checkpoint_path: str | os.PathLike,
    images,
    out_dir: str | os.PathLike,
    *,
    score_thresh: float = 0.3,
) -> list[dict[str, Any]]:
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
    files = image_files(images)
    model, state = load_task_model(checkpoint_path)
    task, classes = state["task"], list(state["classes"])
    size = model.head_config["size"]
    out = Path(out_dir)
    results = []
    for path in files:
        image = read_rgb(path)
        target = out / f"{path.stem}.png"
        if task == "detect":
            pred = model([image.float() / 255])[0]
            drawn = draw_detections(image, pred, classes, score_thresh)
            entry = dict(detections=detections_to_list(pred, classes, score_thresh))
        else:
            drawn, entry = _segment(model, image, size, classes)
        write_png(target, drawn.permute(1, 2, 0).numpy())
        results.append(dict(image=str(path), output=str(target), **entry))
    return results
