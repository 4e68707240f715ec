"""Detection on a ResNet backbone: the loss falls, COCO mAP is right, COCO JSON round-trips."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet.data.coco import CocoDataset, MaskFolderDataset, coco_dict, open_dataset
from resnet.data.composite import CompositeSet
from resnet.errors import ResNetError
from resnet.tasks import checkpoint_task, evaluate_task, predict_task, train_task
from resnet.tasks.detection import Detector, coco_map, draw_detections

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
    out_channels=32,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect")
    return train_task("detect", dict(TINY, out=str(out)))


def test_training_lowers_the_loss_and_fills_the_run_folder(run):
    losses = run["step_losses"]
    assert len(losses) == 8 and all(np.isfinite(losses))
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.9 * first, losses
    out = run["out"]
    for name in (
        "config.yaml",
        "metrics.csv",
        "steps.csv",
        "summary.json",
        "last.pt",
        "best.pt",
        "curves.png",
    ):
        assert (Path(out) / name).is_file(), name
    summary = json.loads(open(f"{out}/summary.json").read())
    assert summary["steps"] == 8 and summary["images_seen"] == 32 and summary["task"] == "detect"
    assert 0.0 <= summary["best_map"] <= 1.0


def test_checkpoint_rebuilds_the_same_detector(run):
    assert checkpoint_task(run["out"]) == "detect"
    # Scoring last.pt on the run's own validation set (rebuilt from its config) reproduces the
    # figures recorded at the end of training, to the last digit.
    metrics = evaluate_task(f"{run['out']}/last.pt", progress=False)
    assert metrics["images"] == 8
    assert metrics["map"] == run["final"]["val_map"]
    assert metrics["map50"] == run["final"]["val_map50"]


def test_predict_draws_boxes_to_png(run, tmp_path):
    ds = CompositeSet(2, 64, split="val", seed=5)
    for i in range(2):
        Image.fromarray(ds[i][0].permute(1, 2, 0).numpy()).save(tmp_path / f"img{i}.png")
    results = predict_task(run["out"], tmp_path, tmp_path / "pred", score_thresh=0.0)
    assert [r["image"].endswith(f"img{i}.png") for i, r in enumerate(results)] == [True, True]
    for i, r in enumerate(results):
        drawn = np.asarray(Image.open(r["output"]))
        assert drawn.shape == (64, 64, 3)
        assert len(r["detections"]) > 0  # threshold 0: every kept detection is drawn
        assert not np.array_equal(drawn, ds[i][0].permute(1, 2, 0).numpy())
        assert set(r["detections"][0]) == {"label", "class", "score", "box"}


def test_coco_map_of_perfect_and_shifted_predictions():
    ds = CompositeSet(6, 64, split="val", seed=1)
    perfect = [
        dict(boxes=t["boxes"], scores=torch.ones(len(t["labels"])), labels=t["labels"])
        for _, t in (ds[i] for i in range(len(ds)))
    ]
    m = coco_map(ds, perfect)
    assert m["map"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0)
    wrong_class = [dict(p, labels=p["labels"] % 5 + 1) for p in perfect]
    assert coco_map(ds, wrong_class)["map50"] == 0.0
    # Shifting every box by half its width: IoU 1/3 < 0.5, so nothing counts at any threshold.
    shifted = []
    for p in perfect:
        b = p["boxes"].clone()
        b[:, [0, 2]] += (b[:, 2:3] - b[:, 0:1]) / 2
        shifted.append(dict(p, boxes=b))
    assert coco_map(ds, shifted)["map50"] == 0.0
    assert (
        coco_map(
            ds,
            [
                dict(
                    boxes=torch.zeros(0, 4),
                    scores=torch.zeros(0),
                    labels=torch.zeros(0, dtype=torch.int64),
                )
            ]
            * 6,
        )["map"]
        == 0.0
    )


def test_detector_variants_build_and_run():
    torch.manual_seed(0)
    x = [torch.rand(3, 64, 64), torch.rand(3, 48, 80)]
    for kw in (dict(neck="none"), dict(extra="p6p7"), dict(name="plain18")):
        model = Detector(**{"name": "resnet18", "num_classes": 3, "out_channels": 32, **kw}).eval()
        with torch.no_grad():
            out = model(x)
        assert len(out) == 2 and out[1]["boxes"].shape[1] == 4
        # Boxes come back in each image's own coordinates.
        assert (out[1]["boxes"][:, [0, 2]] <= 80).all() and (out[1]["boxes"][:, [1, 3]] <= 48).all()
    with pytest.raises(ValueError, match="multiple of 16"):
        Detector("resnet18", 3, out_channels=40)


def test_draw_detections_paints_the_box_outline():
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    pred = dict(
        boxes=torch.tensor([[4.0, 4.0, 20.0, 20.0], [1.0, 1.0, 2.0, 2.0]]),
        scores=torch.tensor([0.9, 0.1]),
        labels=torch.tensor([1, 2]),
    )
    drawn = draw_detections(image, pred, ["a", "b"], score_thresh=0.5)
    assert drawn[:, 4, 4:20].sum() > 0 and drawn[:, 12, 12].sum() == 0  # outline, hollow inside
    assert drawn[:, 1, 1].sum() == 0  # the low-score box is not drawn


def test_coco_json_round_trip(tmp_path):
    ds = CompositeSet(5, 48, split="val", seed=2)
    path = ds.write_coco(tmp_path / "coco")
    data = json.loads(path.read_text())
    assert [c["name"] for c in data["categories"]] == ds.classes
    back = CocoDataset(path)
    assert back.classes == ds.classes and len(back) == 5
    for i in range(5):
        (im, t), (im2, t2) = ds[i], back[i]
        assert torch.equal(im, im2)
        torch.testing.assert_close(t2["boxes"], t["boxes"])
        assert torch.equal(t2["labels"], t["labels"])
        assert torch.equal(t2["masks"], t["masks"])
        assert torch.equal(t2["semantic"], t["semantic"])
    # The same set through a second, independent writer/reader gives the same dict.
    assert coco_dict(back)["annotations"] == coco_dict(ds)["annotations"]


def test_coco_polygons_and_bad_input(tmp_path):
    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    data = dict(
        images=[dict(id=7, file_name="a.png", width=20, height=10)],
        categories=[dict(id=3, name="cat"), dict(id=9, name="dog")],
        annotations=[
            dict(
                id=1,
                image_id=7,
                category_id=9,
                bbox=[2, 2, 6, 4],
                area=24,
                iscrowd=0,
                segmentation=[[2, 2, 8, 2, 8, 6, 2, 6]],
            ),
            dict(id=2, image_id=7, category_id=3, bbox=[10, 0, 5, 5], area=25, iscrowd=0),
            dict(
                id=3,
                image_id=7,
                category_id=3,
                bbox=[0, 0, 20, 10],
                area=200,
                iscrowd=1,
                segmentation=dict(size=[10, 20], counts=[0, 200]),
            ),
        ],
    )
    (tmp_path / "ann.json").write_text(json.dumps(data))
    ds = open_dataset(tmp_path / "ann.json")
    assert ds.classes == ["cat", "dog"]
    _, t = ds[0]
    assert t["labels"].tolist() == [2, 1]  # category ids 9 and 3 -> labels 2 and 1; crowd left out
    assert t["masks"][0].sum() == 24 and t["masks"][1].sum() == 25  # 6x4 polygon, 5x5 box
    assert t["boxes"].tolist() == [[2, 2, 8, 6], [10, 0, 15, 5]]
    with pytest.raises(ResNetError, match="not found"):
        open_dataset(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ResNetError, match="not a COCO"):
        CocoDataset(tmp_path / "bad.json")


def test_mask_folder_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    mask = np.zeros((8, 12), dtype=np.uint8)
    mask[1:4, 2:6] = 2
    mask[5:8, 0:3] = 1
    Image.new("RGB", (12, 8), (10, 20, 30)).save(tmp_path / "images" / "x.jpg")
    Image.fromarray(mask).save(tmp_path / "masks" / "x.png")
    (tmp_path / "classes.txt").write_text("background\nleaf\nspot\n")
    ds = open_dataset(tmp_path)
    assert isinstance(ds, MaskFolderDataset) and ds.classes == ["leaf", "spot"]
    image, t = ds[0]
    assert image.shape == (3, 8, 12) and torch.equal(t["semantic"], torch.from_numpy(mask).long())
    assert t["labels"].tolist() == [1, 2]
    assert t["boxes"].tolist() == [[0, 5, 3, 8], [2, 1, 6, 4]]
    (tmp_path / "images" / "y.png").write_bytes(b"")
    with pytest.raises(ResNetError, match="no mask for y.png"):
        MaskFolderDataset(tmp_path)


def test_task_checkpoint_starts_a_backbone(run):
    import resnet
    from resnet.tasks.model import load_task_model

    model, _ = load_task_model(run["out"])
    backbone = resnet.Backbone("resnet18", weights=f"{run['out']}/best.pt")
    for a, b in zip(
        backbone.body.state_dict().values(), model.body.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_cli_train_config_maps_to_task_keys():
    from resnet.engine.config import TrainConfig
    from resnet.tasks.config import TaskConfig

    nested = (
        TrainConfig()
        .updated(
            {
                "model": {"name": "plain18", "options": {"neck": "none", "num_train": 64}},
                "data": {"image_size": 96, "batch_size": 4},
                "run": {"epochs": 2},
            }
        )
        .to_dict()
    )
    cfg = TaskConfig.from_dict({**nested, "task": "detect"}).to_dict()
    assert (
        cfg["model"],
        cfg["neck"],
        cfg["num_train"],
        cfg["size"],
        cfg["batch_size"],
        cfg["epochs"],
        cfg["data"],
        cfg["lr"],
    ) == ("plain18", "none", 64, 96, 4, 2, "composite", 2e-3)
    with pytest.raises(ResNetError, match="optim.schedule"):
        TaskConfig.from_dict(TrainConfig().updated({"optim": {"schedule": "step"}}).to_dict())
    with pytest.raises(ResNetError, match="unknown task config keys: nek"):
        TaskConfig.from_dict({"nek": "fpn"})
