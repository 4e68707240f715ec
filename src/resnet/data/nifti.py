"""Reading NIfTI files (nibabel) into `Volume`s in canonical RAS+ orientation with voxel spacing.

The image is reoriented with `nibabel.as_closest_canonical` (array axes (X, Y, Z) point to
Right, Anterior, Superior), then laid out (D, H, W) = (Z, Y, X) like a DICOM series, so the
`Volume`'s orientation is "SAR" and its spacing (z, y, x) is the canonical header's zooms
reversed. Scaling (scl_slope/scl_inter) is applied; values stay float32 at full range.
A NIfTI with NaN or infinite voxels is refused (one line), not silently cleaned; a 4-D file gives
one of its volumes (`frame`, the first by default).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ResNetError
from .volumes import DEFAULT_MAX_VOXELS, ImageMeta, Volume, check_voxels

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    """Whether `path` ends in .nii or .nii.gz (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _load(path: Path):
    # nibabel: heavy third-party import (0.7 s), needed only when NIfTI is read.
    import nibabel as nib

    if not path.is_file():
        raise ResNetError(f"{path}: no such file")
    try:
        img = nib.load(path)
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, ValueError, ...
        raise ResNetError(f"{path}: not a readable NIfTI file ({_one_line(e)})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ResNetError(f"{path}: a {type(img).__name__}, not a NIfTI image")
    return img


def read_nifti(path: str | Path, *, frame: int = 0, max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """A NIfTI file as a float32 `Volume` (D, H, W) in canonical orientation ("SAR").

    Args:
        path: a .nii or .nii.gz file.
        frame: which volume of a 4-D file (time series) to take; ignored for 3-D files.
        max_voxels: refuse a file whose header announces more voxels (before decoding).
    """
    # nibabel: heavy third-party import (0.7 s), needed only when NIfTI is read.
    import nibabel as nib

    path = Path(path)
    img = _load(path)
    shape = tuple(int(s) for s in img.shape)
    check_voxels(shape, str(path), max_voxels)
    if len(shape) > 4 or (len(shape) == 4 and not 0 <= frame < shape[3]) or len(shape) < 2:
        raise ResNetError(
            f"{path}: shape {'x'.join(map(str, shape))} is not a 2-D or 3-D image"
            + (f" (frame {frame} of {shape[3]} asked)" if len(shape) == 4 else "")
        )
    try:  # reorienting reads the data (unless the file is RAS+ already): checks come first
        img = nib.as_closest_canonical(img)
        index = (..., frame) if len(shape) == 4 else (...)
        data = np.asarray(img.dataobj[index], dtype=np.float32)
    except Exception as e:  # a truncated file fails here, after a readable header
        raise ResNetError(f"{path}: image data truncated or corrupt ({_one_line(e)})") from None
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:  # a header whose dims disagree with what nibabel decodes
        raise ResNetError(
            f"{path}: header shape {'x'.join(map(str, shape))} decodes to {data.ndim}-D data, "
            "not a 2-D or 3-D image"
        )
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ResNetError(f"{path}: {bad:,} NaN or infinite voxels; clean the file first")
    zooms = [float(z) for z in img.header.get_zooms()[:3]] + [1.0] * (3 - min(3, len(shape)))
    slope, intercept = img.header.get_slope_inter()
    meta = ImageMeta(
        format="nifti",
        spacing=(zooms[2], zooms[1], zooms[0]),
        orientation="SAR",
        rescale=(
            1.0 if slope is None else float(slope),
            0.0 if intercept is None else float(intercept),
        ),
    )
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), meta)
