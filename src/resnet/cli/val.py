"""`resnet val CHECKPOINT`: top-1/top-5, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..engine.runfolder import is_ensemble_run
from ..engine.validate import runtime_device, validate
from ..errors import ResNetError
from ..export import load_classifier
from ..tasks import checkpoint_task, evaluate_task


def add_parser(sub) -> None:
    """Adds `resnet val` to the sub-command parsers `sub`."""
    p = sub.add_parser("val", help="evaluate a checkpoint on a data split")
    p.add_argument(
        "checkpoint",
        nargs="+",
        help="checkpoint file or run folder; an ensemble folder or several checkpoints are "
        "evaluated as one classifier (the mean of their probabilities)",
    )
    p.add_argument("--data", help="data source (default: the one it was trained on)")
    p.add_argument(
        "--split",
        default=None,
        choices=["train", "val", "test", "all"],
        help="default: test when the data has one, else the held-out val split; "
        "'all': every image of another folder given with --data",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the mirrored image (default: as the run evaluated)",
    )
    p.add_argument(
        "--tta-shift",
        type=int,
        default=None,
        metavar="PX",
        help="also average views moved PX pixels each way (default: as the run did)",
    )
    p.add_argument("--device", default="auto", help="auto (the GPU where there is one), cpu, cuda…")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="fp32 (default) or autocast in bf16/fp16; auto: the run's own precision "
        "(repeats the figure training reported)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime", "openvino", "keras", "litert", "auto"),
        help="runtime of the forward pass (default torch); another one evaluates the checkpoint "
        "exported in memory and parity-checked, on the CPU, on the same split; auto: the fastest "
        "CPU mode that agrees with fp32 here, as `resnet predict --backend auto` picks it",
    )
    p.add_argument(
        "--out",
        help="folder for metrics.json and confusion_matrix.png (default: <run folder>/val-<split>)",
    )
    p.add_argument(
        "--threshold",
        metavar="P|youden",
        help="operating point of sensitivity / specificity (default: the run's; Youden's point "
        "of the run's own validation split when other data is evaluated)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    """Evaluates the checkpoint(s) and prints the metrics; returns the exit code."""
    checkpoints = args.checkpoint
    tasks = [checkpoint_task(c) for c in checkpoints]
    if len(checkpoints) > 1:
        for c, task in zip(checkpoints, tasks, strict=True):
            if task != "classify":
                raise ResNetError(
                    f"{c} is a {task} checkpoint; only classifiers can be evaluated as an ensemble"
                )
    if tasks[0] != "classify":
        return _run_task(args, checkpoints[0], tasks[0])
    forward, backend = _backend_forward(args)
    metrics = validate(
        checkpoints if len(checkpoints) > 1 else checkpoints[0],
        data=args.data,
        split=args.split,
        batch_size=args.batch_size,
        workers=args.workers,
        tta=args.tta,
        tta_shift=args.tta_shift,
        out=Path(args.out) if args.out else None,
        device=args.device,
        precision=args.precision,
        threshold=args.threshold,
        forward=forward,
        backend=backend,
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    _print_classifier_metrics(metrics)
    return 0


def _backend_forward(args) -> tuple:
    """(forward pass, its metrics entry) for --backend: (None, None) for torch; else the
    checkpoint as `resnet.export.load_classifier` runs it, giving raw logits (the temperature
    of a calibrated checkpoint is applied later, as for torch)."""
    if args.backend == "torch":
        return None, None
    checkpoint = args.checkpoint[0]
    if len(args.checkpoint) > 1 or is_ensemble_run(checkpoint):
        raise ResNetError(
            f"--backend {args.backend} evaluates one network; evaluate an ensemble with --backend "
            "torch"
        )
    runtime_device(args.device, args.precision)  # refused before the export, not after
    classifier = load_classifier(checkpoint, backend=args.backend)
    backend = {"backend": classifier.backend}
    if args.backend == "auto":
        backend["backend_mode"] = classifier.choice.mode
    return lambda x: classifier(x) * classifier.temperature, backend


def _run_task(args, checkpoint: str, task: str) -> int:
    """Evaluates a detection or segmentation checkpoint and prints its metrics."""
    if args.backend != "torch":
        raise ResNetError(
            f"--backend {args.backend} applies to classifiers; {checkpoint} is a {task} checkpoint"
        )
    if args.precision != "fp32" or args.device != "auto":
        raise ResNetError(
            f"--precision and --device apply to classifiers; {checkpoint} is a {task} checkpoint"
        )
    metrics = evaluate_task(
        checkpoint,
        args.data,
        batch_size=min(args.batch_size, 32),
        out_dir=Path(args.out) if args.out else None,
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        shown = {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}
        print(
            ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()
            )
        )
    return 0


def _print_classifier_metrics(metrics: dict) -> None:
    """The headline figures, then precision, recall and F1 per class."""
    if metrics.get("multilabel"):
        accuracy = (
            f"per-label accuracy {100 * metrics['top1']:.2f}%, all labels right "
            f"{100 * metrics['exact_match']:.2f}%"
        )
    else:
        accuracy = f"top-1 {100 * metrics['top1']:.2f}%, top-5 {100 * metrics['top5']:.2f}%"
    print(
        f"{metrics['split']} split of {metrics['data']}: {metrics['samples']} images, "
        f"{accuracy}, loss {metrics['loss']:.4f}, macro F1 {metrics['macro_f1']:.4f}"
    )
    width = max(len(c) for c in metrics["classes"])
    print(f"{'class':<{width}}  precision  recall     F1")
    for c, p, r, f in zip(
        metrics["classes"], metrics["precision"], metrics["recall"], metrics["f1"], strict=True
    ):
        print(f"{c:<{width}}  {p:9.4f}  {r:6.4f} {f:6.4f}")
    _print_clinical(metrics)
    matrix = "" if metrics.get("multilabel") else " and confusion_matrix.png"
    print(f"wrote {metrics['out']}/metrics.json{matrix}")


def _ci(value: float, ci: list | None) -> str:
    return f"{value:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def _print_clinical(metrics: dict) -> None:
    """AUROC, the operating point's sensitivity and specificity, ECE, and where the curves are."""
    s = metrics["split"]
    if metrics.get(f"{s}_auroc") is None:
        return
    line = f"AUROC {_ci(metrics[f'{s}_auroc'], metrics[f'{s}_auroc_ci95'])}"
    if metrics.get(f"{s}_sensitivity") is not None:
        line += (
            f"; at threshold {metrics[f'{s}_threshold']:.3f}: sensitivity "
            f"{_ci(metrics[f'{s}_sensitivity'], metrics[f'{s}_sensitivity_ci95'])}, specificity "
            f"{_ci(metrics[f'{s}_specificity'], metrics[f'{s}_specificity_ci95'])}"
        )
    print(f"{line}; ECE {metrics[f'{s}_ece']:.3f}")
    print(f"wrote {metrics['out']}/roc.png, pr.png, calibration.png and {s}_clinical.json")
