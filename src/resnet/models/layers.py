"""Small building pieces shared by the blocks: norms, shortcuts, stochastic depth."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

NormFactory = Callable[[int], nn.Module]

NORMS = ("batch", "group")
ACTIVATIONS = ("relu", "gelu", "silu")
GLOBAL_POOLS = ("avg", "max", "avgmax")
ActFactory = Callable[[], nn.Module]


def group_count(channels: int) -> int:
    """GroupNorm groups: 32 as in Wu & He 2018 where the width allows, >= 2 channels each."""
    return math.gcd(32, max(1, channels // 2))


def norm_factory(kind: str, dims: int = 2, eps: float = 1e-5) -> NormFactory:
    """Returns a function `channels -> norm module` for `kind` in NORMS (3-D: BatchNorm3d).

    `eps` is PyTorch's 1e-5 unless a spec says otherwise (Keras' ResNets use 1.001e-5).
    """
    if kind == "batch":
        batch_norm = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
        return batch_norm if eps == 1e-5 else functools.partial(batch_norm, eps=eps)
    if kind == "group":
        return lambda c: nn.GroupNorm(group_count(c), c, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


CONV_BIASES = ("none", "all", "unnormed")


def conv_has_bias(conv_bias: str, normed: bool) -> bool:
    """Whether a conv gets a bias under a spec's `conv_bias` rule.

    "none": never (each conv feeds a norm that would cancel it; the papers' and torchvision's).
    "all": every conv (Keras' v1 ResNets). "unnormed": only a conv whose output no norm follows
    directly (Keras' ResNetV2: a bare stem, a pre-activation block's last conv, projections).
    `normed` says whether a norm follows this conv directly.
    """
    return conv_bias == "all" or (conv_bias == "unnormed" and not normed)


def act_factory(kind: str) -> ActFactory:
    """Returns a function `() -> activation module` for `kind` in ACTIVATIONS.

    ReLU is the papers'; GELU (airbench, ConvNeXt) and SiLU (EfficientNet) are smooth
    alternatives that keep a small gradient for negative inputs.
    """
    if kind == "relu":
        return lambda: nn.ReLU(inplace=True)
    if kind == "gelu":
        return nn.GELU
    if kind == "silu":
        return lambda: nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {kind!r}; choose one of {', '.join(ACTIVATIONS)}")


class GlobalPool(nn.Module):
    """Pools (N, C, H, W) or (N, C, D, H, W) to (N, C): the mean, the maximum, or their average.

    The maximum keeps the strongest response wherever it lies (airbench's head); "avgmax" is
    timm's average of the two. None of them has parameters, so weights load under any choice.
    """

    def __init__(self, kind: str = "avg"):
        super().__init__()
        if kind not in GLOBAL_POOLS:
            raise ValueError(
                f"unknown global_pool {kind!r}; choose one of {', '.join(GLOBAL_POOLS)}"
            )
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) or (N, C, D, H, W) -> (N, C)."""
        # Adaptive pools, not mean/amax: exported graphs keep GlobalAveragePool/GlobalMaxPool.
        if x.dim() == 5:
            return self._forward_3d(x)
        if self.kind == "avg":
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.kind == "max":
            return F.adaptive_max_pool2d(x, 1).flatten(1)
        return 0.5 * (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)).flatten(1)

    def _forward_3d(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "avg":
            return F.adaptive_avg_pool3d(x, 1).flatten(1)
        if self.kind == "max":
            return F.adaptive_max_pool3d(x, 1).flatten(1)
        return 0.5 * (F.adaptive_avg_pool3d(x, 1) + F.adaptive_max_pool3d(x, 1)).flatten(1)

    def extra_repr(self) -> str:
        """The pool's kind, shown in the module's repr."""
        return self.kind


def conv3x3(
    cin: int, cout: int, stride: int = 1, groups: int = 1, dims: int = 2, bias: bool = False
) -> nn.Module:
    """A 3x3 (3-D: 3x3x3) convolution with padding 1; no bias unless asked (a norm follows it)."""
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    return conv(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=bias)


def conv1x1(cin: int, cout: int, stride: int = 1, dims: int = 2, bias: bool = False) -> nn.Module:
    """A 1x1 (3-D: 1x1x1) convolution; no bias unless asked (a norm layer follows it)."""
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    return conv(cin, cout, 1, stride=stride, bias=bias)


class PadShortcut(nn.Module):
    """Option-A shortcut (He et al. 2015, §4.2): subsample, then zero-pad the new channels.

    It has no parameters, which is why the CIFAR nets have exactly the paper's counts.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if cout < cin:
            raise ValueError(f"option-A shortcut cannot shrink channels ({cin} -> {cout})")
        self.extra = cout - cin
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` subsampled by the stride, with zero channels appended."""
        if x.dim() == 5:
            return self._forward_3d(x)
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x

    def _forward_3d(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.extra))
        return x


SHORTCUTS = ("A", "B", "D", "S")


def make_shortcut(
    kind: str,
    cin: int,
    cout: int,
    stride: int,
    norm: NormFactory,
    with_norm: bool = True,
    dims: int = 2,
    bias: bool = False,
) -> nn.Module | None:
    """The shortcut of a block whose input and output shapes differ; None when they match.

    A: zero-padded identity (no parameters). B: 1x1 projection (+ norm), as in torchvision.
    D: average-pool then 1x1 projection (Bag of Tricks, ResNet-D), so no activation is skipped.
    S: a projection (as B) where the channels change; where only the resolution does, the input
    subsampled by the stride (Keras' ResNetV2: a 1x1 max-pool, no parameters).
    Pre-activation blocks project the already normalised input, so they use no norm here.
    `dims=3` builds the same shortcuts for volumes (N, C, D, H, W); `bias` gives the projection
    conv a bias (Keras' layouts).
    """
    if stride == 1 and cin == cout:
        return None
    if kind == "A" or (kind == "S" and cin == cout):
        return PadShortcut(cin, cout, stride)
    if kind in ("B", "S"):
        layers: list[nn.Module] = [conv1x1(cin, cout, stride, dims, bias)]
    elif kind == "D":
        avg = nn.AvgPool3d if dims == 3 else nn.AvgPool2d
        pool: nn.Module = (
            avg(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        )
        layers = [pool, conv1x1(cin, cout, dims=dims, bias=bias)]
    else:
        raise ValueError(f"unknown shortcut {kind!r}; choose one of {', '.join(SHORTCUTS)}")
    if with_norm:
        layers.append(norm(cout))
    return nn.Sequential(*layers)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drops a sample's residual branch, rescales the rest."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` with whole samples zeroed at rate `p` in training, the rest scaled by 1/(1-p)."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        """The drop rate, shown in the module's repr."""
        return f"p={self.p}"
