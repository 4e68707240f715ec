"""`validate(checkpoint)`: a checkpoint evaluated on a split, with its metrics written to disk."""

from __future__ import annotations

from pathlib import Path

import torch

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
) -> dict:
    """Metrics of a checkpoint, run folder, ensemble folder or list of them (their ensemble).

    `precision`: "fp32" (default), "bf16"/"fp16" (autocast) or "auto": the run's own setting
    (its `run.precision`, resolved on `device` as training resolves it), so the figure repeats
    the one training reported. `device` "auto" takes the GPU where there is one."""
    dev = resolve_device(device)
    model, state = load_model_or_ensemble(checkpoint)
    amp_dtype = _amp_dtype(state, precision, dev)
    loader, source, split = split_loader(
        state, split, data=data, batch_size=batch_size, workers=workers
    )
    pre, classes = state["preprocessing"], state["classes"]
    tta, tta_shift = _tta(state, pre, tta, tta_shift)
    logits, labels = collect_logits(
        model.to(dev),
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
    threshold = state.get("config", {}).get("run", {}).get("threshold", "youden")
    unit = "scan" if pre.get("scan") else "image"
    metrics |= clinical_outputs(
        logits, labels, classes, out, split, threshold=threshold, temperature=temperature, unit=unit
    )
    if temperature != 1.0:
        metrics["temperature"] = temperature
    return _record(checkpoint, state, split, source, amp_dtype, metrics, out)


def split_loader(
    state: dict,
    split: str | None = None,
    *,
    data: str | None = None,
    batch_size: int = 256,
    workers: int | None = None,
):
    """(loader, source, split): batches of a checkpoint's held-out split (or of `data`),
    preprocessed as the checkpoint says. `split` None picks the run's own held-out split."""
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
    return loader, source, split


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
