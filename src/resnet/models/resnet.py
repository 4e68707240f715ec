"""The ResNet module, built from a `ResNetSpec`: one class for every variant of the literature."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import BLOCKS
from .layers import (
    CONV_BIASES,
    SHORTCUTS,
    GlobalPool,
    act_factory,
    conv3x3,
    conv_has_bias,
    norm_factory,
)

STEMS = ("imagenet", "deep", "cifar", "pool", "bare")
SMALL_STEMS = ("cifar", "pool")  # stride-1 first conv: for 28-64 px images
BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextmanager
def _norm_stats_kept(module: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics stay as they are inside (momentum 0, the batch count put
    back on exit): a checkpointed segment's recomputation in the backward pass must not count
    its batch a second time. The outputs are unchanged: training-mode BatchNorm normalises with
    the batch's own statistics."""
    norms = [m for m in module.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def _checkpointed(segment: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`segment(x)`, keeping only `x`: the segment runs again in the backward pass."""
    return checkpoint(
        segment,
        x,
        use_reentrant=False,
        context_fn=lambda: (nullcontext(), _norm_stats_kept(segment)),
    )


def checkpointed_stages(
    stages: list[nn.Sequential], x: torch.Tensor, every_block: bool = False
) -> torch.Tensor:
    """Runs the stages on `x` with activation checkpointing.

    Images: sqrt(n) segments a stage, so memory grows with the square root of depth, not
    linearly; every segment but the last keeps only its input and runs again in the backward
    pass. Volumes (`every_block`): each block keeps only its input, since a 3-D block's inner
    activations dwarf everything else (ResNet-18's 2-block stages would otherwise keep all).
    """
    for stage in stages:
        blocks = list(stage)
        if every_block:
            for block in blocks:
                x = _checkpointed(block, x)
            continue
        size = len(blocks) // max(1, math.isqrt(len(blocks)))
        start = 0
        while start + size < len(blocks):
            x = _checkpointed(nn.Sequential(*blocks[start : start + size]), x)
            start += size
        for block in blocks[start:]:
            x = block(x)
    return x


def _imagenet_conv(in_chans: int, width: int, dims: int, bias: bool = False) -> nn.Module:
    """The ImageNet stem's conv: 7x7/2; for volumes 7x7x7 strided (1, 2, 2) (Hara et al. 2018).

    Padding 3 on each side equals Keras' ZeroPadding2D(3) before its unpadded 7x7/2 conv.
    """
    if dims == 3:
        return nn.Conv3d(in_chans, width, 7, stride=(1, 2, 2), padding=3, bias=bias)
    return nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=bias)


def _zero_padded_max_pool(dims: int) -> nn.Module:
    """A 3x3/2 max-pool over one pixel of zero padding (Keras' ZeroPadding2D(1) + MaxPooling2D).

    PyTorch's padded max-pool ignores the border; zeros differ from that wherever a window holds
    only negative values, which a stem without a ReLU before its pool (the bare stem) produces.
    """
    pad = nn.ZeroPad3d(1) if dims == 3 else nn.ZeroPad2d(1)
    return nn.Sequential(pad, nn.MaxPool3d(3, 2) if dims == 3 else nn.MaxPool2d(3, 2))


@dataclass(frozen=True)
class ResNetSpec:
    """What distinguishes one residual network from another. Variants are data, not flags.

    Attributes:
        block: "basic" (two 3x3) or "bottleneck" (1x1-3x3-1x1, x4 expansion).
        depths: blocks per stage.
        widths: base width (planes) per stage; a stage outputs `width * expansion` channels.
        stem: "imagenet" (7x7/2 + max-pool), "deep" (three 3x3, ResNet-C/D), "cifar" (one 3x3/1),
            "pool" (3x3/1 conv, 2x2 max-pool, then BN-ReLU: the first stage at half
            resolution, a quarter of its cost; used by the speed-run nets) or "bare" (7x7/2
            conv, then a 3x3/2 max-pool over zero padding, no norm or activation between: the
            first pre-activation block normalises; Keras' ResNetV2).
        stem_width: channels out of the stem.
        shortcut: "A" zero-pad identity, "B" 1x1 projection, "D" avg-pool + projection, "S"
            projection where the channels change, else subsampling (Keras' ResNetV2).
        groups, base_width: ResNeXt cardinality and width per group (wide nets: base_width 128).
        preact: full pre-activation blocks (He et al. 2016).
        skip: False builds the plain twin: the same layers without any shortcut.
        stride_on: where a stage halves the resolution: "3x3" (v1.5, torchvision), "1x1" (the
            2015 paper's bottleneck) or "pool" (a 2x2 max-pool in front of the stage's first
            block, whose convs and shortcut then run at stride 1, as airbench downsamples).
        dims: 2 for images (N, C, H, W); 3 for volumes (N, C, D, H, W): the same net with
            Conv3d/BatchNorm3d/MaxPool3d, its ImageNet stem a 7x7x7 conv strided (1, 2, 2) as
            in Hara et al. 2018 (the depth axis keeps its resolution until the max-pool).
        stride_at: which block of a stage halves the resolution: "first" (the papers': every
            stage but the first starts strided) or "last" (Keras' ResNetV2: every stage but the
            last ends strided; the same total reduction, one block earlier).
        conv_bias: which convs carry a bias: "none" (each feeds a norm; the papers'), "all"
            (Keras' v1 nets) or "unnormed" (those no norm follows directly; Keras' ResNetV2).
        norm_eps: the norms' epsilon (PyTorch's 1e-5; Keras' ResNets 1.001e-5).
    """

    block: str
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    stem: str = "imagenet"
    stem_width: int = 64
    shortcut: str = "B"
    groups: int = 1
    base_width: int = 64
    preact: bool = False
    skip: bool = True
    stride_on: str = "3x3"
    dims: int = 2
    stride_at: str = "first"
    conv_bias: str = "none"
    norm_eps: float = 1e-5

    def __post_init__(self):
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', not {self.block!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, not {self.stem!r}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"shortcut must be one of {', '.join(SHORTCUTS)}, not {self.shortcut!r}"
            )
        if self.stride_on not in ("3x3", "1x1", "pool"):
            raise ValueError(f"stride_on must be '3x3', '1x1' or 'pool', not {self.stride_on!r}")
        if len(self.depths) != len(self.widths) or len(self.depths) not in (3, 4):
            raise ValueError("depths and widths need one entry per stage, 3 or 4 stages")
        if min(self.depths) < 1 or min(self.widths) < 1:
            raise ValueError("every stage needs at least one block and one channel")
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 (images) or 3 (volumes), not {self.dims!r}")
        if self.stride_at not in ("first", "last"):
            raise ValueError(f"stride_at must be 'first' or 'last', not {self.stride_at!r}")
        if self.conv_bias not in CONV_BIASES:
            raise ValueError(
                f"conv_bias must be one of {', '.join(CONV_BIASES)}, not {self.conv_bias!r}"
            )
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be positive, not {self.norm_eps!r}")

    def block_strides(self) -> list[list[int]]:
        """Each block's stride, stage by stage (2 where the resolution halves, else 1)."""
        last = len(self.depths) - 1
        strides = [[1] * n for n in self.depths]
        for i, stage in enumerate(strides):
            if self.stride_at == "first" and i > 0:
                stage[0] = 2
            elif self.stride_at == "last" and i < last:
                stage[-1] = 2
        return strides

    @property
    def expansion(self) -> int:
        """Output channels per unit of width: 1 for basic blocks, 4 for bottlenecks."""
        return BLOCKS[(self.block, self.preact)].expansion

    @property
    def depth(self) -> int:
        """Weighted layers on the main path (convolutions + the classifier), as the papers count."""
        per_block = 2 if self.block == "basic" else 3
        stem = 3 if self.stem == "deep" else 1
        return per_block * sum(self.depths) + stem + 1

    def to_dict(self) -> dict:
        """The spec as plain data (lists, not tuples), for JSON and checkpoints."""
        d = dataclasses.asdict(self)
        d["depths"], d["widths"] = list(self.depths), list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ResNetSpec:
        """The spec `to_dict` wrote; unknown fields raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ResNetSpec fields: {', '.join(sorted(unknown))}")
        d = dict(d, depths=tuple(d["depths"]), widths=tuple(d["widths"]))
        return cls(**d)


def _stem_conv(
    spec: ResNetSpec, in_chans: int, small_input: bool, bias: bool, make_norm, make_act
) -> nn.Module:
    """The stem's conv(s): 7x7/2 (3x3/1 with `small_input`), three 3x3 (deep) or one 3x3/1."""
    sw, dims = spec.stem_width, spec.dims
    if spec.stem in ("imagenet", "bare"):
        if small_input:
            return conv3x3(in_chans, sw, dims=dims, bias=bias)
        return _imagenet_conv(in_chans, sw, dims, bias)
    if spec.stem == "deep":
        half = sw // 2
        return nn.Sequential(
            conv3x3(in_chans, half, 1 if small_input else 2, dims=dims, bias=bias),
            make_norm(half),
            make_act(),
            conv3x3(half, half, dims=dims, bias=bias),
            make_norm(half),
            make_act(),
            conv3x3(half, sw, dims=dims, bias=bias),
        )
    return conv3x3(in_chans, sw, dims=dims, bias=bias)


def _check_options(
    spec: ResNetSpec,
    num_classes: int,
    in_chans: int,
    *,
    small_input: bool,
    zero_init_residual: bool,
    rates: dict[str, float],
) -> None:
    """Refuses constructor options that contradict each other or the spec."""
    if num_classes < 0 or in_chans < 1:
        raise ValueError(f"need num_classes >= 0 and in_chans >= 1 (got {num_classes}, {in_chans})")
    for name, p in rates.items():
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {p}")
    if small_input and spec.stem in SMALL_STEMS:
        raise ValueError(
            "small_input applies to ImageNet stems; the "
            f"{'CIFAR' if spec.stem == 'cifar' else spec.stem} stem is already 3x3/1"
        )
    if zero_init_residual and not spec.skip:
        raise ValueError(
            "zero_init_residual would zero every block of a plain net: it has no skips"
        )


class ResidualClassifier(nn.Module):
    """What every residual classifier here shares (`ResNet`, 2-D or 3-D, and the video layout):
    its weight init, its stages in order, a replaceable head, activation checkpointing on/off.

    Subclasses set `stage_names`, `num_features`, `fc`, `options` and `grad_checkpointing`.
    """

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                # The ReLU gain for every activation (GELU/SiLU too), as torchvision and timm do:
                # each conv is followed by a norm layer, which undoes any scale error of the init.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # Keras' layouts: biases start at zero, as in Keras
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.fc, nn.Linear):
            # PyTorch's default Linear init (kept for parity with torchvision's numbers).
            bound = 1.0 / math.sqrt(self.fc.in_features)
            nn.init.uniform_(self.fc.weight, -bound, bound)
            nn.init.uniform_(self.fc.bias, -bound, bound)
        if zero_init_residual:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    def stages(self) -> list[nn.Sequential]:
        """The residual stages (`layer1`, `layer2`, ...) in order."""
        return [getattr(self, n) for n in self.stage_names]

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier with a fresh one of `num_classes` outputs (0: none)."""
        self.num_classes = num_classes
        self.options["num_classes"] = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turns recomputing activations in the backward pass on or off."""
        self.grad_checkpointing = enable
        self.options["grad_checkpointing"] = enable


class ResNet(ResidualClassifier):
    """A residual network (or its plain twin) with torchvision's parameter names.

    Args:
        spec: the architecture.
        num_classes: classifier outputs; 0 gives a model that returns pooled features.
        in_chans: input channels (1 for grey scans, N for multispectral images).
        small_input: for ImageNet stems, a 3x3 stride-1 first conv and no max-pool, so a
            28-64 px image is not shrunk 4x before the first block.
        zero_init_residual: start each residual branch at zero (Goyal et al. 2017).
        drop_path_rate: stochastic depth, rising linearly to this rate at the last block.
        block_dropout: dropout between a block's convolutions (Wide ResNets use 0.3).
        head_dropout: dropout before the classifier.
        norm: "batch" or "group" (GroupNorm, for tiny batches).
        act: "relu" (the papers'), "gelu" or "silu", everywhere the net has an activation.
        global_pool: "avg" (the papers'), "max" or "avgmax" (timm's mean of the two) before
            the classifier; none has parameters.
        grad_checkpointing: recompute activations in the backward pass (for 1000-layer nets).
    """

    __jit_ignored_attributes__ = ["spec", "options"]

    def __init__(
        self,
        spec: ResNetSpec,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        small_input: bool = False,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        block_dropout: float = 0.0,
        head_dropout: float = 0.0,
        norm: str = "batch",
        act: str = "relu",
        global_pool: str = "avg",
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        _check_options(
            spec,
            num_classes,
            in_chans,
            small_input=small_input,
            zero_init_residual=zero_init_residual,
            rates=dict(
                drop_path_rate=drop_path_rate,
                block_dropout=block_dropout,
                head_dropout=head_dropout,
            ),
        )
        self.spec = spec
        self.options = dict(
            num_classes=num_classes,
            in_chans=in_chans,
            small_input=small_input,
            zero_init_residual=zero_init_residual,
            drop_path_rate=drop_path_rate,
            block_dropout=block_dropout,
            head_dropout=head_dropout,
            norm=norm,
            act=act,
            global_pool=global_pool,
            grad_checkpointing=grad_checkpointing,
        )
        self.grad_checkpointing = grad_checkpointing
        make_norm = norm_factory(norm, spec.dims, spec.norm_eps)
        make_act = act_factory(act)
        reduction = self._build_stem(in_chans, small_input, make_norm, make_act)
        inplanes = self._build_stages(reduction, drop_path_rate, block_dropout, make_norm, make_act)
        self._build_head(inplanes, num_classes, global_pool, head_dropout, make_norm, make_act)
        self._init_weights(zero_init_residual)

    def _build_stem(self, in_chans: int, small_input: bool, make_norm, make_act) -> int:
        """Adds conv1, bn1, act1 and maxpool; returns the stem's total reduction."""
        # A pre-activation CIFAR net and the bare stem start with a conv alone: the first block
        # normalises.
        spec = self.spec
        sw, dims = spec.stem_width, spec.dims
        stride = 1 if small_input else 2
        bare_stem = spec.stem == "bare" or (spec.preact and spec.stem == "cifar")
        bias = conv_has_bias(spec.conv_bias, normed=not bare_stem)
        self.conv1 = _stem_conv(spec, in_chans, small_input, bias, make_norm, make_act)
        self.bn1 = nn.Identity() if bare_stem else make_norm(sw)
        self.act1 = nn.Identity() if bare_stem else make_act()
        has_pool = spec.stem != "cifar" and not small_input
        # The pool stem pools straight after its conv, as airbench does: BatchNorm and ReLU then
        # run on a quarter of the pixels (the full-resolution ones cost 16 % of a training step).
        self.pool_first = spec.stem == "pool"
        max_pool = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
        if spec.stem == "pool":
            self.maxpool = max_pool(2)
        elif spec.stem == "bare" and has_pool:
            self.maxpool = _zero_padded_max_pool(dims)
        else:
            self.maxpool = max_pool(3, 2, 1) if has_pool else nn.Identity()
        reduction = {"cifar": 1, "pool": 2}.get(spec.stem, stride)
        self.feature_info = [
            dict(num_chs=sw, reduction=reduction, module="conv1" if bare_stem else "act1")
        ]
        return reduction * (2 if has_pool and not self.pool_first else 1)

    def _build_stages(
        self, reduction: int, drop_path_rate: float, block_dropout: float, make_norm, make_act
    ) -> int:
        """Adds layer1..layer4 and their `feature_info`; returns the last stage's channels."""
        spec = self.spec
        block = BLOCKS[(spec.block, spec.preact)]
        total = sum(spec.depths)
        index = 0
        inplanes = spec.stem_width
        self.stage_names = []
        for i, (strides, width) in enumerate(zip(spec.block_strides(), spec.widths, strict=True)):
            blocks = []
            for stride in strides:
                rate = drop_path_rate * index / max(total - 1, 1)
                blocks.append(
                    block(
                        inplanes,
                        width,
                        stride,
                        norm=make_norm,
                        act=make_act,
                        shortcut=spec.shortcut,
                        groups=spec.groups,
                        base_width=spec.base_width,
                        stride_on_1x1=spec.stride_on == "1x1",
                        pool_downsample=spec.stride_on == "pool",
                        drop_path=rate,
                        drop_rate=block_dropout,
                        skip=spec.skip,
                        dims=spec.dims,
                        conv_bias=spec.conv_bias,
                    )
                )
                inplanes = width * block.expansion
                index += 1
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            reduction *= math.prod(strides)
            self.feature_info.append(dict(num_chs=inplanes, reduction=reduction, module=name))
        if len(spec.depths) == 3:
            self.layer4 = nn.Identity()  # CIFAR-style nets have three stages; no parameters here.
        return inplanes

    def _build_head(
        self,
        inplanes: int,
        num_classes: int,
        global_pool: str,
        head_dropout: float,
        make_norm,
        make_act,
    ) -> None:
        """Adds the final norm (pre-activation nets), the global pool and the classifier."""
        # Pre-activation nets normalise once more before pooling (the last block ends on a conv).
        preact = self.spec.preact
        self.final_norm = make_norm(inplanes) if preact else nn.Identity()
        self.final_act = make_act() if preact else nn.Identity()
        self.num_features = inplanes
        self.global_pool = GlobalPool(global_pool)
        self.head_drop = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.fc = nn.Linear(inplanes, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's output: first conv(s), norm, activation and pool."""
        if self.pool_first:
            return self.act1(self.bn1(self.maxpool(self.conv1(x))))
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))

    @torch.jit.unused
    def _checkpointed_stages(self, x: torch.Tensor) -> torch.Tensor:
        return checkpointed_stages(self.stages(), x, every_block=self.spec.dims == 3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (N, num_features, H', W'), before pooling."""
        x = self.forward_stem(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            x = self._checkpointed_stages(x)
        else:
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_act(self.final_norm(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features (`pre_logits`) or class logits from a feature map."""
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (or pooled features when the model has no head) for images `x`."""
        return self.forward_head(self.forward_features(x))
