"""Batch iterators: a tensor loader for data that fits in memory, a DataLoader for the rest.

Every random choice (order, augmentation) is drawn from a generator seeded by (seed, epoch), so an
epoch can be replayed exactly: that is what makes a resumed run equal an uninterrupted one.
"""

from __future__ import annotations

import math
import os

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .images import ImageList, load_image
from .transforms import BatchAugment


def epoch_seed(seed: int, epoch: int) -> int:
    """The one seed of an epoch: data order, augmentation, dropout all derive from it."""
    return seed * 1_000_003 + epoch


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded with `epoch_seed(seed, epoch)`."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def alternating_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Derandomised flips (airbench): image i is mirrored in epoch e iff first[i] xor (e odd),
    where first[] is one coin toss per image for the whole run."""
    first = torch.rand(n, generator=epoch_generator(seed, -1)) < 0.5
    return first ^ bool(epoch % 2)


class TensorLoader:
    """Batches from one normalised tensor [N, C, H, W], augmented a whole batch at a time.

    `batch_size` is the global batch; with `world_size` > 1 each rank yields its slice of every
    global batch, so N processes see the same samples and augmentations as one. With
    `sample_weights`, a shuffled epoch draws N samples with replacement in proportion to them
    (a class-balanced sampler).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        augment: BatchAugment | None = None,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        sample_weights: torch.Tensor | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.images, self.labels, self.sample_weights = images, labels, sample_weights
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.drop_last, self.seed, self.epoch = drop_last, seed, 0
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last

    @property
    def num_samples(self) -> int:
        """Examples in the whole data set (all ranks together)."""
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order and augmentation the next iteration replays."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        g = epoch_generator(self.seed, self.epoch)
        n = len(self.labels)
        if self.shuffle and self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, n, replacement=True, generator=g)
        else:
            order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        h, w = self.images.shape[-2:]
        alternate = self.augment is not None and self.augment.alternate_flip
        flips = alternating_flips(n, self.seed, self.epoch) if alternate else None
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            params = (
                self.augment.sample(len(idx), g, h, w, None if flips is None else flips[idx])
                if self.augment
                else None
            )
            if self.world_size > 1:
                per = math.ceil(len(idx) / self.world_size)
                part = slice(self.rank * per, (self.rank + 1) * per)
                idx = idx[part]
                params = {k: v[part] for k, v in params.items()} if params else None
            idx = idx.to(self.images.device)
            x = self.images[idx]
            if params is not None:
                x = self.augment.apply(x, params)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]


class FileDataset(Dataset):
    """Images decoded from disk on demand, for data sets too large to hold in memory.

    With `alternate_flip_seed`, image i is mirrored after `transform` in the epochs that
    `alternating_flips` says (the loader sets `epoch` before each epoch's workers start).
    """

    def __init__(self, items: ImageList, transform, alternate_flip_seed: int | None = None):
        self.items, self.transform = items, transform
        self.alternate_flip_seed, self.epoch, self.flips = alternate_flip_seed, 0, None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose alternating flips the items follow."""
        self.epoch = epoch
        if self.alternate_flip_seed is not None:
            self.flips = alternating_flips(len(self.items), self.alternate_flip_seed, epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        x = self.transform(load_image(self.items.paths[i], self.items.in_chans))
        if self.flips is not None and self.flips[i]:
            x = x.flip(-1)
        y = self.items.labels[i]
        return x, torch.tensor(y) if isinstance(y, list) else y  # a multi-hot row stays a row


class _EpochShuffle(Sampler):
    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(
            torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch)).tolist()
        )

    def __len__(self) -> int:
        return self.n


class _Shard(Sampler):
    """Every `world`-th index from `rank`: evaluation shards with no padding or repeats."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class StreamLoader:
    """A DataLoader over files with per-epoch seeding (workers' seeds derive from it too)."""

    def __init__(
        self,
        dataset: FileDataset,
        *,
        batch_size: int,
        shuffle: bool,
        workers: int | None,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        pin_memory: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.dataset, self.seed, self.epoch, self.channels_last = dataset, seed, 0, channels_last
        self.shuffle = shuffle
        if world_size > 1 and shuffle:
            self.sampler = DistributedSampler(
                dataset, world_size, rank, shuffle=True, seed=seed, drop_last=drop_last
            )
            per_rank = batch_size // world_size
        elif world_size > 1:
            self.sampler = _Shard(len(dataset), rank, world_size)
            per_rank = max(1, batch_size // world_size)
        else:
            self.sampler = _EpochShuffle(len(dataset), seed) if shuffle else None
            per_rank = batch_size
        if workers is None:
            workers = min(4, max(0, (os.cpu_count() or 1) - 1))
        self.loader_args = dict(
            batch_size=per_rank,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=drop_last,
            pin_memory=pin_memory,
        )
        self.batch_size = batch_size

    @property
    def num_samples(self) -> int:
        """Examples in the whole data set (all ranks together)."""
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order, flips and worker seeds the next iteration replays."""
        self.epoch = epoch
        self.dataset.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        per = self.loader_args["batch_size"]
        return n // per if self.loader_args["drop_last"] else math.ceil(n / per)

    def __iter__(self):
        g = epoch_generator(self.seed, self.epoch)
        if self.shuffle:  # training: transforms in the main process draw from here
            torch.manual_seed(epoch_seed(self.seed, self.epoch))
        for x, y in DataLoader(self.dataset, generator=g, **self.loader_args):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
