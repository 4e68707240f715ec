"""torchvision's video ResNets (R3D, MC3, R(2+1)D; Tran et al. 2018) as data, in its layout.

Their parameter names (`stem.0`, `layer1.0.conv1.0`, `downsample`, `fc`) differ from the image
nets' (`conv1`, `bn1`, `layer1.0.conv1`), so they are their own spec kind and module; the
registry holds them beside the rest, with plain twins (the same spec with skips off). Their
`state_dict` is torchvision's key for key, so `r3d_18` etc. load its Kinetics-400 weights strictly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from .layers import GlobalPool
from .resnet import ResidualClassifier, checkpointed_stages

VIDEO_CONVS = ("3d", "2d", "2plus1d")
VIDEO_STEMS = ("3d", "2plus1d")
_R2PLUS1D_STEM_MID = 45  # the (2+1)-D stem's middle width, as torchvision and the paper have it
# Options of `ResNet` that the video layout does not implement: only their defaults are taken.
_FIXED_OPTIONS = dict(
    small_input=False,
    drop_path_rate=0.0,
    block_dropout=0.0,
    norm="batch",
    act="relu",
    global_pool="avg",
)


@dataclass(frozen=True)
class VideoResNetSpec:
    """A torchvision-layout video ResNet. Variants are data, as for `ResNetSpec`.

    Attributes:
        convs: per stage, the block convolution: "3d" (3x3x3, R3D), "2d" (1x3x3, no temporal
            extent: MC3's upper stages) or "2plus1d" (1x3x3 then 3x1x1 with a norm and ReLU
            between, R(2+1)D; the middle width keeps the 3x3x3 conv's parameter count).
        stem: "3d" (3x7x7 conv strided (1, 2, 2)) or "2plus1d" (1x7x7 to 45 channels, then 3x1x1).
        depths: blocks per stage.
        widths: channels per stage.
        skip: False builds the plain twin: the same layers without any shortcut.
        block, shortcut: fixed ("basic", "B"); present so code reading any spec finds them.
    """

    convs: tuple[str, ...]
    stem: str = "3d"
    depths: tuple[int, ...] = (2, 2, 2, 2)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    skip: bool = True
    block: str = "basic"
    shortcut: str = "B"

    def __post_init__(self):
        if any(c not in VIDEO_CONVS for c in self.convs):
            raise ValueError(f"convs must each be one of {', '.join(VIDEO_CONVS)}: {self.convs}")
        if self.stem not in VIDEO_STEMS:
            raise ValueError(f"video stem must be one of {', '.join(VIDEO_STEMS)}")
        if not len(self.convs) == len(self.depths) == len(self.widths) == 4:
            raise ValueError("video nets have four stages: one conv kind, depth and width each")
        if min(self.depths) < 1 or min(self.widths) < 1:
            raise ValueError("every stage needs at least one block and one channel")
        if self.block != "basic" or self.shortcut != "B":
            raise ValueError(
                "video nets implement basic blocks with projection (B) shortcuts only, "
                "torchvision's layout, so its weights load"
            )

    dims = 3  # input (N, C, T or D, H, W)
    expansion = 1

    @property
    def depth(self) -> int:
        """Weighted layers on the main path, counting a (2+1)-D pair as one, as torchvision does."""
        return 2 * sum(self.depths) + 2

    def to_dict(self) -> dict:
        """The spec as plain data, tagged `kind: video` (see `registry.spec_from_dict`)."""
        d = dataclasses.asdict(self)
        d.update(kind="video", convs=list(self.convs))
        d.update(depths=list(self.depths), widths=list(self.widths))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VideoResNetSpec:
        """The spec `to_dict` wrote; unknown fields raise ValueError."""
        d = {k: v for k, v in d.items() if k != "kind"}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown VideoResNetSpec fields: {', '.join(sorted(unknown))}")
        for key in ("convs", "depths", "widths"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def _conv(kind: str, cin: int, cout: int, mid: int, stride: int = 1) -> nn.Module:
    """A block convolution of `kind` (VIDEO_CONVS), torchvision's Conv3DSimple etc.; `mid` is
    the (2+1)-D pair's middle width."""
    if kind == "3d":
        return nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
    if kind == "2d":
        return nn.Conv3d(cin, cout, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
    return nn.Sequential(
        nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False),
    )


class VideoBlock(nn.Module):
    """torchvision's video BasicBlock: conv1 = (conv, BN, ReLU), conv2 = (conv, BN), ReLU after
    the addition. With `skip=False` the block of the plain twin (no shortcut, no projection)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, conv: str, stride: int = 1, skip: bool = True):
        super().__init__()
        self.skip = skip
        # Tran et al. 2018: the middle width gives a (2+1)-D pair about a 3x3x3 conv's
        # parameters; torchvision computes it once per block, from the block's first conv.
        mid = (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)
        self.conv1 = nn.Sequential(
            _conv(conv, inplanes, planes, mid, stride),
            nn.BatchNorm3d(planes),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(_conv(conv, planes, planes, mid), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if skip and (stride != 1 or inplanes != planes):
            # MC3's 2-D stages keep the time axis: their projection strides (1, s, s) too.
            ds_stride = (1, stride, stride) if conv == "2d" else (stride,) * 3
            self.downsample = nn.Sequential(
                nn.Conv3d(inplanes, planes, 1, stride=ds_stride, bias=False),
                nn.BatchNorm3d(planes),
            )

    def last_layer(self) -> nn.Module:
        """The layer `zero_init_last` zeroes: the residual branch's last norm."""
        return self.conv2[1]

    def zero_init_last(self) -> None:
        """Zeroes the last norm: the block starts as the identity (Goyal et al. 2017)."""
        nn.init.zeros_(self.last_layer().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output for `x`: the residual branch plus the shortcut."""
        out = self.conv2(self.conv1(x))
        if self.skip:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


def _stem(kind: str, in_chans: int, width: int) -> nn.Sequential:
    """torchvision's BasicStem ("3d") or R2Plus1dStem ("2plus1d"), for `in_chans` channels."""
    if kind == "3d":
        return nn.Sequential(
            nn.Conv3d(in_chans, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
    mid = _R2PLUS1D_STEM_MID
    return nn.Sequential(
        nn.Conv3d(in_chans, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, (3, 1, 1), 1, (1, 0, 0), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


def _check_fixed(options: dict) -> None:
    """Refuses `ResNet` options the video layout does not implement (their defaults pass)."""
    for key, value in options.items():
        if key not in _FIXED_OPTIONS:
            raise TypeError(f"VideoResNet got an unexpected option {key!r}")
        if value != _FIXED_OPTIONS[key]:
            raise ValueError(
                f"{key}={value!r} is not implemented for the video nets: their layout is "
                "torchvision's, so its weights load"
            )


class VideoResNet(ResidualClassifier):
    """A torchvision-layout video ResNet (or its plain twin); input (N, C, T, H, W).

    Args:
        spec: the architecture.
        num_classes: classifier outputs; 0 gives a model that returns pooled features.
        in_chans: input channels (3 for RGB clips, 1 for a grey volume).
        zero_init_residual: start each residual branch at zero (Goyal et al. 2017).
        head_dropout: dropout before the classifier.
        grad_checkpointing: recompute each block's activations in the backward pass.
        **fixed: the other `ResNet` options, accepted at their defaults only.
    """

    __jit_ignored_attributes__ = ["spec", "options"]

    def __init__(
        self,
        spec: VideoResNetSpec,
        num_classes: int = 400,
        in_chans: int = 3,
        *,
        zero_init_residual: bool = False,
        head_dropout: float = 0.0,
        grad_checkpointing: bool = False,
        **fixed,
    ):
        super().__init__()
        _check_fixed(fixed)
        if num_classes < 0 or in_chans < 1:
            raise ValueError(
                f"need num_classes >= 0 and in_chans >= 1 (got {num_classes}, {in_chans})"
            )
        if zero_init_residual and not spec.skip:
            raise ValueError(
                "zero_init_residual would zero every block of a plain net: it has no skips"
            )
        self.spec = spec
        self.options = dict(
            num_classes=num_classes,
            in_chans=in_chans,
            zero_init_residual=zero_init_residual,
            head_dropout=head_dropout,
            grad_checkpointing=grad_checkpointing,
        )
        self.grad_checkpointing = grad_checkpointing
        self.stem = _stem(spec.stem, in_chans, spec.widths[0])
        self.feature_info = [dict(num_chs=spec.widths[0], reduction=2, module="stem")]
        self._build_stages()
        self.num_features = spec.widths[-1]
        self.global_pool = GlobalPool("avg")
        self.head_drop = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes
        self._init_weights(zero_init_residual)

    def _build_stages(self) -> None:
        """Adds layer1..layer4 and their `feature_info`."""
        spec = self.spec
        inplanes, reduction = spec.widths[0], 2
        self.stage_names = []
        for i, (conv, n, width) in enumerate(
            zip(spec.convs, spec.depths, spec.widths, strict=True)
        ):
            stride = 1 if i == 0 else 2
            blocks = [
                VideoBlock(
                    inplanes if j == 0 else width, width, conv, stride if j == 0 else 1, spec.skip
                )
                for j in range(n)
            ]
            inplanes, reduction = width, reduction * stride
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=name))

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's output."""
        return self.stem(x)

    @torch.jit.unused
    def _checkpointed_stages(self, x: torch.Tensor) -> torch.Tensor:
        return checkpointed_stages(self.stages(), x, every_block=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (N, num_features, T', H', W'), before pooling."""
        x = self.stem(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return self._checkpointed_stages(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features (`pre_logits`) or class logits from a feature map."""
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (or pooled features when the model has no head) for clips `x`."""
        return self.forward_head(self.forward_features(x))
