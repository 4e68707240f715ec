"""What sits on a ResNet backbone: feature maps and FPN, object detection, segmentation.

The heavy parts (torchvision's detection models, pycocotools, matplotlib) load on first use.
"""

from __future__ import annotations

import os

from ..engine.checkpoint import load_checkpoint
from ..engine.runfolder import is_ensemble_run
from .backbone import Backbone, BackboneFPN, BackboneProjection, build_neck
from .config import TASKS, TaskConfig
from .predict import predict_task
from .training import evaluate_task, train_task


def checkpoint_task(checkpoint_path: str | os.PathLike) -> str:
    """What a checkpoint was trained for: "classify", "detect" or "segment"."""
    if is_ensemble_run(checkpoint_path):  # ensembles are of classifiers
        return "classify"
    # Mapped, not read: the weights are loaded once, by whoever then builds the model.
    return load_checkpoint(checkpoint_path, mmap=True).get("task") or "classify"


__all__ = [
    "TASKS",
    "Backbone",
    "BackboneFPN",
    "BackboneProjection",
    "TaskConfig",
    "build_neck",
    "checkpoint_task",
    "evaluate_task",
    "predict_task",
    "train_task",
]
