"""Shared fixtures: small real image sets written to disk by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_digits_folder(
    root: Path, per_class: int = 30, size: int = 16, classes: int = 10, layout: str = "split"
) -> Path:
    """scikit-learn's real 8x8 handwritten digits as grey PNGs in ImageFolder layout.

    layout "split": train/ and val/ sub-folders (4 of 5 images to train); "flat": class folders.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    for c in range(classes):
        idx = rng.permutation(np.flatnonzero(d.target == c))[:per_class]
        for j, i in enumerate(idx):
            img = Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8)).resize(
                (size, size), Image.BILINEAR
            )
            split = "" if layout == "flat" else ("val" if j % 5 == 0 else "train")
            folder = root / split / f"digit{c}"
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{i}.png")
    return root


@pytest.fixture
def digits_folder(tmp_path) -> Path:
    return write_digits_folder(tmp_path / "digits")
