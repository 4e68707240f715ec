"""Bad scans through the CLI: `resnet predict` and `resnet train` print one line and exit 2.

Every bad file is built here from the real shipped scans (pydicom's CT_small.dcm, nibabel's
anatomical.nii): pixel data removed, bytes cut, slices of two sizes, NaN voxels, a text file
named .dcm, a PNG, a JPEG 2000 header over raw pixels, malformed header numbers.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from resnet.cli import main
from resnet.data.cohort import ct_source, mri_source, write_cohort
from resnet.data.dicom import read_dicom
from resnet.data.scans import ScanOptions, prepare
from resnet.errors import ResNetError

TRAIN = ["--volume", "4,16,16", "--model", "resnet10_3d", "--epochs", "1", "--batch-size", "8"]
TRAIN += ["--group-by", "patient", "--quiet", "--precision", "fp32"]  # fp32: faster on a CPU


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("RESNET_DEBUG", raising=False)  # RESNET_DEBUG=1 re-raises


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A tiny synthetic cohort and ONE volume checkpoint, trained with the default
    `--bad-images skip` on the cohort plus one truncated DICOM (its warnings recorded)."""
    root = tmp_path_factory.mktemp("run")
    cohort = root / "cohort"
    write_cohort(cohort, patients=8, slices=4, size=16)
    raw = ct_source().read_bytes()
    (cohort / "cut.dcm").write_bytes(raw[: len(raw) // 2])
    table = (cohort / "labels.csv").read_text() + "BAD,cut.dcm,lesion\n"
    (cohort / "with_bad.csv").write_text(table)
    out = root / "RUN"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["train", "--data", str(cohort / "with_bad.csv"), *TRAIN, "--out", str(out)])
    assert code == 0
    skipped = [str(w.message) for w in caught if "skipping" in str(w.message)]
    return {"cohort": cohort, "ckpt": out / "best.pt", "skipped": skipped}


def _ct(**changes) -> pydicom.Dataset:
    ds = pydicom.dcmread(ct_source())
    for key, value in changes.items():
        setattr(ds, key, value)
    return ds


def _raw_replace(old: bytes, new: bytes) -> bytes:
    """CT_small's bytes with one header value's text overwritten (same length, space-padded)."""
    raw = ct_source().read_bytes()
    assert raw.count(old) == 1 and len(new) <= len(old)
    return raw.replace(old, new.ljust(len(old)))


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """Each bad scan by case name."""
    d = tmp_path_factory.mktemp("bad")
    raw, mri = ct_source().read_bytes(), nib.load(mri_source())
    files: dict[str, Path] = {}

    ds = _ct()
    del ds.PixelData
    ds.save_as(files.setdefault("no_pixels", d / "no_pixels.dcm"))

    files["truncated"] = d / "truncated.dcm"
    files["truncated"].write_bytes(raw[: len(raw) // 2])

    series = files.setdefault("mixed_sizes", d / "mixed_series")
    series.mkdir()
    first = _ct()
    first.save_as(series / "IM1.dcm")
    small = _ct()  # the same SeriesInstanceUID, half the rows and columns, next position
    small.set_pixel_data(first.pixel_array[::2, ::2].copy(), "MONOCHROME2", 16)
    x, y, z = (float(v) for v in first.ImagePositionPatient)
    small.ImagePositionPatient = [x, y, z + float(first.SliceThickness)]
    small.save_as(series / "IM2.dcm")
    assert small.SeriesInstanceUID == first.SeriesInstanceUID and small.Rows == first.Rows // 2

    data = np.asarray(mri.dataobj, dtype=np.float32)
    data[10:12, 20:22, 5] = np.nan
    nib.save(nib.Nifti1Image(data, mri.affine), files.setdefault("nan_nifti", d / "nan.nii"))

    files["text_as_dcm"] = d / "notes.dcm"
    files["text_as_dcm"].write_text("patient notes, not a scan\n" * 20)

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(files.setdefault("png", d / "pic.png"))

    j2k = _ct()  # says JPEG 2000, holds raw pixels: no decoder installed, or a corrupt stream
    j2k.file_meta.TransferSyntaxUID = JPEG2000Lossless
    j2k.PixelData = encapsulate([bytes(j2k.PixelData)])
    j2k["PixelData"].is_undefined_length = True
    j2k.save_as(files.setdefault("jpeg2000", d / "j2k.dcm"))

    _ct(NumberOfFrames=3).save_as(files.setdefault("multiframe_short", d / "frames.dcm"))

    mri_bytes = mri_source().read_bytes()  # LAS on disk: reorienting reads the cut data
    files["nifti_truncated"] = d / "cut.nii"
    files["nifti_truncated"].write_bytes(mri_bytes[: len(mri_bytes) // 2])
    packed = gzip.compress(mri_bytes)
    files["nifti_gz_truncated"] = d / "cut.nii.gz"
    files["nifti_gz_truncated"].write_bytes(packed[: len(packed) // 2])

    five = np.asarray(mri.dataobj, dtype=np.float32)[..., None, None]
    nib.save(nib.Nifti1Image(five, mri.affine), files.setdefault("nifti_5d", d / "five.nii"))

    files["bad_spacing"] = d / "spacing.dcm"
    files["bad_spacing"].write_bytes(_raw_replace(b"0.661468\\0.661468", b"abc\\def"))
    files["nan_spacing"] = d / "nan_spacing.dcm"
    files["nan_spacing"].write_bytes(_raw_replace(b"0.661468\\0.661468", b"nan\\nan"))
    files["bad_position"] = d / "position.dcm"
    files["bad_position"].write_bytes(_raw_replace(b"-158.135803", b"nope"))
    return files


# case: (words the one line must hold besides the path)
CASES = {
    "no_pixels": ["no pixel data"],
    "truncated": ["truncated or corrupt"],
    "mixed_sizes": ["different sizes", "64x64 and 128x128"],
    "nan_nifti": ["4 NaN or infinite voxels"],
    "text_as_dcm": ["not a DICOM file"],
    "jpeg2000": [],  # checked below: names the plugin to install, or says corrupt
    "multiframe_short": ["truncated or corrupt"],
    "nifti_truncated": ["truncated or corrupt"],
    "nifti_gz_truncated": ["truncated or corrupt"],
    "nifti_5d": ["is not a 2-D or 3-D image"],
    "bad_spacing": ["malformed PixelSpacing"],
    "nan_spacing": ["invalid PixelSpacing"],
    "bad_position": ["malformed ImagePositionPatient"],
}


def one_line_error(capsys, argv: list[str], *words: str) -> str:
    """Runs `resnet argv`; asserts exit 2 and ONE stderr line `resnet <cmd>: error: ...`."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # a warning would be another line
        warnings.simplefilter("always")
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.endswith("\n") and err.count("\n") == 1, err
    line = err.rstrip("\n")
    assert line.startswith(f"resnet {argv[0]}: error: ") and len(line) > 30, line
    for word in words:
        assert word in line, line
    assert not [str(w.message) for w in caught]
    return line


def _check_jpeg2000(line: str) -> None:
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in line or "corrupt" in line, line


# predict loads the checkpoint before each scan (0.6 s): the header-number and 5-D cases run
# through train only, where the reading code is the same.
PREDICT_CASES = [
    c for c in CASES if c not in ("nifti_5d", "nifti_gz_truncated", "nan_spacing", "bad_position")
]


@pytest.mark.parametrize("case", [*PREDICT_CASES, "png"])
def test_predict_bad_scan_is_one_line_and_keeps_predictions(run, bad, case, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = json.dumps([{"path": "earlier.dcm", "predictions": []}])
    (out / "predictions.json").write_text(earlier)
    words = ["is not a DICOM or NIfTI file"] if case == "png" else CASES[case]
    argv = ["predict", str(run["ckpt"]), str(bad[case]), "--out", str(out)]
    line = one_line_error(capsys, argv, str(bad[case]), *words)
    if case == "jpeg2000":
        _check_jpeg2000(line)
    assert (out / "predictions.json").read_text() == earlier  # nothing written is lost
    assert sorted(p.name for p in out.iterdir()) == ["predictions.json"]


def _cohort_with(run, tmp_path: Path, bad_path: Path) -> Path:
    """A labels CSV of the tiny cohort (absolute paths), the bad scan in its last row."""
    rows = list(csv.reader(open(run["cohort"] / "labels.csv", newline="")))
    body = [[p, str(run["cohort"] / path), label] for p, path, label in rows[1:]]
    body.append(["BAD", str(bad_path), "lesion"])
    folder = tmp_path / "badcohort"
    folder.mkdir()
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *body])
    return folder


@pytest.mark.parametrize("case", [*CASES, "png"])
def test_train_bad_scan_with_bad_images_error(run, bad, case, capsys, tmp_path):
    data, out = _cohort_with(run, tmp_path, bad[case]), tmp_path / "RUN"
    argv = ["train", "--data", str(data), *TRAIN, "--out", str(out), "--bad-images", "error"]
    words = ["not a DICOM file"] if case == "png" else CASES[case]
    line = one_line_error(capsys, argv, str(bad[case]), *words)
    if case == "jpeg2000":
        _check_jpeg2000(line)
    assert not (out / "last.pt").exists()


def test_train_volume_smaller_than_crop(run, capsys, tmp_path):
    argv = ["train", "--data", str(run["cohort"]), *TRAIN, "--out", str(tmp_path / "RUN")]
    argv = [*argv, "--spacing", "1,1,1", "--volume", "64,64,64"]  # the last --volume wins
    line = one_line_error(
        capsys, [*argv, "--bad-images", "error"], "smaller than the crop 64x64x64"
    )
    assert str(run["cohort"] / "SYN") in line and "resize or resample" in line
    capsys.readouterr()
    with pytest.warns(UserWarning, match="skipping .*smaller than the crop"):
        code = main(argv)  # default --bad-images skip: every scan skipped, then refused
    err = capsys.readouterr().err
    assert code == 2 and err == "resnet train: error: no readable scans found\n"


def test_train_skips_a_bad_scan_by_default(run):
    (message,) = run["skipped"]  # the fixture's run: one warning, then trained on the rest
    assert message.startswith(f"skipping {run['cohort'] / 'cut.dcm'}: pixel data truncated")
    assert run["ckpt"].is_file()


def test_predict_4d_nifti_takes_its_first_volume(run, capsys):
    four = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"  # in the wheel
    capsys.readouterr()
    assert main(["predict", str(run["ckpt"]), str(four), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["path"] == str(four) and len(result["predictions"]) == 2


def test_zero_pixel_spacing_refused_only_when_resampling(tmp_path):
    path = tmp_path / "zero.dcm"
    path.write_bytes(_raw_replace(b"0.661468\\0.661468", b"0\\0"))
    volume = read_dicom(path)  # readable: the spacing is only metadata until resampling
    assert prepare(volume, ScanOptions("volume", (1, 8, 8)), str(path)).shape == (1, 8, 8)
    with pytest.raises(ResNetError, match=f"^{re.escape(str(path))}: cannot resample: .*spacing"):
        prepare(volume, ScanOptions("volume", (1, 8, 8), spacing=(5.0, 1.0, 1.0)), str(path))
