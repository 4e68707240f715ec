"""`resnet predict CHECKPOINT IMAGE|FOLDER...`: class names and probabilities per image."""

from __future__ import annotations

import json
from pathlib import Path

from ..analysis.gradcam import save_cams
from ..analysis.volume_cam import save_volume_cams
from ..device import resolve_device
from ..engine.inference import TorchClassifier, expand_inputs, predict_paths, predict_scans
from ..errors import ResNetError
from ..export import detect_format
from ..export import load_classifier as load_any
from ..models import model_from_weights
from ..storage import write_json
from ..tasks import checkpoint_task, predict_task


def add_parser(sub) -> None:
    """Adds `resnet predict` to the sub-command parsers `sub`."""
    p = sub.add_parser("predict", help="classify images with a checkpoint or shipped weights")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="CHECKPOINT IMAGE|FOLDER",
        help="a checkpoint (or run folder) then images or folders; with --weights only images",
    )
    p.add_argument("--weights", help="shipped weights instead of a checkpoint, e.g. fashion-mnist")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", help="also write predictions.json into this folder")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--device",
        default="auto",
        help="auto (the GPU where there is one, as train and val), cpu, cuda…",
    )
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images with a warning")
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime", "openvino", "keras", "litert", "auto"),
        help="torch, onnxruntime, openvino, keras or litert (default: the file's own; .onnx runs "
        "in onnxruntime, an OpenVINO .xml in openvino, a .keras file in Keras, a .tflite in "
        "LiteRT; a checkpoint is "
        "exported in memory and parity-checked first); auto: the fastest CPU mode that agrees "
        "with fp32 on this machine, measured once per checkpoint and cached",
    )
    p.add_argument(
        "--cam",
        action="store_true",
        help="save Grad-CAM overlays (PNG; slice montages for scans) beside predictions.json",
    )
    p.add_argument(
        "--cam-layer",
        help="Grad-CAM target layer (default: the last stage; for volumes the deepest stage "
        "whose map is 4+ voxels wide)",
    )
    p.set_defaults(run=run)


def load_classifier(args):
    """`(classifier, image inputs)` from the parsed arguments.

    Shipped weights (`--weights`), an exported file or `--backend onnxruntime|openvino|keras`
    (through `resnet.export.load_classifier`), or a checkpoint run in PyTorch on `args.device`.
    """
    if args.weights:
        model = model_from_weights(args.weights)
        cfg = model.pretrained_cfg
        if not cfg.get("classes") or not cfg.get("preprocessing"):
            raise ResNetError(f"{args.weights} carries no class names or preprocessing")
        return TorchClassifier(
            model, cfg["classes"], cfg["preprocessing"], args.device
        ), args.inputs
    if len(args.inputs) < 2:
        raise ResNetError("give a checkpoint and at least one image (or --weights NAME)")
    if (
        args.backend in ("onnxruntime", "openvino", "keras", "litert", "auto")
        or detect_format(args.inputs[0]) != "checkpoint"
    ):
        return load_any(args.inputs[0], backend=args.backend), args.inputs[1:]
    return TorchClassifier.from_checkpoint(args.inputs[0], args.device), args.inputs[1:]


def _predict_scans(classifier, inputs: list[str], args) -> list[dict]:
    """A scan model's predictions (and Grad-CAM slice montages with --cam)."""
    results, xs, displays = predict_scans(
        classifier, inputs, top_k=args.top_k, skip_bad=args.skip_bad
    )
    if args.cam:
        if classifier.preprocessing["scan"]["mode"] != "volume":
            raise ResNetError("--cam on scans draws 3-D maps: it needs a volume (3-D) model")
        save_volume_cams(
            classifier, results, [x[0] for x in xs], displays, Path(args.out), args.cam_layer
        )
    return results


def _task_of(path: str) -> str:
    """The task a model file was trained for ("classify" for every exported file)."""
    if detect_format(path) != "checkpoint":
        return "classify"
    return checkpoint_task(path)


def run(args) -> int:
    """Predicts every image given (detection / segmentation draws them); returns the exit code."""
    args.device = str(resolve_device(args.device))
    if args.cam and not args.out:
        raise ResNetError("--cam writes PNGs next to predictions.json: give --out DIR")
    if not args.weights and len(args.inputs) > 1 and _task_of(args.inputs[0]) != "classify":
        out = Path(args.out or "predictions")
        results = predict_task(args.inputs[0], args.inputs[1:], out)
        print(
            json.dumps(results, indent=2) if args.json else f"drew {len(results)} image(s) in {out}"
        )
        return 0
    classifier, inputs = load_classifier(args)
    if classifier.preprocessing.get("scan"):
        results = _predict_scans(classifier, inputs, args)
    else:
        paths = expand_inputs(inputs)
        results = predict_paths(
            classifier, paths, top_k=args.top_k, batch_size=args.batch_size, skip_bad=args.skip_bad
        )
        if args.cam:
            save_cams(classifier, results, Path(args.out), layer=args.cam_layer)
    if args.out:
        write_json(Path(args.out) / "predictions.json", results)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            preds = r["predictions"]
            shown = ", ".join(f"{p['class']} {100 * p['probability']:.1f}%" for p in preds)
            if "findings" in r:
                shown += f"; findings: {', '.join(r['findings']) or 'none'}"
            print(f"{r['path']}: {shown}")
    return 0
