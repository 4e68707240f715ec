"""Medical volumes with their metadata: windowing, resampling, resizing, cropping, reorienting.

The readers (`data.dicom`, `data.nifti`) return a `Volume`: a float32 array laid out (D, H, W)
(slices, rows, columns; (D, H, W, C) for colour files) and an `ImageMeta` that travels with it
(MONAI's shape: the image keeps its spacing, orientation, rescale and ids until they are no
longer needed). Spacing is in millimetres along (D, H, W), i.e. (z, y, x).

Privacy: `ImageMeta` never holds a patient's name or ID, only `hash_id` of the ID (a salted
SHA-256), so its `repr` and `to_dict()` may reach a log or a checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ResNetError
from .grouping import hash_group

# The largest volume decoded (voxels over all slices and channels): 2**28 voxels is 1 GiB of
# float32, far above any CT series (512 x 512 x 1000 is 2**28) a 3-D net is fed.
DEFAULT_MAX_VOXELS = 2**28

# Window presets in Hounsfield units as (width, level), the usual radiology values.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "brain": (80.0, 40.0),
    "bone": (1800.0, 400.0),
}


def hash_id(value: str, salt: str = "") -> str:
    """`grouping.hash_group` of an identifier (a DICOM PatientID); "" for an empty one.

    Patient IDs come from a small space (hospital record numbers), so an unsalted hash can be
    reversed by trying every number: pass a secret `salt` kept out of the run folder when the
    hashes leave the hospital. The same value and salt always give the same hash (for grouping).
    """
    return hash_group(value, salt) if value else ""  # the split records' hash, the same id


@dataclass(frozen=True)
class ImageMeta:
    """What travels with a volume: geometry, intensity meaning, ids (hashed), never a name.

    Attributes:
        format: "dicom" or "nifti".
        modality: DICOM Modality ("CT", "MR", ...), "" when unknown (NIfTI).
        spacing: voxel size in mm along the array axes (D, H, W), i.e. (z, y, x).
        orientation: three letters, the anatomical direction each array axis (D, H, W) points
            to as its index grows ("SPL" for an axial DICOM series, "SAR" for canonical
            NIfTI), "" when unknown. `reorient` converts between them.
        rescale: (slope, intercept) already applied to the stored values.
        units: "HU" for rescaled CT, "" otherwise.
        photometric: the file's PhotometricInterpretation (MONOCHROME1 is already inverted).
        bits_stored: bits per stored sample (12 or 16 for CT/MR; kept at full range).
        window: the file's own (width, level), if it names one.
        patient: `hash_id` of the PatientID ("" when absent); never the raw ID.
        study_uid: StudyInstanceUID ("" when absent).
        series_uid: SeriesInstanceUID ("" when absent).
    """

    format: str
    modality: str = ""
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    orientation: str = ""
    rescale: tuple[float, float] = (1.0, 0.0)
    units: str = ""
    photometric: str = ""
    bits_stored: int = 0
    window: tuple[float, float] | None = None
    patient: str = ""
    study_uid: str = ""
    series_uid: str = ""

    def to_dict(self) -> dict:
        """Plain JSON data (tuples become lists), safe for a checkpoint or a log."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def replace(self, **changes) -> ImageMeta:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass
class Volume:
    """A float32 array (D, H, W) or (D, H, W, C) with its `ImageMeta`."""

    array: np.ndarray
    meta: ImageMeta = field(default_factory=lambda: ImageMeta(format=""))

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(self.array.shape)

    def windowed(self, window: str | tuple[float, float] | None = None) -> np.ndarray:
        """The array mapped to [0, 1] by `apply_window` (None: per-volume min-max)."""
        return apply_window(self.array, parse_window(window))


def parse_window(spec: str | tuple[float, float] | None) -> tuple[float, float] | None:
    """A window as (width, level) from a preset name, a "W,L" string or a pair; None: min-max.

    "minmax" (or None, or "") means per-image min-max. A width must be positive.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "minmax")):
        return None
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name in WINDOWS:
            return WINDOWS[name]
        parts = name.split(",")
        try:
            width, level = (float(p) for p in parts)
        except ValueError:
            raise ResNetError(
                f"window {spec!r}: expected one of {', '.join(WINDOWS)}, minmax or 'W,L' "
                "(two numbers in HU, e.g. 1500,-600)"
            ) from None
    else:
        width, level = (float(v) for v in spec)
    if not (math.isfinite(width) and math.isfinite(level)) or width <= 0:
        raise ResNetError(f"window {spec!r}: the width must be a positive number")
    return width, level


def apply_window(array: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Maps values to [0, 1] float32: (x - (L - W/2)) / W, clipped; None: min-max of `array`.

    With a window, L maps to 0.5, L - W/2 to 0 and L + W/2 to 1. A constant array under
    min-max maps to zeros.
    """
    x = np.asarray(array, dtype=np.float32)
    if window is None:
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if hi <= lo:
            return np.zeros_like(x)
        return ((x - lo) / (hi - lo)).astype(np.float32)
    width, level = window
    return np.clip((x - (level - width / 2)) / width, 0.0, 1.0).astype(np.float32)


def _as_5d(array: np.ndarray) -> torch.Tensor:
    """(D, H, W) or (D, H, W, C) → a float32 tensor (1, C, D, H, W)."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if t.ndim == 3:
        return t[None, None]
    if t.ndim == 4:
        return t.permute(3, 0, 1, 2)[None]
    raise ResNetError(f"a volume is (D, H, W) or (D, H, W, C), got shape {tuple(array.shape)}")


def _from_5d(t: torch.Tensor, like: np.ndarray) -> np.ndarray:
    out = t[0, 0] if like.ndim == 3 else t[0].permute(1, 2, 3, 0)
    return out.contiguous().numpy()


def _check_shape(shape, what: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ResNetError(f"{what} must be three positive sizes D,H,W, got {shape}")
    return shape


def resize(volume: Volume, shape: tuple[int, int, int]) -> Volume:
    """Resizes (trilinear, `F.interpolate` on (1, C, D, H, W)) to exactly `shape` = (D, H, W).

    The spacing is updated so the physical extent stays the same.
    """
    shape = _check_shape(shape, "the volume size")
    old = volume.array.shape[:3]
    t = F.interpolate(_as_5d(volume.array), size=shape, mode="trilinear", align_corners=False)
    spacing = tuple(
        float(s) * o / n for s, o, n in zip(volume.meta.spacing, old, shape, strict=True)
    )
    return Volume(_from_5d(t, volume.array), volume.meta.replace(spacing=spacing))


def resample(volume: Volume, spacing: tuple[float, float, float]) -> Volume:
    """Resamples (trilinear) to a voxel spacing (z, y, x) in mm: each size scales by old/new.

    The new size along each axis is size * old_spacing / new_spacing rounded half up, at
    least 1; the recorded spacing is the exact one that size gives (extent / size).
    """
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ResNetError(f"a spacing is three positive numbers (z, y, x) in mm, got {spacing}")
    if not all(math.isfinite(s) and s > 0 for s in volume.meta.spacing):
        raise ResNetError(
            f"cannot resample: the scan's own spacing {volume.meta.spacing} is not three "
            "positive numbers (a broken header)"
        )
    old = volume.array.shape[:3]
    shape = tuple(
        max(1, math.floor(n * s / t + 0.5))
        for n, s, t in zip(old, volume.meta.spacing, spacing, strict=True)
    )
    return resize(volume, shape)


def center_crop(volume: Volume, shape: tuple[int, int, int]) -> Volume:
    """The central (D, H, W) block. A volume smaller than the crop on any axis is refused.

    Refused rather than padded: padding would invent anatomy; resample or `resize` first.
    """
    shape = _check_shape(shape, "the crop")
    have = volume.array.shape[:3]
    if any(h < s for h, s in zip(have, shape, strict=True)):
        raise ResNetError(
            f"volume {'x'.join(map(str, have))} is smaller than the crop "
            f"{'x'.join(map(str, shape))}; resize or resample it first"
        )
    starts = [(h - s) // 2 for h, s in zip(have, shape, strict=True)]
    index = tuple(slice(a, a + s) for a, s in zip(starts, shape, strict=True))
    return Volume(np.ascontiguousarray(volume.array[index]), volume.meta)


def reorient(volume: Volume, orientation: str) -> Volume:
    """Permutes and flips the axes so (D, H, W) point to `orientation` (e.g. "SAR", "SPL").

    Needs the volume's own orientation; the spacing follows its axes.
    """
    # nibabel: heavy third-party import (0.7 s), needed only when reorienting.
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    have, want = volume.meta.orientation.upper(), orientation.upper()
    if have == want:
        return volume
    try:
        transform = ornt_transform(axcodes2ornt(tuple(have)), axcodes2ornt(tuple(want)))
    except ValueError as e:
        raise ResNetError(
            f"cannot reorient {have or 'an unknown orientation'} to {want}: {e}"
        ) from None
    array = apply_orientation(volume.array, transform)
    spacing = [0.0, 0.0, 0.0]
    for axis, (new_axis, _flip) in enumerate(transform):
        spacing[int(new_axis)] = volume.meta.spacing[axis]
    meta = volume.meta.replace(spacing=tuple(spacing), orientation=want)
    return Volume(np.ascontiguousarray(array, dtype=np.float32), meta)


def check_voxels(shape, name: str, max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
    """Refuses a volume whose header announces more than `max_voxels` voxels (before decoding)."""
    n = math.prod(int(s) for s in shape)
    if n > max_voxels:
        raise ResNetError(
            f"{name}: {'x'.join(map(str, shape))} = {n:,} voxels, over the limit of {max_voxels:,}"
        )
