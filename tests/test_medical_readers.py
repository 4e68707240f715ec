"""DICOM/NIfTI readers, windows, resampling and the synthetic cohort, against pydicom/nibabel."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from resnet.data.cohort import ct_source, mri_source, write_cohort
from resnet.data.dicom import find_series, read_dicom, read_series
from resnet.data.grouping import hash_group
from resnet.data.nifti import read_nifti
from resnet.data.volumes import (
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
from resnet.errors import ResNetError

FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # shipped in the wheel
CT, MR = ct_source(), FILES / "MR_small.dcm"


def one_line_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(ResNetError, match=match) as info:
        fn(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    write_cohort(root, patients=4, slices=5, size=32, seed=3, max_series=3, nifti=True)
    return root


def test_ct_hounsfield_units_and_geometry():
    ds = pydicom.dcmread(CT)
    v = read_dicom(CT)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert v.array.dtype == np.float32 and v.shape == (1, 128, 128)
    np.testing.assert_array_equal(v.array[0], expected.astype(np.float32))
    assert v.array.min() < -800  # air in HU, not the stored 0..4095
    m = v.meta
    assert m.units == "HU" and m.modality == "CT" and m.rescale == (1.0, -1024.0)
    assert m.spacing == (float(ds.SliceThickness), *map(float, ds.PixelSpacing))
    assert m.orientation == "SPL" and m.series_uid == ds.SeriesInstanceUID


def test_mr_small_full_range_float32():
    ds = pydicom.dcmread(MR)
    v = read_dicom(MR)
    assert v.shape == (1, 64, 64) and v.array.dtype == np.float32
    assert v.array.min() == ds.pixel_array.min() and v.array.max() == ds.pixel_array.max() == 2145
    assert v.meta.units == "" and v.meta.window == (1600.0, 600.0)


def test_monochrome1_is_inverted_within_the_stored_range(tmp_path):
    ds = pydicom.dcmread(MR)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    bits, signed = int(ds.BitsStored), int(ds.PixelRepresentation) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    v = read_dicom(tmp_path / "m1.dcm")
    np.testing.assert_array_equal(v.array[0], (lo + hi - ds.pixel_array).astype(np.float32))
    plain = read_dicom(MR).array
    assert np.corrcoef(v.array.ravel(), plain.ravel())[0, 1] < -0.999  # brightness reversed


def test_window_arithmetic():
    width, level = WINDOWS["lung"]
    assert (width, level) == (1500.0, -600.0) == parse_window("lung") == parse_window("1500,-600")
    x = np.array([level, level - width / 2, level + width / 2, -3000, 3000, level + 375])
    out = apply_window(x, parse_window("lung"))
    np.testing.assert_allclose(out, [0.5, 0.0, 1.0, 0.0, 1.0, 0.75])
    assert out.dtype == np.float32
    assert parse_window("minmax") is None and parse_window(None) is None
    np.testing.assert_allclose(apply_window(np.array([10.0, 20.0, 30.0]), None), [0, 0.5, 1])
    assert np.all(apply_window(np.full(4, 7.0), None) == 0)
    hu = read_dicom(CT)
    brain = hu.windowed("brain")
    assert brain.min() >= 0 and brain.max() <= 1
    np.testing.assert_allclose(brain, np.clip((hu.array - 0) / 80, 0, 1), atol=1e-6)
    one_line_error("window 'lungs'", parse_window, "lungs")
    one_line_error("positive", parse_window, "0,40")


def test_multiframe_frames_become_slices():
    path = FILES / "SC_rgb_rle_2frame.dcm"
    v = read_dicom(path)
    expected = pydicom.dcmread(path).pixel_array
    assert v.shape == (2, 100, 100, 3)
    np.testing.assert_array_equal(v.array, expected.astype(np.float32))


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPEG-lossy.dcm"])
def test_compressed_decodes_or_names_the_missing_plugin(name):
    path = FILES / name
    ds = pydicom.dcmread(path)
    try:
        expected = ds.pixel_array
    except Exception:
        expected = None
    if expected is not None:
        np.testing.assert_array_equal(read_dicom(path).array.reshape(expected.shape), expected)
        return
    ts = ds.file_meta.TransferSyntaxUID
    text = one_line_error("cannot decode", read_dicom, path)
    assert ts.name in text and str(ts) in text
    plugin = "pylibjpeg-openjpeg" if "2000" in ts.name else "pylibjpeg-libjpeg"
    assert text.endswith(f"pip install pylibjpeg {plugin}")


def test_bad_dicom_inputs_are_one_line_errors(tmp_path):
    one_line_error("no pixel data", read_dicom, FILES / "rtplan.dcm")
    one_line_error("truncated or corrupt", read_dicom, FILES / "MR_truncated.dcm")
    (tmp_path / "cut.dcm").write_bytes(CT.read_bytes()[:700])  # cut inside the header
    one_line_error("cut.dcm: no pixel data .*truncated", read_dicom, tmp_path / "cut.dcm")
    (tmp_path / "notes.dcm").write_text("not an image\n" * 20)
    one_line_error("not a DICOM file", read_dicom, tmp_path / "notes.dcm")
    one_line_error("no such file", read_dicom, tmp_path / "absent.dcm")


def test_series_grouping_and_slice_order(cohort, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    chosen = [cohort / "SYN000" / "series1", cohort / "SYN001" / "series1"]
    rng = np.random.default_rng(0)
    for i, folder in enumerate(chosen):
        for f in folder.iterdir():  # shuffled names: the name order says nothing
            shutil.copy(f, mixed / f"x{rng.integers(1_000_000):07d}_{i}_{f.name}")
    (mixed / "README.txt").write_text("skipped: not DICOM\n")
    groups = find_series(mixed)
    assert len(groups) == 2 and all(len(g) == 5 for g in groups.values())
    for uid, files in groups.items():
        headers = [pydicom.dcmread(f) for f in files]
        assert {h.SeriesInstanceUID for h in headers} == {uid}
        ordered = sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))
        v = read_series(reversed(files))
        for k, h in enumerate(ordered):
            hu = h.pixel_array * float(h.RescaleSlope) + float(h.RescaleIntercept)
            np.testing.assert_array_equal(v.array[k], hu.astype(np.float32))
        assert v.meta.spacing[0] == pytest.approx(float(ordered[0].SliceThickness))
        assert v.meta.series_uid == uid and v.shape == (5, 32, 32)
    one_line_error("2 DICOM series", read_dicom, mixed)


def test_mixed_slice_sizes_refused(cohort, tmp_path):
    folder = tmp_path / "series"
    shutil.copytree(cohort / "SYN000" / "series1", folder)
    first = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(first)
    ds.set_pixel_data(np.zeros((16, 16), np.int16), "MONOCHROME2", 16)
    ds.save_as(first)
    one_line_error("different sizes", read_dicom, folder)


def test_cohort_layout_labels_and_determinism(cohort, tmp_path):
    rows = list(csv.DictReader(open(cohort / "labels.csv")))
    patients = {r["patient"]: r["label"] for r in rows}
    assert len(patients) == 4 and sorted(patients.values()) == ["lesion"] * 2 + ["normal"] * 2
    for r in rows:
        v = (read_nifti if r["path"].endswith(".nii.gz") else read_dicom)(cohort / r["path"])
        assert v.array.ndim == 3 and np.isfinite(v.array).all()
    again = tmp_path / "again"
    write_cohort(again, patients=4, slices=5, size=32, seed=3, max_series=3, nifti=True)
    assert (again / "labels.csv").read_text() == (cohort / "labels.csv").read_text()
    some = sorted((cohort / "SYN001").rglob("*.dcm"))[0]
    assert (again / some.relative_to(cohort)).read_bytes() == some.read_bytes()
    assert pydicom.dcmread(some).PatientID == "SYN001"  # the synthetic ID, stored in the file


def test_nifti_canonical_orientation_and_spacing():
    img = nib.load(mri_source())
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")  # the file itself is not canonical
    canon = nib.as_closest_canonical(img)
    v = read_nifti(mri_source())
    np.testing.assert_array_equal(v.array, canon.get_fdata().astype(np.float32).transpose(2, 1, 0))
    assert v.meta.spacing == tuple(float(z) for z in canon.header.get_zooms()[::-1])
    ras = reorient(v, "RAS")  # back to nibabel's own axis order
    np.testing.assert_array_equal(ras.array, canon.get_fdata().astype(np.float32))
    assert ras.meta.orientation == "RAS"


def test_nifti_4d_nan_and_bad_files(tmp_path):
    four = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    canon = nib.as_closest_canonical(nib.load(four))
    v = read_nifti(four, frame=1)
    np.testing.assert_allclose(v.array, canon.get_fdata()[..., 1].transpose(2, 1, 0), rtol=1e-6)
    one_line_error("frame 99", read_nifti, four, frame=99)
    data = np.ones((4, 5, 6), np.float32)
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii")
    one_line_error("1 NaN or infinite", read_nifti, tmp_path / "nan.nii")
    (tmp_path / "junk.nii").write_bytes(b"\x00" * 100)
    one_line_error("junk.nii", read_nifti, tmp_path / "junk.nii")


def test_resample_resize_crop():
    v = read_nifti(mri_source())  # (25, 41, 33) at 2 mm
    r = resample(v, (4.0, 4.0, 4.0))
    assert r.shape == (13, 21, 17)  # 25, 41, 33 halved, rounded half up
    assert r.meta.spacing == pytest.approx([2 * 25 / 13, 2 * 41 / 21, 2 * 33 / 17])
    up = resample(read_dicom(CT), (5.0, 1.322936, 1.322936))
    assert up.shape == (1, 64, 64)
    const = Volume(np.full((4, 6, 8), 3.0, np.float32), ImageMeta(format="test"))
    np.testing.assert_allclose(resize(const, (8, 3, 5)).array, 3.0)
    crop = center_crop(v, (16, 32, 32))
    np.testing.assert_array_equal(crop.array, v.array[4:20, 4:36, 0:32])
    one_line_error("smaller than the crop", center_crop, v, (32, 64, 64))


def test_no_patient_name_or_id_in_metadata():
    ds = pydicom.dcmread(CT)
    raw = [str(ds.PatientID), *str(ds.PatientName).split("^")]
    meta = read_dicom(CT).meta
    text = repr(meta) + json.dumps(meta.to_dict())
    assert not any(part and part in text for part in raw)
    assert meta.patient == hash_id(str(ds.PatientID)) != hash_id(str(ds.PatientID), salt="s")
    assert len(meta.patient) == 16 and hash_id("") == ""
    assert meta.patient == hash_group(str(ds.PatientID), "")  # the split records' hash
