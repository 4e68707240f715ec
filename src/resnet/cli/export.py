"""`resnet export CHECKPOINT --format onnx|torchscript|exported-program|openvino|keras`: export +
parity check."""

from __future__ import annotations

import argparse
import json
import sys

from ..engine.checkpoint import load_model_or_ensemble
from ..errors import ResNetError
from ..export import FORMATS, auto, export_checkpoint
from ..export.fast import openvino_precision
from ..export.openvino import set_inference_precision


def add_parser(sub) -> None:
    """Adds `resnet export` to the sub-command parsers `sub`."""
    p = sub.add_parser(
        "export",
        help="export a checkpoint (ONNX, TorchScript, ExportedProgram, OpenVINO IR, Keras), "
        "parity-checked",
        description="Writes the model with its class names and preprocessing in the file's "
        "metadata, after checking on real images that the exported model's logits match the "
        "eager model's (max |diff|, top-1 agreement). A parity failure writes nothing and exits 2.",
    )
    p.add_argument("checkpoint", help="a resnet checkpoint (.pt), run folder or ensemble folder")
    p.add_argument("--format", choices=FORMATS, help="default: onnx")
    p.add_argument(
        "--backend",
        choices=("auto",),
        help="auto: export to the format of the fastest CPU mode that agrees with fp32 on this "
        "machine (measured once per checkpoint and cached; int8 calibrated on its training "
        "images)",
    )
    p.add_argument(
        "--out",
        help="output file (default: beside the checkpoint; OpenVINO: the .xml, its .bin beside it)",
    )
    p.add_argument(
        "--dynamic-batch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="symbolic batch dimension (default: on, except tflite: batch 1, run image by "
        "image; --no-dynamic-batch fixes it to 1)",
    )
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's; dynamo >= 18)")
    p.add_argument(
        "--exporter",
        choices=("dynamo", "legacy"),
        default="dynamo",
        help="ONNX exporter (default dynamo; legacy is torch's deprecated one)",
    )
    p.add_argument(
        "--images",
        nargs="+",
        metavar="IMAGE",
        help="images for the parity check (default: crops of bundled sample photos)",
    )
    p.add_argument("--num-images", type=int, default=16, help="images in the parity check")
    p.add_argument(
        "--int8",
        action="store_true",
        help="ONNX (ONNX Runtime static QDQ), OpenVINO (NNCF) or tflite (ai-edge-quantizer): "
        "int8 quantization calibrated on training images; parity = top-1 agreement >= 95 %% "
        "on held-out images",
    )
    p.add_argument(
        "--embed-preprocessing",
        action="store_true",
        help="OpenVINO: the IR takes uint8 RGB pixels [N, H, W, C] at the model's size and "
        "normalises them itself (a deployment feeds decoded frames as they are)",
    )
    p.add_argument(
        "--calibration",
        metavar="fashion-mnist|FOLDER",
        help="training images for --int8 (default: the checkpoint's data source)",
    )
    p.add_argument(
        "--calibration-images", type=int, default=256, help="images to calibrate on (default 256)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def _auto_format(args) -> str | None:
    """With --backend auto: sets args.format / args.int8 to the picked mode's and returns the
    OpenVINO inference precision to record (None: the default)."""
    if args.backend != "auto":
        args.format = args.format or "onnx"
        return None
    if args.format or args.int8:
        raise ResNetError("--backend auto picks the format and int8 itself: drop --format/--int8")
    model, state = load_model_or_ensemble(args.checkpoint)
    choice, cached = auto.choose_for_checkpoint(args.checkpoint, model, state)
    print(choice.line(cached), file=sys.stderr)
    if choice.mode not in auto.EXPORT_FORMAT:
        raise ResNetError(f"no export format runs {choice.mode}; export with --format")
    args.format, args.int8 = auto.EXPORT_FORMAT[choice.mode]
    precision = openvino_precision(choice.mode) if args.format == "openvino" else "f32"
    return None if precision == "f32" else precision


def run(args) -> int:
    """Exports the checkpoint, parity-checked, and prints what was written."""
    precision = _auto_format(args)
    result = export_checkpoint(
        args.checkpoint,
        args.format,
        args.out,
        dynamic_batch=args.dynamic_batch,
        opset=args.opset,
        images=args.images,
        num_images=args.num_images,
        exporter=args.exporter,
        int8=args.int8,
        calibration=args.calibration,
        calibration_images=args.calibration_images,
        embed_preprocessing=args.embed_preprocessing,
    )
    if precision:
        set_inference_precision(result.path, precision)
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(result.path),
                    "files": [str(p) for p in result.paths],
                    "format": result.format,
                    "size_bytes": result.size_bytes,
                    "parity": result.parity.to_dict(),
                    "classes": result.metadata["classes"],
                    "preprocessing": result.metadata["preprocessing"],
                },
                indent=2,
            )
        )
    else:
        print(result.parity.line())
        batch = "dynamic" if result.metadata["dynamic_batch"] else "fixed at 1"
        written = " + ".join(str(p) for p in result.paths)
        print(
            f"wrote {written} ({result.format}, {result.size_bytes / 1e6:.1f} MB, batch "
            f"{batch}, {len(result.metadata['classes'])} classes + preprocessing in metadata)"
        )
    return 0
