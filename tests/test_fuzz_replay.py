"""Replays the fuzz corpora through their harnesses, and property tests of the data splits.

Every file under `tests/fuzz/corpus/<harness>/` (seeds and inputs that once crashed a parser)
must give a result or a one-line `ResNetError`, within a per-input timeout. `make fuzz` finds new
inputs; this replay keeps the fixed ones fixed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resnet.data.grouping import group_split
from resnet.data.splits import validation_split
from resnet.data.transforms import BatchAugment
from resnet.errors import ResNetError

FUZZ = Path(__file__).parent / "fuzz"
sys.path.insert(0, str(FUZZ))
from harnesses import HARNESSES  # noqa: E402

CASES = sorted(
    (harness, path)
    for harness in HARNESSES
    for path in (FUZZ / "corpus" / harness).iterdir()
    if path.is_file()
)


def test_every_harness_has_seeds():
    seeded = {harness for harness, _ in CASES}
    assert seeded == set(HARNESSES)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("harness", "path"), CASES, ids=[f"{h}/{p.name}" for h, p in CASES])
def test_corpus_replays(harness, path):
    HARNESSES[harness](path.read_bytes())


PROPERTY = settings(max_examples=50, deadline=None, derandomize=True)


@PROPERTY
@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=200),
    fraction=st.floats(0.05, 0.95),
)
def test_validation_split_is_a_deterministic_partition(labels, fraction):
    try:
        train, val = validation_split(labels, fraction)
    except ResNetError:
        return  # a refusal (too few examples) is allowed; anything else is not
    assert sorted(train + val) == list(range(len(labels)))
    assert validation_split(torch.tensor(labels), fraction) == (train, val)


@PROPERTY
@given(
    rows=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9)), min_size=2, max_size=120),
    fraction=st.floats(0.1, 0.9),
    seed=st.integers(0, 1000),
)
def test_group_split_never_puts_a_group_on_both_sides(rows, fraction, seed):
    labels = [label for label, _ in rows]
    groups = [f"patient-{g}" for _, g in rows]
    try:
        train, val = group_split(labels, groups, fraction, seed)
    except ResNetError:
        return
    assert sorted(train + val) == list(range(len(rows)))
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert group_split(labels, groups, fraction, seed) == (train, val)


@PROPERTY
@given(
    preset=st.sampled_from(["flip", "light", "paper"]),
    labels=st.lists(st.integers(1, 9), min_size=1, max_size=8),
    size=st.sampled_from([8, 16, 32]),
    seed=st.integers(0, 1000),
)
def test_batch_augment_transforms_images_only(preset, labels, size, seed):
    """Each image is filled with its label: after a crop/flip every pixel still holds that label
    (or the zero padding), so images never move between samples and labels stay untouched."""
    y = torch.tensor(labels)
    x = y.float()[:, None, None, None].expand(-1, 2, size, size).contiguous()
    aug = BatchAugment(preset, size)
    params = aug.sample(len(labels), torch.Generator().manual_seed(seed), size, size)
    out = aug.apply(x, params)
    assert out.shape == x.shape
    assert torch.equal(y, torch.tensor(labels))
    for img, label in zip(out, labels, strict=True):
        assert set(img.unique().tolist()) <= {0.0, float(label)}
        assert (img == label).any()
