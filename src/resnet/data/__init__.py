"""Data sets, transforms and loaders: Fashion-MNIST, folders and CSVs, in memory or streamed.

The logic lives in the submodules; this package re-exports their public names.
"""

from . import fashion_mnist
from .builtin import BUILTIN, fashion_mnist_bundle, synthetic_bundle
from .bundle import DataBundle, Split
from .cohort import write_cohort
from .config import DataConfig
from .dicom import find_series, read_dicom, read_series
from .evaluation import eval_loader
from .folders import folder_bundle
from .grouping import group_kfold, group_split, hash_group, split_record
from .images import IMAGE_EXTENSIONS, ImageList, load_image, read_rgb, scan, write_png
from .loaders import FileDataset, StreamLoader, TensorLoader
from .nifti import is_nifti, read_nifti
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
from .volumes import (
    WINDOWS,
    ImageMeta,
    Volume,
    apply_window,
    center_crop,
    hash_id,
    parse_window,
    reorient,
    resample,
    resize,
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
    "group_kfold",
    "group_split",
    "hash_group",
    "split_record",
    "WINDOWS",
    "ImageMeta",
    "Volume",
    "apply_window",
    "center_crop",
    "find_series",
    "hash_id",
    "is_nifti",
    "parse_window",
    "read_dicom",
    "read_nifti",
    "read_series",
    "reorient",
    "resample",
    "resize",
    "write_cohort",
]
