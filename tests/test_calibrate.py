"""`resnet calibrate`: a temperature fitted on the validation split, stored in the checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import write_digits_folder

from resnet.cli import main
from resnet.engine import train
from resnet.engine.calibrate import calibrate
from resnet.engine.checkpoint import load_checkpoint, load_model, update_checkpoint
from resnet.engine.config import TrainConfig
from resnet.engine.evaluate import collect_logits
from resnet.engine.validate import split_loader
from resnet.errors import ResNetError


def _train(source: Path, out: Path, epochs: int, **data) -> Path:
    cfg = TrainConfig.from_dict(
        {
            "model": {"name": "resnet20"},
            "data": {"source": str(source), "batch_size": 32, "augment": "paper", **data},
            "optim": {"lr": 0.05, "warmup_epochs": 0.5},
            "run": {"epochs": epochs, "out": str(out), "seed": 0},
        }
    )
    train(cfg, progress=False, log=None)
    return out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A resnet20 trained 3 epochs on real digits with a val/ folder (40 images)."""
    root = tmp_path_factory.mktemp("cal")
    return _train(write_digits_folder(root / "digits", per_class=20), root / "run", epochs=3)


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    """A fresh copy of the trained run, for tests that write into it."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def test_cli_fits_on_val_writes_files_and_stores_t_in_the_checkpoint(run, capsys):
    before = load_checkpoint(run / "best.pt")
    assert "temperature" not in before
    assert main(["calibrate", str(run), "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("temperature ") and "NLL" in line and "ECE" in line, line
    assert "(val, 40 images)" in line and line.endswith("calibration/"), line

    cal = json.loads((run / "calibration" / "calibration.json").read_text())
    assert cal["split"] == "val" and cal["samples"] == 40
    assert cal["temperature"] > 0 and cal["temperature"] != pytest.approx(1.0, abs=1e-3)
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9
    for name in ("reliability_before.png", "reliability_after.png"):
        assert (run / "calibration" / name).stat().st_size > 0, name

    after = load_checkpoint(run / "best.pt")  # still a valid weights_only checkpoint
    assert isinstance(after["temperature"], float)
    assert after["temperature"] == cal["temperature"]
    assert set(after) == set(before) | {"temperature"}
    for k, v in before["model"].items():
        assert torch.equal(after["model"][k], v), k

    # The figures are those of the validation split's own logits at T = 1 and at T.
    model, state = load_model(run / "best.pt")
    loader, _, split = split_loader(state, "val", batch_size=64)
    assert cal["tta"] is True and cal["tta_shift"] == 0  # as the run evaluated: flip TTA
    logits, labels = collect_logits(model, loader, torch.device("cpu"), tta=True)
    assert split == "val" and len(labels) == 40
    nll = [float(F.cross_entropy(logits / t, labels)) for t in (1.0, cal["temperature"])]
    assert nll == pytest.approx([cal["nll_before"], cal["nll_after"]], rel=1e-4)
    # T is the minimum: nudging it either way does not lower the NLL.
    for t in (0.9 * cal["temperature"], 1.1 * cal["temperature"]):
        assert float(F.cross_entropy(logits / t, labels)) >= nll[1] - 1e-7


def test_refitting_a_calibrated_run_gives_the_same_temperature(run):
    first = calibrate(run, device="cpu", progress=False)
    second = calibrate(run / "best.pt", device="cpu", progress=False)  # a file works too
    assert second["temperature"] == pytest.approx(first["temperature"], rel=1e-6)
    assert second["nll_before"] == pytest.approx(first["nll_before"], rel=1e-6)
    assert load_checkpoint(run)["temperature"] == second["temperature"]


def test_json_output_is_the_written_file(run, capsys):
    assert main(["calibrate", str(run), "--device", "cpu", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((run / "calibration" / "calibration.json").read_text())


def test_write_false_leaves_the_run_untouched(run):
    result = calibrate(run, device="cpu", progress=False, write=False)
    assert result["temperature"] > 0
    assert not (run / "calibration").exists()
    assert "temperature" not in load_checkpoint(run)


def test_a_run_without_a_validation_split_is_one_line_exit_2(tmp_path, capsys):
    flat = write_digits_folder(tmp_path / "flat", per_class=8, layout="flat")
    out = _train(flat, tmp_path / "noval", epochs=1, val_split=0.0)
    assert main(["calibrate", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "has no validation split to fit a temperature on (trained with val_split 0)" in err
    assert "temperature" not in load_checkpoint(out)
    assert not (out / "calibration").exists()


def test_a_missing_path_or_an_ensemble_is_one_line_exit_2(tmp_path, capsys):
    assert main(["calibrate", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err, err
    ensemble = tmp_path / "ens"
    ensemble.mkdir()
    (ensemble / "ensemble.json").write_text(json.dumps({"members": ["member0"]}))
    assert main(["calibrate", str(ensemble)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ensemble" in err, err


def test_update_checkpoint_killed_mid_write_keeps_the_old_file(run, monkeypatch):
    path = run / "best.pt"
    old = path.read_bytes()

    def dies_halfway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        update_checkpoint(path, temperature=2.0)
    monkeypatch.undo()
    assert path.read_bytes() == old and not list(run.glob(".best.pt.*"))
    update_checkpoint(run, temperature=2.0)  # a run folder names its best.pt
    assert load_checkpoint(path)["temperature"] == 2.0
    with pytest.raises(ResNetError, match="not found"):
        update_checkpoint(run / "missing.pt", temperature=1.0)


def test_an_export_of_a_calibrated_run_keeps_its_temperature(run):
    from resnet.engine.inference import TorchClassifier
    from resnet.export import export_checkpoint, load_classifier

    t = calibrate(run, device="cpu", progress=False)["temperature"]
    result = export_checkpoint(run / "best.pt", "onnx", run / "m.onnx", num_images=4)
    assert result.metadata["temperature"] == pytest.approx(t)
    onnx, eager = load_classifier(run / "m.onnx"), TorchClassifier.from_checkpoint(run)
    x = torch.randn(3, *([eager.preprocessing["in_chans"], *eager.preprocessing["size"]]))
    assert onnx.temperature == pytest.approx(t) and eager.temperature == pytest.approx(t)
    assert torch.allclose(onnx(x), eager(x), atol=1e-3)  # both calibrated, not raw logits
