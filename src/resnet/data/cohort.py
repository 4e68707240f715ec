"""A SYNTHETIC imaging cohort built from real shipped scans, for tests and the tutorial.

Nothing here is patient data and no label is a diagnosis: the "patients" are deformed, shifted,
noised copies of pydicom's real CT slice (CT_small.dcm) and optionally nibabel's real brain MRI
(anatomical.nii), and the positive class is a planted Gaussian blob (a lesion-like bright spot
of +150 to +300 HU), so a model that learns the cohort has learned to find a blob, nothing
clinical. It exists because no real cohort can be downloaded here, and it exercises what real
data does: several series per patient with proper DICOM headers (PatientID, Study/Series/SOP
UIDs, ImagePositionPatient, PixelSpacing, SliceThickness, RescaleSlope/Intercept, Modality CT),
file names that are not in slice order, and two rescale intercepts.

Layout written by `write_cohort(root)` (deterministic from `seed`):

    root/labels.csv                      patient,path,label  (path relative to root)
    root/SYN000/series1/IM....dcm        one DICOM series (slices of one volume)
    root/SYN000/series2/...              1 to 3 series per patient, all with the patient's label
    root/SYN000/anat.nii.gz              with nifti=True: a NIfTI volume from anatomical.nii
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ResNetError
from ..storage import atomic_write_bytes, atomic_write_text

LABELS = ("normal", "lesion")


def _shipped(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package's wheel (never downloaded)."""
    module = __import__(package)
    path = Path(module.__file__).parent.joinpath(*parts)
    if not path.is_file():
        raise ResNetError(f"{path}: not found; the {package} installation lacks its test data")
    return path


def ct_source() -> Path:
    """pydicom's real CT slice, CT_small.dcm (128 x 128, 16-bit, HU = raw - 1024)."""
    return _shipped("pydicom", "data", "test_files", "CT_small.dcm")


def mri_source() -> Path:
    """nibabel's real brain MRI, anatomical.nii (33 x 41 x 25 voxels of 2 mm)."""
    return _shipped("nibabel", "tests", "data", "anatomical.nii")


def _blob(shape: tuple[int, ...], center, sigma, amplitude: float) -> np.ndarray:
    """A 3-D Gaussian (lesion-like) of peak `amplitude` at `center` (voxels), widths `sigma`."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    r2 = sum(((g - c) / s) ** 2 for g, c, s in zip(grids, center, sigma, strict=True))
    return (amplitude * np.exp(-0.5 * r2)).astype(np.float32)


def _patient_volume(ct: np.ndarray, slices: int, size: int, rng, positive: bool) -> np.ndarray:
    """One patient's anatomy in HU (slices, size, size): the CT slice zoomed along z, + a blob."""
    src = torch.from_numpy(ct)[None, None]
    scale = rng.uniform(0.85, 1.1)
    frames = []
    for k in range(slices):
        # the body narrows away from the middle slice, like a trunk seen slice by slice
        s = scale * (1.0 + 0.06 * abs(k - (slices - 1) / 2) / max(1, slices))
        theta = torch.tensor([[[s, 0.0, 0.0], [0.0, s, 0.0]]], dtype=torch.float32)
        grid = F.affine_grid(theta, [1, 1, size, size], align_corners=False)
        frames.append(F.grid_sample(src, grid, padding_mode="border", align_corners=False)[0, 0])
    vol = torch.stack(frames).numpy() + rng.uniform(-20, 20)
    if positive:
        center = (
            rng.uniform(0.3, 0.7) * (slices - 1),
            rng.uniform(0.35, 0.65) * size,
            rng.uniform(0.35, 0.65) * size,
        )
        sigma = (rng.uniform(0.8, 1.5), *(rng.uniform(0.05, 0.08) * size,) * 2)
        vol = vol + _blob(vol.shape, center, sigma, rng.uniform(150, 300))
    return vol.astype(np.float32)


def _series_view(vol: np.ndarray, rng) -> np.ndarray:
    """One acquisition of the anatomy: a small shift and rotation in-plane, and scanner noise."""
    angle = math.radians(rng.uniform(-8, 8))
    tx, ty = rng.uniform(-0.08, 0.08, size=2)
    c, s = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[[c, -s, tx], [s, c, ty]]], dtype=torch.float32)
    x = torch.from_numpy(vol)[:, None]
    grid = F.affine_grid(theta.expand(len(vol), 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, padding_mode="border", align_corners=False)[:, 0].numpy()
    return out + rng.normal(0, rng.uniform(8, 20), size=out.shape).astype(np.float32)


def _slice_dataset(ids: dict, k: int, sop: str):
    """A minimal CT image header (no pixels yet): the tags a reader needs, nothing else."""
    # pydicom: heavy third-party import (0.6 s), needed only when a cohort is written.
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.PatientID, ds.PatientName = ids["patient"], f"Synthetic^{ids['patient']}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ids["study"], ids["series"]
    ds.SeriesNumber, ds.InstanceNumber = ids["number"], k + 1
    ds.Modality, ds.ImageType = "CT", ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SeriesDescription = "SYNTHETIC (derived from pydicom CT_small.dcm)"
    return ds


def _write_series(folder: Path, hu: np.ndarray, ids: dict, spacing: float, rng) -> None:
    """Writes `hu` (slices, H, W) as one CT series of int16 files with real geometry headers."""
    # pydicom: heavy third-party import (0.6 s), needed only when a cohort is written.
    from pydicom.uid import generate_uid

    slices, size = hu.shape[0], hu.shape[1]
    intercept = float(rng.choice([-1024.0, -1000.0]))
    thickness = float(rng.choice([2.5, 5.0]))
    z0 = float(rng.uniform(-100, -50))
    names = rng.permutation(10_000)[:slices]  # file names not in slice order, as in real exports
    for k in range(slices):
        ds = _slice_dataset(ids, k, generate_uid(entropy_srcs=[ids["series"], str(k)]))
        ds.PixelSpacing = [round(spacing, 6)] * 2
        ds.SliceThickness = thickness
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-size * spacing / 2, -size * spacing / 2, z0 + k * thickness]
        ds.SliceLocation = z0 + k * thickness
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, intercept, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        stored = np.clip(np.rint(hu[k] - intercept), -32768, 32767).astype(np.int16)
        # sets Rows, Columns, bits, sign and PixelData; keeps our deterministic SOP Instance UID
        ds.set_pixel_data(stored, "MONOCHROME2", 16, generate_instance_uid=False)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        atomic_write_bytes(folder / f"IM{names[k]:04d}.dcm", lambda f, b=buf: f.write(b.getvalue()))


def _write_nifti(path: Path, rng, positive: bool) -> None:
    """A NIfTI copy of anatomical.nii, intensity-jittered and noised, blob planted if positive."""
    # nibabel: heavy third-party import (0.7 s), needed only when NIfTI volumes are written.
    import nibabel as nib

    img = nib.load(mri_source())
    data = np.asarray(img.dataobj, dtype=np.float32) * rng.uniform(0.9, 1.1)
    data += rng.normal(0, 0.02 * float(data.std()), size=data.shape).astype(np.float32)
    if positive:
        center = [rng.uniform(0.35, 0.65) * n for n in data.shape]
        data += _blob(data.shape, center, (2.0, 2.0, 2.0), 0.8 * float(data.max()))
    out = nib.Nifti1Image(data.astype(np.float32), img.affine)  # original (LAS) affine kept
    packed = gzip.compress(out.to_bytes(), mtime=0)  # mtime 0: the same seed, the same bytes
    atomic_write_bytes(path, lambda f: f.write(packed))


def write_cohort(
    root: str | Path,
    patients: int = 12,
    slices: int = 8,
    size: int = 64,
    seed: int = 0,
    max_series: int = 3,
    nifti: bool = False,
) -> Path:
    """Writes a SYNTHETIC cohort under `root` and returns its labels CSV (see the module doc).

    Half the patients (rounded down, chosen by `seed`) are "lesion", the rest "normal"; each has
    1 to `max_series` CT series of `slices` slices of `size` x `size`, and with `nifti` also one
    NIfTI volume. The same arguments write the same files.
    """
    # pydicom: heavy third-party import (0.6 s), needed only when a cohort is written.
    import pydicom
    from pydicom.uid import generate_uid

    if patients < 2 or slices < 1 or size < 8 or max_series < 1:
        raise ResNetError("a cohort needs 2+ patients, 1+ slices, size 8+ and 1+ series each")
    root = Path(root)
    template = pydicom.dcmread(ct_source())
    ct = (template.pixel_array.astype(np.float32) * float(template.RescaleSlope)) + float(
        template.RescaleIntercept
    )
    spacing = float(template.PixelSpacing[0]) * template.Rows / size  # the same field of view
    rng = np.random.default_rng(seed)
    positive = set(rng.permutation(patients)[: patients // 2].tolist())
    rows = []
    for p in range(patients):
        pid, label = f"SYN{p:03d}", LABELS[p in positive]
        anatomy = _patient_volume(ct, slices, size, rng, p in positive)
        study = generate_uid(entropy_srcs=[str(seed), pid, "study"])
        for s in range(1, int(rng.integers(1, max_series + 1)) + 1):
            series = generate_uid(entropy_srcs=[str(seed), pid, str(s)])
            ids = {"patient": pid, "study": study, "series": series, "number": s}
            folder = root / pid / f"series{s}"
            _write_series(folder, _series_view(anatomy, rng), ids, spacing, rng)
            rows.append((pid, f"{pid}/series{s}", label))
        if nifti:
            _write_nifti(root / pid / "anat.nii.gz", rng, p in positive)
            rows.append((pid, f"{pid}/anat.nii.gz", label))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("patient", "path", "label"), *rows])
    return atomic_write_text(root / "labels.csv", buf.getvalue())
