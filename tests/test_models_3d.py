"""3-D ResNets: Hara/MONAI's resnet*_3d and torchvision's video nets, as data in the registry."""

import dataclasses

import pytest
import torch
import torchvision

import resnet
from resnet.analysis.gradcam import default_layer
from resnet.models import (
    count_params,
    get_entry,
    list_models,
    model_info,
    plain_name,
    spec_from_dict,
)
from resnet.models.registry import count_macs

VIDEO = ("r3d_18", "mc3_18", "r2plus1d_18")
# torchvision.models.video.*_Weights.KINETICS400_V1.meta["num_params"] (400 classes, 3 channels).
TORCHVISION_PARAMS = {"r3d_18": 33_371_472, "mc3_18": 11_695_440, "r2plus1d_18": 31_505_325}
MEDICAL = ("resnet10_3d", "resnet18_3d", "resnet34_3d", "resnet50_3d")
MONAI_LAYERS = {
    "resnet10_3d": ("basic", (1, 1, 1, 1)),
    "resnet18_3d": ("basic", (2, 2, 2, 2)),
    "resnet34_3d": ("basic", (3, 4, 6, 3)),
    "resnet50_3d": ("bottleneck", (3, 4, 6, 3)),
    "resnet101_3d": ("bottleneck", (3, 4, 23, 3)),
    "resnet152_3d": ("bottleneck", (3, 8, 36, 3)),
    "resnet200_3d": ("bottleneck", (3, 24, 36, 3)),
}
# Our counts for in_chans=1, num_classes=2 (pinned; equal to monai_params(..., bias=False)).
PINNED = {
    "resnet10_3d": 14_356_546,
    "resnet18_3d": 33_161_026,
    "resnet34_3d": 63_470_658,
    "resnet50_3d": 46_159_170,
}


def monai_params(name: str, in_chans: int, classes: int, bias: bool) -> int:
    """MONAI's `monai.networks.nets.resnet` count, layer by layer from its source (MONAI is not
    installed): conv1 7x7x7 no bias + BN; blocks as torchvision's; B projection conv (+ bias
    when `bias_downsample`, MONAI's default) + BN; fc. Strides change no count."""
    block, layers = MONAI_LAYERS[name]
    exp = 1 if block == "basic" else 4
    total, inplanes = 64 * in_chans * 343 + 2 * 64, 64
    for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
        for j in range(n):
            if block == "basic":
                total += inplanes * planes * 27 + planes * planes * 27 + 4 * planes
            else:
                total += inplanes * planes + planes * planes * 27 + planes * planes * exp
                total += 4 * planes + 2 * planes * exp
            if j == 0 and (i > 0 or inplanes != planes * exp):
                total += inplanes * planes * exp + 2 * planes * exp + (planes * exp if bias else 0)
            inplanes = planes * exp
    return total + inplanes * classes + classes


@pytest.mark.parametrize("name", VIDEO)
def test_video_nets_have_torchvision_counts_keys_and_outputs(name):
    torch.manual_seed(0)
    tv = getattr(torchvision.models.video, name)()
    ours = resnet.create(name)
    assert count_params(ours) == count_params(tv) == TORCHVISION_PARAMS[name]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in tv.state_dict().items()
    }
    ours.load_state_dict(tv.state_dict(), strict=True)
    ours.eval(), tv.eval()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), atol=1e-5)


@pytest.mark.parametrize("name", list(MONAI_LAYERS))
def test_3d_resnets_match_monai_layer_by_layer(name):
    with torch.device("meta"):
        model = resnet.create(name, in_chans=1, num_classes=2)
    n = count_params(model)
    assert n == monai_params(name, 1, 2, bias=False)  # MedicalNet / bias_downsample=False
    if name in PINNED:
        assert n == PINNED[name]
    # MONAI's default adds one bias per projection output channel.
    projections = sum(
        m.downsample[0].out_channels
        for m in model.modules()
        if getattr(m, "downsample", None) is not None
    )
    assert n + projections == monai_params(name, 1, 2, bias=True)


def test_3d_stem_and_layout():
    m = resnet.create("resnet18_3d", in_chans=1, num_classes=2)
    assert isinstance(m.conv1, torch.nn.Conv3d) and m.conv1.kernel_size == (7, 7, 7)
    assert m.conv1.stride == (1, 2, 2) and isinstance(m.maxpool, torch.nn.MaxPool3d)
    assert not any(isinstance(x, torch.nn.Conv2d | torch.nn.BatchNorm2d) for x in m.modules())
    assert get_entry("resnet18_3d").spec.dims == 3 and get_entry("resnet18").spec.dims == 2


@pytest.mark.parametrize("name", ["resnet10_3d", "resnet18_3d"])
def test_forward_shapes_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = resnet.create(name, in_chans=1, num_classes=2)
    x = torch.randn(1, 1, 16, 32, 32)
    out = model.train()(torch.cat([x, -x]))  # batch of 2: BatchNorm needs two values
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    out.square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad, no_grad[:5]
    feats = model.eval().forward_features(x)
    assert feats.shape == (1, 512, 1, 1, 1)  # stem strides (1, 2, 2), then max-pool and stages /2
    assert model.feature_info[-1]["num_chs"] == feats.shape[1]


@pytest.mark.parametrize("name", VIDEO)
def test_video_nets_take_one_channel_and_train(name):
    model = resnet.create(name, in_chans=1, num_classes=3)
    out = model(torch.randn(2, 1, 4, 16, 16))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet18_3d", "resnet50_3d", *VIDEO])
def test_plain_twins_have_no_skips(name):
    twin = plain_name(name)
    assert twin in list_models(dims=3) and not get_entry(twin).spec.skip
    with torch.device("meta"):
        res, plain = resnet.create(name), resnet.create(twin)
    shortcuts = [m for m in res.modules() if getattr(m, "downsample", None) is not None]
    proj = sum(count_params(m.downsample) for m in shortcuts)
    assert count_params(plain) == count_params(res) - proj
    assert all(m.downsample is None for m in plain.modules() if hasattr(m, "downsample"))
    assert resnet.create(name, skip=False).arch == twin


def test_plain_twin_computes_another_function():
    torch.manual_seed(0)
    res = resnet.create("r3d_18", num_classes=2).eval()
    plain = resnet.create("plain_r3d_18", num_classes=2).eval()
    plain.load_state_dict(res.state_dict(), strict=False)  # every plain weight comes from res
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(res(x), plain(x))


def test_create_for_medical_volumes_and_registry_views():
    m = resnet.create("resnet18_3d", in_chans=1, num_classes=2)
    assert m.arch == "resnet18_3d" and m.fc.out_features == 2
    assert "resnet18_3d" not in list_models()  # the default view: 2-D image nets
    assert {"resnet18_3d", "r3d_18", "resnet18"} <= set(list_models(dims=None))
    assert set(list_models("*_3d", dims=3)) == {
        n for d in (10, 18, 34, 50, 101, 152, 200) for n in (f"resnet{d}_3d", f"plain{d}_3d")
    }
    with pytest.raises(ValueError, match="not implemented for the video nets"):
        resnet.create("r3d_18", norm="group")
    with pytest.raises(ValueError, match="shortcuts only"):
        resnet.create("r3d_18", shortcut="A")


def test_model_info_counts_macs_on_a_volume():
    info = model_info("r3d_18")
    assert info["input_size"] == (16, 112, 112) and info["params"] == TORCHVISION_PARAMS["r3d_18"]
    assert abs(info["macs"] / 40.70e9 - 1) < 0.01  # torchvision's meta "GFLOPS" (MACs, really)
    med = model_info("resnet18_3d")
    assert med["input_size"] == (32, 64, 64) and med["skips"]
    with torch.device("meta"):
        m = resnet.create("resnet10_3d", in_chans=1)
    assert count_macs(m, 32, 1) == count_macs(m, (32, 32, 32), 1)


def test_shortcut_options_work_in_3d():
    for shortcut in ("A", "D"):
        m = resnet.create("resnet18_3d", in_chans=1, num_classes=2, shortcut=shortcut)
        assert m(torch.randn(2, 1, 16, 32, 32)).shape == (2, 2)


@pytest.mark.parametrize("name", ["resnet18_3d", "r2plus1d_18"])
def test_checkpointing_gives_the_same_gradients_and_norm_statistics(name):
    torch.manual_seed(0)
    a = resnet.create(name, in_chans=1, num_classes=2)
    b = resnet.create(name, in_chans=1, num_classes=2, grad_checkpointing=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 8, 32, 32)
    for m in (a, b):
        m(x).sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-4), n
    for (n, ba), bb in zip(a.named_buffers(), b.buffers(), strict=True):
        assert torch.allclose(ba.float(), bb.float(), atol=1e-6), n


@pytest.mark.parametrize("name", ["resnet10_3d", "mc3_18"])
def test_gradcam_finds_the_last_stage(name):
    model = resnet.create(name, in_chans=1, num_classes=2).eval()
    layer = default_layer(model)
    assert layer == "layer4"
    seen = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: seen.update(shape=out.shape)
    )
    with torch.no_grad():
        model(torch.randn(1, 1, 8, 32, 32))
    handle.remove()
    assert len(seen["shape"]) == 5  # (N, C, D, H, W)


@pytest.mark.parametrize("name", ["resnet18_3d", "mc3_18"])
def test_spec_round_trips_through_a_checkpoint_dict(name):
    spec = get_entry(name).spec
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec_from_dict(dataclasses.replace(spec, skip=False).to_dict()).skip is False


def test_torchscript_keeps_the_outputs():
    model = resnet.create("r2plus1d_18", num_classes=2).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(model)(x), model(x), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet10_3d", "mc3_18"])
def test_3d_and_video_checkpoints_rebuild_the_same_net(name, tmp_path):
    from resnet.engine.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    model = resnet.create(name, in_chans=1, num_classes=2).eval()
    save_checkpoint(tmp_path / "m.pt", model, classes=["normal", "lesion"])
    again, state = load_model(tmp_path / "m.pt")
    assert type(again) is type(model) and state["classes"] == ["normal", "lesion"]
    x = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_gradcam_gives_a_volume_for_a_3d_net_that_points_at_the_evidence():
    from resnet.analysis.gradcam import GradCAM

    torch.manual_seed(0)
    model = resnet.create("resnet10_3d", in_chans=1, num_classes=2).eval()
    x = torch.randn(2, 1, 8, 32, 32)
    cams, logits = GradCAM(model)(x, target=1)
    assert cams.shape == (2, 8, 32, 32) and logits.shape == (2, 2)
    assert float(cams.amax()) == pytest.approx(1.0) and float(cams.amin()) >= 0.0
    # The same maps, one image at a time: nothing mixes across the batch.
    one, _ = GradCAM(model)(x[1:], target=1)
    assert torch.allclose(one[0], cams[1], atol=1e-5)
