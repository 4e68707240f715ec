"""Multi-label training (several findings per image) and patient-level splits of image CSVs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import write_digits_folder

from resnet.cli import main
from resnet.data import DataConfig, load_data, scan
from resnet.data.folders import carve
from resnet.data.grouping import hash_group
from resnet.data.labels import findings, multi_hot, strata
from resnet.engine.evaluate import metrics_from_logits, multilabel_metrics
from resnet.engine.trainer import class_weights, hits
from resnet.errors import ResNetError


def test_findings_rows_and_strata():
    assert findings(" nodule; effusion |nodule;") == ("effusion", "nodule")
    assert findings("") == ()
    assert multi_hot(("effusion",), ["effusion", "mass", "nodule"]) == [1, 0, 0]
    assert strata([[0, 0], [0, 1], 2]) == [0, 1, 2]


def test_multilabel_metrics_count_by_hand():
    logits = torch.tensor([[2.0, -1.0], [1.0, 1.0], [-3.0, -2.0]])
    labels = torch.tensor([[1, 0], [0, 1], [0, 0]])
    m = metrics_from_logits(logits, labels)
    # predictions at 0.5: [1,0], [1,1], [0,0] -> label 0: tp 1, fp 1, tn 1; label 1: tp 1, tn 2
    assert m["label_counts"] == {"tp": [1, 1], "fp": [1, 0], "fn": [0, 0], "tn": [1, 2]}
    assert m["top1"] == pytest.approx(5 / 6) and m["exact_match"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx([0.5, 1.0]) and m["recall"] == [1.0, 1.0]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    assert m["loss"] == pytest.approx(float(bce))
    assert "top5" not in m and "confusion_matrix" not in m
    same = multilabel_metrics(torch.tensor([[1, 1], [1, 0], [0, 0], [1, 2]]), m["loss"] * 3, 2)
    assert same["top1"] == m["top1"] and same["macro_f1"] == m["macro_f1"]
    assert float(hits(logits, labels)) == pytest.approx(5 / 2)  # per-label accuracy summed


def test_class_weights_single_and_multilabel():
    w = class_weights(torch.tensor([0, 0, 0, 1]))
    assert w.tolist() == pytest.approx([4 / 6, 4 / 2])
    pos = class_weights(torch.tensor([[1, 0], [0, 0], [0, 1], [0, 1]]))
    assert pos.tolist() == pytest.approx([3.0, 1.0])  # negatives / positives per label


def _multilabel_csv(root: Path) -> Path:
    """Real digits with two findings each may have: "even" and "big" (>= 5); some have none."""
    write_digits_folder(root, per_class=12, size=16, layout="flat")
    rows = []
    for folder in sorted(root.glob("digit*")):
        d = int(folder.name[5:])
        found = [f for f, on in (("even", d % 2 == 0), ("big", d >= 5)) if on]
        rows += [(f"{p.parent.name}/{p.name}", ";".join(found)) for p in sorted(folder.iterdir())]
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return root / "labels.csv"


def test_scan_csv_reads_findings(tmp_path):
    table = _multilabel_csv(tmp_path / "d")
    items = scan(table, multilabel=True)
    assert items.classes == ["big", "even"]
    assert sorted(map(tuple, items.labels)) == sorted(
        [(int(d >= 5), int(d % 2 == 0)) for d in range(10) for _ in range(12)]
    )
    with pytest.raises(ResNetError, match="empty label"):  # a single-label CSV needs labels
        scan(table)


def test_multilabel_trains_evaluates_and_predicts(tmp_path, capsys):
    table = _multilabel_csv(tmp_path / "d")
    run = tmp_path / "run"
    args = ["train", "--data", str(table), "--multilabel", "--model", "resnet20", "--quiet"]
    args += ["--epochs", "6", "--optimizer", "adamw", "--batch-size", "32", "--out", str(run)]
    args += ["--precision", "fp32"]  # so that `resnet val` (fp32) repeats the run's figures
    assert main([*args, "--val-split", "0.25", "--balance", "loss"]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert float(rows[-1]["train_loss"]) < 0.8 * float(rows[0]["train_loss"])  # it learns
    assert rows[0]["val_top5"] == ""  # no top-5 for labels
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"] == ["big", "even"] and summary["val_top5"] is None
    report = json.loads((run / "val_clinical.json").read_text())
    assert report["task"] == "multilabel" and set(report["classes"]) == {"big", "even"}
    assert summary["val_auroc"] == pytest.approx(report["macro"]["auroc"]["value"])
    assert (run / "roc.png").exists() and not (run / "confusion_matrix.png").exists()
    bundle = load_data(DataConfig(source=str(table), multilabel=True, val_split=0.25))
    assert bundle.train.labels.shape[1] == 2 and bundle.preprocessing["multilabel"] is True
    assert main(["val", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["multilabel"] and metrics["samples"] == len(bundle.val)
    assert metrics["top1"] == pytest.approx(summary["val_acc"], abs=1e-6)
    image = next((tmp_path / "d" / "digit8").iterdir())
    assert main(["predict", str(run), str(image), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    probs = {p["class"]: p["probability"] for p in result["predictions"]}
    assert set(probs) == {"big", "even"}
    assert result["findings"] == sorted(c for c, p in probs.items() if p >= 0.5)


def test_group_split_of_an_image_csv_keeps_patients_apart(tmp_path, capsys):
    root = write_digits_folder(tmp_path / "d", per_class=8, size=16, classes=2, layout="flat")
    files = sorted(root.glob("digit*/*.png"))
    patient = {p: f"P{i // 3}" for i, p in enumerate(files)}  # three images per patient
    with open(root / "labels.csv", "w", newline="") as f:
        rows = [(f"{p.parent.name}/{p.name}", p.parent.name, patient[p]) for p in files]
        csv.writer(f).writerows([("path", "label", "patient"), *rows])
    run = tmp_path / "run"
    args = ["train", "--data", str(root / "labels.csv"), "--group-by", "patient", "--quiet"]
    assert main([*args, "--model", "resnet20", "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    record = json.loads((run / "splits.json").read_text())
    assert not set(record["train"]) & set(record["val"]) and record["group_by"] == "patient"
    every = {hash_group(v, "") for v in patient.values()}
    assert set(record["train"]) | set(record["val"]) == every
    cfg = DataConfig(source=str(root / "labels.csv"), group_by="patient")
    files = scan(root / "labels.csv", group_by="patient")
    train, val, _ = carve(files, cfg)
    assert {hash_group(files.groups[i], "") for i in val} == set(record["val"])
    assert not {files.groups[i] for i in train} & {files.groups[i] for i in val}
    assert main(["val", str(run), "--json"]) == 0  # carves the same patients again
    assert json.loads(capsys.readouterr().out)["samples"] == len(val) == len(load_data(cfg).val)
