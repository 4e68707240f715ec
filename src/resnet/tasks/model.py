"""Task models from a config or a checkpoint: a Detector or a UNet around a ResNet body.

Task checkpoints are ordinary resnet checkpoints (`resnet.engine.checkpoint`): "model" is the
ResNet backbone itself, so any tool that reads a classifier checkpoint can reuse it; "task",
"head" and "task_state" (the weights outside the body) rebuild the rest.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..engine.checkpoint import build_model, load_checkpoint
from ..errors import ResNetError
from ..models import get_entry
from ..models.foreign import is_foreign
from .config import TASKS, TaskConfig
from .detection import Detector
from .segmentation import UNet

DEFAULT_OUT_INDICES = [2, 3, 4]


def build_task_model(
    task: str,
    num_classes: int,
    cfg: TaskConfig | None = None,
    *,
    head: dict[str, Any] | None = None,
    body=None,
) -> nn.Module:
    """A Detector or UNet from a training config, or from a checkpoint's `head` + `body`."""
    if head is not None:
        return (Detector if task == "detect" else UNet)(body=body, **head)
    if is_foreign(cfg.model):
        raise ResNetError(
            f"--task {task} builds on this package's ResNets; {cfg.model} (a torchvision / timm "
            "classifier) trains for classification only"
        )
    options = dict(weights=cfg.weights, norm=cfg.norm)
    if cfg.small_input:
        options["small_input"] = True
    if task == "segment":
        return UNet(cfg.model, num_classes, long_skips=cfg.long_skips, size=cfg.size, **options)
    indices = cfg.out_indices
    if indices == DEFAULT_OUT_INDICES and len(get_entry(cfg.model).spec.depths) == 3:
        indices = [1, 2, 3]  # CIFAR-style nets: their three stages
    return Detector(
        cfg.model,
        num_classes,
        neck=cfg.neck,
        out_channels=cfg.out_channels,
        out_indices=indices,
        extra=cfg.extra,
        head_convs=cfg.head_convs,
        size=cfg.size,
        score_thresh=cfg.score_thresh,
        **options,
    )


def _body_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the model's ResNet body."""
    return tuple(f"{n}." for n, m in model.named_modules() if m is model.body)


def task_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The task model's weights outside its ResNet body."""
    prefixes = _body_prefixes(model)
    return {
        k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(prefixes)
    }


def load_task_model(checkpoint_path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """`(task model in eval mode, checkpoint dict)` from a task checkpoint or run folder."""
    state = load_checkpoint(checkpoint_path)
    task = state.get("task")
    if task not in TASKS:
        raise ResNetError(
            f"{checkpoint_path} is not a detection or segmentation checkpoint "
            f"(task {task!r}); use the classifier's commands for it"
        )
    model = build_task_model(task, 0, head=state["head"], body=build_model(state))
    missing, unexpected = model.load_state_dict(state["task_state"], strict=False)
    prefixes = _body_prefixes(model)
    missing = [k for k in missing if not k.startswith(prefixes)]
    if missing or unexpected:
        raise ResNetError(
            f"task weights do not fit the {task} model: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    return model.eval(), state
