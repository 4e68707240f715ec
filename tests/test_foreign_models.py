"""torchvision's and timm's classifiers (tv:NAME, timm:NAME) as models of the package: training,
exact resume, checkpoints that rebuild them, ONNX parity, weights, grey input, Grad-CAM and
refusals."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import write_digits_folder

import resnet
from resnet.analysis.gradcam import GradCAM, default_layer
from resnet.cli import main
from resnet.engine import Callback, EpochEnd, train
from resnet.engine.checkpoint import load_checkpoint, load_model
from resnet.errors import ResNetError
from resnet.export import export_checkpoint
from resnet.models import catalogue, weight_files

timm = pytest.importorskip("timm")

TV, TIMM = "tv:mobilenet_v3_small", "timm:test_efficientnet"  # the smallest of each library


@pytest.fixture(scope="module")
def digits32(tmp_path_factory) -> Path:
    """Real handwritten digits, 4 classes of 10 grey 32 px images (8 train, 2 val each)."""
    return write_digits_folder(tmp_path_factory.mktemp("d") / "digits", 10, size=32, classes=4)


def _config(name: str, source: Path, out: Path, epochs: int = 2) -> dict:
    return {
        "model": {"name": name},
        "data": {"source": str(source), "batch_size": 8, "augment": "paper"},
        "optim": {"lr": 0.05, "warmup_epochs": 0.5},
        "run": {"epochs": epochs, "out": str(out), "seed": 0},
    }


class _StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, event: EpochEnd) -> None:
        if event.epoch == 1:
            self.request_stop()


def _rows(run: Path) -> list[list[str]]:
    keys = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"]
    return [[r[k] for k in keys] for r in csv.DictReader(open(run / "metrics.csv"))]


@pytest.mark.parametrize(("name", "cam", "resume"), [(TV, "features", True), (TIMM, "bn2", False)])
def test_trains_and_its_checkpoint_predicts_exports_and_explains(
    name, cam, resume, digits32, tmp_path, capsys
):
    quiet = dict(progress=False, log=None)
    epochs = 2 if resume else 1
    full = train(_config(name, digits32, tmp_path / "full", epochs), **quiet)
    assert full["epochs"] == epochs
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    if resume:  # stopped after epoch 1 and resumed: the uninterrupted run, bit for bit
        cut = train(
            _config(name, digits32, tmp_path / "cut"), callbacks=[_StopAfterFirstEpoch()], **quiet
        )
        assert cut["status"] == "stopped"
        train(resume=tmp_path / "cut", **quiet)
        b = load_checkpoint(tmp_path / "cut" / "last.pt")
        assert _rows(tmp_path / "full") == _rows(tmp_path / "cut")
        assert a["model"].keys() == b["model"].keys()
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    # the checkpoint says which net it is: the 32 px grey form, rebuilt without the config
    assert a["arch"] == name and a["spec"]["kind"] == "foreign"
    assert a["model_options"]["small_input"] and a["model_options"]["in_chans"] == 1
    best = tmp_path / "full" / "best.pt"
    model, _ = load_model(best)
    assert model.arch == name and model.options["num_classes"] == 4

    image = next((digits32 / "val" / "digit2").iterdir())
    assert main(["predict", str(best), str(image), "--json"]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert pred["predictions"][0]["class"].startswith("digit")

    result = export_checkpoint(best, "onnx", tmp_path / "m.onnx", num_images=4)
    assert result.parity.ok and result.parity.top1_agreement == 1.0
    assert result.metadata["arch"] == name

    assert default_layer(model) == cam
    cams, logits = GradCAM(model)(torch.randn(3, 1, 32, 32))
    assert cams.shape == (3, 32, 32) and logits.shape == (3, 4)
    assert torch.all((cams >= 0) & (cams <= 1))
    assert torch.allclose(cams.flatten(1).amax(1), torch.ones(3))


def test_a_torchvision_weights_file_loads_exactly_and_grey_input_sums_the_rgb_filters(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v3_small().eval()
    path = tmp_path / "mobilenet_v3_small.pth"
    torch.save(tv.state_dict(), path)
    x = torch.randn(2, 3, 64, 64)

    rgb = resnet.create(TV, weights=path).eval()
    assert rgb.weights_report.head == "loaded" and not rgb.weights_report.missing
    with torch.no_grad():
        assert torch.equal(rgb(x), tv(x))

    grey = resnet.create(TV, weights=path, in_chans=1, num_classes=5).eval()
    kernel = tv.features[0][0].weight
    assert torch.allclose(grey.features[0][0].weight, kernel.sum(1, keepdim=True))
    assert grey.weights_report.head == "new" and grey.classifier[3].out_features == 5
    assert torch.equal(grey.features[1].block[0][0].weight, tv.features[1].block[0][0].weight)
    # a grey image gives the RGB net's response to it replicated in R, G and B
    g = x[:, :1]
    with torch.no_grad():
        feats = grey.features(g)
        want = tv.features(g.expand(-1, 3, -1, -1))
    torch.testing.assert_close(feats, want, atol=1e-5, rtol=1e-4)


def test_a_timm_weights_file_loads_exactly_at_small_input(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = timm.create_model("test_efficientnet").eval()
    path = tmp_path / "test_efficientnet.safetensors"
    save_file(ref.state_dict(), str(path))
    model = resnet.create(TIMM, weights=path, small_input=True).eval()
    assert model.conv_stem.stride == (1, 1)  # the pretrained 3x3 kernel kept, at stride 1
    ref.conv_stem.stride = (1, 1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_catalogue_reads_torchvision_enums_and_timm_cfgs_and_downloads_only_when_asked(
    tmp_path, monkeypatch
):
    w = catalogue.get_weights("torchvision:efficientnet_b0.IMAGENET1K_V1")
    tv = torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1
    assert w.arch == "tv:efficientnet_b0" and w.url == tv.url
    assert tv.url.endswith(f"-{w.sha256}.pth") and len(w.sha256) == 8
    t = tv.transforms()
    assert (
        (w.preprocessing["resize"], w.preprocessing["crop"])
        == (256, 224)
        == (
            t.resize_size[0],
            t.crop_size[0],
        )
    )
    assert w.preprocessing["interpolation"] == "bicubic" and w.top1 == 77.692
    assert w.classes() == list(tv.meta["categories"])
    assert catalogue.get_weights("tv:DEFAULT", "tv:vit_b_16").name == (
        "torchvision:vit_b_16.IMAGENET1K_V1"
    )
    t1 = catalogue.get_weights("timm:DEFAULT", TIMM)
    assert t1.name == "timm:test_efficientnet.r160_in1k" and t1.sha256 is None
    assert (
        t1.url
        == "https://huggingface.co/timm/test_efficientnet.r160_in1k/resolve/main/model.safetensors"
    )
    with pytest.raises(ResNetError, match="known for tv:efficientnet_b0: IMAGENET1K_V1"):
        catalogue.get_weights("torchvision:IMAGENET1K_V9", "tv:efficientnet_b0")
    with pytest.raises(ResNetError, match="are timm weights; tv:efficientnet_b0 is a torchvision"):
        resnet.create("tv:efficientnet_b0", weights="timm:efficientnet_b0.ra_in1k")

    # offline: one line naming the file and where to put it
    entry = catalogue.get_weights("torchvision:DEFAULT", TV)
    missing = dataclasses.replace(entry, url=(tmp_path / "gone.pth").as_uri())
    with pytest.raises(ResNetError) as e:
        weight_files.fetch(missing, root=tmp_path / "cache", progress=False)
    assert "\n" not in str(e.value) and "cannot download" in str(e.value)
    assert str(tmp_path / "cache" / "torchvision" / entry.filename) in str(e.value)

    # downloaded when asked (from a local URL here), hash-checked, loaded with its classes
    torch.manual_seed(0)
    served = tmp_path / "served.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), served)
    local = dataclasses.replace(
        entry, url=served.as_uri(), filename="m.pth", sha256=weight_files.sha256_file(served)
    )
    monkeypatch.setenv("RESNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(weight_files, "get_weights", lambda spec, arch=None: local)
    model = resnet.create(TV, weights="torchvision:DEFAULT")
    assert (tmp_path / "cache" / "torchvision" / "m.pth").exists()
    assert model.pretrained_cfg["classes"][0] == "tench"
    assert model.pretrained_cfg["preprocessing"]["crop"] == 224


def test_token_nets_have_no_default_grad_cam_layer():
    vit = resnet.create("timm:test_vit", num_classes=3)
    with pytest.raises(ResNetError, match="no channels-first feature map"):
        default_layer(vit)
    with pytest.raises(ResNetError, match="Grad-CAM needs spatial maps"):
        GradCAM(vit, "blocks.0")(torch.randn(1, 3, 160, 160))


@pytest.mark.parametrize(
    ("model", "size", "message"),
    [
        ("tv:efficientnet_b9", 32, "did you mean tv:efficientnet_b7"),
        ("timm:efficientnet_bO", 32, "did you mean timm:efficientnet_b"),
        ("tv:vit_b_16", 28, "must be a multiple of 16, not 28"),
        ("tv:alexnet", 28, "tv:alexnet cannot take 28x28 px images"),
        ("tv:inception_v3", 28, "needs 75 px images at least"),
        (
            "tv:mobilenet_v3_small.IMAGENET1K_V1",
            32,
            "names weights: use --model tv:mobilenet_v3_small",
        ),
    ],
)
def test_bad_models_and_sizes_are_one_line_and_exit_2(model, size, message, tmp_path, capsys):
    data = write_digits_folder(tmp_path / f"d{size}", 2, size=size, classes=2)
    argv = ["train", "--model", model, "--data", str(data), "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_models_all_lists_the_libraries_beside_ours_and_counts_a_filtered_few(capsys):
    assert main(["models", "--all", "--filter", "resnet18", "--size", "224", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    ours, tv, tm = rows["resnet18"], rows["tv:resnet18"], rows["timm:resnet18"]
    assert ours["params"] == tv["params"] == tm["params"] == 11_689_512  # one architecture
    assert ours["macs"] == tv["macs"] == tm["macs"]
    assert round(tv["macs"] / 1e9, 3) == torchvision.models.ResNet18_Weights.DEFAULT.meta["_ops"]
    assert tv["family"] == "torchvision" and tm["family"] == "timm" and tv["skips"] is None
    names = resnet.models.list_foreign()
    assert {"tv:vit_b_16", "tv:regnet_y_800mf", "timm:test_efficientnet"} <= set(names)
    assert len(names) == len(torchvision.models.list_models(module=torchvision.models)) + len(
        timm.list_models()
    )


def test_freezing_and_learning_rates_find_a_foreign_nets_own_head():
    from resnet.engine.finetune import apply_freeze
    from resnet.engine.optim import param_groups

    model = resnet.create("tv:mobilenet_v3_small", num_classes=3)
    assert apply_freeze(model, "backbone") == ["backbone"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.3.weight", "classifier.3.bias"]
    groups = param_groups(model, 0.1, backbone_lr_mult=0.1, include_frozen=True)
    heads = [p for g in groups if g["name"].startswith("head") for p in g["params"]]
    assert {id(p) for p in heads} == {id(model.classifier[3].weight), id(model.classifier[3].bias)}
    assert all(g["lr_mult"] == (1.0 if g["name"].startswith("head") else 0.1) for g in groups)
    with pytest.raises(ResNetError, match="freezes none or backbone"):
        apply_freeze(model, "stages:2")
    apply_freeze(model, "none")
    assert all(p.requires_grad for p in model.parameters())


def test_detection_with_a_foreign_backbone_is_refused_in_one_line():
    from resnet.tasks.config import TaskConfig
    from resnet.tasks.model import build_task_model

    cfg = TaskConfig(model="tv:mobilenet_v3_small")
    with pytest.raises(ResNetError, match="classification only"):
        build_task_model("detect", 3, cfg)
