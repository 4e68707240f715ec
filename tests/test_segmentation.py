"""Segmentation on a ResNet encoder: the composite set, U-Net shapes, exact mIoU/Dice, training."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnet.data.composite import CompositeSet
from resnet.tasks import evaluate_task, predict_task, train_task
from resnet.tasks.segmentation import (
    UNet,
    confusion,
    draw_masks,
    segmentation_metrics,
    soft_dice_loss,
)

TINY = dict(
    model="resnet18",
    num_train=32,
    num_val=8,
    size=64,
    max_steps=8,
    batch_size=4,
    warmup_steps=2,
    lr=2e-3,
    seed=0,
    progress=False,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("segment")
    return train_task("segment", dict(TINY, out=str(out)))


def test_composite_is_deterministic_and_consistent():
    a = CompositeSet(12, 64, seed=3, split="val")
    b = CompositeSet(12, 64, seed=3, split="val")
    c = CompositeSet(12, 64, seed=4, split="val")
    assert torch.equal(a.images, b.images) and torch.equal(a.instance_maps, b.instance_maps)
    assert not torch.equal(a.images, c.images)
    counts = []
    for i in range(len(a)):
        image, t = a[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
        k = len(t["labels"])
        counts.append(k)
        assert 1 <= k <= 4 and set(t["labels"].tolist()) <= set(range(1, 6))
        assert t["masks"].sum(0).max() <= 1  # visible masks never overlap
        for m, box, label in zip(t["masks"], t["boxes"], t["labels"], strict=True):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # tight
            assert (t["semantic"][m.bool()] == label).all()
        assert (t["semantic"] > 0).sum() == t["masks"].sum()
    assert len(set(counts)) > 1  # several items per canvas, in varying numbers
    assert len(set(torch.cat(a.labels).tolist())) >= 3  # several classes


def test_composite_occlusion_and_scale():
    ds = CompositeSet(40, 96, seed=0, split="val", items=(3, 4))
    sides = torch.cat([ds[i][1]["boxes"][:, 2:] - ds[i][1]["boxes"][:, :2] for i in range(40)])
    assert sides.max() / sides.min() > 3  # several scales
    visible = torch.cat([ds[i][1]["masks"].sum((1, 2)) for i in range(40)]).double()
    full = torch.cat(ds.areas).double()
    assert (visible < full).sum() >= 5  # occlusion happens...
    assert (visible >= 0.5 * full).all()  # ...but no item loses more than max_hidden of itself
    strict = CompositeSet(40, 96, seed=0, split="val", items=(3, 4), max_hidden=0.0)
    visible = torch.cat([strict[i][1]["masks"].sum((1, 2)) for i in range(40)])
    assert torch.equal(visible, torch.cat(strict.areas))


def test_composite_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown Fashion-MNIST class"):
        CompositeSet(2, 32, classes=["Hat"])
    with pytest.raises(ValueError, match="num_images"):
        CompositeSet(0, 32)
    assert CompositeSet(2, 32, classes="all", split="val").classes[-1] == "Ankle boot"


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "preact_resnet18"])
def test_unet_output_matches_input_size(name):
    model = UNet(name, 4).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 50, 70)).shape == (2, 5, 50, 70)


def test_long_skips_are_the_only_difference():
    with_skips, without = UNet("resnet18", 5), UNet("resnet18", 5, long_skips=False)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # Each decoder block's first conv loses (skip channels x out channels x 3 x 3) weights:
    # skips 256, 128, 64, 64 into decoder widths 128, 64, 32, 32.
    assert n(with_skips) - n(without) == 9 * (256 * 128 + 128 * 64 + 64 * 32 + 64 * 32)
    # The plain twin drops the short skips: resnet18's three 1x1 projections and their BNs.
    assert n(with_skips) - n(UNet("plain18", 5)) == 64 * 128 + 128 * 256 + 256 * 512 + 2 * 896


def test_metrics_exact_numbers():
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]])
    pred = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 2, 0], [0, 0, 0, 0]])
    m = segmentation_metrics(confusion(pred, target, 3), ["a", "b"])
    # background: tp 6, fp 2, fn 2 -> 6/10; a: tp 4, fp 1 -> 4/5; b: tp 2, fp 1, fn 2 -> 2/5
    assert m["per_class"] == {"background": 0.6, "a": 0.8, "b": 0.4}
    assert m["miou"] == pytest.approx((0.6 + 0.8 + 0.4) / 3)
    assert m["miou_fg"] == pytest.approx(0.6)
    assert m["dice"] == pytest.approx((8 / 9 + 4 / 7) / 2)
    assert m["pixel_acc"] == pytest.approx(12 / 16)


def test_soft_dice_loss():
    target = torch.tensor([[[0, 1], [2, 2]]])
    sure = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 100
    assert soft_dice_loss(sure, target).item() == pytest.approx(0.0, abs=1e-6)
    # Uniform predictions: class 1 has 1 pixel, p = 1/3 on 4 pixels -> (2/3 + 1) / (4/3 + 1 + 1);
    # class 2 has 2 pixels -> (4/3 + 1) / (4/3 + 2 + 1).
    flat = torch.zeros(1, 3, 2, 2)
    expected = 1 - ((5 / 3) / (10 / 3) + (7 / 3) / (13 / 3)) / 2
    assert soft_dice_loss(flat, target).item() == pytest.approx(expected)


def test_training_lowers_the_loss(run):
    losses = run["step_losses"]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    # The cross-entropy part falls fastest; the Dice part (steps.csv) moves slowly at first.
    with open(f"{run['out']}/steps.csv") as f:
        ce = [float(r["ce"]) for r in csv.DictReader(f)]
    assert np.mean(ce[-3:]) < 0.85 * np.mean(ce[:3]), ce
    summary = json.loads(open(f"{run['out']}/summary.json").read())
    assert summary["task"] == "segment" and summary["long_skips"] is True
    assert 0 < summary["best_miou"] <= 1


def test_checkpoint_reproduces_recorded_metrics(run):
    metrics = evaluate_task(run["out"], progress=False)
    assert metrics["miou"] == run["final"]["val_miou"]
    assert metrics["dice"] == run["final"]["val_dice"]


def test_predict_draws_masks_to_png(run, tmp_path):
    ds = CompositeSet(1, 64, split="val", seed=9)
    Image.fromarray(ds[0][0].permute(1, 2, 0).numpy()).save(tmp_path / "canvas.png")
    # A grey image of another size: resized for the net, drawn at its own size.
    Image.fromarray(np.full((40, 30), 128, np.uint8)).save(tmp_path / "grey.png")
    results = predict_task(
        run["out"], [tmp_path / "canvas.png", tmp_path / "grey.png"], tmp_path / "pred"
    )
    assert np.asarray(Image.open(results[0]["output"])).shape == (64, 64, 3)
    assert np.asarray(Image.open(results[1]["output"])).shape == (40, 30, 3)
    for r in results:
        assert all(0 < v <= 1 for v in r["classes"].values())


def test_draw_masks_tints_only_predicted_pixels():
    image = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    semantic = torch.zeros(8, 8, dtype=torch.int64)
    semantic[2:4, 2:4] = 3
    drawn = draw_masks(image, semantic, alpha=0.5)
    assert torch.equal(drawn[:, 0, 0], image[:, 0, 0])
    assert not torch.equal(drawn[:, 2, 2], image[:, 2, 2])
    assert torch.equal(draw_masks(image, torch.zeros(8, 8, dtype=torch.int64)), image)
