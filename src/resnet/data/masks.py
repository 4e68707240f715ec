"""Targets from instance masks: tight boxes and a class-per-pixel map (detection, segmentation)."""

from __future__ import annotations

import torch
from torchvision.ops import masks_to_boxes as tv_masks_to_boxes


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes (x1, y1, x2, y2; x2/y2 one past the last pixel, as COCO counts) of masks."""
    if len(masks) == 0:
        return torch.zeros(0, 4)
    boxes = tv_masks_to_boxes(masks.bool())  # inclusive pixel coordinates
    boxes[:, 2:] += 1
    return boxes


def paint_semantic(
    masks: torch.Tensor, labels: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """Class per pixel; larger instances are painted first so smaller ones stay on top."""
    semantic = torch.zeros(shape, dtype=torch.int64)
    order = torch.argsort(masks.flatten(1).sum(1), descending=True) if len(masks) else []
    for k in order:
        semantic[masks[k].bool()] = labels[k]
    return semantic
