"""`DataBundle`: a data set's splits, classes and preprocessing, and its batch loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ResNetError
from .augment3d import VolumeAugment
from .config import DataConfig
from .images import ImageList
from .loaders import FileDataset, StreamLoader, TensorLoader
from .transforms import BatchAugment, eval_transform, train_transform


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights 1 / (count of its class): every class drawn equally often."""
    counts = torch.bincount(labels.cpu())
    return 1.0 / counts[labels.cpu()].double()


@dataclass
class Split:
    """One split: either tensors in memory (normalised) or a list of files."""

    labels: torch.Tensor
    images: torch.Tensor | None = None  # [N, C, H, W] float32, normalised
    files: ImageList | None = None
    owners: torch.Tensor | None = None  # slices of scans: the scan each sample comes from

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    """A loaded data set: its splits, class names and the preprocessing a checkpoint records.

    Attributes:
        name: the source ("fashion-mnist", "synthetic", or the folder / CSV path).
        classes: class names, index = label.
        preprocessing: the eval preprocessing (`transforms.make_preprocessing`).
        train, val, test: the splits; val and test are None when the source has none.
        split_record: which groups (hashed) went to which side, for sources split by group.
    """

    name: str
    classes: list[str]
    preprocessing: dict
    train: Split
    val: Split | None
    test: Split | None
    split_record: dict | None = None

    @property
    def in_chans(self) -> int:
        """Input channels the images are given in (1 grey, 3 colour)."""
        return self.preprocessing["in_chans"]

    @property
    def in_memory(self) -> bool:
        """Whether the splits are held as tensors rather than streamed from files."""
        return self.train.images is not None

    def set_preprocessing(self, pre: dict) -> None:
        """Adopts another normalisation (pretrained weights' mean/std).

        In-memory tensors are renormalised in place and keep their size (and their channels
        are reversed when the weights want BGR input); streamed data takes `pre` whole.
        """
        old = self.preprocessing
        if self.in_memory:
            pre = dict(pre, size=old["size"], resize=old.get("resize"), crop=old.get("crop"))
            c = len(old["mean"])
            m0, s0 = (torch.tensor(old[k]).view(1, c, 1, 1) for k in ("mean", "std"))
            m1, s1 = (torch.tensor(pre[k]).view(1, c, 1, 1) for k in ("mean", "std"))
            order = [p.get("channel_order") or "rgb" for p in (old, pre)]
            for s in (self.train, self.val, self.test):
                if s is not None and s.images is not None:
                    s.images.mul_(s0).add_(m0)
                    if order[0] != order[1] and c == 3:
                        s.images = s.images.flip(1).contiguous()
                    s.images.sub_(m1).div_(s1)
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
    ) -> TensorLoader | StreamLoader:
        """Batches of `split` ("train", "val", "test"); `train=True` shuffles and augments."""
        data: Split | None = getattr(self, split)
        if data is None:
            raise ResNetError(f"{self.name} has no {split} split")
        bs = batch_size or cfg.batch_size
        if train and cfg.balance == "sampler" and data.images is None:
            raise ResNetError("--balance sampler needs the data in memory; use --balance loss")
        if train and bs % world_size:
            raise ResNetError(f"batch size {bs} does not divide over {world_size} processes")
        common = dict(
            batch_size=bs,
            shuffle=train,
            drop_last=train and len(data) > bs,
            seed=seed,
            rank=rank,
            world_size=world_size,
            channels_last=channels_last,
        )
        if data.images is not None:
            common["channels_last"] = channels_last and data.images.dim() == 4
            return self._tensor_loader(data, cfg, train, common)
        return self._stream_loader(data, cfg, train, seed, pin_memory, common)

    def _tensor_loader(self, data: Split, cfg: DataConfig, train: bool, common: dict):
        size = self.preprocessing["size"][0]
        aug, weights = None, None
        if train and data.images.dim() == 5:
            aug = VolumeAugment(cfg.augment, cfg.flip)
        elif train:
            aug = BatchAugment(cfg.augment, size, cfg.flip, cfg.alternate_flip)
        if train and cfg.balance == "sampler":
            weights = balanced_weights(data.labels)
        return TensorLoader(data.images, data.labels, augment=aug, sample_weights=weights, **common)

    def _stream_loader(
        self, data: Split, cfg: DataConfig, train: bool, seed: int, pin_memory: bool, common: dict
    ):
        alternate = train and cfg.alternate_flip
        tf = (
            train_transform(self.preprocessing, cfg.augment, cfg.flip and not alternate)
            if train
            else eval_transform(self.preprocessing)
        )
        dataset = FileDataset(data.files, tf, alternate_flip_seed=seed if alternate else None)
        return StreamLoader(dataset, workers=cfg.workers, pin_memory=pin_memory, **common)
