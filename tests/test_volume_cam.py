"""Grad-CAM for 3-D nets: volume maps that find a planted blob, and their slice montages."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch import nn

from resnet.analysis import volume_cam as vc
from resnet.analysis.gradcam import GradCAM
from resnet.analysis.volume_cam import (
    save_volume_cams,
    slice_montage,
    top_slices,
    volume_cam,
    volume_name,
)
from resnet.errors import ResNetError
from resnet.models import Ensemble, create

D, H, W = 16, 20, 24  # anisotropic, so a swapped axis shows up as a wrong shape
BLOB = (slice(10, 14), slice(4, 8), slice(14, 20))  # whole 2x2x2 cells of the pooled layer
BLOB_SLICES = [10, 11, 12, 13]


class BlobNet(nn.Module):
    """Class 1 ("bright") is the mean intensity, class 0 ("dark") its negative.

    `pool` halves every axis, so its maps must be upsampled trilinearly to the input's size.
    """

    feature_info = [{"num_chs": 2, "reduction": 2, "module": "pool"}]  # Grad-CAM's default layer

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1))
        self.pool = nn.AvgPool3d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x)).mean((2, 3, 4))


def blob_volume() -> torch.Tensor:
    """[1, 1, D, H, W]: a slightly dark background with one bright blob."""
    x = torch.full((1, 1, D, H, W), -0.1)
    x[(0, 0, *BLOB)] = 1.0
    return x


def test_resnet10_3d_map_has_the_volume_shape_and_range():
    torch.manual_seed(0)
    model = create("resnet10_3d", num_classes=2, in_chans=1).eval()
    x = torch.randn(1, 1, 16, 32, 32)
    # layer4 is one voxel at this size (its map would be constant); layer2 is 4x4x4
    cam_of = GradCAM(model, "layer2")
    target = int(model(x).argmax())
    cam = volume_cam(cam_of, x, target)
    assert cam.shape == (16, 32, 32)
    assert cam.min() >= 0 and cam.max() <= 1
    assert cam.max() - cam.min() > 0.5  # not constant


def test_map_follows_the_blob_for_its_class_only():
    x = blob_volume()
    cam_of = GradCAM(BlobNet())
    bright = volume_cam(cam_of, x, 1)
    assert bright.shape == (D, H, W)
    d, r, c = torch.unravel_index(bright.argmax(), bright.shape)
    assert all(s.start <= int(i) < s.stop for s, i in zip(BLOB, (d, r, c), strict=True))
    assert top_slices(bright, 4) == BLOB_SLICES
    dark = volume_cam(cam_of, x, 0)  # the background is the evidence for "dark"
    assert dark[11:13, 5:7, 15:19].max() < 0.1 < 0.5 < dark.mean()  # the blob's core is cold
    assert not set(top_slices(dark, 4)) & set(BLOB_SLICES)


def test_volume_cam_refuses_a_batch_of_images():
    with pytest.raises(ResNetError, match=r"\[1, C, D, H, W\]"):
        volume_cam(GradCAM(BlobNet()), torch.zeros(1, 1, H, W), 1)


def test_top_slices_takes_the_largest_mass_in_slice_order():
    cam = torch.zeros(6, 3, 3)
    for d, v in [(4, 0.9), (1, 0.5), (5, 0.2), (0, 0.1)]:
        cam[d] = v
    cam[2, 0, 0] = 1.0  # one bright voxel has less mass than a dimmer full slice
    assert top_slices(cam, 2) == [1, 4]
    assert top_slices(cam, 3) == [1, 4, 5]
    assert top_slices(cam, 6) == top_slices(cam, 10) == list(range(6))
    with pytest.raises(ResNetError):
        top_slices(cam, 0)


def test_slice_montage_draws_the_blob_slices(tmp_path, monkeypatch):
    chosen = []
    monkeypatch.setattr(
        vc, "top_slices", lambda cam, k: chosen.append(top_slices(cam, k)) or chosen[-1]
    )
    x = blob_volume()
    cam = volume_cam(GradCAM(BlobNet()), x, 1)
    shown = (x[0, 0] + 0.1) / 1.1
    path = slice_montage(shown, cam, tmp_path / "m.png", title="bright", slices=4)
    assert chosen == [BLOB_SLICES]
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert 150 <= w <= 2000 and 150 <= h <= 2000
    with pytest.raises(ResNetError, match="one shape"):
        slice_montage(shown, cam[:, :10], tmp_path / "bad.png")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/d/p1/anat.nii.gz", "anat"),
        ("/d/p2/t1.NII", "t1"),
        ("/d/x.dcm", "x"),
        ("/d/p3/series1/", "series1"),
    ],
)
def test_volume_name(path, name):
    assert volume_name(path) == name


def test_save_volume_cams_writes_one_montage_per_result(tmp_path):
    classifier = SimpleNamespace(model=BlobNet(), classes=["dark", "bright"])
    paths = ["/d/p1/anat.nii.gz", "/d/p2/series1", "/d/p3/scan.dcm"]
    results = [
        {"path": p, "predictions": [{"class": "bright", "index": 1, "probability": 0.9}]}
        for p in paths
    ]
    x = blob_volume()[0]
    displays = [(x[0] + 0.1) / 1.1] * 2 + [torch.rand(8, 10, 12)]  # the last at half size
    written = save_volume_cams(classifier, results, [x] * 3, displays, tmp_path / "cams")
    names = ["0000_anat.cam.png", "0001_series1.cam.png", "0002_scan.cam.png"]
    assert [p.name for p in written] == names
    for r, p in zip(results, written, strict=True):
        assert r["cam"] == str(p) and r["cam_layer"] == "pool"
        with Image.open(p) as im:
            assert im.format == "PNG" and min(im.size) > 100


def test_save_volume_cams_refuses_exported_models_and_ensembles(tmp_path):
    onnx_like = SimpleNamespace(model=object(), session=object(), classes=["a", "b"])
    result = {"path": "a.nii", "predictions": [{"class": "a", "index": 0, "probability": 1.0}]}
    x = blob_volume()[0]
    with pytest.raises(ResNetError, match="exported"):
        save_volume_cams(onnx_like, [result], [x], [x[0]], tmp_path)
    ensemble = SimpleNamespace(model=Ensemble([BlobNet(), BlobNet()]), classes=["a", "b"])
    with pytest.raises(ResNetError, match="ensemble"):
        save_volume_cams(ensemble, [result], [x], [x[0]], tmp_path)
    with pytest.raises(ResNetError, match="one input"):
        save_volume_cams(SimpleNamespace(model=BlobNet()), [result], [], [], tmp_path)
    assert not list(tmp_path.iterdir())
