"""Any registered ResNet as a backbone: multi-scale stage maps, and a feature pyramid on top."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..models import ResNet, create

EXTRA_LEVELS = (None, "pool", "p6p7")


class Backbone(nn.Module):
    """The stage maps of a ResNet (its classifier removed), as an ordered dict.

    Args:
        name: a registered model name (`resnet.list_models()`).
        out_indices: which maps to return: 0 is the stem, 1..4 the stages (CIFAR-style nets have
            three). Default: every stage the net has.
        weights: forwarded to `resnet.create(..., weights=...)` (a file or a registered tag).
        in_chans: input channels.
        body: an already built ResNet to wrap instead of creating one (used when a checkpoint is
            loaded).
        **model_options: ResNet options (`small_input`, `norm`, `drop_path_rate`, ...).

    Keys are "stem", "layer1".."layer4"; `channels` and `strides` list each returned map's
    channels and reduction, taken from the model's `feature_info`. Pre-activation nets end with a
    norm + ReLU after their last stage; it is applied when that stage is returned, as in
    `forward_features`.
    """

    def __init__(
        self,
        name: str = "resnet18",
        out_indices: Sequence[int] | None = None,
        weights: str | None = None,
        in_chans: int = 3,
        *,
        body: ResNet | None = None,
        **model_options,
    ):
        super().__init__()
        if body is None:
            if weights is not None:
                model_options["weights"] = weights
            body = create(name, num_classes=0, in_chans=in_chans, **model_options)
        elif body.num_classes:
            body.reset_classifier(0)
        self.body = body
        num_stages = len(body.spec.depths)
        if out_indices is None:
            out_indices = tuple(range(1, num_stages + 1))
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or list(out_indices) != sorted(set(out_indices)):
            raise ValueError(f"out_indices must be increasing and non-empty, not {out_indices}")
        if out_indices[0] < 0 or out_indices[-1] > num_stages:
            raise ValueError(
                f"{getattr(body, 'arch', 'this net')} has a stem (0) and stages "
                f"1..{num_stages}; out_indices {out_indices} is out of range"
            )
        self.out_indices = out_indices
        info = body.feature_info
        self.names = ["stem" if i == 0 else f"layer{i}" for i in out_indices]
        self.channels = [info[i]["num_chs"] for i in out_indices]
        self.strides = [info[i]["reduction"] for i in out_indices]
        self.num_stages = num_stages

    @property
    def arch(self) -> str:
        """The registered name of the ResNet inside ("custom" if it has none)."""
        return getattr(self.body, "arch", "custom")

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The maps of the stages in `out_indices`, named "stem" or "layer{i}"."""
        body = self.body
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = body.conv1(x)
        pool_first = getattr(body, "pool_first", False)
        if pool_first:
            x = body.maxpool(x)
        x = body.act1(body.bn1(x))
        if 0 in self.out_indices:
            out["stem"] = x  # where feature_info places it: before an ImageNet stem's max-pool
        if not pool_first:
            x = body.maxpool(x)
        for i, stage in enumerate(body.stages(), start=1):
            if i > self.out_indices[-1]:
                break  # deeper stages are not needed
            x = stage(x)
            if i == self.num_stages:
                x = body.final_act(body.final_norm(x))
            if i in self.out_indices:
                out[f"layer{i}"] = x
        return out

    def fpn(self, out_channels: int = 256, extra: str | None = None) -> BackboneFPN:
        """This backbone with a feature pyramid on top (see `BackboneFPN`)."""
        return BackboneFPN(self, out_channels, extra)


class BackboneFPN(nn.Module):
    """A `Backbone` with torchvision's `FeaturePyramidNetwork` (Lin et al. 2017) on top.

    Args:
        backbone: the stage maps to fuse.
        out_channels: channels of every pyramid level.
        extra: None, "pool" (one more level by max-pooling the coarsest, as Faster R-CNN does) or
            "p6p7" (two strided 3x3 convs, as RetinaNet and FCOS do).

    Returns an ordered dict "p{i+1}" for stage i (ResNet's conv{i+1}_x naming), plus "pool" or
    "p6"/"p7"; `strides` lists each level's reduction and `out_channels` is what torchvision's
    detection heads read.
    """

    def __init__(self, backbone: Backbone, out_channels: int = 256, extra: str | None = None):
        super().__init__()
        # torchvision loads on first use (`import resnet` imports this module)
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

        if extra not in EXTRA_LEVELS:
            raise ValueError(f"extra must be one of {EXTRA_LEVELS}, not {extra!r}")
        self.backbone = backbone
        blocks = {
            None: None,
            "pool": LastLevelMaxPool(),
            "p6p7": LastLevelP6P7(out_channels, out_channels),
        }[extra]
        self.fpn = FeaturePyramidNetwork(backbone.channels, out_channels, extra_blocks=blocks)
        self.out_channels = out_channels
        self.extra = extra
        self.names = [f"p{i + 1}" for i in backbone.out_indices]
        self.strides = list(backbone.strides)
        if extra == "pool":
            self.names.append("pool")
            self.strides.append(self.strides[-1] * 2)
        elif extra == "p6p7":
            self.names += [f"p{backbone.out_indices[-1] + 2}", f"p{backbone.out_indices[-1] + 3}"]
            self.strides += [self.strides[-1] * 2, self.strides[-1] * 4]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The pyramid levels, fused top-down, named as `names`."""
        levels = self.fpn(self.backbone(x))
        return OrderedDict(zip(self.names, levels.values(), strict=True))


class BackboneProjection(nn.Module):
    """The same levels as `BackboneFPN` without the pyramid: each stage map projected on its own
    by a 1x1 conv to `out_channels` (no top-down path, no lateral fusion). The ablation of FPN.
    """

    def __init__(self, backbone: Backbone, out_channels: int = 256):
        super().__init__()
        self.backbone = backbone
        self.proj = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in backbone.channels)
        self.out_channels = out_channels
        self.extra = None
        self.names = [f"c{i + 1}" for i in backbone.out_indices]
        self.strides = list(backbone.strides)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Each stage map projected to `out_channels`, named as `names`."""
        maps = self.backbone(x).values()
        return OrderedDict((n, p(m)) for n, p, m in zip(self.names, self.proj, maps, strict=True))


def build_neck(
    backbone: Backbone, neck: str = "fpn", out_channels: int = 256, extra: str | None = None
) -> BackboneFPN | BackboneProjection:
    """`neck="fpn"` (feature pyramid) or `"none"` (per-level 1x1 projections only)."""
    if neck == "fpn":
        return BackboneFPN(backbone, out_channels, extra)
    if neck == "none":
        if extra is not None:
            raise ValueError("extra pyramid levels need neck='fpn'")
        return BackboneProjection(backbone, out_channels)
    raise ValueError(f"neck must be 'fpn' or 'none', not {neck!r}")
