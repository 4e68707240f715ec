"""`resnet val --backend`: the same split evaluated with the forward pass in another runtime."""

from __future__ import annotations

import json

import pytest
from conftest import write_digits_folder

# Fixtures shared with other modules, requested by name (`x as x`: imported on purpose).
from tiny_runs import digits as digits
from tiny_runs import one_torch_thread as one_torch_thread
from tiny_runs import trained as trained

from resnet.cli import main


@pytest.fixture(scope="module")
def ckpt(trained):
    """test_export's tiny digits ResNet, trained the same way: its checkpoint path."""
    return trained[1]


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """300 real digits as flat PNG class folders (evaluated whole: --split all)."""
    return write_digits_folder(tmp_path_factory.mktemp("val") / "d", per_class=30, layout="flat")


def val_json(capsys, ckpt, pngs, out, *argv: str) -> dict:
    """`resnet val` on every PNG with --json: the metrics printed."""
    capsys.readouterr()
    args = ["val", str(ckpt), "--data", str(pngs), "--split", "all", "--out", str(out)]
    assert main([*args, "--device", "cpu", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def torch_metrics(ckpt, pngs, tmp_path_factory):
    """The torch backend's figures, the reference."""
    out = tmp_path_factory.mktemp("torch")
    args = ["val", str(ckpt), "--data", str(pngs), "--split", "all", "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    return json.loads((out / "metrics.json").read_text())


def _correct(metrics: dict) -> int:
    """Images predicted right: the confusion matrix's diagonal."""
    return sum(row[i] for i, row in enumerate(metrics["confusion_matrix"]))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_scores_the_same_split_as_torch(
    backend, torch_metrics, ckpt, pngs, tmp_path, capsys
):
    pytest.importorskip(backend)
    got = val_json(capsys, ckpt, pngs, tmp_path, "--backend", backend)
    assert torch_metrics["backend"] == "torch" and got["backend"] == backend
    assert got["samples"] == torch_metrics["samples"] == 300
    assert abs(_correct(got) - _correct(torch_metrics)) <= 1
    assert got["loss"] == pytest.approx(torch_metrics["loss"], abs=1e-3)
    assert json.loads((tmp_path / "metrics.json").read_text())["backend"] == backend


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--backend", "openvino", "--precision", "bf16"], "--precision bf16"),
        (["--backend", "onnxruntime", "--device", "cuda"], "--device cuda"),
    ],
)
def test_bad_combinations_are_one_line_errors(extra, words, ckpt, pngs, capsys):
    capsys.readouterr()
    assert main(["val", str(ckpt), "--data", str(pngs), "--split", "all", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0]


def test_an_ensemble_with_another_backend_is_refused(ckpt, pngs, capsys):
    capsys.readouterr()
    args = ["val", str(ckpt), str(ckpt), "--data", str(pngs), "--backend", "onnxruntime"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ensemble" in err[0]
