"""Real images for parity checks and agreement measures: user files or sample photos."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.transforms import v2

from ..data.fashion_mnist import load_fashion_mnist
from ..data.images import load_image
from ..data.splits import stratified_subset
from ..data.transforms import eval_transform
from ..engine.inference import expand_inputs
from ..errors import ResNetError


def sample_photos() -> list[torch.Tensor]:
    """The photos bundled with scikit-learn (and scikit-image, when installed), nothing downloaded.

    Returns:
        Float RGB tensors [3, H, W] in [0, 1].
    """
    # scikit-learn is needed only here, and importing it costs a second: imported on first use.
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(a).permute(2, 0, 1).float() / 255.0 for a in load_sample_images().images]
    try:  # optional: scikit-image's bundled photos (no download for these names)
        from skimage import data as skdata

        for name in ("astronaut", "chelsea", "coffee", "rocket"):
            a = getattr(skdata, name)()
            photos.append(torch.tensor(a).permute(2, 0, 1).float() / 255.0)
    except Exception:  # noqa: BLE001 - skimage absent or a file missing: sklearn's two suffice
        pass
    return photos


def _to_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """`x` with `in_chans` channels: grey by luminance, or channels repeated."""
    if x.shape[0] == in_chans:
        return x
    if in_chans == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        return (x[:3] * w).sum(0, keepdim=True)
    if x.shape[0] == 1:
        return x.expand(in_chans, -1, -1)
    reps = -(-in_chans // x.shape[0])
    return x.repeat(reps, 1, 1)[:in_chans]


def random_views(
    photos: Sequence[torch.Tensor], n: int, seed: int = 0, min_scale: float = 0.05
) -> list[torch.Tensor]:
    """`n` random crops (with random flips) of `photos`, each still a float image in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = photos[i % len(photos)]
        h, w = x.shape[-2:]
        scale = min_scale + (1 - min_scale) * torch.rand(1, generator=g).item()
        ch = max(8, int(h * scale**0.5))
        cw = max(8, int(w * scale**0.5))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        v = x[:, top : top + ch, left : left + cw]
        if torch.rand(1, generator=g).item() < 0.5:
            v = v2.functional.horizontal_flip(v)
        out.append(v)
    return out


def preprocess(images: Sequence[torch.Tensor], preprocessing: dict) -> torch.Tensor:
    """A batch of model inputs from float [C, H, W] images in [0, 1].

    The checkpoint's `preprocessing` sets the channel count, resize / crop and normalisation.
    """
    tf = eval_transform(preprocessing)
    c = int(preprocessing["in_chans"])
    return torch.stack([tf(_to_channels(x, c)) for x in images])


def real_inputs(
    preprocessing: dict, n: int = 16, images: Sequence[str | Path] | None = None, seed: int = 0
) -> torch.Tensor:
    """`n` preprocessed real images.

    The given files (cycled with random crops if fewer than `n`), or random crops of the bundled
    sample photos.
    """
    if images:
        photos = [load_image(p, int(preprocessing["in_chans"])) for p in images]
        views = photos[:n] + random_views(photos, max(0, n - len(photos)), seed, min_scale=0.3)
    else:
        views = random_views(sample_photos(), n, seed)
    return preprocess(views, preprocessing)


def fashion_mnist_split(
    pre: dict, split: str, n: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` (stratified) Fashion-MNIST images of `split`, preprocessed by `pre`, with labels."""
    images, labels = load_fashion_mnist(split)
    idx = stratified_subset(labels, min(n, len(labels)), seed=seed)
    x = images[idx].float() / 255.0
    return preprocess(list(x), pre), labels[idx]


def calibration_images(
    source: str | Path, preprocessing: dict, n: int = 256, seed: int = 0
) -> torch.Tensor:
    """`n` preprocessed training images for int8 calibration.

    Args:
        source: "fashion-mnist" (its training split) or a folder of images (its `train/`
            sub-folder when there is one), searched recursively.
        preprocessing: the checkpoint's eval preprocessing.
        n: how many images.
        seed: picks which images.
    """
    if str(source) == "fashion-mnist":
        return fashion_mnist_split(preprocessing, "train", n, seed)[0]
    root = Path(source)
    if not root.is_dir():
        raise ResNetError(
            f"calibration source must be 'fashion-mnist' or a folder of training "
            f"images, not {source}"
        )
    if (root / "train").is_dir():
        root = root / "train"
    paths = expand_inputs([root])
    random.Random(seed).shuffle(paths)
    return real_inputs(preprocessing, min(n, len(paths)), paths[:n], seed)
