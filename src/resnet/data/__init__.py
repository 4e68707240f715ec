"""Data sets, transforms and loaders: Fashion-MNIST, folders and CSVs, in memory or streamed.

The logic lives in the submodules; this package re-exports their public names.
"""

from . import fashion_mnist
from .builtin import BUILTIN, fashion_mnist_bundle, synthetic_bundle
from .bundle import DataBundle, Split
from .config import DataConfig
from .evaluation import eval_loader
from .folders import folder_bundle
from .images import IMAGE_EXTENSIONS, ImageList, load_image, read_rgb, scan, write_png
from .loaders import FileDataset, StreamLoader, TensorLoader
from .sources import load_data
from .splits import VALIDATION_SEED, stratified_split, stratified_subset, validation_split
from .transforms import (
    PRESETS,
    BatchAugment,
    EvalTransform,
    eval_transform,
    make_preprocessing,
    normalise,
    train_transform,
)

__all__ = [
    "BUILTIN",
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "VALIDATION_SEED",
    "BatchAugment",
    "DataBundle",
    "DataConfig",
    "EvalTransform",
    "FileDataset",
    "ImageList",
    "Split",
    "StreamLoader",
    "TensorLoader",
    "eval_loader",
    "eval_transform",
    "fashion_mnist",
    "fashion_mnist_bundle",
    "folder_bundle",
    "load_data",
    "load_image",
    "make_preprocessing",
    "normalise",
    "read_rgb",
    "scan",
    "stratified_split",
    "stratified_subset",
    "synthetic_bundle",
    "train_transform",
    "validation_split",
    "write_png",
]
