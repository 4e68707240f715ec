"""`eval_loader`: one split of a source, preprocessed as a checkpoint says, for `resnet val`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch.nn.functional as F

from ..errors import ResNetError
from .builtin import BUILTIN
from .config import DataConfig
from .fashion_mnist import load_fashion_mnist
from .folders import carve
from .images import ImageList, scan
from .loaders import FileDataset, StreamLoader, TensorLoader
from .scans import scan_eval_loader
from .splits import validation_split
from .transforms import eval_transform, normalise

NO_VAL_SPLIT = "this run held out no validation split (val_split 0)"


def eval_loader(
    source: str,
    split: str,
    pre: dict,
    classes: list[str],
    *,
    val_split: float = 0.1,
    batch_size: int = 256,
    workers: int | None = None,
    bad_images: str = "skip",
    channels_last: bool = False,
    data_cfg: dict | None = None,
) -> TensorLoader | StreamLoader:
    """Batches of one split of `source`, preprocessed as a checkpoint says (`pre`), for val.

    Args:
        source: "fashion-mnist", a folder or a CSV, as the training run named it.
        split: "train" or "val" (the split the training run carved with `val_split`, or the
            folder's own train/ val/), "test", or "all" (every image of another data set).
        pre: the checkpoint's preprocessing (`transforms.make_preprocessing`).
        classes: the checkpoint's class names; a folder's classes must be among them.
        val_split: the fraction the training run held out.
        batch_size, workers, bad_images, channels_last: as in `DataConfig` and the loaders.
        data_cfg: the training run's data section (scans: how it grouped and folded).
    """
    if source.lower() == "synthetic":
        raise ResNetError("synthetic data has no evaluation split")
    if source.lower() in BUILTIN:
        return _fashion_mnist_loader(split, pre, val_split, batch_size, channels_last)
    cfg = _data_config(data_cfg or {}, source, val_split)
    if pre.get("multilabel"):
        cfg = dataclasses.replace(cfg, multilabel=True)
    if pre.get("scan"):
        return scan_eval_loader(
            source, split, pre, classes, cfg, batch_size=batch_size, bad_images=bad_images
        )
    files, record = _split_files(Path(source).expanduser(), split, classes, cfg, bad_images)
    files.in_chans = pre["in_chans"]
    loader = StreamLoader(
        FileDataset(files, eval_transform(pre)),
        batch_size=batch_size,
        shuffle=False,
        workers=workers,
        channels_last=channels_last,
    )
    loader.split_record = record  # a split by group: checked against the run's splits.json
    return loader


def _data_config(d: dict, source: str, val_split: float) -> DataConfig:
    """The training run's data section as a `DataConfig` (keys it does not know are left out)."""
    known = {f.name for f in dataclasses.fields(DataConfig)}
    return (
        DataConfig(**{k: v for k, v in d.items() if k in known} | {"source": source})
        if d
        else (DataConfig(source=source, val_split=val_split))
    )


def _fashion_mnist_loader(
    split: str, pre: dict, val_split: float, batch_size: int, channels_last: bool
) -> TensorLoader:
    """Fashion-MNIST's `split` in memory, resized and widened to what `pre` asks."""
    if split in ("test", "all"):
        x, y = load_fashion_mnist("test")
    else:
        x, y = load_fashion_mnist("train")
        if val_split > 0:
            tr, va = validation_split(y, val_split)
            keep = va if split == "val" else tr
            x, y = x[keep], y[keep]
        elif split == "val":
            raise ResNetError(NO_VAL_SPLIT)
    x = normalise(x, pre["mean"], pre["std"])
    if tuple(x.shape[-2:]) != tuple(pre["size"]):
        x = F.interpolate(x, size=tuple(pre["size"]), mode="bilinear", antialias=True)
    if x.shape[1] != pre["in_chans"]:
        x = x.expand(-1, pre["in_chans"], -1, -1).contiguous()
    return TensorLoader(x, y, batch_size=batch_size, shuffle=False, channels_last=channels_last)


def _split_files(
    root: Path, split: str, classes: list[str], cfg: DataConfig, bad_images: str
) -> tuple[ImageList, dict | None]:
    """The files of `split` of a folder or CSV: its own split folder, or the carved val split;
    and the carved split's group record (None when not carved by group)."""
    if not root.exists():
        raise ResNetError(f"data not found: {root}")
    if root.is_dir() and (root / split).is_dir():
        return scan(root / split, bad_images, classes, None, cfg.multilabel), None
    if split == "all":  # another data set: every image in it
        return scan(root, bad_images, classes, None, cfg.multilabel), None
    if split == "test":
        raise ResNetError(f"{root} has no test split (no test/ folder)")
    # The split the training run carved: the same scan and the same validation split.
    base = root / "train" if root.is_dir() and (root / "train").is_dir() else root
    if cfg.val_split <= 0 and cfg.folds < 2:
        raise ResNetError(NO_VAL_SPLIT)
    files = scan(base, bad_images, classes, cfg.group_by, cfg.multilabel)
    tr, va, record = carve(files, cfg)
    return files.subset(va if split == "val" else tr), record
