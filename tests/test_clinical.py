"""Clinical metrics against scikit-learn, bootstrap intervals, calibration and its figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from resnet.engine.clinical import (
    apply_temperature,
    auroc,
    average_precision,
    bootstrap_weights,
    clinical_report,
    expected_calibration_error,
    fit_temperature,
    operating_point,
)
from resnet.errors import ResNetError


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def binary_data(n=400, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y)))
    return (np.round(p, 1) if ties else p), y


def multiclass_data(n=600, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.normal(size=(n, c))
    z[np.arange(n), y] += 1.0
    return softmax(z), y


def multilabel_data(n=500, labels=3, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < [0.2, 0.4, 0.1][:labels]).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=(n, labels)) + 1.5 * y - 1)))
    return p, y


@pytest.mark.parametrize("ties", [False, True])
def test_binary_auroc_and_ap_equal_sklearn(ties):
    p, y = binary_data(ties=ties)
    assert auroc(p, y) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert average_precision(p, y) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    two = np.stack([1 - p, p], 1)  # (n, 2) softmax outputs: the positive column is scored
    assert auroc(torch.tensor(two), torch.tensor(y)) == pytest.approx(
        roc_auc_score(y, p), abs=1e-12
    )


def test_multiclass_one_vs_rest_equal_sklearn():
    p, y = multiclass_data()
    onehot = np.eye(p.shape[1])[y]
    assert auroc(p, y) == pytest.approx(roc_auc_score(y, p, multi_class="ovr"), abs=1e-12)
    per = auroc(p, y, average=None)
    np.testing.assert_allclose(per, roc_auc_score(onehot, p, average=None), rtol=0, atol=1e-12)
    ap = average_precision(p, y, average=None)
    np.testing.assert_allclose(ap, average_precision_score(onehot, p, average=None), atol=1e-12)
    assert average_precision(p, y) == pytest.approx(
        average_precision_score(onehot, p, average="macro"), abs=1e-12
    )


def test_multilabel_per_label_equal_sklearn():
    p, y = multilabel_data()
    np.testing.assert_allclose(
        auroc(p, y, average=None), roc_auc_score(y, p, average=None), atol=1e-12
    )
    np.testing.assert_allclose(
        average_precision(p, y, average=None), average_precision_score(y, p, average=None),
        atol=1e-12,
    )  # fmt: skip


def test_sensitivity_specificity_equal_a_hand_count():
    p, y = binary_data(ties=True)
    (point,) = operating_point(p, y, threshold=0.4)
    pred = p >= 0.4
    tp, fn = np.sum(pred & (y == 1)), np.sum(~pred & (y == 1))
    tn, fp = np.sum(~pred & (y == 0)), np.sum(pred & (y == 0))
    assert point["sensitivity"] == tp / (tp + fn)
    assert point["specificity"] == tn / (tn + fp)
    assert point["threshold"] == 0.4


@pytest.mark.parametrize("ties", [False, True])
def test_youden_point_is_the_argmax_of_tpr_minus_fpr(ties):
    p, y = binary_data(ties=ties, seed=3)
    fpr, tpr, thresholds = roc_curve(y, p)
    best = np.argmax(tpr - fpr)
    (point,) = operating_point(p, y, "youden")
    assert point["threshold"] == thresholds[best]
    assert point["sensitivity"] == pytest.approx(tpr[best], abs=1e-12)
    assert point["specificity"] == pytest.approx(1 - fpr[best], abs=1e-12)


def test_multiclass_operating_points_per_class():
    p, y = multiclass_data()
    points = operating_point(p, y, "youden")
    for c, point in enumerate(points):
        fpr, tpr, thr = roc_curve(y == c, p[:, c])
        assert point["threshold"] == thr[np.argmax(tpr - fpr)]


def test_bootstrap_ci_contains_point_narrows_with_data_and_is_seeded():
    small, large = binary_data(n=200, seed=1), binary_data(n=5000, seed=1)
    a = clinical_report(*small, ["neg", "pos"], n_boot=500, seed=7)["classes"]["pos"]
    b = clinical_report(*large, ["neg", "pos"], n_boot=500, seed=7)["classes"]["pos"]
    for key in ("auroc", "average_precision", "sensitivity", "specificity"):
        for m in (a, b):
            lo, hi = m[key]["ci95"]
            assert lo <= m[key]["value"] <= hi
        assert np.diff(b[key]["ci95"])[0] < np.diff(a[key]["ci95"])[0]
    again = clinical_report(*small, ["neg", "pos"], n_boot=500, seed=7)["classes"]["pos"]
    assert again == a
    other = clinical_report(*small, ["neg", "pos"], n_boot=500, seed=8)["classes"]["pos"]
    assert other["auroc"]["ci95"] != a["auroc"]["ci95"]


def test_bootstrap_resamples_keep_every_class_and_size():
    strata = np.array([0] * 50 + [1] * 3 + [2] * 7)
    rows = np.concatenate(list(bootstrap_weights(strata, 300, seed=0)))
    assert rows.shape == (300, 60)
    for s, size in ((0, 50), (1, 3), (2, 7)):
        np.testing.assert_array_equal(rows[:, strata == s].sum(1), size)


def test_report_is_json_with_macro_and_undefined_classes():
    p, y = multiclass_data(c=4)
    y[y == 3] = 0  # class 3 has no positives in these data
    report = clinical_report(p, y, ["a", "b", "c", "d"], n_boot=200, threshold=0.3)
    json.dumps(report)
    assert report["classes"]["d"]["auroc"] is None
    defined = [report["classes"][k]["auroc"]["value"] for k in "abc"]
    assert report["macro"]["auroc"]["value"] == pytest.approx(np.mean(defined))
    lo, hi = report["macro"]["auroc"]["ci95"]
    assert lo <= report["macro"]["auroc"]["value"] <= hi
    assert report["classes"]["a"]["threshold"] == 0.3
    ml = clinical_report(*multilabel_data(), ["effusion", "nodule", "mass"], n_boot=100)
    assert ml["task"] == "multilabel" and set(ml["classes"]) == {"effusion", "nodule", "mass"}


def test_ece_near_zero_when_calibrated_and_positive_when_overconfident():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(int)
    assert expected_calibration_error(p, y) < 0.01
    sharp = 1 / (1 + np.exp(-4 * np.log(p / (1 - p))))  # same ranking, overconfident
    assert expected_calibration_error(sharp, y) > 0.1
    z = rng.normal(size=(50_000, 5)) * 2
    labels = np.array([rng.choice(5, p=row) for row in softmax(z[:2000])])
    assert expected_calibration_error(softmax(z[:2000]), labels) < 0.05
    assert expected_calibration_error(softmax(3 * z[:2000]), labels) > 0.1


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(20_000, 5)) * 1.5
    y = (softmax(true).cumsum(1) < rng.random((len(true), 1))).sum(1)
    fit = fit_temperature(true * 3, y)
    assert fit.temperature == pytest.approx(3, rel=0.1)
    assert fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before
    json.dumps(fit.to_dict())
    binary = rng.normal(size=20_000) * 2
    yb = (rng.random(binary.size) < apply_temperature(binary, 1.0)).astype(int)
    assert fit_temperature(torch.tensor(binary / 2), yb).temperature == pytest.approx(0.5, rel=0.1)
    ml = rng.normal(size=(8000, 3)) * 2
    yml = (rng.random(ml.shape) < apply_temperature(ml, 1.0, multilabel=True)).astype(int)
    assert fit_temperature(ml * 2, yml).temperature == pytest.approx(2, rel=0.1)


def test_figures_written_and_not_empty(tmp_path):
    p, y = multiclass_data()
    report = clinical_report(p, y, list("wxyz"), out_dir=tmp_path / "run", n_boot=50)
    for name in report["files"].values():
        png = (tmp_path / "run" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert not list((tmp_path / "run").glob(".*.tmp"))  # atomic writes left nothing behind


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: auroc([0.1, 0.9, 0.3], [0, 1]), "do not match"),
        (lambda: auroc([0.1, 0.9, 0.3], [1, 1, 1]), "positive and negative"),
        (lambda: auroc([0.1, 1.4, 0.3], [0, 1, 0]), r"in \[0, 1\]"),
        (lambda: auroc([-2.0, 3.0, 0.3], [0, 1, 0]), "not logits"),
        (lambda: auroc([0.1, float("nan"), 0.3], [0, 1, 0]), r"in \[0, 1\]"),
        (lambda: auroc([0.1, 0.9, 0.3], [0, 2, 0]), "class indices"),
        (lambda: auroc([[0.1, 0.9]], [[0, 2]]), "0/1"),
        (lambda: operating_point([0.1, 0.9], [0, 1], "best"), "youden"),
        (lambda: clinical_report([0.1, 0.9], [0, 1], ["a", "b", "c"]), "3 class names"),
        (lambda: fit_temperature([[1.0, float("inf")]], [0]), "finite"),
    ],
)
def test_bad_input_is_one_line(call, match):
    with pytest.raises(ResNetError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_per_scan_pools_slice_probabilities():
    from resnet.engine.clinical_summary import per_scan

    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0]])
    labels = torch.tensor([1, 1, 0])
    owners = torch.tensor([0, 0, 1])  # slices 0 and 1 are one scan
    pooled, pooled_labels = per_scan(logits, labels, owners, multilabel=False)
    expected = torch.softmax(logits, 1)[:2].mean(0)
    assert torch.allclose(torch.softmax(pooled, 1)[0], expected, atol=1e-6)
    assert pooled_labels.tolist() == [1, 0]
    ml, _ = per_scan(logits, torch.tensor([[1, 0], [1, 0], [0, 1]]), owners, multilabel=True)
    assert torch.allclose(torch.sigmoid(ml[0]), torch.sigmoid(logits[:2]).mean(0), atol=1e-6)
    assert per_scan(logits, labels, None, multilabel=False)[0] is logits


def test_sensitivity_interval_is_wilson_and_never_collapses():
    from resnet.engine.clinical import wilson_interval

    assert wilson_interval(7, 10) == pytest.approx([0.3968, 0.8922], abs=1e-4)  # textbook
    lo, hi = wilson_interval(14, 14)
    assert lo == pytest.approx(0.7847, abs=1e-4) and hi == 1.0
    y = np.array([1] * 14 + [0] * 6)
    p = np.linspace(0.9, 0.1, 20)  # every positive above every negative
    sens = clinical_report(p, y, ["neg", "pos"], threshold=0.3, n_boot=50)["classes"]["pos"]
    assert sens["sensitivity"]["value"] == 1.0 and sens["sensitivity"]["ci95"][0] < 0.8
