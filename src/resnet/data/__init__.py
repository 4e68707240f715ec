"""Data sets, transforms and loaders: Fashion-MNIST, folders and CSVs, in memory or streamed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ResNetError
from . import fashion_mnist
from .images import ImageList, load_image, scan, stratified_split, stratified_subset
from .loaders import FileDataset, StreamLoader, TensorLoader
from .transforms import (
    PRESETS,
    BatchAugment,
    EvalTransform,
    eval_transform,
    make_preprocessing,
    train_transform,
)

BUILTIN = ("fashion-mnist", "synthetic")


@dataclass
class DataConfig:
    """Where the images come from and how they are fed.

    Attributes:
        source: "fashion-mnist", a folder (ImageFolder layout, optionally with train/ val/ test/),
            or a CSV of `path,label`.
        val_split: fraction of the training images held out (stratified) when the source has
            no validation split of its own.
        subset: train on the first N (stratified) training examples.
        augment: "none", "flip" (mirror only), "flip_erase" (mirror + random erasing, p 0.5),
            "light" (mirror + size/16 translation), "paper" (mirror + size/8 pad-and-crop),
            "erase" (paper + random erasing, p 0.5) or "strong" (+ TrivialAugment / random
            erasing p 0.25 / mixup-cutmix).
        flip: horizontal flips in the augmentation (turn off for laterality-sensitive images).
        alternate_flip: derandomised flips (airbench): each training image is mirrored in every
            other epoch, from a random first choice per image, instead of a coin toss per epoch
            (an image is seen in the other view each time it comes back).
        batch_size: the global batch.
        workers: DataLoader workers for streamed data (None: automatic).
        in_memory: "auto" (when it fits in `memory_limit_gb`), "yes" or "no".
        image_size: input side in pixels (None: the images' own size when they all share one,
            else 224 with a resize of the shorter side + centre crop).
        bad_images: "skip" (with a warning naming the file) or "error".
        memory_limit_gb: the in-memory path's budget for float32 images.
        early_size, early_epochs: progressive resizing: the first `early_epochs` epochs train
            on the augmented batches resized to `early_size` px (cheaper epochs; a fully
            convolutional net then finishes at full size). Evaluation always uses full size.
    """

    source: str = "fashion-mnist"
    val_split: float = 0.1
    subset: int | None = None
    augment: str = "paper"
    flip: bool = True
    alternate_flip: bool = False
    batch_size: int = 128
    workers: int | None = None
    in_memory: str = "auto"
    image_size: int | None = None
    bad_images: str = "skip"
    memory_limit_gb: float = 2.0
    early_size: int | None = None
    early_epochs: int = 0

    def __post_init__(self):
        if self.augment not in PRESETS:
            raise ValueError(f"augment must be one of {', '.join(PRESETS)}, not {self.augment!r}")
        if self.in_memory not in ("auto", "yes", "no"):
            raise ValueError(f"in_memory must be auto, yes or no, not {self.in_memory!r}")
        if self.bad_images not in ("skip", "error"):
            raise ValueError(f"bad_images must be skip or error, not {self.bad_images!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be at least 1, got {self.subset}")
        if not 0.0 <= self.val_split < 1.0:
            raise ValueError(f"val_split must be in [0, 1), got {self.val_split}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")
        if self.early_epochs < 0 or (self.early_size is not None and self.early_size < 8):
            raise ValueError("early_epochs must not be negative and early_size must be at least 8")
        if self.alternate_flip and (not self.flip or self.augment == "none"):
            raise ValueError("alternate_flip needs flips (flip on, augment not none)")
        if self.early_epochs and self.early_size is None:
            raise ValueError("early_epochs needs early_size (the side of the early epochs' images)")


@dataclass
class Split:
    """One split: either tensors in memory (normalised) or a list of files."""

    labels: torch.Tensor
    images: torch.Tensor | None = None  # [N, C, H, W] float32, normalised
    files: ImageList | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    name: str
    classes: list[str]
    preprocessing: dict
    train: Split
    val: Split | None
    test: Split | None

    @property
    def in_chans(self) -> int:
        return self.preprocessing["in_chans"]

    @property
    def in_memory(self) -> bool:
        return self.train.images is not None

    def set_preprocessing(self, pre: dict) -> None:
        """Adopts another normalisation (pretrained weights' mean/std); in-memory tensors are
        renormalised in place and keep their size, streamed data takes `pre` whole."""
        old = self.preprocessing
        if self.in_memory:
            pre = dict(pre, size=old["size"], resize=old.get("resize"), crop=old.get("crop"))
            c = len(old["mean"])
            m0, s0 = (torch.tensor(old[k]).view(1, c, 1, 1) for k in ("mean", "std"))
            m1, s1 = (torch.tensor(pre[k]).view(1, c, 1, 1) for k in ("mean", "std"))
            for s in (self.train, self.val, self.test):
                if s is not None and s.images is not None:
                    s.images.mul_(s0).add_(m0).sub_(m1).div_(s1)
        self.preprocessing = pre

    def to(self, device) -> None:
        """Moves in-memory splits onto `device` (a GPU keeps the whole data set, as airbench)."""
        for s in (self.train, self.val, self.test):
            if s is not None and s.images is not None:
                s.images, s.labels = s.images.to(device), s.labels.to(device)

    def loader(
        self,
        split: str,
        cfg: DataConfig,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        pin_memory: bool = False,
        batch_size: int | None = None,
    ):
        """Batches of `split` ("train", "val", "test"); `train=True` shuffles and augments."""
        data: Split | None = getattr(self, split)
        if data is None:
            raise ResNetError(f"{self.name} has no {split} split")
        bs = batch_size or cfg.batch_size
        if train and bs % world_size:
            raise ResNetError(f"batch size {bs} does not divide over {world_size} processes")
        if data.images is not None:
            aug = (
                BatchAugment(
                    cfg.augment, self.preprocessing["size"][0], cfg.flip, cfg.alternate_flip
                )
                if train
                else None
            )
            return TensorLoader(
                data.images,
                data.labels,
                batch_size=bs,
                shuffle=train,
                augment=aug,
                drop_last=train and len(data) > bs,
                seed=seed,
                rank=rank,
                world_size=world_size,
                channels_last=channels_last,
            )
        alternate = train and cfg.alternate_flip
        tf = (
            train_transform(self.preprocessing, cfg.augment, cfg.flip and not alternate)
            if train
            else eval_transform(self.preprocessing)
        )
        return StreamLoader(
            FileDataset(data.files, tf, alternate_flip_seed=seed if alternate else None),
            batch_size=bs,
            shuffle=train,
            workers=cfg.workers,
            drop_last=train and len(data) > bs,
            seed=seed,
            rank=rank,
            world_size=world_size,
            channels_last=channels_last,
            pin_memory=pin_memory,
        )


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return images.float().div_(255.0 if images.dtype == torch.uint8 else 1.0).sub_(m).div_(s)


def _fashion_mnist(cfg: DataConfig) -> DataBundle:
    images, labels = fashion_mnist.load_fashion_mnist("train")
    test_x, test_y = fashion_mnist.load_fashion_mnist("test")
    size = cfg.image_size or 28
    pre = make_preprocessing(1, (size, size), fashion_mnist.MEAN, fashion_mnist.STD)

    def prep(x: torch.Tensor) -> torch.Tensor:
        x = _normalise(x, pre["mean"], pre["std"])
        return (
            F.interpolate(
                x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
            if size != 28
            else x
        )

    # The validation split is fixed (seed 0) whatever the training seed: choices stay comparable.
    val = None
    if cfg.val_split > 0:
        tr_idx, val_idx = stratified_split(labels.tolist(), cfg.val_split, seed=0)
        val = Split(labels[val_idx], prep(images[val_idx]))
        images, labels = images[tr_idx], labels[tr_idx]
    if cfg.subset:
        keep = stratified_subset(labels, cfg.subset)
        images, labels = images[keep], labels[keep]
    return DataBundle(
        "fashion-mnist",
        list(fashion_mnist.CLASSES),
        pre,
        Split(labels, prep(images)),
        val,
        Split(test_y, prep(test_x)),
    )


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
    from tqdm import tqdm

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
    if decoded is None:
        step = max(1, len(files) // 500)
        decoded = _decode_all(files.subset(list(range(0, len(files), step))), h, w, resize)
    mean = decoded.mean(dim=(0, 2, 3))
    std = decoded.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def _files(cfg: DataConfig, root: Path) -> DataBundle:
    splits: dict[str, ImageList | None] = {"train": None, "val": None, "test": None}
    if root.is_dir() and (root / "train").is_dir():
        splits["train"] = scan(root / "train", cfg.bad_images)
        classes = splits["train"].classes
        for name in ("val", "test"):
            if (root / name).is_dir():
                splits[name] = scan(root / name, cfg.bad_images, classes)
    else:
        splits["train"] = scan(root, cfg.bad_images)
    train = splits["train"]
    if splits["val"] is None and cfg.val_split > 0:
        tr, va = stratified_split(train.labels, cfg.val_split, seed=0)
        if va:
            splits["val"], splits["train"] = train.subset(va), train.subset(tr)
    if cfg.subset:
        splits["train"] = splits["train"].subset(
            stratified_subset(splits["train"].labels, cfg.subset)
        )
    in_chans = max(s.in_chans for s in splits.values() if s is not None)
    for s in splits.values():
        if s is not None:
            s.in_chans = in_chans
    h, w, resize = _choose_size(train, cfg)
    n_total = sum(len(s) for s in splits.values() if s is not None)
    fits = n_total * in_chans * h * w * 4 <= cfg.memory_limit_gb * 2**30
    if cfg.in_memory == "yes" and not fits:
        raise ResNetError(
            f"{n_total} images of {in_chans}x{h}x{w} do not fit in "
            f"{cfg.memory_limit_gb} GB; use --in-memory no or auto"
        )
    in_memory = cfg.in_memory == "yes" or (cfg.in_memory == "auto" and fits)
    decoded = {
        k: _decode_all(s, h, w, resize) if in_memory and s is not None else None
        for k, s in splits.items()
    }
    mean, std = _mean_std(splits["train"], h, w, resize, decoded["train"])
    pre = make_preprocessing(in_chans, (h, w), mean, std, resize, h if resize else None)

    def split(name: str) -> Split | None:
        s = splits[name]
        if s is None:
            return None
        labels = torch.tensor(s.labels, dtype=torch.long)
        if decoded[name] is not None:
            return Split(labels, _normalise(decoded[name], mean, std))
        return Split(labels, files=s)

    return DataBundle(
        str(root), list(train.classes), pre, split("train"), split("val"), split("test")
    )


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
):
    """Batches of one split of `source`, preprocessed as a checkpoint says (`pre`), for val."""
    if source.lower() == "synthetic":
        raise ResNetError("synthetic data has no evaluation split")
    if source.lower() in BUILTIN:
        if split in ("test", "all"):
            x, y = fashion_mnist.load_fashion_mnist("test")
        else:
            x, y = fashion_mnist.load_fashion_mnist("train")
            if val_split > 0:
                tr, va = stratified_split(y.tolist(), val_split, seed=0)
                keep = va if split == "val" else tr
                x, y = x[keep], y[keep]
            elif split == "val":
                raise ResNetError("this run held out no validation split (val_split 0)")
        x = _normalise(x, pre["mean"], pre["std"])
        if tuple(x.shape[-2:]) != tuple(pre["size"]):
            x = F.interpolate(x, size=tuple(pre["size"]), mode="bilinear", antialias=True)
        if x.shape[1] != pre["in_chans"]:
            x = x.expand(-1, pre["in_chans"], -1, -1).contiguous()
        return TensorLoader(x, y, batch_size=batch_size, shuffle=False, channels_last=channels_last)
    root = Path(source).expanduser()
    if not root.exists():
        raise ResNetError(f"data not found: {root}")
    if root.is_dir() and (root / split).is_dir():
        files = scan(root / split, bad_images, classes)
    elif split == "all":  # another data set: every image in it
        files = scan(root, bad_images, classes)
    elif split == "test":
        raise ResNetError(f"{root} has no test split (no test/ folder)")
    else:
        # The split the training run carved: the same scan and the same seeded stratified split.
        base = root / "train" if root.is_dir() and (root / "train").is_dir() else root
        if val_split <= 0:
            raise ResNetError("this run held out no validation split (val_split 0)")
        files = scan(base, bad_images, classes)
        tr, va = stratified_split(files.labels, val_split, seed=0)
        files = files.subset(va if split == "val" else tr)
    files.in_chans = pre["in_chans"]
    return StreamLoader(
        FileDataset(files, eval_transform(pre)),
        batch_size=batch_size,
        shuffle=False,
        workers=workers,
        channels_last=channels_last,
    )


def _synthetic(cfg: DataConfig) -> DataBundle:
    """Random normalised images in 1000 classes (default 2048 of 3x224x224): for speed tests."""
    size, n = cfg.image_size or 224, cfg.subset or 2048
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=g)
    labels = torch.randint(0, 1000, (n,), generator=g)
    pre = make_preprocessing(3, (size, size), [0.5] * 3, [0.25] * 3)
    return DataBundle(
        "synthetic", [f"class{i}" for i in range(1000)], pre, Split(labels, images), None, None
    )


def load_data(cfg: DataConfig) -> DataBundle:
    """Loads the source named in `cfg` into train / val / test splits."""
    if cfg.source.lower() == "synthetic":
        return _synthetic(cfg)
    if cfg.source.lower() in BUILTIN:
        return _fashion_mnist(cfg)
    root = Path(cfg.source).expanduser()
    if not root.exists():
        raise ResNetError(f"data not found: {root} (expected fashion-mnist, a folder or a CSV)")
    return _files(cfg, root)


__all__ = [
    "DataBundle",
    "DataConfig",
    "Split",
    "eval_loader",
    "eval_transform",
    "load_data",
    "load_image",
    "make_preprocessing",
]
