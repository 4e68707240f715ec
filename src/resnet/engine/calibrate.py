"""`calibrate(run)`: temperature scaling (Guo et al. 2017) fitted on a run's validation split.

One scalar T divides the logits so that the softmax's confidence matches its accuracy; the
ranking, and so top-1 accuracy, stays the same. T is fitted on the validation split only (never
on test data), written to `<run>/calibration/` and stored in the checkpoint as `temperature`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data.evaluation import NO_VAL_SPLIT
from ..device import resolve_device
from ..errors import ResNetError
from ..storage import write_json
from .checkpoint import load_model_or_ensemble, update_checkpoint
from .clinical import apply_temperature, fit_temperature, plot_reliability
from .evaluate import collect_logits
from .runfolder import checkpoint_in, is_ensemble_run
from .validate import _tta, split_loader

SPLIT = "val"  # the one split a temperature is fitted on


def calibrate(
    run: str | os.PathLike,
    *,
    data: str | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    write: bool = True,
) -> dict:
    """Fits a softmax temperature on a run's validation split and records it.

    The logits come from the model itself, so a temperature stored earlier plays no part:
    calling this again refits from scratch. Evaluation uses the run's own test-time
    augmentation, in fp32.

    Args:
        run: a run folder (its best.pt, else last.pt) or a checkpoint file; not an ensemble.
        data: the data source (default: the one the run was trained on).
        batch_size, workers: of the evaluation loader.
        device: "auto" (the GPU where there is one), "cpu", "cuda", "cuda:N".
        progress: show a progress bar while collecting the logits.
        write: write `calibration/calibration.json`, `reliability_before.png` and
            `reliability_after.png` beside the checkpoint and store `temperature` in it.

    Returns:
        The data of calibration.json: temperature, nll/ece before and after, samples, split,
        source, checkpoint, tta, tta_shift and out (the calibration folder).

    Raises:
        ResNetError: a missing path, an ensemble, a checkpoint without classes or
            preprocessing, or a run trained without a validation split.
    """
    path = Path(run)
    if not path.exists():
        raise ResNetError(f"checkpoint not found: {path}")
    if path.is_dir() and is_ensemble_run(path):
        raise ResNetError(
            f"{path} is an ensemble run; calibrate each member on its own, e.g. {path}/member0"
        )
    ckpt = checkpoint_in(path)
    model, state = load_model_or_ensemble(ckpt)
    if "members" in state:
        raise ResNetError(f"{ckpt} is an ensemble; calibrate each member on its own")
    if "classes" not in state or "preprocessing" not in state:
        raise ResNetError(f"{ckpt} lacks class names or preprocessing; not a classifier run")
    dev = resolve_device(device)
    try:
        loader, source, split = split_loader(
            state, SPLIT, data=data, batch_size=batch_size, workers=workers, run_dir=ckpt.parent
        )
    except ResNetError as e:
        if NO_VAL_SPLIT not in str(e):
            raise
        raise ResNetError(
            f"{path} has no validation split to fit a temperature on (trained with val_split 0)"
        ) from None
    tta, tta_shift = _tta(state, state["preprocessing"], None, None)
    logits, labels = collect_logits(
        model.to(dev),
        loader,
        dev,
        tta=tta,
        tta_shift=tta_shift,
        progress=progress,
        desc="calibrate",
    )
    if len(labels) == 0:
        raise ResNetError(f"the validation split of {source} is empty")
    fit = fit_temperature(logits, labels)
    out = ckpt.parent / "calibration"
    result = {
        **fit.to_dict(),
        "samples": len(labels),
        "split": split,
        "source": str(source),
        "checkpoint": str(ckpt),
        "tta": tta,
        "tta_shift": tta_shift,
        "out": str(out),
    }
    if write:
        ml = labels.dim() == 2  # multi-label: a sigmoid per label
        before = apply_temperature(logits, 1.0, multilabel=ml)
        plot_reliability(before, labels, out / "reliability_before.png")
        plot_reliability(
            apply_temperature(logits, fit.temperature, multilabel=ml),
            labels,
            out / "reliability_after.png",
        )
        update_checkpoint(ckpt, temperature=float(fit.temperature))
        write_json(out / "calibration.json", result)
    return result
