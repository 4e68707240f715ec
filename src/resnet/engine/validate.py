"""`validate(checkpoint)`: a checkpoint evaluated on a split, with its metrics written to disk."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data import eval_loader
from ..device import precision_name, resolve_device, resolve_precision
from ..errors import ResNetError
from ..storage import write_json
from .checkpoint import load_model_or_ensemble
from .clinical_summary import clinical_outputs, per_scan
from .evaluate import collect_logits, metrics_from_logits
from .report import plot_confusion


def validate(
    checkpoint: str | Path | list[str | Path],
    *,
    data: str | None = None,
    split: str | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    tta: bool | None = None,
    tta_shift: int | None = None,
    out: Path | None = None,
    device: str = "auto",
    precision: str = "fp32",
    progress: bool = True,
    threshold: float | str | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    backend: dict[str, str] | None = None,
) -> dict:
    """Metrics of a checkpoint, run folder, ensemble folder or list of them (their ensemble).

    `threshold`: the clinical report's operating point, a probability or "youden"; None: the
    run's own (`run.threshold`), Youden's point taken from the run's validation split when
    other data or another split is evaluated (`_operating_point`).

    `precision`: "fp32" (default), "bf16"/"fp16" (autocast) or "auto": the run's own setting
    (its `run.precision`, resolved on `device` as training resolves it), so the figure repeats
    the one training reported. `device` "auto" takes the GPU where there is one.

    `forward`: a forward pass run in place of the eager model's (CPU float batch -> raw logits,
    e.g. the checkpoint exported to another runtime); the split, preprocessing and figures stay
    the same. It needs `device` "auto" or "cpu" and `precision` "fp32" (`runtime_device`), and
    one network, not an ensemble. `backend` names what ran it in the metrics (default
    {"backend": "torch"})."""
    model, state, dev = _model(checkpoint, device, precision, forward)
    amp_dtype = _amp_dtype(state, precision, dev)
    loader, source, split = split_loader(
        state,
        split,
        data=data,
        batch_size=batch_size,
        workers=workers,
        run_dir=_run_dir(checkpoint),
    )
    pre, classes = state["preprocessing"], state["classes"]
    tta, tta_shift = _tta(state, pre, tta, tta_shift)
    logits, labels = collect_logits(
        model,
        loader,
        dev,
        amp_dtype=amp_dtype,
        tta=tta,
        tta_shift=tta_shift,
        progress=progress,
        desc=split,
    )
    metrics = metrics_from_logits(logits, labels)
    owners = getattr(loader, "owners", None)  # slices of scans: clinical figures per scan
    logits, labels = per_scan(logits, labels, owners, labels.dim() == 2)
    out = out or _default_out(checkpoint, state, split)
    temperature = float(state.get("temperature", 1.0))
    own = split == "val" and source == state.get("config", {}).get("data", {}).get("source")
    threshold = _operating_point(state, checkpoint, threshold, own, temperature)
    unit = "scan" if pre.get("scan") else "image"
    metrics |= clinical_outputs(
        logits, labels, classes, out, split, threshold=threshold, temperature=temperature, unit=unit
    )
    if temperature != 1.0:
        metrics["temperature"] = temperature
    metrics = {**(backend or {"backend": "torch"}), **metrics}
    return _record(checkpoint, state, split, source, amp_dtype, metrics, out)


def runtime_device(device: str, precision: str) -> torch.device:
    """The CPU, where a forward pass in another runtime is evaluated: refuses a GPU `device`
    and any `precision` but fp32 (the runtime runs the graph as it was exported)."""
    if precision != "fp32":
        raise ResNetError(
            f"--precision {precision} applies to the torch backend; other backends run the "
            "exported graph as it is (use --precision fp32)"
        )
    if device != "auto" and not device.startswith("cpu"):
        raise ResNetError(
            f"--device {device} applies to the torch backend; other backends run on the CPU"
        )
    return resolve_device("cpu")


class _Forward(nn.Module):
    """A plain forward callable as the module `collect_logits` runs (no parameters)."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.run = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the batch `x`, from the wrapped callable."""
        return self.run(x)


def _model(checkpoint, device: str, precision: str, forward):
    """(model on its device, checkpoint dict, device): the eager model, or `forward` wrapped
    on the CPU (`runtime_device`; refused for an ensemble)."""
    if forward is None:
        dev = resolve_device(device)
        model, state = load_model_or_ensemble(checkpoint)
        return model.to(dev), state, dev
    dev = runtime_device(device, precision)
    _, state = load_model_or_ensemble(checkpoint)
    if "members" in state:
        raise ResNetError("an ensemble is evaluated in torch only (its members are separate nets)")
    return _Forward(forward), state, dev


def split_loader(
    state: dict,
    split: str | None = None,
    *,
    data: str | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    run_dir: Path | None = None,
):
    """(loader, source, split): batches of a checkpoint's held-out split (or of `data`),
    preprocessed as the checkpoint says. `split` None picks the run's own held-out split.
    With `run_dir`, a split drawn by group must equal the run's splits.json."""
    data_cfg = state.get("config", {}).get("data", {})
    source = data or data_cfg.get("source")
    if not source:
        raise ResNetError("this checkpoint does not name its data; pass --data")
    split = split or _default_split(source, data, data_cfg.get("source"))
    loader = eval_loader(
        source,
        split,
        state["preprocessing"],
        state["classes"],
        val_split=data_cfg.get("val_split", 0.1),
        batch_size=batch_size,
        workers=workers,
        data_cfg=data_cfg if source == data_cfg.get("source") else None,
    )
    _check_same_split(getattr(loader, "split_record", None), run_dir)
    return loader, source, split


def _operating_point(state, checkpoint, threshold, own_val: bool, temperature: float):
    """The threshold to report sensitivity / specificity at: `threshold`, else the run's. A
    Youden's point is picked on the data evaluated only for the run's own validation split;
    on anything else it is the run's validation threshold (binary runs, from its
    val_clinical.json), carried to the calibrated scale when a temperature was fitted since."""
    threshold = threshold or state.get("config", {}).get("run", {}).get("threshold", "youden")
    if str(threshold).lower() != "youden" or own_val:
        return threshold
    run_dir = _run_dir(checkpoint)
    saved = run_dir / "val_clinical.json" if run_dir is not None else None
    if saved is None or not saved.exists():
        return "youden"
    report = json.loads(saved.read_text())
    entries = list(report.get("classes", {}).values())
    if report.get("task") != "binary" or not entries or entries[0].get("threshold") is None:
        return "youden"
    t = min(max(float(entries[0]["threshold"]), 1e-12), 1 - 1e-12)
    raw = math.log(t / (1 - t)) * float(report.get("temperature", 1.0))  # the logit margin
    return 1 / (1 + math.exp(-raw / temperature))


def _run_dir(checkpoint) -> Path | None:
    """The run folder of one checkpoint (None for a list of them)."""
    if isinstance(checkpoint, list | tuple):
        return None
    path = Path(checkpoint)
    return path if path.is_dir() else path.parent


def _check_same_split(record: dict | None, run_dir: Path | None) -> None:
    """Refuses a split by group drawn now that differs from the run's own (splits.json): other
    data, or another $RESNET_GROUP_SALT, would mix training patients into validation."""
    saved = run_dir / "splits.json" if run_dir is not None else None
    if record is None or saved is None or not saved.exists():
        return
    run = json.loads(saved.read_text())
    if (run.get("train"), run.get("val")) != (record["train"], record["val"]):
        raise ResNetError(
            f"the split drawn now differs from the run's {saved}: were the data or "
            "$RESNET_GROUP_SALT changed? Evaluating it would mix training patients into it"
        )


def _record(
    checkpoint, state: dict, split: str, source: str, amp_dtype, metrics: dict, out: Path | None
) -> dict:
    """The metrics with what produced them; written to `out` (default: beside the run)."""
    several = isinstance(checkpoint, list | tuple) and len(checkpoint) > 1
    ckpt = Path(checkpoint[0] if isinstance(checkpoint, list | tuple) else checkpoint)
    metrics = {
        "checkpoint": [str(c) for c in checkpoint] if several else str(ckpt),
        **({"members": state["members"]} if "members" in state else {}),
        "data": source,
        "split": split,
        "numerics": precision_name(amp_dtype),
        "classes": state["classes"],
        **metrics,
        "out": str(out),
    }
    _write(out, metrics, state.get("arch", "model"))
    return metrics


def _default_out(checkpoint, state: dict, split: str) -> Path:
    """Beside the run: RUN/val-<split> (RUN/val-ensembleK-<split> for a list of checkpoints)."""
    several = isinstance(checkpoint, list | tuple) and len(checkpoint) > 1
    ckpt = Path(checkpoint[0] if isinstance(checkpoint, list | tuple) else checkpoint)
    run_dir = ckpt if ckpt.is_dir() else ckpt.parent
    n = len(state.get("members", ()))
    return run_dir / (f"val-ensemble{n}-{split}" if several else f"val-{split}")


def _amp_dtype(state: dict, precision: str, dev: torch.device) -> torch.dtype | None:
    """The autocast dtype; "auto" repeats the run's own precision setting."""
    if precision == "auto":
        precision = state.get("config", {}).get("run", {}).get("precision", "auto")
        if precision == "fp16" and dev.type == "cpu":
            precision = "auto"  # trained in fp16 on a GPU, evaluated here on the CPU
    return resolve_precision(precision, dev)[0]


def _default_split(source: str, data: str | None, trained_on: str | None) -> str:
    """The run's own held-out split; for other data, all of it unless it has a test folder."""
    builtin = source.lower() == "fashion-mnist"
    if data and data != trained_on and not builtin:
        return "test" if (Path(source) / "test").is_dir() else "all"
    return "test" if builtin or (Path(source) / "test").is_dir() else "val"


def _tta(state: dict, pre: dict, tta: bool | None, tta_shift: int | None) -> tuple[bool, int]:
    """Test-time augmentation as the training run evaluated, unless given."""
    run_cfg = state.get("config", {}).get("run", {})
    data_cfg = state.get("config", {}).get("data", {})
    if tta is None:  # flip TTA only where flips were augmented
        tta = bool(run_cfg.get("tta", False) and data_cfg.get("flip", True))
    if tta_shift is None:
        tta_shift = int(run_cfg.get("tta_shift", 0))
    if not 0 <= tta_shift < min(pre["size"]):
        raise ResNetError(
            f"--tta-shift must be 0 to {min(pre['size']) - 1} pixels for "
            f"{min(pre['size'])} px images, got {tta_shift}"
        )
    return tta, tta_shift


def _write(out: Path, metrics: dict, arch: str) -> None:
    write_json(out / "metrics.json", metrics)
    if "confusion_matrix" not in metrics:  # multi-label: per-label counts, no matrix
        return
    plot_confusion(
        torch.tensor(metrics["confusion_matrix"]),
        metrics["classes"],
        out / "confusion_matrix.png",
        f"{arch}, {metrics['split']}: {100 * metrics['top1']:.2f}% top-1",
    )
