"""Every registered model: exact sizes from the papers, torchvision parity, the model contract."""

import dataclasses
import functools
import math

import pytest
import torch
import torchvision

import resnet
from resnet.models import count_params, get_entry, model_info, plain_name
from resnet.models.registry import count_macs
from resnet.models.resnet import ResNet

# ../shared/ANCHORS.md: torchvision weights meta and He et al. 2015 Table 6 (10 classes, option A).
EXACT_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "wide_resnet50_2": 68_883_240,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
}
# Papers' rounded figures (Identity Mappings 2016; Wide ResNets 2016): within 2 %.
ROUNDED_PARAMS = {
    "preact_resnet164": 1.7e6,
    "preact_resnet1001": 10.2e6,
    "wrn_28_10": 36.5e6,
    "wrn_40_4": 8.9e6,
}
# ANCHORS.md compute: multiply-accumulates per image at the family's native size.
MACS = {
    "resnet18": 1.8e9,
    "resnet34": 3.6e9,
    "resnet50": 4.1e9,
    "resnet101": 7.8e9,
    "resnet152": 11.5e9,
    "resnet20": 41e6,
    "resnet56": 125e6,
    "resnet110": 253e6,
}
TV_KEYS = {
    "resnet18": (122, 62),
    "resnet34": (218, 110),
    "resnet50": (320, 161),
    "resnet101": (626, 314),
    "resnet152": (932, 467),
}
VERY_DEEP = {n for n in resnet.list_models() if get_entry(n).depth > 300}


def _code_path_key(name: str) -> tuple:
    """What a net runs, leaving out numbers the same code runs with: how often a stage repeats
    its block (each stage's depth cut to 1, a first block only, or 2, a first block then the
    repeated one) and the 3x3 convs' group count and width per group (kept: grouped or not)."""
    entry = get_entry(name)
    spec = entry.spec
    depths = tuple(min(d, 2) for d in spec.depths)
    same = dataclasses.replace(spec, depths=depths, groups=1, base_width=64)
    return same, spec.groups > 1, entry.defaults


def _shallowest_per_code_path(names: list[str]) -> list[str]:
    """One net per `_code_path_key`, the shallowest: resnet50 for resnet101/152/200 and
    wide_resnet50_2/101_2, resnext50_32x4d for resnext101_32x8d/64x4d."""
    chosen: dict[tuple, str] = {}
    for n in sorted(names, key=lambda n: get_entry(n).depth):
        chosen.setdefault(_code_path_key(n), n)
    return [n for n in names if n in chosen.values()]


CONTRACT_NAMES = _shallowest_per_code_path([n for n in resnet.list_models() if n not in VERY_DEEP])


@functools.cache
def _on_meta(name: str, **options) -> ResNet:
    """A registered net built on the meta device (shapes, no storage), for counting only.

    Cached: the same deep nets (resnet1202, preact_resnet1001, their plain twins) are counted by
    several tests, and building a 1000-layer net on meta takes seconds. Callers never change it.
    """
    with torch.device("meta"):
        return resnet.create(name, **options)


TORCHVISION_NAMES = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
]


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_exact_parameter_counts(name):
    # Counted on a meta-built net: `model_info` would also count MACs, seconds for resnet1202;
    # its "params" (the same count) is pinned in test_macs_match_published.
    assert count_params(_on_meta(name)) == EXACT_PARAMS[name]


@pytest.mark.parametrize("name", sorted(ROUNDED_PARAMS))
def test_paper_parameter_counts_within_2_percent(name):
    params = count_params(_on_meta(name))
    assert abs(params - ROUNDED_PARAMS[name]) / ROUNDED_PARAMS[name] < 0.02, params


@pytest.mark.parametrize("name", sorted(MACS))
def test_macs_match_published(name):
    info = model_info(name)
    assert info["params"] == EXACT_PARAMS[name]
    macs = info["macs"]
    # Published figures are rounded to 2-3 digits.
    assert abs(macs - MACS[name]) / MACS[name] < 0.03, macs


def test_depth_column_counts_weighted_layers():
    assert [
        get_entry(n).depth
        for n in (
            "resnet18",
            "resnet50",
            "resnet1202",
            "preact_resnet164",
            "preact_resnet1001",
            "wrn_28_10",
        )
    ] == [18, 50, 1202, 164, 1001, 28]


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_torchvision_state_dict_loads_strict_and_outputs_agree(name):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(weights=None).eval()
    # Non-trivial BN statistics so the comparison exercises every buffer.
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    ours = resnet.create(name).eval()
    result = ours.load_state_dict(tv.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sorted(ours.state_dict()) == sorted(tv.state_dict())
    if name in TV_KEYS:  # ANCHORS.md: state_dict keys / learnable tensors
        assert (len(ours.state_dict()), len(list(ours.parameters()))) == TV_KEYS[name]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - tv(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_model_contract(name):
    """Shape, finiteness, a gradient for every parameter, features, TorchScript parity.

    One net per code path (`CONTRACT_NAMES`): nets that differ only in how often a stage
    repeats its blocks (resnet50/101/152/200, resnet20/32/44/56/110, wrn_16_4/wrn_40_4) or in
    the group count and width per group of their 3x3 convs (resnet50/wide_resnet50_2,
    resnext50_32x4d/resnext101_32x8d/resnext101_64x4d) run the same stem, the same first and
    repeated blocks in each stage and the same head, so the shallowest stands for the rest.
    The others are still built (every residual net and its plain twin, by
    test_plain_twin_is_the_residual_net_without_shortcuts), many have pinned sizes
    (EXACT_PARAMS), and deep and wide forward passes run in the torchvision-parity
    (resnet101/152, wide_resnet50_2) and very-deep tests.
    """
    torch.manual_seed(0)
    model = resnet.create(name, num_classes=7, in_chans=2)
    x = torch.randn(2, 2, 32, 32)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"

    model.eval()
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features == model.feature_info[-1]["num_chs"]
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    reductions = [f["reduction"] for f in model.feature_info]
    assert reductions == sorted(reductions) and 32 // reductions[-1] == feats.shape[-1]
    modules = dict(model.named_modules())
    assert all(f["module"] in modules for f in model.feature_info)

    scripted = torch.jit.script(model)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet1202", "preact_resnet1001"])
def test_very_deep_nets_forward_backward_on_cpu(name):
    torch.manual_seed(0)
    model = resnet.create(name, grad_checkpointing=True)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1]))
    loss.backward()
    assert math.isfinite(loss.item())
    assert model.conv1.weight.grad.abs().sum() > 0


def _projection_params(model) -> int:
    return sum(
        count_params(m.downsample)
        for m in model.modules()
        if getattr(m, "downsample", None) is not None
    )


@pytest.mark.parametrize("name", [n for n in resnet.list_models() if get_entry(n).spec.skip])
def test_plain_twin_is_the_residual_net_without_shortcuts(name):
    twin = plain_name(name) if not name.endswith("_b") else plain_name(name[:-2])
    res, plain, same = _on_meta(name), _on_meta(twin), _on_meta(name, skip=False)
    assert count_params(plain) == count_params(res) - _projection_params(res)
    assert count_params(same) == count_params(plain)
    assert not get_entry(twin).spec.skip
    # Same layers, same widths: every plain parameter exists in the residual net with its shape.
    res_shapes = {k: v.shape for k, v in res.state_dict().items()}
    assert all(res_shapes[k] == v.shape for k, v in plain.state_dict().items())


def test_create_options_and_surface():
    m = resnet.create("resnet18", num_classes=5, in_chans=1, small_input=True)
    assert m.conv1.weight.shape == (64, 1, 3, 3) and isinstance(m.maxpool, torch.nn.Identity)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    assert m.feature_info[-1]["reduction"] == 8
    m.reset_classifier(3)
    assert m(torch.randn(1, 1, 28, 28)).shape == (1, 3)
    m.reset_classifier(0)
    assert m(torch.randn(1, 1, 28, 28)).shape == (1, 512)
    assert resnet.create("RESNET-20").arch == "resnet20"
    assert resnet.create("resnet56", skip=False).arch == "plain56"
    assert resnet.create("wrn-16-4", block_dropout=0.3).layer1[0].dropout.p == 0.3


def test_group_norm_option():
    m = resnet.create("resnet20", norm="group")
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    assert all(
        x.num_channels % x.num_groups == 0 for x in m.modules() if isinstance(x, torch.nn.GroupNorm)
    )
    m.eval()
    a = m(torch.randn(1, 3, 32, 32))
    assert a.shape == (1, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="resnet20", skip=False, zero_init_residual=True), "plain net"),
        (dict(name="plain20", drop_path_rate=0.1), "drop_path_rate needs skip"),
        (dict(name="resnet20", small_input=True), "CIFAR stem"),
        (dict(name="resnet18", norm="layer"), "unknown norm"),
        (dict(name="resnet18", act="tanh"), "unknown activation"),
        (dict(name="resnet18", global_pool="sum"), "unknown global_pool"),
        (dict(name="resnet18", shortcut="Q"), "shortcut must be"),
        (dict(name="resnet18", drop_path_rate=1.5), r"drop_path_rate must be in \[0, 1\)"),
        (dict(name="resnet18", num_classes=-1), "num_classes"),
        (dict(name="resnet18", dropout=0.1), "unknown option"),
        (dict(name="resnet19"), "did you mean"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        resnet.create(kwargs.pop("name"), **kwargs)


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet164", "resnet50d"])
def test_activation_option_replaces_every_relu(name):
    relu = resnet.create(name, num_classes=10).eval()
    gelu = resnet.create(name, num_classes=10, act="gelu").eval()
    n_relu = sum(isinstance(m, torch.nn.ReLU) for m in relu.modules())
    assert n_relu > 0 and sum(isinstance(m, torch.nn.GELU) for m in gelu.modules()) == n_relu
    assert not any(isinstance(m, torch.nn.ReLU) for m in gelu.modules())
    gelu.load_state_dict(relu.state_dict())  # the same parameters: weights move between them
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(relu(x), gelu(x), atol=1e-3)
    silu = resnet.create(name, num_classes=10, act="silu").eval()
    assert sum(isinstance(m, torch.nn.SiLU) for m in silu.modules()) == n_relu


def test_global_pool_option_pools_the_last_feature_map_as_named():
    torch.manual_seed(0)
    avg = resnet.create("fast_resnet8_24", num_classes=10, in_chans=1).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        feats = avg.forward_features(x)
        assert feats.shape == (3, 96, 4, 4)
        want = {"avg": feats.mean((2, 3)), "max": feats.amax((2, 3))}
        want["avgmax"] = (want["avg"] + want["max"]) / 2
        for kind, pooled in want.items():
            m = resnet.create("fast_resnet8_24", num_classes=10, in_chans=1, global_pool=kind)
            m.load_state_dict(avg.state_dict())  # no parameters in the pool: strict load works
            m.eval()
            assert torch.allclose(m.forward_head(feats, pre_logits=True), pooled)
            assert torch.allclose(m(x), avg.fc(pooled), atol=1e-6)
            assert torch.allclose(torch.jit.script(m)(x), m(x), atol=1e-5)
        assert not torch.allclose(want["avg"], want["max"])


def test_act_and_pool_options_survive_a_checkpoint(tmp_path):
    from resnet.engine.checkpoint import load_model, save_checkpoint

    m = resnet.create("resnet20", num_classes=10, act="silu", global_pool="max").eval()
    save_checkpoint(tmp_path / "m.pt", m)
    back, _ = load_model(tmp_path / "m.pt")
    assert isinstance(back.layer1[0].act1, torch.nn.SiLU) and back.global_pool.kind == "max"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(back.eval()(x), m(x))


def test_blocks_refuse_what_they_do_not_implement():
    from resnet.models.blocks import BasicBlock
    from resnet.models.layers import norm_factory

    with pytest.raises(ValueError, match="groups"):
        BasicBlock(64, 64, groups=32, norm=norm_factory("batch"))
    with pytest.raises(ValueError, match="1x1"):
        BasicBlock(64, 64, stride_on_1x1=True, norm=norm_factory("batch"))


def test_zero_init_residual_makes_blocks_start_as_identity():
    m = resnet.create("resnet50", zero_init_residual=True)
    assert all(b.bn3.weight.abs().sum() == 0 for stage in m.stages() for b in stage)
    m = resnet.create("preact_resnet164", zero_init_residual=True)
    assert all(b.conv3.weight.abs().sum() == 0 for stage in m.stages() for b in stage)


def test_v1_strides_the_first_1x1_and_v15_the_3x3():
    v1, v15 = resnet.create("resnet50_v1"), resnet.create("resnet50")
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("preact", [False, True])
def test_pool_downsampling_is_a_max_pool_then_the_stride_1_block(block, preact):
    import torch.nn.functional as F

    from resnet.models.blocks import BLOCKS
    from resnet.models.layers import norm_factory

    cls = BLOCKS[(block, preact)]
    kw = dict(norm=norm_factory("batch"))
    pooled = cls(32, 16, stride=2, pool_downsample=True, **kw).eval()
    plain = cls(32, 16, stride=1, **kw).eval()
    plain.load_state_dict(pooled.state_dict())  # the same parameters, nothing strided
    x = torch.randn(2, 32, 7, 7)
    want = plain(F.max_pool2d(x, 2, ceil_mode=True))
    assert want.shape[-2:] == (4, 4) and torch.allclose(pooled(x), want, atol=1e-6)

    # The `p` nets are the fast nets downsampling by pooling (fast_resnet8_32p: the speedrun
    # recipe's net). Parameters by hand: stem 144 + 32 (16 filters) or 288 + 64 (32); stages (3x3
    # convs, 1x1 projections, BN) 9,168 + 32,544 + 129,600, 14,528 + 57,728 + 230,144,
    # 36,384 + 129,600 + 517,248 and 57,728 + 230,144 + 919,040; heads 970, 1,290, 1,930, 2,570.
    pooled_nets = (
        ("fast_resnet8_24p", 172_458, 48),
        ("fast_resnet8_32p", 303_866, 64),
        ("fast_resnet8p", 685_514, 96),
        ("fast_resnet8_64p", 1_209_834, 128),
    )
    for name, params, width in pooled_nets:
        spec = get_entry(name).spec
        net = resnet.create(name, num_classes=10, in_chans=1)
        strided = resnet.create(name.removesuffix("p"), num_classes=10, in_chans=1)
        assert count_params(net) == count_params(strided) == params
        x = torch.randn(2, 1, 28, 28)
        assert net.layer2(net.layer1(net.forward_stem(x))).shape == (2, width, 7, 7)
        assert net(x).shape == (2, 10)
        assert all(m.stride == (1, 1) for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        assert isinstance(net.layer1[0].pool, torch.nn.Identity)
    with pytest.raises(ValueError, match="stride_on must be"):
        dataclasses.replace(spec, stride_on="2x2")


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_gradient_checkpointing_gives_the_same_gradients_and_norm_statistics(norm):
    # resnet56: 9 blocks a stage, so 3 segments, 2 of them recomputed in the backward pass.
    torch.manual_seed(0)
    a = resnet.create("resnet56", norm=norm, drop_path_rate=0.2)
    b = resnet.create("resnet56", norm=norm, drop_path_rate=0.2, grad_checkpointing=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, 16, 16)
    for _ in range(2):
        for m in (a, b):
            torch.manual_seed(1)  # the same stochastic-depth draws in both
            m(x).sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-4), n
    # Recomputation must not count a batch twice in BatchNorm's running statistics.
    for (n, ba), bb in zip(a.named_buffers(), b.buffers(), strict=True):
        assert torch.allclose(ba.float(), bb.float(), atol=1e-6), n
    if norm == "batch":
        assert b.layer2[0].bn1.momentum == 0.1  # restored after the recomputation
        assert int(b.layer2[0].bn1.num_batches_tracked) == 2


def test_drop_path_is_random_in_training_and_off_in_eval():
    m = resnet.create("resnet20", drop_path_rate=0.5)
    assert m.layer3[-1].drop_path.p == 0.5 and isinstance(m.layer1[0].drop_path, torch.nn.Identity)
    x = torch.randn(8, 3, 32, 32)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, m(x))


def test_option_a_shortcut_has_no_parameters_and_pads_zeros():
    from resnet.models.layers import PadShortcut

    s = PadShortcut(16, 32, 2)
    y = s(torch.ones(1, 16, 8, 8))
    assert y.shape == (1, 32, 4, 4) and y[:, 16:].abs().sum() == 0 and not list(s.parameters())


def test_registry_rejects_duplicates():
    from resnet.models.registry import register

    with pytest.raises(ValueError, match="already registered"):
        register(get_entry("resnet18"))


def test_pool_stem_halves_the_first_stage_and_keeps_its_cost_down():
    # fast_resnet8: 3x3/1 conv at full resolution, a 2x2 max-pool, then BN-ReLU on the pooled
    # map (airbench's order); stages at 14, 7, 4 px.
    m = resnet.create("fast_resnet8", num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 28, 28)
    stem = m.forward_stem(x)
    assert torch.equal(stem, m.act1(m.bn1(m.maxpool(m.conv1(x)))))
    assert stem.shape[-2:] == (14, 14)
    assert m.layer3(m.layer2(m.layer1(stem))).shape[-2:] == (4, 4)
    assert [f["reduction"] for f in m.feature_info] == [2, 2, 4, 8]
    from resnet.tasks.backbone import Backbone

    feats = Backbone(body=m, out_indices=(0, 1, 3))(x)
    assert torch.equal(feats["stem"], stem)
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(14, 14), (14, 14), (4, 4)]
    # The same widths on the plain CIFAR stem cost more than twice as much.
    spec = get_entry("fast_resnet8").spec
    with torch.device("meta"):
        pooled = ResNet(spec, 10, 1)
        full = ResNet(dataclasses.replace(spec, stem="cifar"), 10, 1)
    assert count_macs(pooled, 28, 1) < 0.5 * count_macs(full, 28, 1)
    with pytest.raises(ValueError, match="already 3x3/1"):
        resnet.create("fast_resnet8", small_input=True)
