"""`DataConfig`: where a run's images come from and how they are fed."""

from __future__ import annotations

from dataclasses import dataclass

from .transforms import PRESETS


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
