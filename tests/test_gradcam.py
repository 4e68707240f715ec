"""Grad-CAM: maps at the image's size that find the planted patch deciding a synthetic task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnet.analysis.gradcam import GradCAM, default_layer, gradcam, save_overlay, to_image_frame
from resnet.errors import ResNetError
from resnet.models import ResNet, ResNetSpec

SIZE, PATCH = 32, 6
TINY = ResNetSpec("basic", (1, 1, 1), (8, 16, 32), stem="cifar", stem_width=8, shortcut="A")


def planted(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise images; class 1 carries a bright PATCH x PATCH square at a random place."""
    x = torch.randn(n, 1, SIZE, SIZE, generator=g) * 0.5
    y = torch.randint(0, 2, (n,), generator=g)
    corners = torch.randint(0, SIZE - PATCH + 1, (n, 2), generator=g)
    for i in torch.nonzero(y).flatten().tolist():
        r, c = corners[i].tolist()
        x[i, 0, r : r + PATCH, c : c + PATCH] += 2.0
    return x, y, corners


@pytest.fixture(scope="module")
def patch_model():
    g = torch.Generator().manual_seed(0)
    x, y, _ = planted(320, g)
    torch.manual_seed(0)
    model = ResNet(TINY, num_classes=2, in_chans=1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(3):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), planted(48, g)


def test_gradcam_peaks_on_the_planted_patch(patch_model):
    model, (x, y, corners) = patch_model
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.9  # the task was learned
    pos = y == 1
    cams, logits = GradCAM(model)(x[pos], target=1)
    assert cams.shape == (int(pos.sum()), SIZE, SIZE)  # the image's size, not the 8x8 stage
    assert cams.min() >= 0 and torch.allclose(cams.flatten(1).amax(1), torch.ones(len(cams)))
    argmax_in, mean_in = 0, 0
    for cam, (r, c) in zip(cams, corners[pos].tolist(), strict=True):
        inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        inside[r : r + PATCH, c : c + PATCH] = True
        pr, pc = divmod(int(cam.argmax()), SIZE)
        argmax_in += (r - 2 <= pr < r + PATCH + 2) and (c - 2 <= pc < c + PATCH + 2)  # 2-px margin
        mean_in += bool(cam[inside].mean() > 2 * cam[~inside].mean())
    n = len(cams)
    assert argmax_in >= 0.8 * n, f"argmax on the patch in {argmax_in}/{n}"
    assert mean_in >= 0.8 * n, f"heat inside > 2x outside in {mean_in}/{n}"


def test_default_layer_is_last_stage_and_bad_layer_is_an_error(patch_model):
    model, (x, _, _) = patch_model
    assert default_layer(model) == model.feature_info[-1]["module"] == "layer3"
    early = gradcam(model, x[:2], target=0, layer="layer1")
    assert early.shape == (2, SIZE, SIZE)
    with pytest.raises(ResNetError, match="no layer 'layer9'"):
        GradCAM(model, "layer9")
    with pytest.raises(ResNetError, match="out of range"):
        gradcam(model, x[:2], target=5)
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients left behind


def test_cam_mapped_back_through_resize_and_centre_crop():
    cam = torch.ones(4, 4)
    pre = {"size": [4, 4], "resize": 8}  # shorter side 8, then a 4x4 centre crop
    full = to_image_frame(cam, (16, 32), pre)  # original image 16 x 32: scale 0.5
    assert full.shape == (16, 32)
    assert full[4:12, 12:20].min() == 1 and full.sum() == 64  # only the 8x8 centre is covered
    assert to_image_frame(cam, (10, 6)).shape == (10, 6)  # plain resize: stretched over it all


def test_overlay_png_written(tmp_path):
    from PIL import Image

    path = save_overlay(
        tmp_path / "a.cam.png", torch.rand(3, 20, 30), torch.rand(5, 5), title="cat 90%"
    )
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > im.height  # the 3:2 image's aspect is kept
