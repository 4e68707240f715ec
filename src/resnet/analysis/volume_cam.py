"""Grad-CAM for 3-D nets: a volume's map drawn as a montage of its most telling axial slices."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.report import pyplot, save_figure
from ..errors import ResNetError
from .gradcam import GradCAM, default_layer, eager_model, overlay

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".dcm")


def volume_cam(cam_of: GradCAM, x: torch.Tensor, target: int) -> torch.Tensor:
    """The Grad-CAM map [D, H, W] in [0, 1] of one volume `x` [1, C, D, H, W] for class `target`.

    The map has the input's size: `GradCAM` upsamples the layer's map trilinearly.
    """
    if x.ndim != 5 or len(x) != 1:
        raise ResNetError(f"volume_cam needs one volume [1, C, D, H, W], got {tuple(x.shape)}")
    cams, _ = cam_of(x, target=int(target))
    return cams[0].clamp(0, 1).cpu()


def _resize(cam: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """`cam` [D, H, W] resized trilinearly to `size`."""
    return F.interpolate(cam[None, None].float(), size=size, mode="trilinear", align_corners=False)[
        0, 0
    ]


def top_slices(cam: torch.Tensor, k: int) -> list[int]:
    """The `k` axial slices of `cam` [D, H, W] with the largest map mass, in slice order.

    All slices when the volume has `k` or fewer.
    """
    if k < 1:
        raise ResNetError(f"need at least one slice, got {k}")
    depth = cam.shape[0]
    if depth <= k:
        return list(range(depth))
    mass = cam.float().flatten(1).sum(1)
    return sorted(mass.topk(k).indices.tolist())


def slice_montage(
    volume: torch.Tensor,
    cam: torch.Tensor,
    path: str | os.PathLike,
    *,
    title: str = "",
    slices: int = 8,
) -> Path:
    """Writes a PNG grid of the `slices` axial slices where `cam` is largest, map over grey.

    Args:
        volume: what the model saw, [D, H, W] floats in [0, 1].
        cam: the map, [D, H, W] in [0, 1].
        path: the PNG file (written atomically).
        title: the figure's title.
        slices: how many slices to show (all when the volume has fewer).
    """
    if volume.ndim != 3 or tuple(volume.shape) != tuple(cam.shape):
        raise ResNetError(
            f"slice_montage needs volume and map of one shape [D, H, W], "
            f"got {tuple(volume.shape)} and {tuple(cam.shape)}"
        )
    chosen = top_slices(cam, slices)
    cols = math.ceil(math.sqrt(len(chosen)))
    rows = math.ceil(len(chosen) / cols)
    h, w = volume.shape[1:]
    fig, axes = pyplot().subplots(
        rows, cols, figsize=(2.2 * cols, 2.2 * rows * h / w + 0.5), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, d in zip(axes.flat, chosen, strict=False):
        ax.imshow(overlay(volume[d][None].float().cpu(), cam[d].cpu()).numpy())
        ax.set_title(f"slice {d}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def volume_name(path: str) -> str:
    """The file name of `path` without .nii.gz / .nii / .dcm (a DICOM series folder's name)."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def volume_layer(model: nn.Module, shape: tuple[int, int, int], min_side: int = 4) -> str:
    """The deepest stage whose map keeps `min_side` voxels in-plane for a [D, H, W] input (the
    last stage of a 3-D net fed a small volume is one or two voxels wide: a useless map)."""
    info = getattr(model, "feature_info", None)
    if not info:
        return default_layer(model)
    side = min(shape[-2:])
    fitting = [i for i in info if side // i["reduction"] >= min_side]
    return (fitting or info[:1])[-1]["module"]


def save_volume_cams(
    classifier: Any,
    results: list[dict],
    inputs: list[torch.Tensor],
    displays: list[torch.Tensor],
    out_dir: str | os.PathLike,
    layer: str | None = None,
) -> list[Path]:
    """Grad-CAM slice montages for volume predictions, one PNG per volume in `out_dir`.

    The map is taken for each volume's top-1 class. Each result gains "cam" (the PNG's path)
    and "cam_layer".

    Args:
        classifier: anything with `.model` (an eager nn.Module) and `.classes`.
        results: predict results ({"path", "predictions": [{"class", "index", "probability"}]}).
        inputs: the model input of each result, [C, D, H, W].
        displays: what to draw under each map, [D, H, W] in [0, 1].
        out_dir: folder for the PNGs (`<n:04d>_<volume name>.cam.png`).
        layer: target layer; default the last stage.
    """
    if not len(results) == len(inputs) == len(displays):
        raise ResNetError(
            f"need one input and one display per result, got {len(results)} results, "
            f"{len(inputs)} inputs and {len(displays)} displays"
        )
    model = eager_model(classifier)
    cam_of = GradCAM(model, layer or volume_layer(model, tuple(inputs[0].shape[-3:])))
    device = next(model.parameters()).device
    out_dir = Path(out_dir)
    written = []
    for n, (r, x, shown) in enumerate(zip(results, inputs, displays, strict=True)):
        top = r["predictions"][0]
        cam = volume_cam(cam_of, x[None].to(device), int(top["index"]))
        if tuple(cam.shape) != tuple(shown.shape):
            cam = _resize(cam, tuple(shown.shape))
        path = out_dir / f"{n:04d}_{volume_name(r['path'])}.cam.png"
        title = f"{top['class']} {100 * top['probability']:.1f}%  (Grad-CAM, {cam_of.layer_name})"
        slice_montage(shown, cam, path, title=title)
        r["cam"], r["cam_layer"] = str(path), cam_of.layer_name
        written.append(path)
    return written
