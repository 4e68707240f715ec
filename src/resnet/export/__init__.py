"""Deployment: ONNX / TorchScript / ExportedProgram export with a parity check, runtimes,
fast CPU inference modes and int8 quantization."""

from .formats import FORMATS, ExportResult, export_checkpoint, load_serialized, serialize
from .metadata import detect_format
from .parity import ParityError, ParityReport, check_parity, top1_agreement
from .runtime import BACKENDS, Classifier, load_classifier

__all__ = [
    "BACKENDS",
    "FORMATS",
    "Classifier",
    "ExportResult",
    "ParityError",
    "ParityReport",
    "check_parity",
    "detect_format",
    "export_checkpoint",
    "load_classifier",
    "load_serialized",
    "serialize",
    "top1_agreement",
]
