"""Residual blocks: basic and bottleneck, post-activation (2015) and pre-activation (2016).

Every block takes `skip`: with `skip=False` it is the block of the paper's *plain* net, the same
layers with the shortcut (and any projection on it) removed.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import (
    ActFactory,
    DropPath,
    NormFactory,
    act_factory,
    conv1x1,
    conv3x3,
    conv_has_bias,
    make_shortcut,
)

_relu = act_factory("relu")  # the papers' activation, when a block is built without `act`


class _Block(nn.Module):
    expansion = 1
    preact = False

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        *,
        norm: NormFactory,
        act: ActFactory | None = None,
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        stride_on_1x1: bool = False,
        pool_downsample: bool = False,
        drop_path: float = 0.0,
        drop_rate: float = 0.0,
        skip: bool = True,
        dims: int = 2,
        conv_bias: str = "none",
    ):
        super().__init__()
        if not skip and drop_path > 0:
            raise ValueError(
                "drop_path_rate needs skip connections: a plain net has no branch to drop"
            )
        self.skip = skip
        # Downsampling by a 2x2 max-pool in front of the block (airbench's way): every conv and
        # the shortcut then run at stride 1 on the pooled map, which keeps each window's
        # strongest response instead of every other pixel.
        pooled = pool_downsample and stride > 1
        max_pool = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
        self.pool = max_pool(stride, ceil_mode=True) if pooled else nn.Identity()
        self.conv_stride = 1 if pool_downsample else stride
        stride = self.conv_stride
        out = planes * self.expansion
        # A post-activation projection feeds a norm; a pre-activation one feeds the sum directly.
        self.downsample = (
            make_shortcut(
                shortcut,
                inplanes,
                out,
                stride,
                norm,
                not self.preact,
                dims,
                conv_has_bias(conv_bias, normed=not self.preact),
            )
            if skip
            else None
        )
        # Option A pads the raw input; a pre-activation block's projection sees the normalised one.
        self.project_preact = self.preact and isinstance(self.downsample, nn.Sequential)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()

    def last_layer(self) -> nn.Module:
        """The block's last affine layer (each block class says which)."""
        raise NotImplementedError

    def _add_shortcut(self, out: torch.Tensor, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        """The residual sum (or `out` alone in a plain net)."""
        if not self.skip:
            return out
        if self.downsample is None:
            identity = x
        else:
            identity = self.downsample(pre if self.project_preact else x)
        return self.drop_path(out) + identity

    def zero_init_last(self) -> None:
        """Zeroes the last affine layer: each block starts as the identity (Goyal et al. 2017)."""
        layer = self.last_layer()
        if getattr(layer, "weight", None) is not None:
            nn.init.zeros_(layer.weight)


def _check_basic(groups: int, base_width: int, stride_on_1x1: bool) -> None:
    if groups != 1 or base_width != 64:
        raise ValueError(
            "basic blocks support neither groups nor width_per_group: ResNeXt and wide "
            "ImageNet variants are bottleneck nets"
        )
    if stride_on_1x1:
        raise ValueError("stride_on='1x1' only differs for bottleneck blocks (ResNet v1 vs v1.5)")


class BasicBlock(_Block):
    """Two 3x3 convolutions, each followed by a norm; ReLU after the addition (2015)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, **kw):
        _check_basic(kw.get("groups", 1), kw.get("base_width", 64), kw.get("stride_on_1x1", False))
        super().__init__(inplanes, planes, stride, **kw)
        stride = self.conv_stride
        norm, act, dims = kw["norm"], kw.get("act") or _relu, kw.get("dims", 2)
        bias = conv_has_bias(kw.get("conv_bias", "none"), normed=True)
        self.conv1 = conv3x3(inplanes, planes, stride, dims=dims, bias=bias)
        self.bn1 = norm(planes)
        self.act1 = act()
        self.conv2 = conv3x3(planes, planes, dims=dims, bias=bias)
        self.bn2 = norm(planes)
        self.act2 = act()

    def last_layer(self) -> nn.Module:
        """The layer `zero_init_last` zeroes: the last norm (post-act) or conv (pre-act)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output for `x`: the residual branch plus the shortcut."""
        x = self.pool(x)
        out = self.dropout(self.act1(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        out = self._add_shortcut(out, x, x)
        return self.act2(out)


class Bottleneck(_Block):
    """1x1 reduce, 3x3, 1x1 expand (x4). v1.5 strides the 3x3; the 2015 paper's v1 strides the 1x1.

    v1.5 (torchvision's default) is ~0.5 % more accurate on ImageNet for the same parameters.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, **kw):
        super().__init__(inplanes, planes, stride, **kw)
        stride = self.conv_stride
        norm, groups, act = kw["norm"], kw.get("groups", 1), kw.get("act") or _relu
        dims = kw.get("dims", 2)
        width = int(planes * (kw.get("base_width", 64) / 64.0)) * groups
        s1, s3 = (stride, 1) if kw.get("stride_on_1x1", False) else (1, stride)
        bias = conv_has_bias(kw.get("conv_bias", "none"), normed=True)
        self.conv1 = conv1x1(inplanes, width, s1, dims, bias)
        self.bn1 = norm(width)
        self.act1 = act()
        self.conv2 = conv3x3(width, width, s3, groups, dims, bias)
        self.bn2 = norm(width)
        self.act2 = act()
        self.conv3 = conv1x1(width, planes * self.expansion, dims=dims, bias=bias)
        self.bn3 = norm(planes * self.expansion)
        self.act3 = act()

    def last_layer(self) -> nn.Module:
        """The layer `zero_init_last` zeroes: the last norm (post-act) or conv (pre-act)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output for `x`: the residual branch plus the shortcut."""
        x = self.pool(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.dropout(self.act2(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        out = self._add_shortcut(out, x, x)
        return self.act3(out)


class PreActBasicBlock(_Block):
    """Full pre-activation (He et al. 2016): norm-ReLU-conv twice, nothing after the addition.

    A projection shortcut sees the normalised input, as in the paper's code. Wide ResNets
    (Zagoruyko & Komodakis 2016) are this block with dropout between the convolutions.
    """

    preact = True

    def __init__(self, inplanes: int, planes: int, stride: int = 1, **kw):
        _check_basic(kw.get("groups", 1), kw.get("base_width", 64), kw.get("stride_on_1x1", False))
        super().__init__(inplanes, planes, stride, **kw)
        stride = self.conv_stride
        norm, act, dims = kw["norm"], kw.get("act") or _relu, kw.get("dims", 2)
        conv_bias = kw.get("conv_bias", "none")
        self.bn1 = norm(inplanes)
        self.act1 = act()
        self.conv1 = conv3x3(
            inplanes, planes, stride, dims=dims, bias=conv_has_bias(conv_bias, normed=True)
        )
        self.bn2 = norm(planes)
        self.act2 = act()
        self.conv2 = conv3x3(planes, planes, dims=dims, bias=conv_has_bias(conv_bias, normed=False))

    def last_layer(self) -> nn.Module:
        """The layer `zero_init_last` zeroes: the last norm (post-act) or conv (pre-act)."""
        return self.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output for `x`: the residual branch plus the shortcut."""
        x = self.pool(x)
        pre = self.act1(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.act2(self.bn2(out))))
        return self._add_shortcut(out, x, pre)


class PreActBottleneck(_Block):
    """Pre-activation bottleneck (He et al. 2016), used by ResNet-164 and ResNet-1001."""

    expansion = 4
    preact = True

    def __init__(self, inplanes: int, planes: int, stride: int = 1, **kw):
        super().__init__(inplanes, planes, stride, **kw)
        stride = self.conv_stride
        norm, groups, act = kw["norm"], kw.get("groups", 1), kw.get("act") or _relu
        dims = kw.get("dims", 2)
        width = int(planes * (kw.get("base_width", 64) / 64.0)) * groups
        s1, s3 = (stride, 1) if kw.get("stride_on_1x1", False) else (1, stride)
        conv_bias = kw.get("conv_bias", "none")
        inner = conv_has_bias(conv_bias, normed=True)  # conv1, conv2 feed bn2, bn3
        self.bn1 = norm(inplanes)
        self.act1 = act()
        self.conv1 = conv1x1(inplanes, width, s1, dims, inner)
        self.bn2 = norm(width)
        self.act2 = act()
        self.conv2 = conv3x3(width, width, s3, groups, dims, inner)
        self.bn3 = norm(width)
        self.act3 = act()
        self.conv3 = conv1x1(
            width,
            planes * self.expansion,
            dims=dims,
            bias=conv_has_bias(conv_bias, normed=False),  # feeds the sum
        )

    def last_layer(self) -> nn.Module:
        """The layer `zero_init_last` zeroes: the last norm (post-act) or conv (pre-act)."""
        return self.conv3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output for `x`: the residual branch plus the shortcut."""
        x = self.pool(x)
        pre = self.act1(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.bn2(out)))
        out = self.conv3(self.dropout(self.act3(self.bn3(out))))
        return self._add_shortcut(out, x, pre)


BLOCKS: dict[tuple[str, bool], type[_Block]] = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}
