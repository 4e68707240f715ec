"""Patient-level splits: hold out whole groups (patients), stratified, and record them hashed.

One patient often gives many images (slices, series, follow-up scans). A split by image puts
the same patient on both sides and inflates every validation number, so these functions split
*groups*: no group ever has samples on both sides. The run folder records which groups went
where through `split_record`, which stores salted SHA-256 hashes, never the raw patient IDs.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np

from ..errors import ResNetError
from .splits import stratified_split

HASH_CHARS = 16  # 64 bits of SHA-256: no collision in any cohort, short enough to read
SALT_ENV = "RESNET_GROUP_SALT"  # a secret salt for the hashes, kept out of every run folder


def group_salt() -> str:
    """The salt of group hashes: $RESNET_GROUP_SALT ("" when unset)."""
    return os.environ.get(SALT_ENV, "")


def _sample_labels(labels) -> np.ndarray:
    """One integer label per sample; a multi-label row (2-D) counts as 1 when any label is on."""
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if y.ndim == 2:
        y = (y > 0).any(axis=1)
    if y.ndim != 1:
        raise ResNetError(f"labels must be 1-D (or 2-D multi-label), got shape {y.shape}")
    return y.astype(np.int64)


def _checked(labels, groups) -> tuple[np.ndarray, list[str]]:
    """Labels as integers and groups as strings, after the checks every split needs."""
    y = _sample_labels(labels)
    g = [str(v) for v in groups]
    if len(g) != len(y):
        raise ResNetError(f"{len(y)} labels but {len(g)} group ids: give one group per sample")
    if len(np.unique(y)) < 2:
        raise ResNetError("all samples have one class: a stratified split needs at least two")
    return y, g


def group_labels(labels, groups: Sequence[Hashable]) -> dict[str, int]:
    """The label each group is stratified on.

    Binary labels (0/1): 1 when any of the group's samples is positive (a patient with one
    positive image is a positive patient). More classes: the group's most frequent label, ties
    going to the class rarer in the whole data set.
    """
    y, g = _checked(labels, groups)
    overall = Counter(y.tolist())
    per_group: dict[str, Counter] = {}
    for gid, label in zip(g, y.tolist(), strict=True):
        per_group.setdefault(gid, Counter())[label] += 1
    if set(overall) <= {0, 1}:
        return {gid: int(1 in c) for gid, c in per_group.items()}
    return {gid: max(c, key=lambda k, c=c: (c[k], -overall[k], -k)) for gid, c in per_group.items()}


def group_split(
    labels, groups: Sequence[Hashable], fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Sample indices (train, val) with `fraction` of the groups of every class held out.

    Groups are stratified on `group_labels` (at least one group per class is held out when the
    class has two groups or more), so the fraction is one of groups, not of samples.

    Args:
        labels: one class index per sample (1-D), or a 0/1 matrix for multi-label data.
        groups: one group id (patient) per sample.
        fraction: share of the groups held out, in (0, 1).
        seed: seeds the draw.

    Raises:
        ResNetError: mismatched lengths, one class only, fewer than two groups, or a fraction
            that leaves one side empty.
    """
    y, g = _checked(labels, groups)
    by_group = group_labels(y, g)
    if len(by_group) < 2:
        raise ResNetError(f"{len(by_group)} group(s): a group split needs at least two")
    names = sorted(by_group)
    train_g, val_g = stratified_split([by_group[n] for n in names], fraction, seed)
    if not train_g or not val_g:
        raise ResNetError(
            f"fraction {fraction} of {len(names)} groups leaves one side empty: "
            "change the fraction or add groups"
        )
    held = {names[i] for i in val_g}
    val = [i for i, gid in enumerate(g) if gid in held]
    train = [i for i, gid in enumerate(g) if gid not in held]
    return train, val


def group_kfold(
    labels, groups: Sequence[Hashable], k: int, seed: int = 0
) -> list[tuple[list[int], list[int]]]:
    """Stratified group k-fold: `k` pairs of sample indices (train, val), groups never shared.

    Every sample is in exactly one validation fold. scikit-learn's `StratifiedGroupKFold`
    (shuffled, seeded) assigns the groups so that each fold's class balance is as close to the
    whole set's as groups allow; a class with fewer groups than `k` is missing from some folds.

    Args:
        labels: one class index per sample (1-D), or a 0/1 matrix for multi-label data.
        groups: one group id (patient) per sample.
        k: the number of folds, 2 or more.
        seed: seeds the shuffle of the groups.

    Raises:
        ResNetError: mismatched lengths, one class only, k < 2 or fewer groups than folds.
    """
    y, g = _checked(labels, groups)
    n_groups = len(set(g))
    if k < 2:
        raise ResNetError(f"--folds must be 2 or more, got {k}")
    if n_groups < k:
        raise ResNetError(
            f"{n_groups} groups cannot fill {k} folds: use --folds {n_groups} or less"
        )
    from sklearn.model_selection import StratifiedGroupKFold  # heavy: loaded for k-fold only

    _, codes = np.unique(np.asarray(g, dtype=object), return_inverse=True)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has only N members": documented
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds = [
            (sorted(tr.tolist()), sorted(va.tolist()))
            for tr, va in splitter.split(np.zeros(len(y)), y, codes)
        ]
    if any(not va for _, va in folds):
        raise ResNetError(f"{n_groups} groups left a fold empty: use fewer folds")
    return folds


def hash_group(value: Hashable, salt: str) -> str:
    """A short salted SHA-256 of a group id: stable across runs, never the id itself.

    With a secret salt kept beside the data, nobody can recompute the hash of a guessed id;
    an empty salt still keeps ids out of the run folder but lets short ids be guessed back.
    """
    digest = hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()
    return digest[:HASH_CHARS]


def split_record(
    groups: Sequence[Hashable], train_idx: Sequence[int], val_idx: Sequence[int], *, salt: str = ""
) -> dict:
    """Which groups went where, as JSON-able data holding hashes only (see `hash_group`).

    Args:
        groups: one group id per sample.
        train_idx: sample indices on the training side.
        val_idx: sample indices on the validation side.
        salt: mixed into every hash; the same salt gives the same hashes in every run.

    Raises:
        ResNetError: a group on both sides (leakage).
    """
    g = [str(v) for v in groups]
    train = {g[i] for i in train_idx}
    val = {g[i] for i in val_idx}
    if train & val:
        raise ResNetError(f"{len(train & val)} group(s) on both sides of the split: leakage")
    return {
        "hash": f"sha256[:{HASH_CHARS}] of salt + NUL + group id",
        "salted": bool(salt),
        "n_train_samples": len(train_idx),
        "n_val_samples": len(val_idx),
        "train": sorted(hash_group(v, salt) for v in train),
        "val": sorted(hash_group(v, salt) for v in val),
    }


def held_out(
    labels,
    groups: Sequence[Hashable],
    *,
    val_split: float,
    folds: int = 0,
    fold: int | None = None,
    group_by: str | None = None,
    seed: int = 0,
) -> tuple[list[int], list[int], dict]:
    """(train, val, record): a training run's validation side by group, and who went where.

    With `folds` K >= 2 the `fold`-th (0-based) of the stratified group K-fold is held out,
    else `val_split` of the groups (`group_split`), else nothing. The record is `split_record`
    (hashes salted with $RESNET_GROUP_SALT) with the grouping and fold added.
    """
    if folds >= 2:
        train, val = group_kfold(labels, groups, folds, seed=seed)[fold or 0]
    elif val_split > 0:
        train, val = group_split(labels, groups, val_split, seed=seed)
    else:
        train, val = list(range(len(groups))), []
    record = split_record(groups, train, val, salt=group_salt())
    record |= {
        "group_by": group_by or "sample",
        "folds": folds,
        "fold": (fold or 0) + 1 if folds >= 2 else None,
        "n_train_groups": len(record["train"]),
        "n_val_groups": len(record["val"]),
    }
    return train, val, record
