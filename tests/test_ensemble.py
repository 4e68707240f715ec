"""Ensembles: the mean of the members' probabilities, trained, resumed, evaluated and predicted."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from resnet.cli import main
from resnet.data import eval_loader
from resnet.device import cpu_has_bf16
from resnet.engine.checkpoint import load_checkpoint, load_model, load_model_or_ensemble
from resnet.engine.config import TrainConfig
from resnet.engine.ensemble import train_ensemble
from resnet.engine.runfolder import is_ensemble_run
from resnet.errors import ResNetError
from resnet.models.ensemble import Ensemble

QUIET = dict(progress=False, log=lambda *a: None)


def ensemble_config(source: Path, out: Path, **run) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": {"name": "fast_resnet8_24p"},
            "data": {"source": str(source), "batch_size": 32, "augment": "flip"},
            "optim": {"lr": 0.05, "warmup_epochs": 0.5},
            "run": {"epochs": 2, "out": str(out), "seed": 3, "ensemble": 2, "device": "cpu", **run},
        }
    )


def test_ensemble_returns_the_log_of_the_mean_probability():
    torch.manual_seed(0)
    members = [nn.Linear(5, 4) for _ in range(3)]
    x = torch.randn(8, 5)
    mean = torch.stack([m(x).softmax(1) for m in members]).mean(0)
    out = Ensemble(members)(x)
    assert torch.allclose(out.exp(), mean, atol=1e-6)
    assert torch.allclose(out.softmax(1), mean, atol=1e-6)  # already normalised
    assert not torch.allclose(mean, members[0](x).softmax(1), atol=1e-3)
    assert torch.allclose(Ensemble(members[:1])(x), members[0](x).log_softmax(1), atol=1e-6)
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])


def _mean_of_members(paths: list[Path], source: Path) -> float:
    """Val accuracy of the members' mean probability, by hand, with the mirrored view (TTA)."""
    models = [load_model(p)[0] for p in paths]
    state = load_checkpoint(paths[0])
    loader = eval_loader(str(source), "val", state["preprocessing"], state["classes"])
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            views = [
                torch.stack([m(v).softmax(1) for m in models]).mean(0).log() for v in (x, x.flip(3))
            ]
            right += int(((views[0] + views[1]) / 2).argmax(1).eq(y).sum())
            total += len(y)
    return right / total


def test_trained_ensemble_is_the_mean_of_its_members_in_val_and_predict(
    digits_folder, tmp_path, capsys
):
    out = tmp_path / "ens"
    summary = train_ensemble(ensemble_config(digits_folder, out), **QUIET)
    members = [out / "member0" / "best.pt", out / "member1" / "best.pt"]
    seeds = [load_checkpoint(p)["config"]["run"]["seed"] for p in members]
    assert seeds == [3, 4] and [m["seed"] for m in summary["members"]] == [3, 4]
    assert json.loads((out / "ensemble.json").read_text())["members"] == ["member0", "member1"]
    assert is_ensemble_run(out) and not is_ensemble_run(out / "member0")
    with pytest.raises(ResNetError, match="is an ensemble run.*member0"):
        load_checkpoint(out)  # single-net code (Grad-CAM) names a member instead
    for name in (
        "config.yaml",
        "summary.json",
        "val-val/metrics.json",
        "val-val/confusion_matrix.png",
        "member1/curves.png",
    ):
        assert (out / name).stat().st_size > 0, name
    # The ensemble is evaluated in the run's precision, as its members were (bf16 autocast
    # where the CPU has it), and `resnet val --precision auto` repeats that figure.
    reported = json.loads((out / "val-val" / "metrics.json").read_text())
    assert reported["numerics"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert summary["val_acc"] > 0.3  # 10 classes, two epochs each: well above chance
    capsys.readouterr()
    auto = ["--device", "cpu", "--precision", "auto", "--json", "--out", str(tmp_path / "a")]
    assert main(["val", str(out), *auto]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["top1"] == summary["val_acc"] and again["loss"] == reported["loss"]
    # In fp32 (`resnet val`'s default), on the folder or on the members' checkpoints: the
    # members' averaged probabilities, computed here by hand.
    by_hand = _mean_of_members(members, digits_folder)
    for args in ([str(out)], [str(p) for p in members]):
        assert main(["val", *args, "--device", "cpu", "--json", "--out", str(tmp_path / "v")]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["numerics"] == "fp32" and metrics["top1"] == pytest.approx(by_hand)
    assert abs(by_hand - summary["val_acc"]) <= 2 / reported["samples"]  # bf16: an image or two
    if cpu_has_bf16():  # the autocast really ran: bf16 rounding moves the loss
        assert metrics["loss"] != pytest.approx(reported["loss"], rel=1e-6, abs=0)
    # `resnet predict` on the folder: the mean of the members' probabilities for one image.
    image = next((digits_folder / "val" / "digit3").iterdir())
    assert main(["predict", str(out), str(image), "--json", "--top-k", "10"]) == 0
    got = {
        p["class"]: p["probability"] for p in json.loads(capsys.readouterr().out)[0]["predictions"]
    }
    from resnet.engine.inference import TorchClassifier, predict_paths

    singles = [
        predict_paths(TorchClassifier.from_checkpoint(p), [image], top_k=10)[0] for p in members
    ]
    for c in got:
        want = (
            sum(p["probability"] for s in singles for p in s["predictions"] if p["class"] == c) / 2
        )
        assert got[c] == pytest.approx(want, abs=1e-5), c
    # Exported whole (ONNX, TorchScript): one graph, parity-checked, predicting the same.
    for fmt, name in (
        ("onnx", "model.onnx"),
        ("torchscript", "model.torchscript.pt"),
        ("exported-program", "model.pt2"),
    ):
        assert main(["export", str(out), "--format", fmt, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["parity"]["max_abs_diff"] < 1e-3
        assert main(["predict", str(out / name), str(image), "--json", "--top-k", "10"]) == 0
        exported = {
            p["class"]: p["probability"]
            for p in json.loads(capsys.readouterr().out)[0]["predictions"]
        }
        assert exported.keys() == got.keys()
        assert all(exported[c] == pytest.approx(got[c], abs=1e-4) for c in got), fmt
    # ONNX Runtime straight from the folder (exported in memory, parity-checked).
    assert (
        main(
            ["predict", str(out), str(image), "--backend", "onnxruntime", "--json", "--top-k", "10"]
        )
        == 0
    )
    ort = {
        p["class"]: p["probability"] for p in json.loads(capsys.readouterr().out)[0]["predictions"]
    }
    assert all(ort[c] == pytest.approx(got[c], abs=1e-4) for c in got)
    # Grad-CAM explains one net: a clear one-line refusal, not a traceback.
    assert main(["predict", str(out), str(image), "--cam", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one member" in err[0], err
    # A finished ensemble is not overwritten.
    with pytest.raises(ResNetError, match="an ensemble run, finished"):
        train_ensemble(ensemble_config(digits_folder, out), **QUIET)


def test_interrupted_ensemble_resumes_inside_the_unfinished_member(digits_folder, tmp_path, capsys):
    out = tmp_path / "ens"
    seen = []

    def stop_in_second_member(msg, *a, **k):  # after member 2's first epoch is checkpointed
        seen.append(msg)
        if msg.startswith("epoch 1/2") and any(m.startswith("member 2/2") for m in seen):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_ensemble(
            ensemble_config(digits_folder, out), progress=False, log=stop_in_second_member
        )
    first = (out / "member0" / "best.pt").read_bytes()
    assert load_checkpoint(out / "member1" / "last.pt")["epoch"] == 0  # one epoch of two
    assert is_ensemble_run(out) and not (out / "ensemble.json").exists()
    with pytest.raises(ResNetError, match="not all trained"):
        load_model_or_ensemble(out)
    with pytest.raises(ResNetError, match="another config"):
        train_ensemble(ensemble_config(digits_folder, out, epochs=3), **QUIET)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "member 1/2 (seed 3): trained already" in said
    assert "member 2/2 (seed 4): resuming" in said and "epoch 1/2" not in said  # from epoch 2
    assert (out / "member0" / "best.pt").read_bytes() == first  # not trained again
    assert load_checkpoint(out / "member1" / "last.pt")["epoch"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [m["seed"] for m in summary["members"]] == [3, 4] and "val_acc" in summary
    # An ensemble recipe with --nproc is refused before any process starts. (The `best` recipe
    # trains one net: with it the command launched torchrun, whose workers failed on their
    # own, so the exit code 2 did not show the refusal.)
    capsys.readouterr()
    assert (
        main(["train", "--recipe", "ensemble", "--nproc", "2", "--out", str(tmp_path / "x")]) == 2
    )
    err = capsys.readouterr().err
    assert "an ensemble trains in one process" in err, err
    assert not (tmp_path / "x").exists()


def test_members_must_share_classes_and_preprocessing(digits_folder, tmp_path):
    cfg = ensemble_config(digits_folder, tmp_path / "a", ensemble=1, epochs=1)
    from resnet.engine import train

    train(cfg, **QUIET)
    a = tmp_path / "a" / "best.pt"
    state = load_checkpoint(a)
    for key, value, message in (
        ("classes", [f"class{c}" for c in range(10)], "other classes"),
        ("preprocessing", {**state["preprocessing"], "size": [20, 20]}, "other input"),
    ):
        torch.save({**state, key: value}, tmp_path / "b.pt")
        with pytest.raises(ResNetError, match=message):
            load_model_or_ensemble([a, tmp_path / "b.pt"])
    model, merged = load_model_or_ensemble([a, a])
    assert isinstance(model, Ensemble) and merged["members"] == [str(a), str(a)]


def test_a_stop_inside_a_member_stops_the_ensemble_which_resumes_from_its_folder(
    digits_folder, tmp_path
):
    from resnet.engine import StepProgress, train

    seen = []

    def stop_in_second_member(event):
        seen.append(event)
        starts = sum(e.name == "run_start" for e in seen)
        if isinstance(event, StepProgress) and starts == 2 and event.global_step == 2:
            stop.set()

    stop = threading.Event()
    out = tmp_path / "ens"
    cut = train(
        ensemble_config(digits_folder, out, ensemble=2, epochs=1),
        callbacks=[stop_in_second_member],
        stop=stop,
        **QUIET,
    )
    # The ensemble's own end: its folder (not the member's) is what resumes it.
    assert cut["status"] == "stopped" and cut["out"] == str(out) and cut["member"] == 1
    ends = [e for e in seen if e.name == "run_end"]
    assert len(ends) == 1 and ends[0].summary["out"] == str(out)
    assert (out / "member0" / "summary.json").exists() and not (out / "ensemble.json").exists()
    assert load_checkpoint(out / "member1" / "last.pt")["partial_epoch"]["step"] == 2
    done = train(resume=out, **QUIET)
    assert (out / "ensemble.json").exists() and len(done["members"]) == 2
