"""`DataConfig`: where a run's images come from and how they are fed."""

from __future__ import annotations

from dataclasses import dataclass

from .transforms import PRESETS

BALANCE = ("none", "loss", "sampler")


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
        volume: scans (DICOM / NIfTI) as volumes of (D, H, W) voxels for 3-D nets.
        slices: scans as 2-D slices for 2-D nets, this many neighbouring slices as channels
            (1: plain slices; 3: 2.5-D). `image_size` sets the slices' side.
        window: how scans map to [0, 1]: a CT window preset (lung, mediastinum, brain, bone),
            "W,L" in HU, or None / "minmax" (per scan).
        spacing: (z, y, x) mm: scans are resampled to it, then centre-cropped to `volume`
            (the physical scale kept); None resizes each scan to `volume` instead.
        group_by: keeps each group on one side of every split: "patient" (a CSV column, else
            the DICOM PatientID), "folder[:N]" or a CSV column name. None: each sample alone.
        folds: K >= 2: stratified group K-fold cross-validation; `fold` (0-based) is the
            fold held out (None with K >= 2: train every fold, one after another).
        balance: "none", "loss" (class-weighted cross-entropy) or "sampler" (each class drawn
            equally often, with replacement).
        multilabel: several findings per sample: a CSV's label lists them separated by ";"
            (empty: none); a sigmoid per label is trained (`data.labels`).
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
    volume: list[int] | None = None
    slices: int | None = None
    window: str | None = None
    spacing: list[float] | None = None
    group_by: str | None = None
    folds: int = 0
    fold: int | None = None
    balance: str = "none"
    multilabel: bool = False

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
        self._check_scans()
        self._check_splits()

    def _check_scans(self) -> None:
        if self.volume is not None and self.slices is not None:
            raise ValueError("--volume (3-D nets) and --slices (2-D nets) exclude each other")
        if self.volume is not None:
            if len(self.volume) != 3 or min(self.volume) < 4:
                raise ValueError(
                    f"volume must be three sizes D,H,W of 4 or more, got {self.volume}"
                )
            if self.early_epochs or self.augment == "strong":
                raise ValueError("volumes take no progressive resizing and no 'strong' preset")
        if self.slices is not None and (self.slices < 1 or self.slices % 2 == 0):
            raise ValueError(
                f"slices must be an odd number of slices (1, 3, 5…), got {self.slices}"
            )
        if self.spacing is not None and (
            len(self.spacing) != 3 or min(self.spacing) <= 0 or self.volume is None
        ):
            raise ValueError("spacing is three positive mm (z,y,x) and needs --volume to crop to")

    def _check_splits(self) -> None:
        if self.balance not in BALANCE:
            raise ValueError(f"balance must be one of {', '.join(BALANCE)}, not {self.balance!r}")
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"folds must be 0 (off) or 2 or more, got {self.folds}")
        if self.fold is not None and not 0 <= self.fold < max(self.folds, 1):
            raise ValueError(f"fold must be in 0..{self.folds - 1} (with folds K), got {self.fold}")
        if self.multilabel and (self.balance == "sampler" or self.augment == "strong"):
            raise ValueError(
                "multilabel takes --balance loss (per-label weights), not sampler, and no "
                "'strong' preset (MixUp/CutMix mix single labels)"
            )
        if self.group_by is not None and not self.group_by.strip():
            raise ValueError("group_by must name patient, folder[:N] or a CSV column")
