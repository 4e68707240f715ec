"""What sits on a ResNet backbone: feature maps and FPN, object detection, segmentation.

The heavy parts (torchvision's detection models, pycocotools, matplotlib) load on first use.
"""

from __future__ import annotations

import os
from typing import Any

from .backbone import Backbone, BackboneFPN, BackboneProjection, build_neck

TASKS = ("detect", "segment")


def train_task(task: str, config: dict[str, Any]) -> dict[str, Any]:
    """Trains a detector ("detect") or U-Net ("segment"); see `resnet.tasks.engine.train_task`."""
    from .engine import train_task as _train

    return _train(task, config)


def evaluate_task(checkpoint_path: str | os.PathLike, data=None, **kwargs) -> dict[str, Any]:
    """COCO mAP or mIoU / Dice of a task checkpoint; see `resnet.tasks.engine.evaluate_task`."""
    from .engine import evaluate_task as _evaluate

    return _evaluate(checkpoint_path, data, **kwargs)


def predict_task(checkpoint_path: str | os.PathLike, images, out_dir: str | os.PathLike,
                 **kwargs) -> list[dict[str, Any]]:
    """Draws predicted boxes or masks to PNG; see `resnet.tasks.engine.predict_task`."""
    from .engine import predict_task as _predict

    return _predict(checkpoint_path, images, out_dir, **kwargs)


def checkpoint_task(checkpoint_path: str | os.PathLike) -> str:
    """"classify", "detect" or "segment": what a checkpoint was trained for."""
    from ..engine.checkpoint import load_checkpoint
    from ..engine.ensemble import is_ensemble_run

    if is_ensemble_run(checkpoint_path):  # ensembles are of classifiers
        return "classify"
    # Mapped, not read: the weights are loaded once, by whoever then builds the model.
    return load_checkpoint(checkpoint_path, mmap=True).get("task") or "classify"


__all__ = ["TASKS", "Backbone", "BackboneFPN", "BackboneProjection", "build_neck",
           "checkpoint_task", "evaluate_task", "predict_task", "train_task"]
