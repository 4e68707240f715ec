"""Residual-learning analyses: the degradation experiment's machinery, gradient flow, responses."""

import csv
import json
import math

import pytest
import torch

import resnet
from resnet.analysis import degradation as dg
from resnet.analysis import gradients, responses
from resnet.cli import main as cli_main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits() -> dg.TensorData:
    """scikit-learn's 8x8 hand-written digits (real images, bundled, no download), at 16 px."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=16, mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target, dtype=torch.int64)
    return dg.TensorData("digits", x[:300], y[:300], x[1500:1600], y[1500:1600], 10)


def test_recipe_learning_rate_is_warmup_then_paper_steps():
    r = dg.Recipe(iterations=100, warmup=10, lr=0.1)
    assert r.lr_at(0) == pytest.approx(0.01)
    assert r.lr_at(5) == pytest.approx(0.055)
    assert [r.lr_at(s) for s in (10, 49)] == [pytest.approx(0.1)] * 2
    assert [r.lr_at(s) for s in (50, 74, 75, 99)] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    c = dg.Recipe(iterations=100, warmup=0, schedule="cosine")
    assert c.lr_at(0) == pytest.approx(0.1) and c.lr_at(50) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="schedule"):
        dg.Recipe(schedule="linear")


def test_every_net_sees_the_same_batches(digits):
    r = dg.Recipe(batch_size=64)
    a, b = dg.batches(digits, r), dg.batches(digits, r)
    for _ in range(6):  # crosses an epoch boundary (300 images, batch 64)
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    xa, _ = next(dg.batches(digits, dg.Recipe(batch_size=64, seed=1)))
    assert not torch.equal(xa, next(dg.batches(digits, r))[0])


def test_degradation_tiny_budget_writes_files_and_a_wellformed_verdict(digits, tmp_path):
    recipe = dg.Recipe(
        iterations=4, warmup=1, batch_size=32, eval_every=2, train_eval_size=64, test_eval_size=50
    )
    result = dg.run_degradation(digits, [32, 20], recipe, tmp_path, progress=False)
    for f in ("training_error.png", "test_error.png"):
        assert (tmp_path / f).read_bytes()[:8] == PNG
    with open(tmp_path / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows[::3]] == ["resnet20", "plain20", "resnet32", "plain32"]
    assert [int(r["iteration"]) for r in rows[:3]] == [0, 2, 4]
    assert {r["skip"] for r in rows} == {"True", "False"}
    for r in rows:
        assert 0.0 <= float(r["train_error"]) <= 1.0 and 0.0 <= float(r["test_error"]) <= 1.0
    # Error rates are counts over the evaluated subsets: multiples of 1/64 and 1/50.
    assert all(
        float(r["train_error"]) * 64 == pytest.approx(round(float(r["train_error"]) * 64))
        for r in rows
    )

    v = json.loads((tmp_path / "verdict.json").read_text())["verdict"]
    last = {r["model"]: r for r in rows}
    gap = float(last["plain32"]["train_error"]) - float(last["plain20"]["train_error"])
    assert v["plain_train_gap"] == pytest.approx(gap)
    assert v["plain_degrades"] is (gap > 0)
    rgap = float(last["resnet32"]["train_error"]) - float(last["resnet20"]["train_error"])
    assert v["residual_not_worse"] is (rgap <= 0)
    assert [t["depth"] for t in v["table"]] == [20, 32] and v["iterations"] == 4
    md = (tmp_path / "verdict.md").read_text()
    assert "plain-32 ends with a higher training error than plain-20" in md
    assert result.verdict == v


def test_verdict_logic_on_known_numbers():
    def row(model, depth, skip, err):
        return dict(
            model=model,
            depth=depth,
            skip=skip,
            iteration=10,
            train_error=err,
            test_error=err + 0.01,
        )

    rows = [
        row("resnet20", 20, True, 0.10),
        row("plain20", 20, False, 0.12),
        row("resnet56", 56, True, 0.08),
        row("plain56", 56, False, 0.20),
    ]
    v = dg.verdict(rows, [20, 56])
    assert v["plain_degrades"] and v["residual_not_worse"] and v["residual_beats_plain_at_depth"]
    assert v["plain_train_gap"] == pytest.approx(0.08)
    rows[3]["train_error"] = 0.11
    rows[2]["train_error"] = 0.101
    v = dg.verdict(rows, [20, 56])
    assert not v["plain_degrades"] and not v["residual_not_worse"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--depths", "20,21"], "unknown model"),
        (["--depths", "20"], "at least two depths"),
        (["--budget", "0"], "--budget must be at least 1"),
        (["--eval-size", "0"], "must be at least 1"),
    ],
)
def test_cli_rejects_bad_input_without_writing(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert cli_main(["experiment", "degradation", *flags, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_gradient_norms_cover_every_main_path_conv_in_depth_order():
    model = resnet.create("resnet20_b", in_chans=1, num_classes=10)  # has 1x1 projections
    layers = [n for n, _ in gradients.conv_layers(model)]
    assert len(layers) == 19 and layers[0] == "conv1" and layers[-1] == "layer3.2.conv2"
    assert not any("downsample" in n for n in layers)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = gradients.gradient_norms(model, x, y)
    assert len(norms) == 19 and all(n > 0 and math.isfinite(n) for n in norms)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN stats untouched
    assert all(p.grad is None for p in model.parameters())


def test_plain110_first_layer_gradient_explodes_at_init_then_vanishes(digits):
    # Measured (seeds 0-2, 32 digits at 16 px, batch 32). At init the first/last-layer ratio is
    # 3e6-2e7 for plain110 (with BN and no skips the gradient *grows* towards the input) and
    # 11-31 for resnet110. The plain net's first SGD steps then blow its early weights up
    # (conv1's norm 1.5 -> 5e5 in 3 steps); a conv followed by BN is scale-invariant, so its
    # gradient shrinks as 1/|W|: after 3 steps plain110's first-layer gradient is 3e-8-3e-6,
    # 6e5-1e8 times smaller than resnet110's (1.8-13), whose ratio stays 2-15.
    result = gradients.gradient_flow(
        "resnet110", digits, steps=3, probe_size=32, recipe=dg.Recipe(batch_size=32), progress=False
    )
    res, plain = result["nets"]
    assert (res["name"], plain["name"]) == ("resnet110", "plain110")
    assert len(res["init"]) == len(plain["init"]) == 109  # 108 block convs + the stem
    assert gradients.first_last_ratio(res["init"]) < 1e3
    assert gradients.first_last_ratio(plain["init"]) > 1e5
    assert plain["init"][0] > 1e4 * res["init"][0]
    # The last layers get gradients of the same order in both nets: the difference is depth.
    assert 0.1 < plain["init"][-1] / res["init"][-1] < 10
    # After 3 steps: orders of magnitude smaller at the plain net's first layer.
    assert plain["trained"][0] < 1e-3 * res["trained"][0]
    assert gradients.first_last_ratio(plain["trained"]) < 1e-3
    assert gradients.first_last_ratio(res["trained"]) > 0.1


def test_gradient_flow_after_steps_and_files(digits, tmp_path):
    result = gradients.gradient_flow(
        "plain20", digits, steps=2, recipe=dg.Recipe(batch_size=32), progress=False
    )
    assert [n["name"] for n in result["nets"]] == ["resnet20", "plain20"]
    for net in result["nets"]:
        assert len(net["losses"]) == 2 and len(net["trained"]) == 19
        assert net["trained"] != net["init"]
    paths = gradients.write_gradient_flow(result, tmp_path, "g")
    assert paths[1].read_bytes()[:8] == PNG
    lines = paths[0].read_text().splitlines()
    assert len(lines) == 1 + 2 * 19 and lines[1].startswith("resnet20,True,1,conv1,")
    assert "plain20" in gradients.format_summary(result)


def test_response_is_the_branch_before_the_addition(digits):
    x = digits.test_x[:40]
    model = resnet.create("resnet20", in_chans=1, num_classes=10).eval()
    captured = {}
    h = model.layer2[1].bn2.register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    stds = responses.response_stds(model, x)
    h.remove()
    assert len(stds) == 9
    expected = captured["o"].transpose(0, 1).reshape(32, -1).double().std(dim=1).mean()
    assert stds[4] == pytest.approx(float(expected), rel=1e-6)
    # Zero-initialised residual branches respond with exactly 0 (measured before the addition,
    # else the identity path would show); the plain twin's layers do not.
    zero = resnet.create("resnet20", in_chans=1, num_classes=10, zero_init_residual=True)
    assert responses.response_stds(zero, x) == [0.0] * 9
    assert min(responses.response_stds(resnet.create("plain20", in_chans=1, num_classes=10), x)) > 0


def test_response_study_files(digits, tmp_path):
    result = responses.response_study(
        "resnet20", digits, steps=1, probe_size=50, recipe=dg.Recipe(batch_size=32), progress=False
    )
    assert [n["skip"] for n in result["nets"]] == [True, False]
    paths = responses.write_responses(result, tmp_path, "r")
    assert paths[1].read_bytes()[:8] == PNG
    assert len(paths[0].read_text().splitlines()) == 1 + 2 * 9
