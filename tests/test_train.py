"""The main job: training that learns, exact resume after a kill, val and predict, run folders."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import resnet
from resnet.engine import Callback, CheckpointSaved, EpochEnd, StepProgress, Trainer, train
from resnet.engine.checkpoint import load_checkpoint
from resnet.engine.config import TrainConfig

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def small_config(source: str, out: Path, **run) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": {"name": "resnet20"},
            "data": {"source": source, "batch_size": 32, "augment": "paper"},
            "optim": {"lr": 0.05, "warmup_epochs": 0.5},
            "run": {"epochs": 4, "out": str(out), "seed": 0, **run},
        }
    )


def test_training_on_real_digits_learns(digits_folder, tmp_path):
    summary = train(
        small_config(str(digits_folder), tmp_path / "run", epochs=8),
        progress=False,
        log=lambda *a: None,
    )
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    losses = [float(r["train_loss"]) for r in rows]
    assert len(rows) == 8 and losses[-1] < 0.6 * losses[0], losses
    # 10 classes: chance is 10 %.
    assert summary["best_val_acc"] >= 0.6, summary
    for name in (
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "last.pt",
        "best.pt",
        "curves.png",
        "confusion_matrix.png",
    ):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    assert set(rows[0]) == {
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "val_top5",
        "seconds",
    }
    state = load_checkpoint(tmp_path / "run" / "best.pt")  # weights_only=True inside
    assert state["classes"] == [f"digit{c}" for c in range(10)]
    assert state["preprocessing"]["in_chans"] == 1 and state["preprocessing"]["size"] == [16, 16]
    assert {"optimizer", "config", "epoch", "rng", "versions", "spec"} <= set(state)


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.exists(), reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_subset_run_beats_chance(tmp_path):
    cfg = small_config("fashion-mnist", tmp_path / "fm", epochs=3, eval_every=3)
    # 600 images held out for validation, not the default 6,000: with one evaluation (epoch 3
    # of 3) they pick nothing, and the accuracy asserted is on the full 10,000-image test set.
    # No mirrored view (TTA: every digits run in this file evaluates with it) doubling the two
    # passes over the test set.
    cfg = cfg.updated({"data": {"subset": 600, "val_split": 0.01}, "run": {"tta": False}})
    summary = train(cfg, progress=False, log=lambda *a: None)
    assert summary["test_acc"] > 0.5, summary  # chance: 10 %
    assert (
        json.loads((tmp_path / "fm" / "summary.json").read_text())["test_acc"]
        == summary["test_acc"]
    )


def _cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "resnet", *args], capture_output=True, text=True, timeout=300, **kw
    )


def _main(*args) -> subprocess.CompletedProcess:
    """`resnet ARGS` run in this process, reported as `_cli` reports it: a fresh interpreter
    costs seconds of imports. The SIGKILL tests keep `_cli`: a kill needs a process of its own."""
    import contextlib
    import io

    from resnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse refuses a flag with exit code 2
            code = e.code
    return subprocess.CompletedProcess(["resnet", *args], code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_resume_after_sigkill_matches_uninterrupted_run(digits_folder, tmp_path, optimizer):
    common = [
        "train",
        "--data",
        str(digits_folder),
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--seed",
        "3",
        "--quiet",
        "--ema",
        "0.9",
        "--lookahead",
        "4",  # does not divide an epoch's 15 steps: checkpoints fall between two syncs
        "--alternate-flip",
        "--optimizer",
        optimizer,  # muon: its momentum buffers must come back from the checkpoint too
    ]
    full = _cli(*common, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr

    proc = subprocess.Popen(
        [sys.executable, "-m", "resnet", *common, "--out", str(tmp_path / "cut")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = tmp_path / "cut" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.exists()
    killed_at = load_checkpoint(last)["epoch"]
    assert killed_at < 3, "the run finished before it could be killed"

    resumed = _cli("train", "--resume", str(tmp_path / "cut"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a = list(csv.DictReader(open(tmp_path / "full" / "metrics.csv")))
    b = list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))
    keys = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    wa, wb = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(last)
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])


def test_a_run_stopped_by_its_time_limit_resumes_only_with_a_larger_limit(digits_folder, tmp_path):
    from resnet.errors import ResNetError

    out = tmp_path / "run"
    first = train(
        small_config(str(digits_folder), out, epochs=3, time_limit=1e-3),
        progress=False,
        log=lambda *a: None,
    )
    assert first["epochs"] == 1  # the limit stops the run after its first epoch
    with pytest.raises(ResNetError, match="larger --time-limit"):
        train(resume=out, progress=False, log=lambda *a: None)
    done = train(resume=out, time_limit=1e6, progress=False, log=lambda *a: None)
    assert done["epochs"] == 3
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    r = _main("train", "--resume", str(out), "--time-limit", "5", "--lr", "0.1")
    assert r.returncode == 2 and "--time-limit and --time-budget (got --lr)" in r.stderr, r.stderr
    with pytest.raises(ResNetError, match="time_limit must be positive"):
        small_config(str(digits_folder), tmp_path / "x", time_limit=0)


def test_epochs_within_fills_the_budget_and_keeps_to_its_bounds():
    from resnet.engine.optim import epochs_within

    assert epochs_within(3600, 0.0, [], 0, 100) == 100  # nothing measured: plan the cap
    # 54 s epochs, 2 done (108 s): 3492 s left hold 64 more, so 66 in all.
    assert epochs_within(3600, 108.0, [54.0, 54.0], 2, 100) == 66
    assert epochs_within(3600, 108.0, [54.0, 54.0], 2, 40) == 40  # run.epochs caps the plan
    # Only the last three epochs count: a machine that slowed to 72 s plans fewer.
    assert epochs_within(3600, 1080.0, [40.0] * 17 + [72.0] * 3, 20, 100) == 20 + 35
    assert epochs_within(3600, 3650.0, [54.0], 60, 100) == 60  # over budget: stop now


class _TenSecondEpochs(Trainer):
    """Every epoch is booked as 10 s of training (or as `booked` says), so the plan does not
    depend on this machine."""

    booked: dict[int, float] = {}

    def train_one_epoch(self, epoch):
        row = super().train_one_epoch(epoch)
        seconds = self.booked.get(epoch, 10.0)
        self.train_seconds += seconds - self.epoch_seconds[-1]
        self.epoch_seconds[-1] = row["seconds"] = seconds
        return row


def test_a_time_budget_plans_the_epochs_that_fit_and_ends_the_schedule_in_them(
    digits_folder, tmp_path
):
    cfg = small_config(str(digits_folder), tmp_path / "budget", epochs=50, time_budget=35)
    summary = _TenSecondEpochs(cfg, progress=False, log=lambda *a: None).fit()
    rows = list(csv.DictReader(open(tmp_path / "budget" / "metrics.csv")))
    # 35 s hold three 10 s epochs, and the one-cycle schedule spans those three, not 50: its
    # last step runs at 1/(steps after the warm-up) of the peak 0.05, where a run stopped by
    # --time-limit 35 would still be near the peak.
    assert summary["epochs"] == 3 and len(rows) == 3 and summary["time_budget"] == 35
    state = load_checkpoint(tmp_path / "budget" / "last.pt")
    steps = state["step"]
    assert state["planned_epochs"] == 3 and steps % 3 == 0
    assert float(rows[-1]["lr"]) == pytest.approx(0.05 / (steps - round(0.5 * steps / 3)))
    # Resuming with a larger budget plans more epochs (a longer run, like --epochs); without
    # one, the spent budget is refused in one line.
    more = _TenSecondEpochs(
        resume=tmp_path / "budget", time_budget=55, progress=False, log=lambda *a: None
    )
    assert more.planned_epochs == 5
    from resnet.errors import ResNetError

    with pytest.raises(ResNetError, match="30 s of its time budget of 35 s; resume with a larger"):
        _TenSecondEpochs(resume=tmp_path / "budget", progress=False, log=lambda *a: None)


def test_a_budget_plan_never_grows_once_its_schedule_has_ended(digits_folder, tmp_path):
    class FastThird(_TenSecondEpochs):
        booked = {2: 5.0}  # after 25 s, 10 s are left: the 8.3 s mean would fit a 4th epoch

    logs = []
    cfg = small_config(str(digits_folder), tmp_path / "b", epochs=3, time_budget=35)
    summary = FastThird(cfg, progress=False, log=logs.append).fit()
    assert summary["epochs"] == 3
    assert not any("caps the run" in line for line in logs)  # 3 fit and 3 are allowed
    cfg = small_config(str(digits_folder), tmp_path / "c", epochs=50, time_budget=35)
    summary = FastThird(cfg, progress=False, log=logs.append).fit()
    assert summary["epochs"] == 3  # the last planned epoch ran fast, but the rate is at zero
    # The cap binds and says so: 100 s of 10 s epochs against run.epochs 2.
    logs.clear()
    cfg = small_config(str(digits_folder), tmp_path / "d", epochs=2, time_budget=100)
    assert _TenSecondEpochs(cfg, progress=False, log=logs.append).fit()["epochs"] == 2
    assert any(
        "10 epochs would fit in 100 s; run.epochs caps the run at 2" in line for line in logs
    ), logs


def test_a_budget_run_cut_short_resumes_into_the_same_weights(digits_folder, tmp_path):
    full = small_config(str(digits_folder), tmp_path / "full", epochs=50, time_budget=35)
    _TenSecondEpochs(full, progress=False, log=lambda *a: None).fit()

    class Killed(_TenSecondEpochs):
        def train_one_epoch(self, epoch):
            if epoch == 2:
                raise KeyboardInterrupt
            return super().train_one_epoch(epoch)

    cut = small_config(str(digits_folder), tmp_path / "cut", epochs=50, time_budget=35)
    with pytest.raises(KeyboardInterrupt):
        Killed(cut, progress=False, log=lambda *a: None).fit()
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    _TenSecondEpochs(resume=tmp_path / "cut", progress=False, log=lambda *a: None).fit()
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_budget_run_killed_in_its_final_evaluation_finishes_on_resume(digits_folder, tmp_path):
    from resnet.errors import ResNetError

    cfg = small_config(str(digits_folder), tmp_path / "r", epochs=50, time_budget=25)
    _TenSecondEpochs(cfg, progress=False, log=lambda *a: None).fit()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    with pytest.raises(ResNetError, match="larger --time-budget"):  # finished: nothing to do
        _TenSecondEpochs(resume=tmp_path / "r", progress=False, log=lambda *a: None)
    (tmp_path / "r" / "summary.json").unlink()  # as if killed before the final evaluation ended
    again = _TenSecondEpochs(resume=tmp_path / "r", progress=False, log=lambda *a: None).fit()
    assert again["epochs"] == summary["epochs"] == 2  # 25 s of 10 s epochs
    assert any("acc" in k for k in summary)
    assert {k: again[k] for k in summary if "acc" in k} == {
        k: v for k, v in summary.items() if "acc" in k
    }


def test_time_flags_take_durations_and_refuse_nonsense(tmp_path):
    from resnet.cli.train import duration

    assert [duration(t) for t in ("3600", "90s", "45m", "1h30m", "1.5h", "2H")] == [
        3600,
        90,
        2700,
        5400,
        5400,
        7200,
    ]
    for bad in ("1h30", "-5", "1e-3", "soon"):
        with pytest.raises(Exception, match="not a duration"):
            duration(bad)
    r = _main("train", "--time-budget", "an hour", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "not a duration: 'an hour'" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_lookahead_moves_slow_weights_alpha_of_the_way_every_k_steps():
    from resnet.engine.optim import Lookahead

    net = torch.nn.Linear(3, 1, bias=False)
    start = net.weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    la = Lookahead(net, k=2, alpha=0.25)
    x = torch.randn(8, 3)
    fast = start.clone()
    for step in range(1, 5):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        grad = net.weight.grad.detach().clone()
        opt.step()
        fast = fast - 0.1 * grad
        la.step()
        if step % 2 == 0:  # sync: slow += 0.25 (fast - slow), training restarts from slow
            start = start + 0.25 * (fast - start)
            fast = start.clone()
        assert torch.allclose(net.weight, fast, atol=1e-6), step
    assert torch.allclose(la.slow[0], start, atol=1e-6)
    la.step()  # one step past a sync: count 5, slow weights kept through a state round trip
    again = Lookahead(net, k=2, alpha=0.25)
    again.load_state_dict(la.state_dict())
    assert again.count == 5 and torch.equal(again.slow[0], la.slow[0])


def test_muon_steps_filters_as_torch_muon_steps_their_matrices_and_the_rest_as_sgd():
    from resnet.engine.optim import Muon

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 4, 3, bias=True).to(memory_format=torch.channels_last)
    lin = torch.nn.Linear(54, 4, bias=False)  # the filter bank as torch.optim.Muon sees it
    lin.weight.data.copy_(conv.weight.detach().reshape(4, 54))
    bias = conv.bias.detach().clone().requires_grad_()
    ours = Muon(
        [
            dict(params=[conv.weight], muon=True, momentum=0.8, weight_decay=0.01),
            dict(params=[conv.bias], weight_decay=0.001),
        ],
        lr=0.05,
        momentum=0.9,
    )
    ref_muon = torch.optim.Muon([lin.weight], lr=0.05, momentum=0.8, weight_decay=0.01)
    ref_sgd = torch.optim.SGD([bias], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.001)
    for _ in range(4):
        x = torch.randn(5, 6, 3, 3)
        for opt in (ours, ref_muon, ref_sgd):
            opt.zero_grad()
        conv(x).pow(2).sum().backward()
        (x.reshape(5, 54) @ lin.weight.T + bias).pow(2).sum().backward()
        for opt in (ours, ref_muon, ref_sgd):
            opt.step()
        assert torch.allclose(conv.weight.reshape(4, 54), lin.weight, atol=1e-6)
        assert torch.allclose(conv.bias, bias, atol=1e-6)
    assert not torch.allclose(conv.bias, torch.zeros(4))  # it did move

    # normalize: the filter bank keeps the norm it had at its first step (airbench's Muon).
    norm = conv.weight.norm()
    keep = Muon([dict(params=[conv.weight], muon=True, normalize=True)], lr=0.3)
    for _ in range(3):
        keep.zero_grad()
        conv(torch.randn(5, 6, 3, 3)).pow(2).sum().backward()
        keep.step()
        assert torch.allclose(conv.weight.norm(), norm, rtol=1e-3)


def test_muon_option_gives_the_backbone_filters_to_muon_and_the_rest_to_sgd():
    import resnet
    from resnet.engine.config import OptimConfig
    from resnet.engine.optim import build_optimizer

    model = resnet.create("resnet20", num_classes=10)
    opt = build_optimizer(model, OptimConfig(optimizer="muon", lr=0.4, muon_lr=0.1))
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["backbone"]["muon"] and groups["backbone"]["lr_mult"] == pytest.approx(0.25)
    assert all(p.ndim == 4 for p in groups["backbone"]["params"])
    assert not any(g["muon"] for n, g in groups.items() if n != "backbone")
    assert model.fc.weight in groups["head"]["params"]
    with pytest.raises(ValueError, match="muon_lr"):
        OptimConfig(optimizer="muon", muon_lr=0.0)
    # Pre-activation convs feed the residual sum, not a norm: their scale matters.
    preact = resnet.create("preact_resnet18", num_classes=10)
    with pytest.raises(ValueError, match="muon_normalize"):
        build_optimizer(preact, OptimConfig(optimizer="muon"))
    opt = build_optimizer(preact, OptimConfig(optimizer="muon", muon_normalize=False))
    assert not any(g["normalize"] for g in opt.param_groups)


def test_val_and_predict_from_the_checkpoint_alone(digits_folder, tmp_path):
    train(
        small_config(str(digits_folder), tmp_path / "run", epochs=2),
        progress=False,
        log=lambda *a: None,
    )
    r = _main("val", str(tmp_path / "run"), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["split"] == "val" and m["samples"] == 60 and len(m["f1"]) == 10
    assert (tmp_path / "run" / "val-val" / "confusion_matrix.png").exists()
    image = next((digits_folder / "val" / "digit3").iterdir())
    r = _main("predict", str(tmp_path / "run" / "best.pt"), str(image), "--top-k", "3", "--json")
    assert r.returncode == 0, r.stderr
    (pred,) = json.loads(r.stdout)
    probs = [p["probability"] for p in pred["predictions"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert all(p["class"].startswith("digit") for p in pred["predictions"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(digits_folder, tmp_path):
    cfg = small_config(str(digits_folder), tmp_path / "nan", epochs=3)
    trainer = Trainer(cfg, progress=False, log=lambda *a: None)
    row = trainer.train_one_epoch(0)
    trainer.history.append({"epoch": 1, **row})
    trainer._save(0, trainer.steps_per_epoch, True)
    with torch.no_grad():  # poison the weights: the next step's loss is NaN
        trainer.model.fc.weight.fill_(float("nan"))
    from resnet.errors import ResNetError

    with pytest.raises(ResNetError, match="loss became nan"):
        trainer.train_one_epoch(1)
    assert load_checkpoint(tmp_path / "nan" / "last.pt")["epoch"] == 0


def test_config_rejects_unknown_keys_and_round_trips(tmp_path):
    from resnet.errors import ResNetError

    cfg = TrainConfig().updated({"optim": {"lr": 0.2}, "model": {"options": {"norm": "group"}}})
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg
    with pytest.raises(ResNetError, match="unknown key"):
        TrainConfig.from_dict({"optim": {"learning_rate": 0.1}})
    with pytest.raises(ResNetError, match="unknown key"):
        TrainConfig().updated({"data": {"batchsize": 3}})


def test_fine_tuning_from_a_weights_file_keeps_frozen_parts(digits_folder, tmp_path):
    import torchvision

    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    cfg = TrainConfig.from_dict(
        {
            "model": {"name": "resnet18"},
            "data": {"source": str(digits_folder), "batch_size": 48},
            "finetune": {
                "weights": str(tmp_path / "r18.pth"),
                "freeze": "backbone",
                "bn_eval": True,
            },
            "run": {"epochs": 1, "out": str(tmp_path / "ft")},
        }
    )
    train(cfg, progress=False, log=lambda *a: None)
    state = load_checkpoint(tmp_path / "ft" / "last.pt")
    w = state["model"]
    # 16 px images take the small-input stem (a fresh 3x3 conv1); the frozen backbone is unchanged.
    assert w["conv1.weight"].shape == (64, 1, 3, 3)
    assert torch.equal(w["layer3.1.conv2.weight"], tv.layer3[1].conv2.weight)
    assert torch.equal(w["layer4.0.bn1.running_mean"], tv.layer4[0].bn1.running_mean)
    assert w["fc.weight"].shape == (10, 512)


def test_shipped_recipes_load_and_resolve():
    from resnet.engine.recipes import list_recipes, load_recipe
    from resnet.models import get_entry

    names = list_recipes()
    assert {"paper", "speedrun", "best", "ensemble"} <= set(names)
    for name in names:
        cfg = load_recipe(name)
        get_entry(cfg.model.name)  # every recipe names a registered model
        assert cfg.run.epochs >= 1


def test_ema_warms_up_then_settles_to_its_decay():
    from torch.optim.swa_utils import AveragedModel

    from resnet.engine.optim import ema_update

    net = torch.nn.Linear(1, 1, bias=False)
    ema = AveragedModel(net, multi_avg_fn=ema_update(0.99), use_buffers=True)
    values = []
    for step in range(1, 2001):  # the net's weight ramps 1, 2, 3, ...
        with torch.no_grad():
            net.weight.fill_(float(step))
        ema.update_parameters(net)
        values.append(ema.module.weight.item())
    # Early on the average follows the net closely (decay 2/11 at the second update), so a short
    # run's average is not anchored to its first, untrained weights.
    assert values[1] == pytest.approx(1 + (1 - 2 / 11) * 1)
    assert 20 - values[19] < 3
    # Once (1 + n) / (10 + n) passes the decay (n = 890) it lags by decay / (1 - decay) = 99
    # steps, as a plain EMA of a ramp does.
    assert 2000 - values[-1] == pytest.approx(99, abs=1)


def test_whitened_stem_decorrelates_real_patches():
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    import resnet
    from resnet.engine.whiten import whiten_first_conv_

    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None]  # 1797 real 8x8 digits
    x = (x - x.mean()) / x.std()
    m = resnet.create("fast_resnet8", num_classes=10, in_chans=1)
    before = m.conv1.weight.detach().clone()
    assert whiten_first_conv_(m, x) == 18  # 3x3 patches of one channel: 9 directions, two signs
    w = m.conv1.weight.detach()
    assert torch.equal(w[1:18:2], -w[0:18:2]) and torch.equal(w[18:], before[18:])
    feats = F.conv2d(x, w[0:18:2]).permute(0, 2, 3, 1).reshape(-1, 9).double()
    cov = torch.cov(feats.T)
    assert torch.allclose(cov, torch.eye(9, dtype=torch.float64), atol=0.02), cov
    # A first conv with fewer filters than 2 x 27 (RGB) keeps the directions of most variance.
    rgb = torch.cat([x, x.flip(2), x.flip(3)], 1)
    m = resnet.create("fast_resnet8", num_classes=10, in_chans=3)
    assert whiten_first_conv_(m, rgb) == 32
    filters = m.conv1.weight.detach()[0::2].double()  # the 16 positive filters
    var = [F.conv2d(rgb.double(), f[None]).var().item() for f in filters]
    assert all(v == pytest.approx(1, rel=0.05) for v in var)
    # Each filter is v / sqrt(lambda + eps): its squared norm gives back the eigenvalue, and the
    # 16 kept are the 16 largest of the 27 of the patch covariance, largest first.
    patches = rgb.double().unfold(2, 3, 1).unfold(3, 3, 1).permute(0, 2, 3, 1, 4, 5)
    top = torch.linalg.eigvalsh(torch.cov(patches.reshape(-1, 27).T)).flip(0)[:16]
    kept = 1 / filters.flatten(1).pow(2).sum(1) - 5e-4
    assert torch.allclose(kept, top, rtol=1e-3), (kept, top)  # float32 weights, n-1 vs n
    with pytest.raises(ValueError, match="input channels"):
        whiten_first_conv_(m, x)


def test_trainer_whitens_the_stem_only_when_training_from_scratch(digits_folder, tmp_path):
    from resnet.errors import ResNetError

    cfg = small_config(str(digits_folder), tmp_path / "run").updated(
        {"model": {"name": "fast_resnet8", "whiten_stem": True}}
    )
    tr = Trainer(cfg, progress=False, log=lambda *a: None)
    w = tr.model.conv1.weight.detach()
    assert torch.equal(w[1:18:2], -w[0:18:2])
    bad = cfg.updated(
        {
            "finetune": {"weights": str(tmp_path / "w.safetensors")},
            "run": {"out": str(tmp_path / "run2")},
        }
    )
    with pytest.raises(ResNetError, match="from scratch"):
        Trainer(bad, progress=False, log=lambda *a: None)


def test_frozen_whitened_stem_stays_fixed_while_the_rest_trains(digits_folder, tmp_path):
    from resnet.errors import ResNetError

    cfg = small_config(str(digits_folder), tmp_path / "run", epochs=1).updated(
        {"model": {"name": "fast_resnet8_32", "whiten_stem": True, "freeze_whitened": True}}
    )
    tr = Trainer(cfg, progress=False, log=lambda *a: None)
    stem, block = (
        tr.model.conv1.weight.detach().clone(),
        tr.model.layer1[0].conv1.weight.detach().clone(),
    )
    assert torch.equal(stem[1:16:2], -stem[0:16:2])  # whitened: 8 directions, both signs
    tr.fit()
    assert torch.equal(tr.model.conv1.weight, stem)
    assert not torch.equal(tr.model.layer1[0].conv1.weight, block)
    assert tr.model.bn1.weight.requires_grad  # the stem's norm still trains
    for change, match in (({"whiten_stem": False}, "needs whiten_stem"),):
        with pytest.raises(ResNetError, match=match):
            Trainer(cfg.updated({"model": change}), progress=False, log=lambda *a: None)
    with pytest.raises(ResNetError, match="--freeze"):
        Trainer(
            cfg.updated({"finetune": {"freeze": "stages:1"}}), progress=False, log=lambda *a: None
        )
    wide_stem = cfg.updated(
        {"model": {"name": "fast_resnet8"}, "run": {"out": str(tmp_path / "b")}}
    )
    with pytest.raises(ResNetError, match="only 18 of the first conv's 32 filters"):
        Trainer(wide_stem, progress=False, log=lambda *a: None)
    bn_eval = cfg.updated({"finetune": {"bn_eval": True}, "run": {"out": str(tmp_path / "c")}})
    bn_eval = Trainer(bn_eval, progress=False, log=lambda *a: None)
    assert not bn_eval.model.conv1.weight.requires_grad  # the fine-tuning hooks do not undo it


def test_shift_tta_averages_views_moved_each_way():
    from resnet.engine.evaluate import predict_logits

    # A linear model: the TTA logits are the model applied to the views' weighted mean image.
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(49, 49, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.eye(49))
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 2] = 1.0  # one bright pixel left of centre
    mean = predict_logits(net, x, tta=False, shift=1).view(7, 7)
    expected = torch.zeros(7, 7)
    expected[3, 2], expected[4, 3], expected[2, 1] = 0.5, 0.25, 0.25  # moved +1/+1 and -1/-1
    assert torch.allclose(mean, expected)
    mirrored = predict_logits(net, x, tta=True, shift=1).view(7, 7)
    assert torch.allclose(mirrored, (expected + expected.flip(1)) / 2)
    assert torch.equal(predict_logits(net, x, tta=False, shift=0).view(7, 7), x[0, 0])


def test_progressive_resizing_trains_small_first_and_evaluates_full_size(digits_folder, tmp_path):
    cfg = small_config(str(digits_folder), tmp_path / "run", epochs=3).updated(
        {"model": {"name": "fast_resnet8_32"}, "data": {"early_size": 10, "early_epochs": 2}}
    )
    tr = Trainer(cfg, progress=False, log=lambda *a: None)
    seen: list[tuple[bool, int]] = []
    tr.model.register_forward_pre_hook(lambda m, a: seen.append((m.training, a[0].shape[-1])))
    sizes = []
    for epoch in range(3):
        tr.train_one_epoch(epoch)
        sizes.append({s for training, s in seen if training})
        seen.clear()
        tr.evaluate("val", tr.model)
        assert {s for training, s in seen if not training} == {16}  # evaluation: full size
        seen.clear()
    assert sizes == [{10}, {10}, {16}]
    from resnet.errors import ResNetError

    with pytest.raises(ResNetError, match="early_size"):
        TrainConfig.from_dict({"data": {"early_epochs": 2}})


def test_shift_tta_larger_than_the_image_is_refused(digits_folder, tmp_path):
    from resnet.engine.evaluate import predict_logits
    from resnet.errors import ResNetError

    with pytest.raises(ResNetError, match="tta_shift"):
        TrainConfig.from_dict({"run": {"tta_shift": -1}})
    cfg = small_config(str(digits_folder), tmp_path / "run", tta_shift=16)  # 16 px digits
    with pytest.raises(ResNetError, match="smaller than the 16 px"):
        Trainer(cfg, progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match="larger than 4x4"):
        predict_logits(torch.nn.Flatten(), torch.zeros(1, 1, 4, 4), shift=4)


def _api_config(digits_folder, out: Path) -> TrainConfig:
    """A run whose every random stream matters: drop-path (global generator), flips and crops
    (the data generator), an EMA and lookahead (state beside the optimiser's)."""
    return small_config(str(digits_folder), out, epochs=3).updated(
        {
            "model": {"options": {"drop_path_rate": 0.1}},
            "optim": {"ema_decay": 0.9, "lookahead_steps": 3},
        }
    )


class _StopAt(Callback):
    def __init__(self, global_step: int):
        self.global_step, self.events = global_step, []

    def on_event(self, event):
        self.events.append(event)
        super().on_event(event)

    def on_step(self, event: StepProgress) -> None:
        if event.global_step == self.global_step:
            self.request_stop()


def test_a_run_stopped_through_the_api_mid_epoch_resumes_to_the_uninterrupted_weights(
    digits_folder, tmp_path
):
    quiet = dict(progress=False, log=None)
    full = train(_api_config(digits_folder, tmp_path / "full"), **quiet)
    assert full["epochs"] == 3
    steps = load_checkpoint(tmp_path / "full" / "last.pt")["step"] // 3  # per epoch
    assert steps >= 4
    stopper = _StopAt(steps + 3)  # asked after the third step of the second epoch
    cut = train(_api_config(digits_folder, tmp_path / "cut"), callbacks=[stopper], **quiet)
    assert cut["status"] == "stopped" and (cut["epoch"], cut["step"]) == (2, 3)
    state = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert state["partial_epoch"]["step"] == 3 and state["epoch"] == 0
    saved = [e for e in stopper.events if isinstance(e, CheckpointSaved)]
    assert saved[-1].kind == "stop" and saved[-1].step == steps + 3
    assert stopper.events[-1].name == "run_end" and stopper.events[-1].status == "stopped"
    assert not (tmp_path / "cut" / "summary.json").exists()

    resumed = train(resume=tmp_path / "cut", **quiet)
    assert resumed["epochs"] == 3
    a = list(csv.DictReader(open(tmp_path / "full" / "metrics.csv")))
    b = list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))
    keys = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    wa, wb = (
        load_checkpoint(tmp_path / "full" / "last.pt"),
        load_checkpoint(tmp_path / "cut" / "last.pt"),
    )
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert all(torch.equal(wa["raw_model"][k], wb["raw_model"][k]) for k in wa["raw_model"])
    assert "partial_epoch" not in wb


def test_a_callback_sees_the_run_and_exactly_the_rows_of_metrics_csv(digits_folder, tmp_path):
    seen = []
    stop = threading.Event()
    cfg = small_config(str(digits_folder), tmp_path / "run", epochs=3)
    summary = resnet.train(cfg, callbacks=[seen.append], stop=stop, progress=False, log=None)
    names = [e.name for e in seen]
    assert names[0] == "run_start" and names[-1] == "run_end"
    start = seen[0]
    assert start.train_size == 240 and start.val_size == 60 and start.planned_epochs == 3
    steps = [e for e in seen if isinstance(e, StepProgress)]
    assert len(steps) == 3 * start.steps_per_epoch
    assert [e.global_step for e in steps] == list(range(1, len(steps) + 1))
    assert all(e.lr > 0 and e.loss > 0 and 0 <= e.acc <= 1 for e in steps)
    rows = [e.row for e in seen if isinstance(e, EpochEnd)]
    written = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert len(rows) == len(written) == 3
    for row, line in zip(rows, written, strict=True):
        assert {k: v for k, v in line.items() if v != ""} == {
            k: str(v) for k, v in row.items() if k in line
        }
    kinds = [e.kind for e in seen if isinstance(e, CheckpointSaved)]
    assert kinds.count("last") == 3 and "best" in kinds
    assert seen[-1].summary == summary and seen[-1].status == "finished"
    json.dumps([e.to_dict() for e in seen])  # every payload is plain data

    # The caller's event stops the run too: set after the first step of another run.
    def stop_after_first(event):
        if isinstance(event, StepProgress):
            stop.set()

    out = tmp_path / "stopped"
    cut = resnet.train(
        small_config(str(digits_folder), out),
        callbacks=[stop_after_first],
        stop=stop,
        progress=False,
        log=None,
    )
    assert cut["status"] == "stopped" and (cut["epoch"], cut["step"]) == (1, 1)
    assert load_checkpoint(out / "last.pt")["partial_epoch"]["step"] == 1


def test_a_failed_run_announces_its_error(digits_folder, tmp_path):
    seen = []
    cfg = small_config(str(digits_folder), tmp_path / "nan").updated({"optim": {"lr": 1e30}})
    from resnet.errors import ResNetError

    with pytest.raises(ResNetError, match="loss became"):
        resnet.train(cfg, callbacks=[seen.append], progress=False, log=None)
    assert seen[-1].name == "error" and "loss became" in seen[-1].message


def test_a_run_stopped_mid_epoch_past_its_time_limit_still_finishes_that_epoch(
    digits_folder, tmp_path
):
    # The limit is checked between epochs: an uninterrupted run would finish the epoch it
    # passed the limit in, so the same run stopped inside that epoch must resume to its end.
    cfg = small_config(str(digits_folder), tmp_path / "lim", epochs=3, time_limit=1e-3)
    cut = train(cfg, callbacks=[_StopAt(2)], progress=False, log=None)
    assert cut["status"] == "stopped" and cut["train_seconds"] > 1e-3
    done = train(resume=tmp_path / "lim", progress=False, log=None)
    assert done["epochs"] == 1  # the rest of epoch 1, then the limit stops the run
