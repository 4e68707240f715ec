"""The medical pipeline end to end, CLI and API, on a synthetic DICOM/NIfTI cohort."""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from resnet.cli import main
from resnet.data import DataConfig, load_data
from resnet.data.cohort import write_cohort
from resnet.data.grouping import hash_group
from resnet.engine import Trainer
from resnet.engine.config import TrainConfig
from resnet.engine.inference import predict_scans
from resnet.export import load_classifier

# The one shared volume run (CPU, fp32: `resnet val` and an exact resume repeat it bit for bit).
VOLUME_FLAGS = [
    "--model",
    "resnet10_3d",
    "--volume",
    "6,16,16",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--optimizer",
    "adamw",
    "--group-by",
    "patient",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--quiet",
]


@pytest.fixture(scope="module", autouse=True)
def _setting():
    """Patient hashes without a salt (so the test can recompute them), errors as one line, and
    one CPU thread: these tensors are tiny, and two threads spinning against other processes on
    a shared machine made the module 3x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RESNET_GROUP_SALT", raising=False)
        mp.delenv("RESNET_DEBUG", raising=False)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """12 synthetic patients (6 "lesion"), 1-2 CT series of 6 slices each plus one NIfTI."""
    root = tmp_path_factory.mktemp("cohort")
    write_cohort(root, patients=12, slices=6, size=24, seed=0, max_series=2, nifti=True)
    return root


def rows_of(table: Path) -> list[dict]:
    with open(table, newline="") as f:
        return list(csv.DictReader(f))


def patients_by_label(cohort: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in rows_of(cohort / "labels.csv"):
        if r["patient"] not in out.setdefault(r["label"], []):
            out[r["label"]].append(r["patient"])
    return out


def write_rows(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["patient", "path", "label"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tiny_csv(cohort) -> Path:
    """Series 1 of two patients per class: the cheapest scan source a net is refused on."""
    by_label = patients_by_label(cohort)
    keep = set(by_label["normal"][:2] + by_label["lesion"][:2])
    rows = [
        r
        for r in rows_of(cohort / "labels.csv")
        if r["patient"] in keep and r["path"].endswith("series1")
    ]
    return write_rows(cohort / "tiny.csv", rows)


@pytest.fixture(scope="module")
def series_csv(cohort) -> Path:
    """Every patient's CT series, no NIfTI (whose 25 slices each would dominate a slice run)."""
    rows = [r for r in rows_of(cohort / "labels.csv") if not r["path"].endswith(".nii.gz")]
    return write_rows(cohort / "series.csv", rows)


@pytest.fixture(scope="module")
def imbalanced_csv(series_csv, cohort) -> Path:
    """Every "lesion" series, and the series of only two of the six "normal" patients."""
    keep = set(patients_by_label(cohort)["normal"][:2])
    rows = [r for r in rows_of(series_csv) if r["label"] == "lesion" or r["patient"] in keep]
    return write_rows(cohort / "imbalanced.csv", rows)


@pytest.fixture(scope="module")
def volume_run(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("volume") / "run"
    assert main(["train", "--data", str(cohort), *VOLUME_FLAGS, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def slice_folds(series_csv, tmp_path_factory) -> Path:
    """2.5-D slices (3 neighbours as channels) through a 2-D net, 2-fold cross-validated."""
    out = tmp_path_factory.mktemp("slices") / "cv"
    argv = ["train", "--data", str(series_csv), "--model", "resnet20", "--slices", "3"]
    argv += ["--image-size", "16", "--epochs", "1", "--batch-size", "32", "--group-by", "patient"]
    argv += ["--folds", "2", "--device", "cpu", "--precision", "fp32", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    return out


def predict_json(capsys, *argv: str) -> list[dict]:
    capsys.readouterr()
    assert main(["predict", *argv, "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def probs(result: dict) -> dict[str, float]:
    return {p["class"]: p["probability"] for p in result["predictions"]}


def summary_val_samples(run: Path) -> int:
    return json.loads((run / "splits.json").read_text())["n_val_samples"]


def strings_in(obj):
    """Every string (keys included) inside a checkpoint's plain data; tensors skipped."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings_in(k)
            yield from strings_in(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from strings_in(v)


# --- the run folder ---------------------------------------------------------------------------


def test_volume_run_writes_clinical_report_and_records_scan_options(volume_run):
    for name in ("splits.json", "val_clinical.json", "roc.png", "pr.png", "calibration.png"):
        assert (volume_run / name).stat().st_size > 0, name
    summary = json.loads((volume_run / "summary.json").read_text())
    auroc = summary["val_auroc"]
    lo, hi = summary["val_auroc_ci95"]
    assert isinstance(auroc, float) and 0.0 <= lo <= auroc <= hi <= 1.0, summary
    report = json.loads((volume_run / "val_clinical.json").read_text())
    assert report["macro"]["auroc"]["value"] == pytest.approx(auroc)
    assert summary["classes"] == ["normal", "lesion"]  # the negative name first

    data = yaml.safe_load((volume_run / "config.yaml").read_text())["data"]
    assert data["group_by"] == "patient" and data["volume"] == [6, 16, 16]
    assert data["balance"] == "none"
    state = torch.load(volume_run / "best.pt", weights_only=True, mmap=True)
    pre = state["preprocessing"]
    assert pre["in_chans"] == 1 and pre["scan"]["mode"] == "volume"
    assert pre["scan"]["volume"] == [6, 16, 16]


def test_split_is_by_patient_and_no_patient_id_is_written(volume_run, cohort):
    rows = rows_of(cohort / "labels.csv")
    hashes = {r["patient"]: hash_group(r["patient"], "") for r in rows}
    assert len(hashes) == 12
    split = json.loads((volume_run / "splits.json").read_text())
    train, val = set(split["train"]), set(split["val"])
    assert train and val and not train & val
    assert train | val == set(hashes.values())  # every patient, on exactly one side
    assert len(split["train"]) + len(split["val"]) == 12
    val_rows = [r for r in rows if hashes[r["patient"]] in val]
    assert split["n_val_samples"] == len(val_rows)
    assert split["n_train_samples"] == len(rows) - len(val_rows)
    assert {r["label"] for r in val_rows} == {"normal", "lesion"}  # stratified by patient

    ids = sorted(hashes)
    written = [p for p in volume_run.rglob("*") if p.suffix in (".json", ".yaml", ".csv")]
    assert {"splits.json", "summary.json", "config.yaml", "metrics.csv", "val_metrics.json"} <= {
        p.name for p in written
    }
    for path in written:
        text = path.read_text()
        assert not [i for i in ids if i in text], path
    for name in ("best.pt", "last.pt"):
        state = torch.load(volume_run / name, weights_only=True, mmap=True)
        assert "SYN" not in json.dumps([state["preprocessing"], state["config"]])
        found = {i for s in strings_in(state) for i in ids if i in s}
        assert not found, (name, found)


def test_val_repeats_the_runs_validation_figures(volume_run):
    assert main(["val", str(volume_run), "--device", "cpu"]) == 0
    metrics = json.loads((volume_run / "val-val" / "metrics.json").read_text())
    summary = json.loads((volume_run / "summary.json").read_text())
    assert metrics["split"] == "val" and metrics["samples"] == summary_val_samples(volume_run)
    assert metrics["top1"] == summary["val_acc"]  # same split, same weights, fp32 both
    assert 0.0 <= metrics["val_auroc"] <= 1.0
    assert metrics["val_auroc"] == pytest.approx(summary["val_auroc"], abs=1e-6)


# --- prediction, export, calibration ----------------------------------------------------------


def test_predict_dicom_file_series_and_nifti_with_cams(volume_run, cohort, tmp_path):
    dicom = sorted((cohort / "SYN000" / "series1").glob("*.dcm"))[0]
    series, nifti = cohort / "SYN001" / "series1", cohort / "SYN002" / "anat.nii.gz"
    out = tmp_path / "P"
    argv = ["predict", str(volume_run), str(dicom), str(series), str(nifti), "--out", str(out)]
    assert main([*argv, "--cam", "--cam-layer", "layer2", "--device", "cpu"]) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert [r["path"] for r in results] == [str(dicom), str(series), str(nifti)]
    for r in results:
        p = probs(r)
        assert set(p) == {"normal", "lesion"}
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-5)
        assert r["cam_layer"] == "layer2" and Path(r["cam"]).parent == out
    cams = sorted(out.glob("*.cam.png"))
    assert len(cams) == 3 and {str(c) for c in cams} == {r["cam"] for r in results}
    for c in cams:
        with Image.open(c) as im:
            assert im.format == "PNG" and min(im.size) >= 16


def test_onnx_export_predicts_as_the_checkpoint(volume_run, cohort, tmp_path):
    onnx = tmp_path / "model.onnx"
    argv = ["export", str(volume_run), "--format", "onnx", "--out", str(onnx)]
    assert main([*argv, "--num-images", "4"]) == 0  # 4 parity samples: the default 16 is slow
    series = cohort / "SYN003" / "series1"
    eager = predict_scans(load_classifier(volume_run), [series], top_k=2)[0][0]
    exported = predict_scans(load_classifier(onnx), [series], top_k=2)[0][0]
    assert exported["predictions"][0]["class"] == eager["predictions"][0]["class"]
    for c, p in probs(eager).items():
        assert probs(exported)[c] == pytest.approx(p, abs=1e-4)
    data = onnx.read_bytes()
    ids = [p for ps in patients_by_label(cohort).values() for p in ps]
    assert len(ids) == 12 and not [p for p in ids if p.encode() in data]


def test_calibration_changes_probabilities_not_the_top_class(volume_run, cohort, tmp_path, capsys):
    run = tmp_path / "cal"  # a copy: calibrate writes the temperature into the checkpoint
    run.mkdir()
    (run / "best.pt").write_bytes((volume_run / "best.pt").read_bytes())
    series = str(cohort / "SYN004" / "series1")
    before = predict_json(capsys, str(run), series)[0]
    assert main(["calibrate", str(run), "--device", "cpu"]) == 0
    cal = json.loads((run / "calibration" / "calibration.json").read_text())
    assert cal["split"] == "val" and cal["samples"] == summary_val_samples(volume_run)
    assert cal["temperature"] > 0 and cal["temperature"] != pytest.approx(1.0, abs=1e-3)
    assert torch.load(run / "best.pt", weights_only=True, mmap=True)["temperature"] == (
        pytest.approx(cal["temperature"])
    )
    after = predict_json(capsys, str(run), series)[0]
    assert after["predictions"][0]["class"] == before["predictions"][0]["class"]
    p0, p1 = probs(before), probs(after)
    assert max(abs(p0[c] - p1[c]) for c in p0) > 1e-6, (p0, p1)
    # T > 1 pulls the top probability towards 1/2, T < 1 pushes it away
    top = before["predictions"][0]["class"]
    assert (p1[top] < p0[top]) == (cal["temperature"] > 1)


# --- exact resume -----------------------------------------------------------------------------


def test_volume_run_stopped_after_epoch_one_resumes_exactly(volume_run, cohort, tmp_path):
    cut = tmp_path / "cut"  # the shared run's flags, stopped by a time limit after epoch 1
    argv = ["train", "--data", str(cohort), *VOLUME_FLAGS, "--out", str(cut)]
    assert main([*argv, "--time-limit", "0.01"]) == 0
    assert torch.load(cut / "last.pt", weights_only=True, mmap=True)["epoch"] == 0
    assert len(rows_of(cut / "metrics.csv")) == 1
    assert main(["train", "--resume", str(cut), "--time-limit", "1h", "--quiet"]) == 0
    resumed = torch.load(cut / "last.pt", weights_only=True)
    full = torch.load(volume_run / "last.pt", weights_only=True)
    assert resumed["epoch"] == full["epoch"] == 1
    assert resumed["model"].keys() == full["model"].keys()
    differ = [k for k, v in full["model"].items() if not torch.equal(v, resumed["model"][k])]
    assert not differ, differ[:5]
    assert [r["val_acc"] for r in resumed["history"]] == [r["val_acc"] for r in full["history"]]


# --- slices (2.5-D) and cross-validation ------------------------------------------------------


def test_slices_checkpoint_and_per_series_prediction(slice_folds, cohort, capsys):
    fold = slice_folds / "fold1"
    state = torch.load(fold / "best.pt", weights_only=True, mmap=True)
    pre = state["preprocessing"]
    assert pre["scan"]["mode"] == "slices" and pre["scan"]["slices"] == 3
    assert pre["in_chans"] == 3 and list(pre["size"]) == [16, 16]
    assert state["config"]["run"]["epochs"] == 1
    # The clinical figures count scans (each scan's slices pooled), not slices.
    report = json.loads((fold / "val_clinical.json").read_text())
    split = json.loads((fold / "splits.json").read_text())
    assert report["unit"] == "scan" and report["n_samples"] == split["n_val_samples"]
    series = cohort / "SYN005" / "series1"
    nifti = cohort / "SYN005" / "anat.nii.gz"
    dicom_result, nifti_result = predict_json(capsys, str(fold), str(series), str(nifti))
    assert dicom_result["slices"] == len(list(series.glob("*.dcm"))) == 6
    img = nib.load(nifti)  # the slices run along the superior axis, whatever the file's layout
    codes = nib.aff2axcodes(img.affine)
    axis = next(i for i, c in enumerate(codes) if c in "SI")
    assert nifti_result["slices"] == img.shape[axis]
    assert sum(probs(dicom_result).values()) == pytest.approx(1.0, abs=1e-5)


def test_two_folds_hold_out_every_patient_once(slice_folds, series_csv):
    for name in ("folds.csv", "folds.png", "summary.json"):
        assert (slice_folds / name).stat().st_size > 0, name
    splits = [json.loads((slice_folds / f"fold{i}" / "splits.json").read_text()) for i in (1, 2)]
    assert [s["fold"] for s in splits] == [1, 2] and {s["folds"] for s in splits} == {2}
    val1, val2 = set(splits[0]["val"]), set(splits[1]["val"])
    patients = {r["patient"] for r in rows_of(series_csv)}
    assert len(patients) == 12 and val1 and val2 and not val1 & val2
    assert val1 | val2 == {hash_group(p, "") for p in patients}
    assert set(splits[0]["train"]) == val2 and set(splits[1]["train"]) == val1

    summary = json.loads((slice_folds / "summary.json").read_text())
    auroc = summary["val_auroc"]
    assert set(auroc) == {"mean", "sd", "values"} and len(auroc["values"]) == 2
    assert auroc["mean"] == pytest.approx(statistics.mean(auroc["values"]))
    assert auroc["sd"] == pytest.approx(statistics.stdev(auroc["values"]))
    folds = rows_of(slice_folds / "folds.csv")
    assert [int(r["fold"]) for r in folds] == [1, 2]
    assert [float(r["val_auroc"]) for r in folds] == pytest.approx(auroc["values"])
    for i, r in enumerate(folds, start=1):
        fold = json.loads((slice_folds / f"fold{i}" / "summary.json").read_text())
        assert float(r["val_auroc"]) == pytest.approx(fold["val_auroc"])


# --- imbalanced classes -----------------------------------------------------------------------


def test_sampler_draws_classes_equally_from_imbalanced_volumes(imbalanced_csv):
    cfg = DataConfig(
        source=str(imbalanced_csv),
        volume=[4, 8, 8],
        group_by="patient",
        balance="sampler",
        batch_size=256,
    )
    bundle = load_data(cfg)
    labels = bundle.train.labels
    assert bundle.classes == ["normal", "lesion"]
    data_share = float((labels == 0).double().mean())
    assert 0 < data_share < 0.35, data_share  # "normal" is the minority on the training side

    def normal_share(c: DataConfig) -> float:
        loader = bundle.loader("train", c, train=True, seed=0)
        drawn = []
        for epoch in range(40):
            loader.set_epoch(epoch)
            drawn += [y for _, y in loader]
        y = torch.cat(drawn)
        assert len(y) == 40 * len(labels)  # an epoch draws as many samples as there are
        return float((y == 0).double().mean())

    assert 0.4 < normal_share(cfg) < 0.6
    assert normal_share(replace(cfg, balance="none")) == pytest.approx(data_share)


def test_balance_sampler_trains_through_the_cli(imbalanced_csv, tmp_path):
    out = tmp_path / "sampler"
    argv = ["train", "--data", str(imbalanced_csv), "--model", "resnet20", "--slices", "1"]
    argv += ["--image-size", "16", "--epochs", "1", "--batch-size", "32", "--group-by", "patient"]
    argv += ["--balance", "sampler", "--device", "cpu", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["balance"] == "sampler"
    assert math.isfinite(json.loads((out / "summary.json").read_text())["final_train_loss"])


def test_balance_loss_weighs_classes_by_inverse_frequency(imbalanced_csv, tmp_path):
    cfg = TrainConfig.from_dict(
        {
            "model": {"name": "resnet20"},
            "data": {
                "source": str(imbalanced_csv),
                "slices": 1,
                "image_size": 16,
                "group_by": "patient",
                "balance": "loss",
                "batch_size": 32,
            },
            "run": {"epochs": 1, "out": str(tmp_path / "loss"), "device": "cpu", "seed": 0},
        }
    )
    trainer = Trainer(cfg, progress=False, log=None)
    counts = torch.bincount(trainer.data.train.labels.cpu(), minlength=2).double()
    assert counts[0] < 0.5 * counts[1], counts  # few "normal" slices
    expected = counts.sum() / (2 * counts)
    assert torch.allclose(trainer.class_weights.cpu().double(), expected, rtol=1e-6)
    assert trainer.class_weights[0] > 1 > trainer.class_weights[1]
    summary = trainer.fit()
    assert math.isfinite(summary["final_train_loss"])
    assert yaml.safe_load((tmp_path / "loss" / "config.yaml").read_text())["data"]["balance"] == (
        "loss"
    )


# --- refused runs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory) -> Path:
    """A Fashion-MNIST-like 2-D image folder: grey 28 x 28 PNGs in two class folders."""
    root = tmp_path_factory.mktemp("png")
    rng = np.random.default_rng(0)
    for c in ("shirt", "boot"):
        (root / c).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("source", "flags", "message"),
    [
        # the whole cohort: decoding it draws a progress bar, which must not reach a log
        ("cohort", ["--model", "resnet20", "--volume", "4,8,8"], "is a 2-D net"),
        ("tiny_csv", ["--model", "resnet10_3d", "--slices", "3"], "is a 3-D net"),
        ("png_folder", ["--model", "resnet10_3d", "--volume", "4,8,8"], "holds 2-D images"),
        (
            "tiny_csv",
            ["--model", "resnet10_3d", "--volume", "4,8,8", "--group-by", "nosuchcolumn"],
            "--group-by nosuchcolumn: no such CSV column",
        ),
        (
            "tiny_csv",
            ["--model", "resnet10_3d", "--volume", "4,8,8", "--group-by", "patient"]
            + ["--folds", "50"],
            "4 groups cannot fill 50 folds",
        ),
    ],
    ids=["2d-net-volume", "3d-net-slices", "volume-on-png", "group-by-column", "folds-50"],
)
def test_mismatch_is_one_line_exit_2(request, tmp_path, capsys, source, flags, message):
    data = request.getfixturevalue(source)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), *flags, "--epochs", "1", "--batch-size", "8"]
    capsys.readouterr()
    assert main([*argv, "--device", "cpu", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet train: error:"), err
    assert message in lines[0] and "Traceback" not in err
    assert not out.exists()  # a refused start leaves no folder to refuse the corrected command
