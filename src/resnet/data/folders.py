"""Bundles from user data: an ImageFolder-layout folder (maybe with train/ val/ test/) or a CSV.

The images are decoded into memory when they fit in `DataConfig.memory_limit_gb`, else streamed;
the normalisation is measured on the training images.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import ResNetError
from .bundle import DataBundle, Split
from .config import DataConfig
from .grouping import held_out
from .images import ImageList, load_image, scan
from .labels import strata
from .splits import VALIDATION_SEED, stratified_subset, validation_split
from .transforms import EvalTransform, make_preprocessing, normalise

SPLITS = ("train", "val", "test")


def _choose_size(files: ImageList, cfg: DataConfig) -> tuple[int, int, int | None]:
    """(H, W, resize): the images' own size when uniform, else a 224 (or given) square crop."""
    if cfg.image_size:
        sizes = set(files.sizes)
        if len(sizes) == 1 and next(iter(sizes)) == (cfg.image_size, cfg.image_size):
            return cfg.image_size, cfg.image_size, None
        return (
            cfg.image_size,
            cfg.image_size,
            round(cfg.image_size * 256 / 224) if cfg.image_size >= 96 else cfg.image_size,
        )
    sizes = set(files.sizes)
    if len(sizes) == 1:
        h, w = next(iter(sizes))
        return h, w, None
    return 224, 224, 256


def _decode_all(files: ImageList, h: int, w: int, resize: int | None) -> torch.Tensor:
    """Every image of `files` resized (and cropped) to [N, C, h, w] floats in [0, 1]."""
    tf = EvalTransform(
        make_preprocessing(
            files.in_chans,
            (h, w),
            [0.0] * files.in_chans,
            [1.0] * files.in_chans,
            resize,
            h if resize else None,
        )
    )
    out = torch.empty(len(files), files.in_chans, h, w)
    for i, p in enumerate(
        tqdm(
            files.paths, desc="decoding images", unit="img", leave=False, disable=len(files) < 2000
        )
    ):
        out[i] = tf(load_image(p, files.in_chans))
    return out


def _mean_std(
    files: ImageList, h: int, w: int, resize: int | None, decoded: torch.Tensor | None
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training images (of ~500 of them when not decoded)."""
    if decoded is None:
        step = max(1, len(files) // 500)
        decoded = _decode_all(files.subset(list(range(0, len(files), step))), h, w, resize)
    mean = decoded.mean(dim=(0, 2, 3))
    std = decoded.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def _scan_splits(cfg: DataConfig, root: Path) -> dict[str, ImageList | None]:
    """The file lists of train/ val/ test/ when `root` has them, else of `root` as training set."""
    splits: dict[str, ImageList | None] = dict.fromkeys(SPLITS)
    if root.is_dir() and (root / "train").is_dir():
        splits["train"] = scan(root / "train", cfg.bad_images, None, cfg.group_by, cfg.multilabel)
        classes = splits["train"].classes
        for name in ("val", "test"):
            if (root / name).is_dir():
                splits[name] = scan(root / name, cfg.bad_images, classes, None, cfg.multilabel)
    else:
        splits["train"] = scan(root, cfg.bad_images, None, cfg.group_by, cfg.multilabel)
    if cfg.folds >= 2 and splits["val"] is not None:
        raise ResNetError(f"--folds carves its own validation folds; {root} has a val/ folder")
    return splits


def carve(files: ImageList, cfg: DataConfig) -> tuple[list[int], list[int], dict | None]:
    """(train, val, record): the validation split a run holds out of `files`: by group (with
    its hashed record) under `group_by` or `folds`, else stratified by image."""
    if cfg.group_by or cfg.folds >= 2 or cfg.multilabel:
        groups = files.groups or [str(p) for p in files.paths]
        return held_out(
            files.labels,
            groups,
            val_split=cfg.val_split,
            folds=cfg.folds,
            fold=cfg.fold,
            group_by=cfg.group_by,
            seed=VALIDATION_SEED,
        )
    tr, va = validation_split(files.labels, cfg.val_split) if cfg.val_split > 0 else ([], [])
    return tr, va, None


def _carve(splits: dict[str, ImageList | None], cfg: DataConfig) -> dict | None:
    """Holds out the validation split when the source has none, then applies `cfg.subset`;
    returns the split's group record (None when not split by group)."""
    train, record = splits["train"], None
    if splits["val"] is None and (cfg.val_split > 0 or cfg.folds >= 2):
        tr, va, record = carve(train, cfg)
        if va:
            splits["val"], splits["train"] = train.subset(va), train.subset(tr)
    if cfg.subset:
        splits["train"] = splits["train"].subset(
            stratified_subset(strata(splits["train"].labels), cfg.subset)
        )
    return record


def _use_memory(cfg: DataConfig, n_total: int, in_chans: int, h: int, w: int) -> bool:
    """Whether to decode into memory: `cfg.in_memory`, "auto" meaning when it fits the budget."""
    fits = n_total * in_chans * h * w * 4 <= cfg.memory_limit_gb * 2**30
    if cfg.in_memory == "yes" and not fits:
        raise ResNetError(
            f"{n_total} images of {in_chans}x{h}x{w} do not fit in "
            f"{cfg.memory_limit_gb} GB; use --in-memory no or auto"
        )
    return cfg.in_memory == "yes" or (cfg.in_memory == "auto" and fits)


def folder_bundle(cfg: DataConfig, root: Path) -> DataBundle:
    """A folder (ImageFolder layout, optionally split into train/ val/ test/) or a CSV."""
    splits = _scan_splits(cfg, root)
    train = splits["train"]  # before the validation split: its sizes and classes
    record = _carve(splits, cfg)
    present = [s for s in splits.values() if s is not None]
    in_chans = max(s.in_chans for s in present)
    for s in present:
        s.in_chans = in_chans
    h, w, resize = _choose_size(train, cfg)
    in_memory = _use_memory(cfg, sum(len(s) for s in present), in_chans, h, w)
    decoded = {
        k: _decode_all(s, h, w, resize) if in_memory and s is not None else None
        for k, s in splits.items()
    }
    mean, std = _mean_std(splits["train"], h, w, resize, decoded["train"])
    pre = make_preprocessing(in_chans, (h, w), mean, std, resize, h if resize else None)
    if cfg.multilabel:
        pre["multilabel"] = True

    def split(name: str) -> Split | None:
        s = splits[name]
        if s is None:
            return None
        labels = torch.tensor(s.labels, dtype=torch.long)
        if decoded[name] is not None:
            return Split(labels, normalise(decoded[name], mean, std))
        return Split(labels, files=s)

    bundle = DataBundle(str(root), list(train.classes), pre, *(split(k) for k in SPLITS))
    bundle.split_record = record
    return bundle
