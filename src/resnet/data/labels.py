"""Multi-label targets: several findings per image ("effusion;nodule"), as multi-hot rows.

A multi-label data set (`DataConfig.multilabel`) names each sample's findings in its label
column, separated by ";" or "|"; an empty label means no finding. The label names are every
finding that occurs, sorted; a sample's target is a 0/1 row with one entry per name, trained
with a sigmoid per label (binary cross-entropy) instead of a softmax over classes.
"""

from __future__ import annotations

import re

import torch

SEPARATORS = re.compile(r"[;|]")


def findings(text: str) -> tuple[str, ...]:
    """The findings a label names: split on ";" or "|", stripped, empty ones dropped, sorted."""
    return tuple(sorted({t.strip() for t in SEPARATORS.split(text) if t.strip()}))


def multi_hot(names: tuple[str, ...], classes: list[str]) -> list[int]:
    """A 0/1 row over `classes` with a 1 for each of `names`."""
    present = set(names)
    return [int(c in present) for c in classes]


def strata(labels) -> list[int]:
    """One integer per sample to stratify on: the class index, or for multi-hot rows 1 when
    any finding is present (so both sides get samples with and without findings)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    return [int(any(y)) if isinstance(y, list | tuple) else int(y) for y in labels]


def is_multilabel(labels: torch.Tensor) -> bool:
    """Whether a label tensor holds multi-hot rows ([N, L]) rather than class indices ([N])."""
    return labels.dim() == 2
