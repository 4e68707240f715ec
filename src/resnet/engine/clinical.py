"""Clinical metrics: AUROC, AP, sensitivity/specificity with bootstrap CIs, calibration, plots.

Predictions come as probabilities with their labels (tensors or arrays), in three shapes:

- binary: `probs` (n,) for the positive class, or (n, 2) softmax outputs; `labels` (n,) of 0/1;
- multi-class: `probs` (n, C) softmax outputs, `labels` (n,) class indices; every class is
  scored one-vs-rest;
- multi-label: `probs` (n, L) sigmoid outputs, `labels` (n, L) of 0/1; every label on its own.

All metrics are numpy, computed once on the sorted scores; the bootstrap reuses that order with
resampling *weights*, B resamples at a time, so 1000 resamples of thousands of predictions
take well under a second. Figures go through `engine.report` (atomic PNG writes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ResNetError
from .report import pyplot, save_figure

BOOTSTRAP_SEED = 0
ECE_BINS = 15
Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
_CHUNK_ELEMENTS = 2_000_000  # bootstrap weights held at once (16 MB of float64)


# ---------------------------------------------------------------------------------------------
# Inputs


def _array(x, name: str) -> np.ndarray:
    """A float64 numpy copy of a tensor or array-like."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ResNetError(f"{name} must be numbers: {e}") from None


def prepare(probs, labels) -> tuple[np.ndarray, np.ndarray, str]:
    """Scores and 0/1 targets as (n, K) matrices, one column per scored class, and the task.

    Binary data gives one column (the positive class), multi-class data one per class
    (one-vs-rest), multi-label data one per label.

    Raises:
        ResNetError: lengths or shapes that do not match, values that are not probabilities,
            labels that are not class indices or 0/1.
    """
    p, y = _array(probs, "probabilities"), _array(labels, "labels")
    if p.ndim not in (1, 2) or y.ndim not in (1, 2) or len(p) != len(y):
        raise ResNetError(
            f"probabilities {p.shape} and labels {y.shape} do not match: one row per sample"
        )
    if len(y) == 0:
        raise ResNetError("no predictions given")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ResNetError(
            f"probabilities must lie in [0, 1], got [{np.nanmin(p):.4g}, {np.nanmax(p):.4g}]: "
            "pass softmax or sigmoid outputs, not logits"
        )
    if y.ndim == 2:
        if p.shape != y.shape or not np.isin(y, (0, 1)).all():
            raise ResNetError(f"multi-label labels must be 0/1 of shape {p.shape}, got {y.shape}")
        return p, y.astype(bool), "multilabel"
    if not np.isin(y, np.arange(max(2, p.shape[1] if p.ndim == 2 else 2))).all():
        raise ResNetError("labels must be class indices (0/1 for binary probabilities)")
    if p.ndim == 1:
        return p[:, None], (y == 1)[:, None], "binary"
    if p.shape[1] == 2:
        return p[:, 1:], (y == 1)[:, None], "binary"
    return p, y[:, None] == np.arange(p.shape[1]), "multiclass"


def _names(classes: Sequence[str] | None, task: str, k: int) -> list[str]:
    """The name of each scored column (binary: the positive class)."""
    if classes is None:
        return ["1"] if task == "binary" else [str(i) for i in range(k)]
    classes = [str(c) for c in classes]
    if task == "binary" and len(classes) in (1, 2):
        return classes[-1:]
    if len(classes) != k:
        raise ResNetError(f"{len(classes)} class names for {k} scored classes")
    return classes


# ---------------------------------------------------------------------------------------------
# One binary problem, ranked once


@dataclass(frozen=True)
class _Ranked:
    """One binary problem's samples in descending score order, tied scores grouped."""

    order: np.ndarray  # sample indices, highest score first
    positive: np.ndarray  # targets in that order
    starts: np.ndarray  # first position of each distinct score
    values: np.ndarray  # the distinct scores, descending

    @staticmethod
    def of(score: np.ndarray, positive: np.ndarray) -> _Ranked:
        """Sorts one column of scores with its targets."""
        order = np.argsort(-score, kind="stable")
        s = score[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        return _Ranked(order, positive[order], starts, s[starts])

    def defined(self) -> bool:
        """Whether both classes are present (AUROC and AP need both)."""
        n_pos = int(self.positive.sum())
        return 0 < n_pos < len(self.positive)

    def cumulative(self, w: np.ndarray | None):
        """(tp, fp, pos, neg) per distinct score, shape (B, K): cumulative and per threshold.

        Args:
            w: (B, n) sample weights (bootstrap counts) in the original order; None for the
                data as given.
        """
        ws = np.ones((1, len(self.order))) if w is None else w[:, self.order]
        pos, neg = ws * self.positive, ws * ~self.positive
        if len(self.starts) < len(self.order):  # tied scores: one threshold per distinct score
            pos = np.add.reduceat(pos, self.starts, axis=1)
            neg = np.add.reduceat(neg, self.starts, axis=1)
        return np.cumsum(pos, axis=1), np.cumsum(neg, axis=1), pos, neg

    def cut(self, threshold: float | str) -> int:
        """How many distinct scores are >= the threshold ("youden": max sens + spec - 1)."""
        if threshold == "youden":
            tp, fp, _, _ = self.cumulative(None)
            j = tp[0] / tp[0, -1] - fp[0] / fp[0, -1]
            return int(np.argmax(j)) + 1  # the first maximum: the highest such threshold
        return int(np.count_nonzero(self.values >= float(threshold)))

    def metrics(self, w: np.ndarray | None, cut: int) -> dict[str, np.ndarray]:
        """AUROC, AP, sensitivity and specificity, one value per row of weights."""
        tp, fp, pos, neg = self.cumulative(w)
        p, n = tp[:, -1], fp[:, -1]
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        zero = np.zeros_like(p)
        return {
            # Mann-Whitney: positive-negative pairs ranked right, ties counting half
            "auroc": (pos * (n[:, None] - fp + 0.5 * neg)).sum(1) / (p * n),
            "average_precision": (pos * precision).sum(1) / p,
            "sensitivity": tp[:, cut - 1] / p if cut else zero,
            "specificity": 1 - fp[:, cut - 1] / n if cut else zero + 1,
        }


def _threshold(threshold: float | str) -> float | str:
    """ "youden" or a probability; anything else is a one-line error."""
    if isinstance(threshold, str) and threshold.lower() == "youden":
        return "youden"
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = math.nan
    if not 0.0 <= t <= 1.0:
        raise ResNetError(
            f"threshold must be a probability in [0, 1] or 'youden', got {threshold!r}"
        )
    return t


def _ranked(probs, labels) -> tuple[list[_Ranked], str]:
    scores, targets, task = prepare(probs, labels)
    return [_Ranked.of(scores[:, k], targets[:, k]) for k in range(scores.shape[1])], task


def _point(probs, labels, metric: str, average: str | None):
    ranked, task = _ranked(probs, labels)
    for k, r in enumerate(ranked):
        if not r.defined():
            which = "" if task == "binary" else f" for class {k}"
            raise ResNetError(f"{metric} needs positive and negative examples{which}: one only")
    values = [float(r.metrics(None, 0)[metric][0]) for r in ranked]
    if task == "binary":
        return values[0]
    if average == "macro":
        return float(np.mean(values))
    if average is None:
        return values
    raise ResNetError(f"average must be 'macro' or None, got {average!r}")


def auroc(probs, labels, *, average: str | None = "macro") -> float | list[float]:
    """Area under the ROC curve: binary, one-vs-rest per class, or per label.

    Equals scikit-learn's `roc_auc_score` (`multi_class="ovr"` for several classes).

    Args:
        probs: probabilities (see the module docstring for the shapes).
        labels: class indices, or 0/1 per label.
        average: "macro" (the mean over classes) or None (one value per class); binary data
            gives one float either way.
    """
    return _point(probs, labels, "auroc", average)


def average_precision(probs, labels, *, average: str | None = "macro") -> float | list[float]:
    """Average precision (area under the precision-recall steps), as scikit-learn computes it.

    Args:
        probs: probabilities (see the module docstring for the shapes).
        labels: class indices, or 0/1 per label.
        average: "macro" or None, as in `auroc`.
    """
    return _point(probs, labels, "average_precision", average)


def operating_point(probs, labels, threshold: float | str = "youden") -> list[dict]:
    """Sensitivity and specificity of every scored class at a threshold (prob >= t: positive).

    "youden" picks the threshold maximising sensitivity + specificity - 1 *on the data given*:
    optimistic there, so pick it on the validation split and pass that number for test data.

    Returns:
        One dict per scored class: threshold, sensitivity, specificity.
    """
    threshold = _threshold(threshold)
    ranked, _ = _ranked(probs, labels)
    out = []
    for r in ranked:
        if not r.defined():
            raise ResNetError("sensitivity and specificity need positive and negative examples")
        cut = r.cut(threshold)
        m = r.metrics(None, cut)
        t = float(r.values[cut - 1]) if threshold == "youden" else float(threshold)
        out.append(
            {
                "threshold": t,
                "sensitivity": float(m["sensitivity"][0]),
                "specificity": float(m["specificity"][0]),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Bootstrap


def bootstrap_weights(strata: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Stratified bootstrap resamples as count matrices (B_chunk, n), a chunk at a time.

    Every stratum (a class, or a multi-label pattern) is resampled with replacement to its
    own size, so each resample keeps every class present. Seeded: the same seed, data size
    and `n_boot` give the same resamples.
    """
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    chunk = max(1, _CHUNK_ELEMENTS // len(strata))
    for start in range(0, n_boot, chunk):
        c = min(chunk, n_boot - start)
        w = np.zeros((c, len(strata)))
        for idx in members:
            m = len(idx)
            draws = rng.integers(0, m, size=(c, m)) + (np.arange(c) * m)[:, None]
            w[:, idx] = np.bincount(draws.ravel(), minlength=c * m).reshape(c, m)
        yield w


def _percentile_ci(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def _with_ci(point: float, samples: list[np.ndarray] | None) -> dict:
    ci = None if samples is None else _percentile_ci(np.concatenate(samples))
    return {"value": point, "ci95": ci}


# ---------------------------------------------------------------------------------------------
# Calibration


def reliability_table(
    confidence: np.ndarray, outcome: np.ndarray, bins: int = ECE_BINS
) -> dict[str, list]:
    """Equal-width bins over [0, 1]: count, mean confidence and observed frequency of each.

    Args:
        confidence: predicted probability of the event, per sample.
        outcome: 1 where the event happened (the prediction was right, or the label is on).
        bins: the number of bins; a probability of exactly 1 falls in the last one.
    """
    confidence, outcome = np.asarray(confidence, float), np.asarray(outcome, float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    safe = np.maximum(count, 1)
    return {
        "edges": np.linspace(0, 1, bins + 1).tolist(),
        "count": count.tolist(),
        "confidence": (np.bincount(which, confidence, bins) / safe).tolist(),
        "frequency": (np.bincount(which, outcome, bins) / safe).tolist(),
    }


def _ece(table: dict) -> float:
    count = np.asarray(table["count"], float)
    gap = np.abs(np.asarray(table["confidence"]) - np.asarray(table["frequency"]))
    return float((count * gap).sum() / count.sum())


def _calibration_pairs(probs, labels) -> list[tuple[np.ndarray, np.ndarray]]:
    """(confidence, outcome) pairs: the top class for multi-class, every column otherwise."""
    p, y = _array(probs, "probabilities"), _array(labels, "labels")
    scores, targets, task = prepare(p, y)
    if task == "multiclass":
        return [(p.max(1), p.argmax(1) == y)]
    return [(scores[:, k], targets[:, k]) for k in range(scores.shape[1])]


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the count-weighted mean |confidence - frequency| over bins.

    Multi-class: top-label confidence against accuracy (Guo et al. 2017). Binary: the positive
    class's probability against the positive rate. Multi-label: the mean over labels of that.
    """
    return float(
        np.mean([_ece(reliability_table(c, o, bins)) for c, o in _calibration_pairs(probs, labels)])
    )


def _nll(logits: np.ndarray, y: np.ndarray, t: float, softmax: bool) -> float:
    z = logits / t
    if softmax:
        zmax = z.max(1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(1))
        return float(np.mean(lse - z[np.arange(len(y)), y.astype(int)]))
    return float(np.mean(np.logaddexp(0, z) - y * z))


def apply_temperature(logits, temperature: float, *, multilabel: bool = False) -> np.ndarray:
    """Probabilities from logits divided by a temperature: softmax for (n, C) logits, sigmoid for
    (n,) logits or multi-label ones."""
    z = _array(logits, "logits") / temperature
    if z.ndim == 2 and not multilabel:
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
    return 0.5 * (1 + np.tanh(z / 2))  # the sigmoid, without overflow for large |z|


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature with the validation NLL and ECE before (T = 1) and after."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def to_dict(self) -> dict:
        """Plain JSON data."""
        return asdict(self)


def fit_temperature(
    logits, labels, *, bounds: tuple[float, float] = (0.05, 20.0)
) -> TemperatureFit:
    """Temperature scaling (Guo et al. 2017): one T minimising the NLL of logits / T.

    Fit it on the validation split's logits, never on test data. The NLL is convex in 1/T, so a
    golden-section search on log T within `bounds` finds the minimum (to 1e-6 relative).

    Args:
        logits: (n, C) softmax logits with class-index labels, (n,) binary logits with 0/1
            labels, or (n, L) multi-label logits with (n, L) 0/1 labels.
        labels: as above.
        bounds: the range searched for T.
    """
    z, y = _array(logits, "logits"), _array(labels, "labels")
    multilabel = y.ndim == 2
    if not np.isfinite(z).all():
        raise ResNetError("logits must be finite numbers")
    softmax = z.ndim == 2 and not multilabel
    prepare(apply_temperature(z, 1.0, multilabel=multilabel), y)  # shape and label checks
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(z, y, math.exp(a), softmax), _nll(z, y, math.exp(b), softmax)
    while hi - lo > 1e-6:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(z, y, math.exp(a), softmax)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(z, y, math.exp(b), softmax)
    t = math.exp((lo + hi) / 2)
    ece = [
        expected_calibration_error(apply_temperature(z, s, multilabel=multilabel), y)
        for s in (1.0, t)
    ]
    return TemperatureFit(t, _nll(z, y, 1.0, softmax), _nll(z, y, t, softmax), *ece)


# ---------------------------------------------------------------------------------------------
# Figures


def _curve_axes(title: str, xlabel: str, ylabel: str):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    return fig, ax


def plot_roc(probs, labels, path: str | Path, classes: Sequence[str] | None = None) -> Path:
    """ROC curves, one per scored class, with each one's AUROC in the legend (a PNG)."""
    ranked, task = _ranked(probs, labels)
    fig, ax = _curve_axes("ROC", "1 - specificity (false-positive rate)", "sensitivity")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    for name, r in zip(_names(classes, task, len(ranked)), ranked, strict=True):
        if r.defined():
            tp, fp, _, _ = r.cumulative(None)
            auc = r.metrics(None, 0)["auroc"][0]
            x, y = np.r_[0, fp[0] / fp[0, -1]], np.r_[0, tp[0] / tp[0, -1]]
            ax.plot(x, y, lw=1.2, label=f"{name} ({auc:.3f})")
    if len(ranked) <= 12:
        ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_pr(probs, labels, path: str | Path, classes: Sequence[str] | None = None) -> Path:
    """Precision-recall curves, one per scored class, with each one's AP in the legend (a PNG)."""
    ranked, task = _ranked(probs, labels)
    fig, ax = _curve_axes("precision-recall", "recall (sensitivity)", "precision")
    for name, r in zip(_names(classes, task, len(ranked)), ranked, strict=True):
        if r.defined():
            tp, fp, _, _ = r.cumulative(None)
            ap = r.metrics(None, 0)["average_precision"][0]
            ax.step(
                tp[0] / tp[0, -1],
                tp[0] / (tp[0] + fp[0]),
                where="post",
                lw=1.2,
                label=f"{name} ({ap:.3f})",
            )
    if len(ranked) <= 12:
        ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, path)


def plot_reliability(probs, labels, path: str | Path, bins: int = ECE_BINS) -> Path:
    """Reliability diagram: observed frequency against confidence per bin, with the ECE (a PNG).

    Pools the pairs of `expected_calibration_error` (every label for multi-label data).
    """
    pairs = _calibration_pairs(probs, labels)
    conf = np.concatenate([c for c, _ in pairs])
    table = reliability_table(conf, np.concatenate([o for _, o in pairs]), bins)
    fig, ax = _curve_axes(
        f"calibration (ECE {expected_calibration_error(probs, labels, bins):.3f})",
        "predicted probability",
        "observed frequency",
    )
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    mids = (np.asarray(table["edges"][:-1]) + np.asarray(table["edges"][1:])) / 2
    filled = np.asarray(table["count"]) > 0
    ax.bar(
        mids[filled],
        np.asarray(table["frequency"])[filled],
        width=1 / bins,
        alpha=0.6,
        edgecolor="k",
        label="observed",
    )
    ax.plot(
        np.asarray(table["confidence"])[filled],
        np.asarray(table["frequency"])[filled],
        "o-",
        ms=3,
        label="mean confidence",
    )
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# The report


def wilson_interval(k: int, n: int, z: float = Z95) -> list[float]:
    """The Wilson score interval of a proportion k / n (95 % by default): unlike a bootstrap
    it does not collapse to [1, 1] when every positive was found."""
    if n == 0:
        return [0.0, 1.0]
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _class_entry(r: _Ranked, cut: int, threshold: float, samples) -> dict:
    """One class's figures: AUROC and AP with bootstrap CIs, sensitivity and specificity (at
    the fixed threshold: binomial proportions) with Wilson intervals."""
    point = r.metrics(None, cut)
    pos, neg = int(r.positive.sum()), int((~r.positive).sum())
    entry = {"n_positive": pos, "n_negative": neg, "threshold": threshold}
    for key in ("auroc", "average_precision"):
        entry[key] = _with_ci(float(point[key][0]), None if samples is None else samples[key])
    for key, n in (("sensitivity", pos), ("specificity", neg)):
        value = float(point[key][0])
        ci = None if samples is None else wilson_interval(round(value * n), n)
        entry[key] = {"value": value, "ci95": ci}
    return entry


def _bootstrap_samples(ranked, cuts, strata, n_boot, seed) -> list[dict | None]:
    """B values of every metric of every defined class, from one set of joint resamples."""
    keys = ("auroc", "average_precision", "sensitivity", "specificity")
    out = [{k: [] for k in keys} if r.defined() else None for r in ranked]
    for w in bootstrap_weights(strata, n_boot, seed):
        for r, cut, acc in zip(ranked, cuts, out, strict=True):
            if acc is not None:
                for k, v in r.metrics(w, cut).items():
                    acc[k].append(v)
    return out


def clinical_report(
    probs,
    labels,
    classes: Sequence[str] | None = None,
    *,
    threshold: float | str = "youden",
    out_dir: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = BOOTSTRAP_SEED,
    bins: int = ECE_BINS,
) -> dict:
    """Per-class AUROC, AP, sensitivity and specificity with bootstrap 95 % CIs, macro means,
    and the ECE, as JSON-able data; with `out_dir`, also roc.png, pr.png and calibration.png.

    A class without positive or without negative examples gets None for its metrics (and a
    note); the macro means average the other classes.

    Args:
        probs: probabilities (see the module docstring for the shapes).
        labels: class indices, or 0/1 per label.
        classes: the class (or label) names; binary data reports its positive class only.
        threshold: the operating point: a probability (prob >= t is positive) or "youden",
            chosen per class on these data (pick it on validation, pass the number for test).
        out_dir: where to write the PNGs; None writes nothing.
        n_boot: bootstrap resamples (percentile 95 % intervals, stratified by label so every
            class stays present; the threshold stays fixed); 0 gives no intervals.
        seed: seeds the resamples.
        bins: equal-width bins of the ECE and reliability diagram.
    """
    threshold = _threshold(threshold)
    scores, targets, task = prepare(probs, labels)
    ranked = [_Ranked.of(scores[:, k], targets[:, k]) for k in range(scores.shape[1])]
    names = _names(classes, task, len(ranked))
    if not any(r.defined() for r in ranked):
        raise ResNetError("AUROC needs positive and negative examples of some class: one only")
    cuts = [r.cut(threshold) if r.defined() else 0 for r in ranked]
    strata = np.unique(targets, axis=0, return_inverse=True)[1].ravel()
    samples = _bootstrap_samples(ranked, cuts, strata, n_boot, seed) if n_boot > 0 else None
    per_class, macro_samples = {}, {"auroc": [], "average_precision": []}
    for k, (name, r, cut) in enumerate(zip(names, ranked, cuts, strict=True)):
        if not r.defined():
            per_class[name] = {
                "n_positive": int(r.positive.sum()),
                "auroc": None,
                "note": "needs positive and negative examples",
            }
            continue
        t = float(r.values[cut - 1]) if threshold == "youden" else float(threshold)
        per_class[name] = _class_entry(r, cut, t, None if samples is None else samples[k])
        for key in macro_samples:
            macro_samples[key].append(None if samples is None else np.concatenate(samples[k][key]))
    report = {
        "task": task,
        "n_samples": int(len(scores)),
        "operating_point": threshold,
        "classes": per_class,
        "macro": _macro(per_class, macro_samples, n_boot),
        "ece": expected_calibration_error(probs, labels, bins),
        "ece_bins": bins,
        "bootstrap": {
            "resamples": n_boot,
            "seed": seed,
            "interval": "percentile 95 % (AUROC, AP); Wilson score 95 % (sensitivity, specificity)",
            "resampling": "stratified by label",
        },
    }
    if out_dir is not None:
        report["files"] = _write_figures(probs, labels, Path(out_dir), classes, bins)
    return report


def _macro(per_class: dict, samples: dict, n_boot: int) -> dict:
    """Means over the defined classes, with the CI of the mean over the joint resamples."""
    out = {}
    for key, per in samples.items():
        values = [e[key]["value"] for e in per_class.values() if e.get("auroc") is not None]
        ci = _percentile_ci(np.mean(per, axis=0)) if n_boot > 0 else None
        out[key] = {"value": float(np.mean(values)), "ci95": ci}
    return out


def _write_figures(probs, labels, out: Path, classes, bins: int) -> dict[str, str]:
    files = {"roc": "roc.png", "pr": "pr.png", "calibration": "calibration.png"}
    plot_roc(probs, labels, out / files["roc"], classes)
    plot_pr(probs, labels, out / files["pr"], classes)
    plot_reliability(probs, labels, out / files["calibration"], bins)
    return files
