"""Whole-batch 3-D volume augmentation: determinism, identity, flips, rotation, intensity."""

import pytest
import torch

from resnet.data.augment3d import VolumeAugment
from resnet.data.transforms import PRESETS

FULL = [p for p in PRESETS if p not in ("none", "flip")]


def volumes(b=4, c=1, d=8, h=12, w=10, seed=0):
    return torch.randn(b, c, d, h, w, generator=torch.Generator().manual_seed(seed))


def run(aug, x, seed):
    params = aug.sample(len(x), torch.Generator().manual_seed(seed), *x.shape[-2:])
    return aug.apply(x, params), params


def identity_params(n):
    return {
        "flip": torch.zeros(n, dtype=torch.bool),
        "angles": torch.zeros(n, 3),
        "scale": torch.zeros(n),
        "shift": torch.zeros(n),
    }


def blob(size=24, sigma=3.0):
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    zz, yy, xx = torch.meshgrid(r, r, r, indexing="ij")
    return torch.exp(-(zz**2 + yy**2 + xx**2) / (2 * sigma**2))[None, None]


def centre_of_mass(v):
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in v.shape], indexing="ij")
    return torch.stack([(g * v).sum() / v.sum() for g in grids])


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="preset"):
        VolumeAugment("mixup")


@pytest.mark.parametrize("preset", ["flip", "paper", "strong"])
def test_same_seed_same_output_different_seed_differs(preset):
    aug, x = VolumeAugment(preset), volumes(b=8)
    a, pa = run(aug, x, 1)
    b, pb = run(aug, x, 1)
    c, _ = run(aug, x, 2)
    assert torch.equal(a, b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(a, c)


def test_sample_uses_only_the_given_generator():
    aug = VolumeAugment("paper")
    torch.manual_seed(0)
    first = aug.sample(6, torch.Generator().manual_seed(3), 12, 10)
    torch.manual_seed(99)
    second = aug.sample(6, torch.Generator().manual_seed(3), 12, 10)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_none_is_identity():
    aug, x = VolumeAugment("none"), volumes()
    out, _ = run(aug, x, 0)
    assert torch.equal(out, x)


@pytest.mark.parametrize("preset", FULL)
def test_identity_params_give_x_back(preset):
    x = volumes(c=2)
    out = VolumeAugment(preset).apply(x, identity_params(len(x)))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_flip_mirrors_last_axis_of_flagged_volumes_only():
    aug, x = VolumeAugment("flip"), volumes(b=6, c=2)
    flags = torch.tensor([True, False, True, False, False, True])
    params = aug.sample(6, torch.Generator().manual_seed(0), 12, 10, flip=flags)
    assert torch.equal(params["flip"], flags)
    out = aug.apply(x, params)
    assert torch.equal(out[flags], x[flags].flip(-1))
    assert torch.equal(out[~flags], x[~flags])


def test_flip_coin_tosses_flip_some_not_all():
    params = VolumeAugment("flip").sample(64, torch.Generator().manual_seed(0), 12, 10)
    assert 0 < int(params["flip"].sum()) < 64


@pytest.mark.parametrize("preset", ["flip", "paper"])
def test_flip_false_never_flips(preset):
    aug = VolumeAugment(preset, flip=False, max_degrees=0.0, intensity=0.0)
    x = volumes(b=16)
    for seed in range(4):
        params = aug.sample(16, torch.Generator().manual_seed(seed), 12, 10)
        assert not params["flip"].any()
        assert torch.equal(aug.apply(x, params), x)
    forced = aug.sample(16, torch.Generator(), 12, 10, flip=torch.ones(16, dtype=torch.bool))
    assert torch.equal(aug.apply(x, forced), x)


def test_rotation_keeps_a_centred_blob_centred_and_its_mass():
    aug = VolumeAugment("paper", flip=False, max_degrees=10.0, intensity=0.0)
    v = blob()
    params = {
        "flip": torch.zeros(1, dtype=torch.bool),
        "angles": torch.tensor([[0.17, -0.087, 0.087]]),  # about the max: 10 deg, -5, 5
        "scale": torch.zeros(1),
        "shift": torch.zeros(1),
    }
    out = aug.apply(v, params)[0, 0]
    assert not torch.allclose(out, v[0, 0], atol=1e-3)  # it did move voxels
    centre = torch.full((3,), (v.shape[-1] - 1) / 2)
    assert (centre_of_mass(out) - centre).abs().max() < 0.1
    assert abs(out.sum() / v.sum() - 1) < 0.03


def test_rotation_is_about_the_axial_plane_first():
    aug = VolumeAugment("paper", flip=False, max_degrees=30.0, intensity=0.0)
    params = aug.sample(512, torch.Generator().manual_seed(0), 12, 10)
    limits = params["angles"].abs().amax(0)
    assert limits[0] <= torch.pi / 6 and limits[1:].max() <= torch.pi / 12
    assert limits[0] > 0.9 * torch.pi / 6 and limits[1:].min() > 0.9 * torch.pi / 12


def test_rotation_of_a_bar_about_the_depth_axis_stays_in_its_slice():
    aug = VolumeAugment("paper", flip=False, max_degrees=90.0, intensity=0.0)
    v = torch.zeros(1, 1, 9, 17, 21)  # not a cube: the rotation must be rigid in voxels
    v[0, 0, 4, 8, 4:17] = 1.0  # a bar along W in the middle slice
    params = {
        "flip": torch.zeros(1, dtype=torch.bool),
        "angles": torch.tensor([[torch.pi / 2, 0.0, 0.0]]),
        "scale": torch.zeros(1),
        "shift": torch.zeros(1),
    }
    out = aug.apply(v, params)[0, 0]
    expected = torch.zeros(9, 17, 21)
    expected[4, 2:15, 10] = 1.0  # now along H, same slice, same length
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_rotation_pads_with_zero_the_normalised_mean():
    aug = VolumeAugment("paper", flip=False, max_degrees=20.0, intensity=0.0)
    params = {
        "flip": torch.zeros(1, dtype=torch.bool),
        "angles": torch.tensor([[0.35, 0.0, 0.0]]),
        "scale": torch.zeros(1),
        "shift": torch.zeros(1),
    }
    out = aug.apply(torch.ones(1, 1, 4, 16, 16), params)[0, 0]
    assert out[:, 0, 0].abs().max() < 1e-6 and out[:, -1, -1].abs().max() < 1e-6
    torch.testing.assert_close(out[:, 6:10, 6:10], torch.ones(4, 4, 4))


def test_intensity_jitter_stays_within_bounds():
    aug = VolumeAugment("paper", flip=False, max_degrees=0.0, intensity=0.1)
    x = torch.full((64, 1, 4, 4, 4), 2.0)
    out, params = run(aug, x, 0)
    means, stds = out.mean((1, 2, 3, 4)), out.std((1, 2, 3, 4))
    assert stds.max() < 1e-5  # a constant volume stays constant
    assert (means - 2.0).abs().max() <= 2.0 * 0.1 + 0.1 + 1e-5
    assert (means - 2.0).abs().max() > 0.05  # it did jitter
    torch.testing.assert_close(means, 2.0 * (1 + params["scale"]) + params["shift"])
    assert params["scale"].abs().max() <= 0.1 and params["shift"].abs().max() <= 0.1


@pytest.mark.parametrize("preset", ["flip", "paper", "strong"])
def test_batch_apply_equals_per_volume_apply(preset):
    aug, x = VolumeAugment(preset), volumes(b=5, c=2)
    out, params = run(aug, x, 7)
    for i in range(len(x)):
        one = aug.apply(x[i : i + 1], {k: v[i : i + 1] for k, v in params.items()})
        torch.testing.assert_close(out[i : i + 1], one, atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("channels", [1, 2])
def test_shape_dtype_and_param_lengths(preset, channels):
    aug, x = VolumeAugment(preset), volumes(b=3, c=channels)
    out, params = run(aug, x, 0)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert all(v.shape[0] == 3 for v in params.values())
    assert aug.alternate_flip is False
