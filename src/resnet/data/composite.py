"""The built-in detection/segmentation set: real Fashion-MNIST items scattered on larger canvases.

Each canvas holds a few items of several classes and scales on a smooth coloured background,
later items partly covering earlier ones. Boxes and masks come from the items' own pixels (a
threshold on their intensity), clipped to what stays visible. Everything follows from the seed,
so the set needs no files beyond Fashion-MNIST and is the same on every machine.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .coco import write_coco
from .fashion_mnist import CLASSES as FASHION_CLASSES
from .fashion_mnist import load_fashion_mnist
from .masks import masks_to_boxes

# Five shapes a small detector tells apart quickly; `classes="all"` uses all ten.
DEFAULT_CLASSES = ("T-shirt/top", "Trouser", "Dress", "Sneaker", "Bag")
MASK_THRESHOLD = 0.2  # an item pixel belongs to its mask above this intensity (0-1)


def _resolve_classes(classes: str | Sequence[str | int] | None) -> list[int]:
    if classes is None:
        classes = DEFAULT_CLASSES
    if isinstance(classes, str):
        if classes != "all":
            raise ValueError(
                f"classes must be 'all' or a list of Fashion-MNIST names, not {classes!r}"
            )
        return list(range(len(FASHION_CLASSES)))
    out = []
    for c in classes:
        if isinstance(c, int) and 0 <= c < len(FASHION_CLASSES):
            out.append(c)
        elif c in FASHION_CLASSES:
            out.append(FASHION_CLASSES.index(c))
        else:
            raise ValueError(
                f"unknown Fashion-MNIST class {c!r}; known: {', '.join(FASHION_CLASSES)}"
            )
    if len(set(out)) != len(out) or not out:
        raise ValueError("classes must be a non-empty list without repeats")
    return out


class CompositeSet(torch.utils.data.Dataset):
    """Canvases of scattered Fashion-MNIST items with boxes, instance masks and a semantic mask.

    Args:
        num_images: canvases to generate.
        size: canvas side in pixels.
        split: "train" draws items from Fashion-MNIST's training split, "val"/"test" from its
            test split, so no item is shared between them.
        seed: everything (items, places, scales, colours) follows from it.
        classes: Fashion-MNIST class names or indices, or "all" (default: five distinct shapes).
        items: (min, max) items per canvas.
        scale: (min, max) item side as a fraction of the canvas side.
        max_hidden: an item placed over others may hide at most this fraction of any of them.
        source: `(images uint8 [N, 1, 28, 28], labels [N])` to draw items from instead of
            Fashion-MNIST (for tests of the generator itself).

    Item `i` is `(image uint8 [3, H, W], target)` with target keys `boxes` (float [K, 4], x1 y1
    x2 y2 in pixels), `labels` (int64 [K], 1..C; 0 is the background), `masks` (uint8 [K, H, W],
    visible pixels only), `semantic` (int64 [H, W], class per pixel) and `image_id`.
    """

    def __init__(
        self,
        num_images: int = 512,
        size: int = 128,
        *,
        split: str = "train",
        seed: int = 0,
        classes: str | Sequence[str | int] | None = None,
        items: tuple[int, int] = (1, 4),
        scale: tuple[float, float] = (0.16, 0.45),
        max_hidden: float = 0.5,
        source: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        if num_images < 1 or size < 16:
            raise ValueError(f"need num_images >= 1 and size >= 16 (got {num_images}, {size})")
        if not 1 <= items[0] <= items[1]:
            raise ValueError(f"items must be (min, max) with 1 <= min <= max, not {items}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must be (min, max) fractions in (0, 1], not {scale}")
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
        self.fashion_ids = _resolve_classes(classes)
        self.classes = [FASHION_CLASSES[i] for i in self.fashion_ids]
        self.size = size
        self.in_chans = 3
        self.params = dict(
            num_images=num_images,
            size=size,
            split=split,
            seed=seed,
            classes=list(self.classes),
            items=list(items),
            scale=list(scale),
            max_hidden=max_hidden,
        )
        if source is None:
            source = _fashion_items("train" if split == "train" else "test")
        src_images, src_labels = source
        pools = [torch.nonzero(src_labels == f).flatten() for f in self.fashion_ids]
        if any(len(p) == 0 for p in pools):
            raise ValueError("the item source lacks one of the requested classes")
        # Different streams for train and val even with the same seed.
        rng = np.random.default_rng([seed, {"train": 0, "val": 1, "test": 1}[split]])
        self.images = torch.empty(num_images, 3, size, size, dtype=torch.uint8)
        self.instance_maps = torch.zeros(num_images, size, size, dtype=torch.uint8)
        self.labels: list[torch.Tensor] = []
        self.areas: list[torch.Tensor] = []  # each item's full mask area, before occlusion
        for n in range(num_images):
            image, idmap, labels, areas = _compose(
                rng, size, src_images, pools, items, scale, max_hidden
            )
            self.images[n], self.instance_maps[n] = image, idmap
            self.labels.append(labels)
            self.areas.append(areas)

    def __len__(self) -> int:
        return len(self.images)

    def semantic(self, index: int) -> torch.Tensor:
        """Class per pixel (0 background, 1..C items) of canvas `index`."""
        lut = torch.cat([torch.zeros(1, dtype=torch.int64), self.labels[index]])
        return lut[self.instance_maps[index].long()]

    def semantic_masks(self) -> torch.Tensor:
        """All semantic masks as one uint8 tensor [N, H, W] (the in-memory fast path)."""
        return torch.stack([self.semantic(i).to(torch.uint8) for i in range(len(self))])

    def target(self, index: int) -> dict[str, torch.Tensor]:
        """The target of canvas `index`: boxes, labels, instance masks, semantic mask, image id."""
        idmap = self.instance_maps[index]
        labels = self.labels[index]
        masks = torch.stack([(idmap == k + 1) for k in range(len(labels))]).to(torch.uint8)
        return dict(
            boxes=masks_to_boxes(masks),
            labels=labels.clone(),
            masks=masks,
            semantic=self.semantic(index),
            image_id=torch.tensor(index),
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.images[index], self.target(index)

    def write_coco(self, out_dir, **kwargs):
        """Writes the set as `annotations.json` + `images/*.png` (see `resnet.data.coco`)."""
        return write_coco(self, out_dir, **kwargs)


@functools.lru_cache(maxsize=2)
def _fashion_items(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's images and labels, read once per process (offline: no download)."""
    return load_fashion_mnist(split, download=False)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark two-colour gradient with mild noise, [3, H, W] floats in 0-1."""
    c0, c1 = rng.uniform(0.0, 0.35, 3), rng.uniform(0.0, 0.35, 3)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-1, 1, size)
    t = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]) * 0.5 + 0.5
    bg = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
    bg += rng.normal(0, 0.03, (3, size, size))
    return bg


def _compose(rng, size, src_images, pools, items, scale, max_hidden):
    canvas = _background(rng, size)
    idmap = np.zeros((size, size), dtype=np.uint8)
    labels = []
    areas = []  # full (unoccluded) mask area of each placed item
    for _ in range(int(rng.integers(items[0], items[1] + 1))):
        for _attempt in range(10):
            cls = int(rng.integers(len(pools)))
            pool = pools[cls]
            item = src_images[pool[int(rng.integers(len(pool)))], 0].float() / 255
            side = rng.uniform(*scale) * size
            aspect = math.exp(rng.uniform(-0.2, 0.2))
            h = max(8, min(size, round(side * aspect)))
            w = max(8, min(size, round(side / aspect)))
            patch = F.interpolate(
                item[None, None], size=(h, w), mode="bilinear", align_corners=False, antialias=True
            )[0, 0].numpy()
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            mask = patch > MASK_THRESHOLD
            if mask.sum() < 16:
                continue
            # Occlusion is allowed, but no earlier item may lose more than max_hidden of itself.
            region = idmap[y : y + h, x : x + w]
            covered = np.bincount(region[mask], minlength=len(labels) + 1)[1:]
            visible = np.array([(idmap == k + 1).sum() for k in range(len(labels))])
            left = visible - covered
            if len(labels) and np.any(left < (1 - max_hidden) * np.array(areas)):
                continue
            colour = rng.uniform(0.45, 1.0, 3)
            alpha = patch[None]
            canvas[:, y : y + h, x : x + w] = (
                canvas[:, y : y + h, x : x + w] * (1 - alpha) + colour[:, None, None] * alpha
            )
            region[mask] = len(labels) + 1
            labels.append(cls + 1)
            areas.append(int(mask.sum()))
            break
    if not labels:  # pragma: no cover - ten failed tries in a row on an empty canvas
        raise RuntimeError("composite: could not place any item")
    image = torch.from_numpy(np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8))
    return (
        image,
        torch.from_numpy(idmap),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(areas, dtype=torch.int64),
    )
