"""Fashion-MNIST from its IDX files: Debian's package, $RESNET_DATA, or torchvision's download."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ResNetError

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Statistics of the 60k training images, used to normalise once.
MEAN, STD = (0.2860,), (0.3530,)


NOT_FOUND = (
    "Fashion-MNIST not found. Install Debian's package (apt-get install dataset-fashion-mnist "
    f"-> {DEBIAN_DIR}), or set RESNET_DATA to a folder holding the four *-ubyte.gz files, or "
    "run once online so torchvision can download it"
)


def _candidates() -> list[Path]:
    dirs = []
    if os.environ.get("RESNET_DATA"):
        root = Path(os.environ["RESNET_DATA"]).expanduser()
        dirs += [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    dirs.append(DEBIAN_DIR)
    cache = Path(os.environ.get("RESNET_CACHE", Path.home() / ".cache" / "resnet")) / "data"
    dirs.append(cache / "FashionMNIST" / "raw")
    return dirs


def _find(stem: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for name in (f"{stem}.gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def _download(dirs: list[Path]) -> None:
    """torchvision's download (needs the internet); leaves raw files in the cache folder."""
    from torchvision.datasets import FashionMNIST  # heavy, and needed only to download

    root = dirs[-1].parent.parent
    try:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception as e:  # offline, proxy, disk full: all the same to the user
        raise ResNetError(f"{NOT_FOUND} ({type(e).__name__})") from None


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (optionally gzipped): big-endian header, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ResNetError(f"cannot read {path}: {e}") from None
    if len(data) < 8 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ResNetError(f"{path} is not a uint8 IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(data) - offset != count:
        raise ResNetError(f"{path} is truncated: {len(data) - offset} of {count} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_fashion_mnist(
    split: str = "train", download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(images uint8 [N, 1, 28, 28], labels int64 [N])` for split "train" (60k) or "test" (10k)."""
    if split not in FILES:
        raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', not {split!r}")
    dirs = _candidates()
    paths = [_find(stem, dirs) for stem in FILES[split]]
    if None in paths:
        if download:
            _download(dirs)
        paths = [_find(stem, dirs) for stem in FILES[split]]
        if None in paths:
            raise ResNetError(NOT_FOUND)
    images = torch.from_numpy(read_idx(paths[0]).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(paths[1]).astype(np.int64))
    if len(images) != len(labels):
        raise ResNetError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def write_samples(out: str | Path, n: int = 8, split: str = "test") -> list[Path]:
    """Saves the first `n` images of a split as PNGs named `<index>_<class>.png` (for demos)."""
    images, labels = load_fashion_mnist(split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        name = CLASSES[int(labels[i])].replace("/", "-").replace(" ", "-").lower()
        p = out / f"{i:02d}_{name}.png"
        Image.fromarray(images[i, 0].numpy()).save(p)
        paths.append(p)
    return paths
