"""The built-in sources: Fashion-MNIST in memory, and random synthetic images for speed tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bundle import DataBundle, Split
from .config import DataConfig
from .fashion_mnist import CLASSES, MEAN, STD, load_fashion_mnist
from .splits import stratified_subset, validation_split
from .transforms import make_preprocessing, normalise

# Source names that are not paths: Fashion-MNIST and the synthetic speed-test set.
BUILTIN = ("fashion-mnist", "synthetic")


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resizes normalised 28 px images to `size` px (antialiased bilinear); 28 px is left alone."""
    if size == 28:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def fashion_mnist_bundle(cfg: DataConfig) -> DataBundle:
    """Fashion-MNIST in memory: its test set, and `cfg.val_split` of its training set held out."""
    images, labels = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    size = cfg.image_size or 28
    pre = make_preprocessing(1, (size, size), MEAN, STD)

    def prep(x: torch.Tensor) -> torch.Tensor:
        return _resize(normalise(x, pre["mean"], pre["std"]), size)

    val = None
    if cfg.val_split > 0:
        tr_idx, val_idx = validation_split(labels, cfg.val_split)
        val = Split(labels[val_idx], prep(images[val_idx]))
        images, labels = images[tr_idx], labels[tr_idx]
    if cfg.subset:
        keep = stratified_subset(labels, cfg.subset)
        images, labels = images[keep], labels[keep]
    return DataBundle(
        "fashion-mnist",
        list(CLASSES),
        pre,
        Split(labels, prep(images)),
        val,
        Split(test_y, prep(test_x)),
    )


def synthetic_bundle(cfg: DataConfig) -> DataBundle:
    """Random normalised images in 1000 classes (default 2048 of 3x224x224): for speed tests."""
    size, n = cfg.image_size or 224, cfg.subset or 2048
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=g)
    labels = torch.randint(0, 1000, (n,), generator=g)
    pre = make_preprocessing(3, (size, size), [0.5] * 3, [0.25] * 3)
    return DataBundle(
        "synthetic", [f"class{i}" for i in range(1000)], pre, Split(labels, images), None, None
    )
