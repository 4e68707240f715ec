"""Fine-tuning helpers: frozen parts stay put, BatchNorm statistics too, groups and schedules."""

import pytest
import torch
import torch.nn.functional as F

import resnet
from resnet.engine.finetune import (
    apply_freeze,
    eval_preprocessing_for,
    linear_probe,
    parse_unfreeze,
    set_bn_eval,
    unfreeze_at_epoch,
)
from resnet.engine.optim import param_groups
from resnet.errors import ResNetError

torch.set_num_threads(2)


def _model():
    torch.manual_seed(0)
    return resnet.create("resnet20", in_chans=1, num_classes=4)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 1, 16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_steps(model, opt, bn_eval=False, steps=2):
    for s in range(steps):
        model.train()
        set_bn_eval(model, only_frozen=not bn_eval)
        x, y = _batch(s)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def _changed(before, model):
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_stages_freeze_keeps_frozen_params_and_bn_stats():
    model = _model()
    assert apply_freeze(model, "stages:1") == ["stem", "layer1"]
    opt = torch.optim.SGD(
        param_groups(model, 5e-4, lr=0.1, include_frozen=True), lr=0.1, momentum=0.9
    )
    before = _snapshot(model)
    _train_steps(model, opt)
    changed = _changed(before, model)
    frozen = [k for k in before if k.startswith(("conv1.", "bn1.", "layer1."))]
    assert frozen and not changed & set(frozen)  # weights, BN affine and running stats all kept
    assert "layer1.0.bn1.running_mean" in frozen
    assert {"layer2.0.conv1.weight", "layer2.0.bn1.running_mean", "fc.weight"} <= changed
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("layer1."))


def test_linear_probe_trains_only_the_head():
    model = _model()
    linear_probe(model)
    opt = torch.optim.SGD(
        param_groups(model, 5e-4, lr=0.1, include_frozen=True), lr=0.1, momentum=0.9
    )
    before = _snapshot(model)
    _train_steps(model, opt)
    assert _changed(before, model) == {"fc.weight", "fc.bias"}


def test_bn_eval_keeps_stats_but_learns_affine():
    model = _model()
    apply_freeze(model, "none")
    opt = torch.optim.SGD(param_groups(model, 0.0, lr=0.1, include_frozen=True), lr=0.1)
    before = _snapshot(model)
    _train_steps(model, opt, bn_eval=True)
    changed = _changed(before, model)
    assert not any("running_" in k or "num_batches" in k for k in changed)
    assert "layer2.0.bn1.weight" in changed and "conv1.weight" in changed


def test_param_groups_lrs_and_no_decay_on_norms_and_biases():
    model = _model()
    groups = param_groups(model, 5e-4, lr=0.1, backbone_lr_mult=0.1, include_frozen=True)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"head", "head_no_decay", "backbone", "backbone_no_decay"}
    assert by_name["head"]["lr"] == 0.1 and by_name["backbone"]["lr"] == pytest.approx(0.01)
    assert by_name["backbone"]["lr_mult"] == 0.1
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in by_name["backbone_no_decay"]["params"])
    assert [p.shape for p in by_name["head_no_decay"]["params"]] == [torch.Size([4])]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    with pytest.raises(ResNetError):
        param_groups(model, 0.0, lr=0.1, backbone_lr_mult=-1, include_frozen=True)


def test_backbone_lr_mult_zero_moves_only_the_head():
    model = _model()
    opt = torch.optim.SGD(
        param_groups(model, 5e-4, lr=0.1, backbone_lr_mult=0.0, include_frozen=True), lr=0.1
    )
    before = _snapshot(model)
    model.eval()  # BN statistics fixed, so only parameters could change
    x, y = _batch()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert _changed(before, model) == {"fc.weight", "fc.bias"}


def test_gradual_unfreezing_is_a_function_of_the_epoch():
    schedule = "0:backbone,2:stages:1,4:none"
    assert parse_unfreeze(schedule) == [(0, "backbone"), (2, "stages:1"), (4, "none")]
    model = _model()
    opt = torch.optim.SGD(
        param_groups(model, 0.0, lr=0.1, include_frozen=True), lr=0.1
    )  # built once, frozen params in
    trainable = {}
    for epoch in range(5):
        assert unfreeze_at_epoch(model, epoch, schedule) is not None
        trainable[epoch] = {n for n, p in model.named_parameters() if p.requires_grad}
        before = _snapshot(model)
        _train_steps(model, opt, steps=1)
        moved = {k.rsplit(".", 1)[0] for k in _changed(before, model)}
        assert all(any(t.startswith(m) for t in trainable[epoch]) for m in moved)
    assert trainable[0] == trainable[1] == {"fc.weight", "fc.bias"}
    assert "layer2.0.conv1.weight" in trainable[2] and "layer1.0.conv1.weight" not in trainable[3]
    assert len(trainable[4]) == len(list(model.parameters()))
    resumed = _model()  # a resumed run jumps straight to epoch 3: same trainable set
    unfreeze_at_epoch(resumed, 3, schedule)
    assert {n for n, p in resumed.named_parameters() if p.requires_grad} == trainable[3]
    assert unfreeze_at_epoch(_model(), 1, "2:none") is None


def test_bad_modes_are_one_line_errors():
    model = _model()
    for bad in ("stages:7", "stages:x", "everything"):
        with pytest.raises(ResNetError):
            apply_freeze(model, bad)
    with pytest.raises(ResNetError, match="EPOCH:MODE"):
        parse_unfreeze("soon:none")


def test_eval_preprocessing_follows_weights_unless_data_says_otherwise():
    rgb224 = {
        "in_chans": 3,
        "size": [224, 224],
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "resize": None,
        "crop": None,
    }
    pre = eval_preprocessing_for("torchvision:IMAGENET1K_V2", rgb224, arch="resnet50")
    assert (pre["resize"], pre["crop"], pre["size"]) == (232, 224, [224, 224])
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["interpolation"] == "bilinear"
    v1 = eval_preprocessing_for("torchvision:resnet50.IMAGENET1K_V1", rgb224)
    assert v1["resize"] == 256
    grey28 = {
        "in_chans": 1,
        "size": [28, 28],
        "mean": [0.286],
        "std": [0.353],
        "resize": None,
        "crop": None,
    }
    assert eval_preprocessing_for("torchvision:DEFAULT", grey28, arch="resnet50") == grey28
    assert eval_preprocessing_for(None, grey28) == grey28
    timm = eval_preprocessing_for("timm:resnet50.a1_in1k", None)
    assert timm["resize"] == 235 and timm["interpolation"] == "bicubic"
