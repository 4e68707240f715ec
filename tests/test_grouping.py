"""Patient-level splits: no patient on both sides, folds cover every sample once, ids hashed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from resnet.data.grouping import (
    group_kfold,
    group_labels,
    group_split,
    hash_group,
    split_record,
)
from resnet.errors import ResNetError


@st.composite
def cohorts(draw, min_groups: int = 2):
    """Random cohorts: patients with 1-6 images each, labels drawn per image, both classes."""
    n_groups = draw(st.integers(min_groups, 30))
    sizes = draw(st.lists(st.integers(1, 6), min_size=n_groups, max_size=n_groups))
    n_classes = draw(st.integers(2, 4))
    labels, groups = [], []
    for g, size in enumerate(sizes):
        pid = draw(st.sampled_from([f"P{g:04d}", g, f"patient-{g}"]))
        labels += draw(st.lists(st.integers(0, n_classes - 1), min_size=size, max_size=size))
        groups += [pid] * size
    if len(set(labels)) < 2:  # make sure two classes are there
        labels[0] = 1 - labels[0] if labels[0] in (0, 1) else 0
        labels[-1] = 1 if labels[0] == 0 else 0
    return np.array(labels), groups


def sides(groups, idx):
    return {str(groups[i]) for i in idx}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts(min_groups=3), st.floats(0.2, 0.5), st.integers(0, 10_000))
def test_group_split_never_leaks(cohort, fraction, seed):
    labels, groups = cohort
    try:
        train, val = group_split(labels, groups, fraction, seed)
    except ResNetError as e:  # every class has one group: nothing can be held out
        assume("one side empty" not in str(e))
        raise
    assert sorted(train + val) == list(range(len(labels)))
    assert train and val
    assert not sides(groups, train) & sides(groups, val)
    assert group_split(labels, groups, fraction, seed) == (train, val)  # reproducible


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts(min_groups=5), st.integers(2, 5), st.integers(0, 10_000))
def test_group_kfold_covers_every_sample_once_without_leaks(cohort, k, seed):
    labels, groups = cohort
    folds = group_kfold(labels, groups, k, seed)
    assert len(folds) == k
    counts = np.zeros(len(labels), dtype=int)
    for train, val in folds:
        counts[val] += 1
        assert sorted(train + val) == list(range(len(labels)))
        assert not sides(groups, train) & sides(groups, val)
    assert (counts == 1).all()


def test_class_proportions_roughly_kept():
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for p in range(200):  # 30 % positive patients, 1-8 images each
        n = int(rng.integers(1, 9))
        groups += [f"P{p}"] * n
        labels += [int(p % 10 < 3)] * n
    labels = np.array(labels)
    train, val = group_split(labels, groups, 0.25, seed=1)
    assert abs(labels[val].mean() - labels.mean()) < 0.08
    assert abs(len(sides(groups, val)) / 200 - 0.25) < 0.02  # a fraction of patients
    for _, val in group_kfold(labels, groups, 5, seed=1):
        assert abs(labels[val].mean() - labels.mean()) < 0.05


def test_group_labels_any_positive_and_majority():
    assert group_labels([0, 0, 1, 0, 0], ["a", "a", "a", "b", "b"]) == {"a": 1, "b": 0}
    # three classes: majority per group; a tie goes to the rarer class overall (2 here)
    got = group_labels([0, 0, 1, 2, 0, 2, 1, 1], ["a", "a", "a", "b", "b", "c", "c", "c"])
    assert got == {"a": 0, "b": 2, "c": 1}


def test_multilabel_rows_stratify_on_any_finding():
    labels = np.array([[0, 0], [1, 0], [0, 0], [0, 1], [0, 0], [0, 0]] * 5)
    groups = [f"P{i // 2}" for i in range(len(labels))]
    train, val = group_split(labels, groups, 0.3, seed=0)
    assert not sides(groups, train) & sides(groups, val)


def test_hashes_are_stable_salted_and_not_the_id():
    h = hash_group("PAT-0001", "s3cret")
    assert h == hash_group("PAT-0001", "s3cret") and len(h) == 16
    assert "PAT-0001" not in h and h != hash_group("PAT-0001", "other")
    assert h != hash_group("PAT-0002", "s3cret")
    # pinned: the same id and salt give the same hash in every release
    assert hash_group("PAT-0001", "") == "32e130c1b612ded6"


def test_split_record_holds_hashes_only():
    groups = ["Anne Smith"] * 3 + ["12345"] * 2 + ["X9"] * 4
    labels = [0, 0, 0, 1, 1, 1, 0, 1, 0]
    train, val = group_split(labels, groups, 0.4, seed=0)
    rec = split_record(groups, train, val, salt="k")
    text = json.dumps(rec)
    assert "Anne" not in text and "12345" not in text and "X9" not in text
    assert rec["n_train_samples"] + rec["n_val_samples"] == 9
    assert set(rec["train"]).isdisjoint(rec["val"])
    assert hash_group("X9", "k") in rec["train"] + rec["val"]
    with pytest.raises(ResNetError, match="both sides"):
        split_record(groups, [0, 1], [2, 3])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: group_kfold([0, 1, 0, 1], ["a", "a", "b", "c"], 5), "3 groups cannot fill 5"),
        (lambda: group_kfold([0, 1, 0, 1], ["a", "b", "c", "d"], 1), "2 or more"),
        (lambda: group_kfold([1, 1, 1, 1], ["a", "b", "c", "d"], 2), "one class"),
        (lambda: group_split([0, 0, 0], ["a", "b", "c"], 0.3), "one class"),
        (lambda: group_split([0, 1], ["a"], 0.3), "2 labels but 1 group"),
        (lambda: group_split([0, 1, 0], ["a", "a", "a"], 0.3), "at least two"),
        (lambda: group_split([0, 1, 0, 1], ["a", "b", "c", "d"], 1.5), "between 0 and 1"),
    ],
)
def test_bad_input_is_one_line(call, match):
    with pytest.raises(ResNetError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
