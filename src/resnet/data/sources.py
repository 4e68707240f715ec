"""`load_data`: the source a `DataConfig` names, loaded into a `DataBundle`."""

from __future__ import annotations

from pathlib import Path

from ..errors import ResNetError
from .builtin import BUILTIN, fashion_mnist_bundle, synthetic_bundle
from .bundle import DataBundle
from .config import DataConfig
from .folders import folder_bundle
from .scan_index import is_scan_source
from .scans import scan_bundle


def load_data(cfg: DataConfig) -> DataBundle:
    """Loads the source named in `cfg` into train / val / test splits."""
    if cfg.source.lower() == "synthetic":
        return synthetic_bundle(cfg)
    if cfg.source.lower() in BUILTIN:
        return fashion_mnist_bundle(cfg)
    root = Path(cfg.source).expanduser()
    if not root.exists():
        raise ResNetError(f"data not found: {root} (expected fashion-mnist, a folder or a CSV)")
    if is_scan_source(root):
        return scan_bundle(cfg, root)
    if cfg.volume or cfg.slices or cfg.window or cfg.spacing:
        raise ResNetError(
            f"--volume, --slices, --window and --spacing read DICOM or NIfTI scans; {root} holds "
            "2-D images"
        )
    return folder_bundle(cfg, root)
