"""What an exported file carries besides its graph: class names, preprocessing, provenance."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from ..errors import ResNetError
from ..storage import package_versions

# Key of the JSON blob inside TorchScript / ExportedProgram archives; ONNX stores the same fields
# as separate metadata_props ("classes", "preprocessing", "resnet").
EXTRA_FILE = "resnet.json"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def make_metadata(state: dict[str, Any], *, fmt: str, dynamic_batch: bool) -> dict[str, Any]:
    """The metadata of an export of checkpoint `state` (from `load_checkpoint`)."""
    classes = state.get("classes")
    num_classes = state["model_options"].get("num_classes", 0)
    if not classes:
        classes = [str(i) for i in range(num_classes)]
    pre = state.get("preprocessing")
    if not pre:
        raise ResNetError(
            "the checkpoint has no 'preprocessing'; an export without it could not "
            "be used for prediction (re-save it with resnet >= 0.1)"
        )
    return {
        "format": fmt,
        "arch": state.get("arch", "custom"),
        "classes": list(classes),
        "preprocessing": dict(pre),
        "dynamic_batch": bool(dynamic_batch),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "exported_by": f"resnet {package_versions()['resnet']}",
        "source_versions": state.get("versions", {}),
        # `resnet calibrate`'s temperature: the runtimes divide the graph's logits by it.
        **({"temperature": float(state["temperature"])} if "temperature" in state else {}),
        # An ensemble's output is the log of its members' mean probability, not raw logits:
        # softmax and argmax treat it the same; margins and temperatures do not.
        **(
            {"members": len(state["members"]), "output_kind": "log_probabilities"}
            if "members" in state
            else {}
        ),
    }


def encode(meta: dict[str, Any]) -> str:
    """`meta` as the JSON text stored in an exported file."""
    return json.dumps(meta, sort_keys=True)


def decode(text: str | bytes, where: str) -> dict[str, Any]:
    """The metadata dict stored as JSON `text`; ResNetError naming `where` if it is not one."""
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or "classes" not in meta or "preprocessing" not in meta:
        raise ResNetError(
            f"{where} carries no resnet metadata (classes, preprocessing); "
            "export it with `resnet export`"
        )
    return meta


def detect_format(path: str | Path) -> str:
    """ "checkpoint", "onnx", "torchscript", "exported-program", "openvino" (an IR's .xml),
    "keras" (a .keras zip) or "tflite" (a LiteRT flatbuffer), from the file's contents (and an
    .xml's or .tflite's name: a bad one is refused when it is read)."""
    path = Path(path)
    if not path.exists():
        raise ResNetError(f"model file not found: {path}")
    if path.is_dir():
        return "checkpoint"  # a run folder: load_checkpoint picks best.pt / last.pt
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(64)
        if head[4:8] == b"TFL3" or path.suffix.lower() == ".tflite":  # flatbuffer identifier
            return "tflite"
        if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"pytorch" in head.lower()):
            return "onnx"
        if path.suffix.lower() == ".xml" or head.lstrip().startswith((b"<?xml", b"<net")):
            return "openvino"
        return "checkpoint"  # let the checkpoint reader say what is wrong (truncated, ...)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if "config.json" in names and "metadata.json" in names:  # Keras 3's archive, at its root
        return "keras"
    tails = {n.split("/", 1)[-1] for n in names}
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return "exported-program"
    if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
        return "torchscript"
    return "checkpoint"
