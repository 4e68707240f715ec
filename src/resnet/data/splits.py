"""Stratified index splits: the validation hold-out and class-balanced subsets."""

from __future__ import annotations

import random
from collections import Counter

import torch

from ..errors import ResNetError

# The validation split's seed. It is fixed, whatever the training seed, so that every run on a
# data set holds out the same images: choices made on validation accuracy stay comparable across
# seeds, and `resnet val` can carve again the split that a checkpoint's training run held out.
VALIDATION_SEED = 0


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, held_out) with `fraction` of every class held out (at least one each)."""
    if not 0.0 < fraction < 1.0:
        raise ResNetError(f"--val-split must be between 0 and 1, got {fraction}")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    train, held = [], []
    for idx in by_class.values():
        rng.shuffle(idx)
        k = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        held += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(held)


def validation_split(
    labels: torch.Tensor | list[int], fraction: float
) -> tuple[list[int], list[int]]:
    """Indices (train, val) of the validation split a training run holds out.

    The one rule for carving it: `fraction` of every class (stratified), drawn with the fixed
    `VALIDATION_SEED`, never the run's seed, so that all runs and a later evaluation of their
    checkpoints see the same validation images.

    Args:
        labels: class index of every training example.
        fraction: share held out, in (0, 1).
    """
    labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    return stratified_split(labels, fraction, seed=VALIDATION_SEED)


def stratified_subset(labels: torch.Tensor | list[int], n: int, seed: int = 0) -> list[int]:
    """The first `n` examples taken evenly across classes (in a seeded order)."""
    labels = list(map(int, labels))
    if n >= len(labels):
        return list(range(len(labels)))
    counts = Counter(labels)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g).tolist()
    quota = {c: max(1, round(n * k / len(labels))) for c, k in counts.items()}
    chosen = []
    for i in order:
        if quota[labels[i]] > 0:
            quota[labels[i]] -= 1
            chosen.append(i)
    return sorted(chosen[:n])
