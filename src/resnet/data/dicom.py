"""Reading DICOM files and series into `Volume`s (pydicom): Hounsfield units, MONOCHROME1, frames.

One file (single- or multi-frame) or one series (a folder's files sharing a SeriesInstanceUID,
in slice order) becomes a float32 `Volume` (D, H, W) at full range: stored values are rescaled
by RescaleSlope/RescaleIntercept (Hounsfield units for CT) and MONOCHROME1 is inverted within the
stored range (lo + hi - x), so brighter always means denser. Windowing to [0, 1] is a separate
step (`volumes.apply_window`). The patient appears only as a salted hash (`volumes.hash_id`).

Every problem (not DICOM, truncated, no pixel data, a compressed transfer syntax no installed
plugin decodes, slices of different sizes, a header number that is not one) is a one-line
`ResNetError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ResNetError
from .volumes import DEFAULT_MAX_VOXELS, ImageMeta, Volume, check_voxels, hash_id

# What to install when pydicom has no decoder for a compressed transfer syntax (by UID prefix).
_PLUGINS = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline / extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.8": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS
    "1.2.840.10008.1.2.4.9": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.20": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE lossless
}

# Header values read as numbers (DS / IS text in the file): refused unless finite numbers.
_NUMBERS = (
    "NumberOfFrames",
    "InstanceNumber",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _read(path: Path, pixels: bool = True):
    """A pydicom Dataset, or a one-line error (missing, not DICOM, truncated header)."""
    # pydicom: heavy third-party import (0.6 s), needed only when DICOM is read.
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise ResNetError(f"{path}: no such file")
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError:
        raise ResNetError(f"{path}: not a DICOM file (no DICM header)") from None
    except Exception as e:  # pydicom raises many types for a damaged header
        raise ResNetError(f"{path}: unreadable DICOM header ({_one_line(e)})") from None


def _frames(ds) -> int:
    return max(1, int(ds.get("NumberOfFrames", 1) or 1))


def _check_numbers(ds, path: Path) -> None:
    """Refuses a header number the reader uses that is malformed, infinite or NaN: it would
    fail later without the file's name, or turn the whole scan into NaN."""
    for key in _NUMBERS:
        try:
            value = ds.get(key)
            items = [value] if value is None or isinstance(value, str | int | float) else value
            numbers = [float(v) for v in items if v not in (None, "")]
        except (ValueError, TypeError) as e:  # text that is not a number (pydicom keeps it)
            raise ResNetError(f"{path}: malformed {key} in the header ({_one_line(e)})") from None
        if not all(math.isfinite(v) for v in numbers):
            shown = ", ".join(f"{v:g}" for v in numbers)
            raise ResNetError(f"{path}: invalid {key} in the header ({shown})")


def _size(ds, path: Path) -> tuple[int, int, int]:
    """(Rows, Columns, SamplesPerPixel), refusing an object with no image in it."""
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    sop = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
    image_class = "Image Storage" in getattr(sop, "name", "")
    if (image_class or "Rows" in ds) and not has_pixels:  # an image's header, no image after it
        raise ResNetError(f"{path}: no pixel data (the file ends before its image: truncated?)")
    if not has_pixels or "Rows" not in ds:
        kind = ds.get("Modality", "") or "non-image"
        raise ResNetError(f"{path}: no pixel data (a {kind} object, not an image)")
    return int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1) or 1)


def _decode(ds, path: Path) -> np.ndarray:
    """pixel_array as (frames, H, W) or (frames, H, W, C), or a one-line error naming the fix."""
    ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    try:
        array = ds.pixel_array
    except Exception as e:  # pydicom's decoders raise RuntimeError, ValueError, ...
        if ts is not None and ts.is_compressed and ("plugin" in str(e) or "support" in str(e)):
            plugin = next((p for k, p in _PLUGINS.items() if str(ts).startswith(k)), None)
            fix = f"pip install {plugin}" if plugin else "pip install python-gdcm"
            raise ResNetError(
                f"{path}: cannot decode '{ts.name}' ({ts}) pixel data: no installed pydicom "
                f"plugin handles it; {fix}"
            ) from None
        raise ResNetError(f"{path}: pixel data truncated or corrupt ({_one_line(e)})") from None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if _frames(ds) == 1 or array.ndim == (2 if samples == 1 else 3):
        array = array[None]
    return array


def _intensities(ds, array: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Full-range float32: MONOCHROME1 inverted in the stored range, then slope/intercept."""
    x = array.astype(np.float64 if array.dtype.itemsize > 2 else np.float32)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        bits = int(ds.get("BitsStored", array.dtype.itemsize * 8))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        x = (lo + hi) - x
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if (slope, intercept) != (1.0, 0.0):
        x = x * slope + intercept
    return x.astype(np.float32), (slope, intercept)


def _pixel_spacing(ds) -> tuple[float, float]:
    """(row spacing, column spacing) in mm: PixelSpacing, its enhanced form, else 1 mm."""
    value = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if value is None and "SharedFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared:
            value = shared.PixelMeasuresSequence[0].get("PixelSpacing")
    return (float(value[0]), float(value[1])) if value else (1.0, 1.0)


def _header_gap(ds) -> float:
    """Slice spacing from the header alone: SpacingBetweenSlices, SliceThickness, else 1 mm."""
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(key)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _normal(ds) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    return np.cross(row, col)


def _orientation(ds) -> str:
    """Axis codes of (D, H, W): slice normal, column direction, row direction (LPS → letters)."""
    normal = _normal(ds)
    if normal is None:
        return ""
    iop = np.array(ds.ImageOrientationPatient, float)
    axes = [normal, iop[3:], iop[:3]]  # D along the normal, H down the columns, W along rows
    codes = ""
    for v in axes:
        k = int(np.argmax(np.abs(v)))
        codes += ("LPS" if v[k] > 0 else "RAI")[k]  # DICOM patient axes: +x L, +y P, +z S
    pairs = ("LR", "PA", "SI")  # an oblique plane at 45 degrees has no closest letter per axis
    return codes if all(sum(c in p for c in codes) == 1 for p in pairs) else ""


def _slice_order(datasets: list, paths: list[Path]) -> tuple[list[int], float | None]:
    """Order along the slice normal (ImagePositionPatient), else InstanceNumber; and the gap."""
    normal = _normal(datasets[0])
    if normal is not None and all("ImagePositionPatient" in ds for ds in datasets):
        pos = np.array(
            [np.dot(np.array(ds.ImagePositionPatient, float), normal) for ds in datasets]
        )
        order = [int(i) for i in np.argsort(pos, kind="stable")]
        gaps = np.diff(pos[order])
        if len(datasets) > 1 and np.any(np.abs(gaps) < 1e-4):
            raise ResNetError(
                f"{paths[0].parent}: several slices of one series share a position "
                "(a time or echo series is not one volume)"
            )
        return order, (float(np.median(gaps)) if len(gaps) else None)
    if all("InstanceNumber" in ds for ds in datasets):
        return sorted(range(len(datasets)), key=lambda i: int(datasets[i].InstanceNumber)), None
    return list(range(len(datasets))), None


def _meta(ds, gap: float, salt: str) -> ImageMeta:
    modality = str(ds.get("Modality", ""))
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    window = None
    if ds.get("WindowWidth") not in (None, "") and ds.get("WindowCenter") not in (None, ""):
        w, c = ds.WindowWidth, ds.WindowCenter
        w, c = (w[0] if hasattr(w, "__len__") else w), (c[0] if hasattr(c, "__len__") else c)
        window = (float(w), float(c))
    return ImageMeta(
        format="dicom",
        modality=modality,
        spacing=(gap, *_pixel_spacing(ds)),
        orientation=_orientation(ds),
        rescale=(slope, intercept),
        units="HU" if modality == "CT" and "RescaleIntercept" in ds else "",
        photometric=str(ds.get("PhotometricInterpretation", "")),
        bits_stored=int(ds.get("BitsStored", 0) or 0),
        window=window,
        patient=hash_id(str(ds.get("PatientID", "") or ""), salt),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
    )


def read_series(
    paths: Iterable[str | Path], *, salt: str = "", max_voxels: int = DEFAULT_MAX_VOXELS
) -> Volume:
    """One series (its files, any order) as a `Volume` (D, H, W) in slice order.

    Slices are sorted by ImagePositionPatient projected on the slice normal (the cross product
    of ImageOrientationPatient's row and column directions), else by InstanceNumber; the slice
    spacing is the median gap between positions (else SpacingBetweenSlices, SliceThickness,
    1 mm). Frames of multi-frame files become slices. Slices of different sizes are refused.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ResNetError("an empty DICOM series (no files)")
    datasets = [_read(p) for p in paths]
    try:
        return _volume(datasets, paths, salt, max_voxels)
    except ResNetError:
        raise
    except Exception as e:  # pydicom converts header values lazily: a damaged one fails on use
        raise ResNetError(f"{paths[0]}: malformed DICOM header ({_one_line(e)})") from None


def _volume(datasets: list, paths: list[Path], salt: str, max_voxels: int) -> Volume:
    """The checked, decoded, ordered slices of `datasets` (read from `paths`) as one Volume."""
    sizes = [_size(ds, p) for ds, p in zip(datasets, paths, strict=True)]
    for ds, p in zip(datasets, paths, strict=True):
        _check_numbers(ds, p)
    if len(set(sizes)) > 1:
        a, b = sorted(set(sizes))[:2]
        raise ResNetError(
            f"{paths[0].parent}: one series holds slices of different sizes "
            f"({a[0]}x{a[1]} and {b[0]}x{b[1]})"
        )
    rows, cols, samples = sizes[0]
    frames = sum(_frames(ds) for ds in datasets)
    check_voxels((frames, rows, cols, samples), str(paths[0]), max_voxels)
    order, gap = _slice_order(datasets, paths)
    slabs = [_intensities(datasets[i], _decode(datasets[i], paths[i]))[0] for i in order]
    array = np.concatenate(slabs) if len(slabs) > 1 else slabs[0]
    first = datasets[order[0]]
    return Volume(np.ascontiguousarray(array), _meta(first, gap or _header_gap(first), salt))


def find_series(folder: str | Path) -> dict[str, list[Path]]:
    """A folder's DICOM image files (recursively) grouped by SeriesInstanceUID.

    Files that are not DICOM (a README, .DS_Store) and DICOM objects without an image (reports,
    structure sets) are skipped; a folder with no DICOM image is refused. Series come in
    SeriesInstanceUID order, files by name (`read_series` sorts the slices).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ResNetError(f"{folder}: no such folder")
    series: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith(".") or path.name.upper() == "DICOMDIR":
            continue
        try:
            ds = _read(path, pixels=False)
        except ResNetError as e:
            if "not a DICOM file" in str(e):
                continue
            raise
        if "Rows" in ds:
            series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(path)
    if not series:
        raise ResNetError(f"{folder}: no DICOM images in this folder")
    return dict(sorted(series.items()))


def read_dicom(path: str | Path, *, salt: str = "", max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """A DICOM file, or a folder holding one series, as a `Volume` (D, H, W) with its metadata.

    A single-frame file is a volume of one slice. A folder with several series is refused
    (read them one by one with `find_series` and `read_series`).
    """
    path = Path(path)
    if path.is_dir():
        series = find_series(path)
        if len(series) > 1:
            raise ResNetError(
                f"{path}: {len(series)} DICOM series in one folder; give one series' folder"
            )
        return read_series(next(iter(series.values())), salt=salt, max_voxels=max_voxels)
    return read_series([path], salt=salt, max_voxels=max_voxels)
