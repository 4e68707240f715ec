"""The data of a task run: its train / val datasets, batches of them, and image files to predict."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from ..data import IMAGE_EXTENSIONS
from ..data.coco import open_dataset
from ..data.composite import CompositeSet
from ..errors import ResNetError
from .config import TaskConfig
from .detection import Subset


def build_datasets(cfg: TaskConfig):
    """`(train, val)` datasets for a task config."""
    if cfg.data == "composite":
        common = dict(size=cfg.size, seed=cfg.data_seed, classes=cfg.classes)
        train = CompositeSet(cfg.num_train, split="train", **common)
        val = (
            CompositeSet(cfg.num_val, split="val", **common)
            if cfg.val_data is None
            else open_dataset(cfg.val_data)
        )
        return train, val
    data = open_dataset(cfg.data)
    if cfg.val_data is not None:
        return data, open_dataset(cfg.val_data)
    if len(data) < 2:
        raise ResNetError(f"{cfg.data} holds {len(data)} image; need 2 or more to split")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.data_seed))
    n_val = max(1, round(len(data) * cfg.val_split))
    if len(data) - n_val < 2:  # a batch of one cannot train batch norm
        raise ResNetError(
            f"{cfg.data} holds {len(data)} images: {len(data) - n_val} left to train after "
            f"{n_val} held out for validation; need 2 or more to train"
        )
    return Subset(data, order[n_val:].tolist()), Subset(data, order[:n_val].tolist())


def eval_dataset(state: dict[str, Any], data=None):
    """The data a task checkpoint is scored on (see `resnet.tasks.evaluate_task`'s `data`)."""
    if data is not None and not (isinstance(data, str) and data == "composite"):
        return open_dataset(data) if isinstance(data, str | os.PathLike) else data
    cfg = TaskConfig.from_dict(state.get("config") or {})
    if cfg.data == "composite" or data == "composite":
        return CompositeSet(
            cfg.num_val,
            size=cfg.size,
            split="val",
            seed=cfg.data_seed,
            classes=state.get("classes"),
        )
    return build_datasets(cfg)[1]


def _flip(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """The image mirrored left-right, with its boxes and semantic map."""
    w = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    return image.flip(-1), dict(target, boxes=boxes, semantic=target["semantic"].flip(-1))


def make_batch(dataset, indices, task: str, size: int, gen: torch.Generator | None = None):
    """Images (a list of uint8 tensors) and targets of `dataset[indices]`.

    Segmentation images (and their semantic maps) are resized to `size` x `size`; with `gen`
    each item is flipped with probability 1/2 (one draw from `gen` per item).
    """
    images, targets = [], []
    for i in indices:
        image, target = dataset[i]
        if task == "segment" and tuple(image.shape[-2:]) != (size, size):
            image = TF.resize(image, [size, size], antialias=True)
            semantic = TF.resize(
                target["semantic"][None],
                [size, size],
                interpolation=TF.InterpolationMode.NEAREST_EXACT,
            )[0]
            target = dict(target, semantic=semantic)
        if gen is not None and torch.rand((), generator=gen) < 0.5:
            image, target = _flip(image, target)
        images.append(image)
        targets.append(target)
    return images, targets


def image_files(images) -> list[Path]:
    """The image files of a path, a folder (its images, sorted) or a list of them."""
    if isinstance(images, str | os.PathLike):
        images = [images]
    files = []
    for p in map(Path, images):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ResNetError(f"{p} holds no images")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ResNetError(f"image not found: {p}")
    return files
