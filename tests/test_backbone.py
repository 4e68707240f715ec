"""ResNet as a backbone: stage maps match feature_info in every family; FPN equals torchvision's."""

import math

import pytest
import torch
import torchvision
from torchvision.models.detection.backbone_utils import BackboneWithFPN

import resnet
from resnet.models import get_entry, plain_name
from resnet.tasks import Backbone, BackboneFPN, BackboneProjection


def _one_per_family() -> list[str]:
    """The shallowest net of each family in the registry, and its plain twin."""
    best: dict[str, str] = {}
    for name in resnet.list_models():
        e = get_entry(name)
        if e.plain:
            continue
        if e.family not in best or e.depth < get_entry(best[e.family]).depth:
            best[e.family] = name
    names = sorted(best.values())
    return names + [plain_name(n) for n in names if plain_name(n) in resnet.list_models()]


FAMILY_NETS = _one_per_family()


def test_every_family_is_covered():
    families = {get_entry(n).family for n in FAMILY_NETS}
    assert families == {get_entry(n).family for n in resnet.list_models()}
    assert {"resnet18", "plain18", "resnet20", "resnext50_32x4d"} <= set(FAMILY_NETS)


@pytest.mark.parametrize("name", FAMILY_NETS)
def test_stage_maps_match_feature_info(name):
    # Shapes on the meta device: no memory, no compute, every family.
    with torch.device("meta"):
        backbone = Backbone(name, out_indices=None)
        x = torch.empty(2, 3, 64, 64)
        maps = backbone(x)
    info = backbone.body.feature_info
    stages = len(get_entry(name).spec.depths)
    assert list(maps) == [f"layer{i}" for i in range(1, stages + 1)]
    assert backbone.channels == [info[i]["num_chs"] for i in range(1, stages + 1)]
    assert backbone.strides == [info[i]["reduction"] for i in range(1, stages + 1)]
    for m, c, s in zip(maps.values(), backbone.channels, backbone.strides, strict=True):
        assert tuple(m.shape) == (2, c, math.ceil(64 / s), math.ceil(64 / s))


@pytest.mark.parametrize(
    "name,chans,strides",
    [
        ("resnet18", [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
        ("resnet50", [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
        ("resnet20", [16, 16, 32, 64], [1, 1, 2, 4]),
        ("wrn_16_4", [16, 64, 128, 256], [1, 1, 2, 4]),
    ],
)
def test_channels_and_strides_are_the_papers(name, chans, strides):
    with torch.device("meta"):
        b = Backbone(name, out_indices=range(len(chans)))
    assert b.channels == chans and b.strides == strides
    assert b.names[0] == "stem"


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18", "resnet20"])
def test_maps_are_the_nets_own_activations(name):
    torch.manual_seed(0)
    b = Backbone(name, out_indices=None).eval()
    x = torch.randn(2, 3, 40, 40)
    maps = b(x)
    with torch.no_grad():
        # The last map is exactly forward_features (final norm included for pre-activation nets).
        torch.testing.assert_close(list(maps.values())[-1], b.body.forward_features(x))
        y = b.body.forward_stem(x)
        for i, stage in enumerate(b.body.stages(), start=1):
            y = stage(y)
            if i < len(maps):
                torch.testing.assert_close(maps[f"layer{i}"], y)


def test_unused_deeper_stages_are_skipped_and_bad_indices_raise():
    b = Backbone("resnet18", out_indices=(1, 2))
    assert list(b(torch.zeros(1, 3, 32, 32))) == ["layer1", "layer2"]
    with pytest.raises(ValueError, match="stages 1..3"):
        Backbone("resnet20", out_indices=(1, 4))
    with pytest.raises(ValueError, match="increasing"):
        Backbone("resnet18", out_indices=(3, 2))


def test_small_input_keeps_resolution():
    with torch.device("meta"):
        b = Backbone("resnet18", small_input=True)
    assert b.strides == [1, 2, 4, 8]


def test_fpn_equals_torchvisions_backbone_with_fpn():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    ours = Backbone("resnet18")
    ours.body.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")})
    ref = BackboneWithFPN(
        tv, {f"layer{i}": str(i - 1) for i in range(1, 5)}, [64, 128, 256, 512], 32
    ).eval()
    fpn = BackboneFPN(ours, 32, extra="pool").eval()
    fpn.fpn.load_state_dict(ref.fpn.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = ref(x), fpn(x)
    assert list(b) == ["p2", "p3", "p4", "p5", "pool"]
    for u, v in zip(a.values(), b.values(), strict=True):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize(
    "extra,names,sides",
    [
        (None, ["p3", "p4", "p5"], [8, 4, 2]),
        ("pool", ["p3", "p4", "p5", "pool"], [8, 4, 2, 1]),
        ("p6p7", ["p3", "p4", "p5", "p6", "p7"], [8, 4, 2, 1, 1]),
    ],
)
def test_fpn_levels(extra, names, sides):
    fpn = Backbone("resnet18", out_indices=(2, 3, 4)).fpn(48, extra)
    out = fpn(torch.zeros(1, 3, 64, 64))
    assert list(out) == names == fpn.names
    assert [tuple(v.shape) for v in out.values()] == [(1, 48, s, s) for s in sides]
    assert fpn.out_channels == 48 and fpn.strides[:3] == [8, 16, 32]


def test_projection_neck_has_no_top_down_path():
    torch.manual_seed(0)
    neck = BackboneProjection(Backbone("resnet20"), 32).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = neck(x)
        # Perturbing the deepest stage's projection leaves the shallower levels untouched.
        neck.proj[-1].bias.add_(1.0)
        out2 = neck(x)
    torch.testing.assert_close(out["c2"], out2["c2"])
    assert not torch.allclose(out["c4"], out2["c4"])
    assert [tuple(v.shape) for v in out.values()] == [
        (1, 32, 32, 32),
        (1, 32, 16, 16),
        (1, 32, 8, 8),
    ]


def test_backbone_is_exported_and_gradients_reach_every_parameter():
    assert resnet.Backbone is Backbone
    fpn = resnet.Backbone("resnet20").fpn(16)
    sum(v.sum() for v in fpn(torch.randn(2, 3, 32, 32)).values()).backward()
    assert all(p.grad is not None for p in fpn.parameters())
