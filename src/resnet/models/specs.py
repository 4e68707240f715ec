"""Every ResNet of the literature as data: one spec and one registered name per variant.

Importing this module fills the registry; each residual net is registered with its plain twin.
"""

from __future__ import annotations

import dataclasses

from .registry import ModelEntry, plain_name, register
from .resnet import SMALL_STEMS, ResNetSpec
from .video import VideoResNetSpec

HE2015 = "He+ 2015 Deep Residual Learning, arXiv:1512.03385"
HE2016 = "He+ 2016 Identity Mappings, arXiv:1603.05027"
XIE2017 = "Xie+ 2017 ResNeXt, arXiv:1611.05431"
ZAGORUYKO2016 = "Zagoruyko+ 2016 Wide ResNets, arXiv:1605.07146"
HE2019 = "He+ 2019 Bag of Tricks (ResNet-D), arXiv:1812.01187"
TORCHVISION = "He+ 2015, v1.5 (stride on 3x3, torchvision)"
HARA2018 = "Hara+ 2018 3D ResNets, arXiv:1711.09577 (MONAI/MedicalNet resnet)"
TRAN2018 = "Tran+ 2018 R(2+1)D, arXiv:1711.11248 (torchvision video)"
KERAS_V1 = "He+ 2015 v1 as Keras applications build it (keras.applications.ResNet50/101/152)"
KERAS_V2 = "He+ 2016 pre-activation as Keras applications build it (ResNet50V2/101V2/152V2)"

IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


def _add(
    name: str,
    spec: ResNetSpec | VideoResNetSpec,
    family: str,
    paper: str,
    *,
    depth: int | None = None,
    plain_twin: bool = True,
    input_size: int | tuple[int, ...] | None = None,
    num_classes: int | None = None,
    **defaults,
) -> None:
    imagenet = spec.stem not in SMALL_STEMS
    common = dict(
        family=family,
        paper=paper,
        input_size=input_size or (224 if imagenet else 32),
        num_classes=num_classes or (1000 if imagenet else 10),
        depth=depth or spec.depth,
        defaults=tuple(sorted(defaults.items())),
    )
    register(ModelEntry(name=name, spec=spec, **common))
    if plain_twin:
        twin = dataclasses.replace(spec, skip=False)
        register(ModelEntry(name=plain_name(name), spec=twin, **common))


def _imagenet(block: str, depths: tuple[int, ...], **kw) -> ResNetSpec:
    return ResNetSpec(block=block, depths=depths, widths=IMAGENET_WIDTHS, **kw)


# ImageNet family (v1.5, torchvision names and weights).
for d, (block, depths) in IMAGENET_DEPTHS.items():
    _add(f"resnet{d}", _imagenet(block, depths), "imagenet", TORCHVISION)
# The 2015 paper's original bottleneck: stride on the first 1x1.
for d in (50, 101, 152):
    block, depths = IMAGENET_DEPTHS[d]
    _add(f"resnet{d}_v1", _imagenet(block, depths, stride_on="1x1"), "imagenet", HE2015)
# ResNet-D: deep 3x3 stem (32-32-64) and average-pool downsampling (timm's resnet*d layout).
for d in (18, 34, 50, 101, 152):
    block, depths = IMAGENET_DEPTHS[d]
    _add(f"resnet{d}d", _imagenet(block, depths, stem="deep", shortcut="D"), "imagenet", HE2019)
# ResNeXt: grouped 3x3 in the bottleneck.
for name, d, groups, width in (
    ("resnext50_32x4d", 50, 32, 4),
    ("resnext101_32x8d", 101, 32, 8),
    ("resnext101_64x4d", 101, 64, 4),
):
    _add(
        name,
        _imagenet("bottleneck", IMAGENET_DEPTHS[d][1], groups=groups, base_width=width),
        "resnext",
        XIE2017,
    )
# Wide ImageNet nets: bottlenecks twice as wide inside.
for d in (50, 101):
    _add(
        f"wide_resnet{d}_2",
        _imagenet("bottleneck", IMAGENET_DEPTHS[d][1], base_width=128),
        "wide",
        ZAGORUYKO2016,
    )

# Keras' applications (keras/src/applications/resnet.py, resnet_v2.py), so their .h5/.keras
# weights load one to one (`keras_weights`). BatchNorm eps 1.001e-5 everywhere. The conv biases
# stay parameters rather than being folded into the next BatchNorm's running mean (exact only in
# eval): that keeps Keras' parameter counts and makes fine-tuning behave as in Keras.
KERAS_EPS = 1.001e-5
# v1 (ResNet50/101/152): the 2015 paper's bottleneck (stride on the first 1x1) with a bias on
# every conv; Keras' zero-padded stem pool equals ours, since it pools after a ReLU.
for d in (50, 101, 152):
    block, depths = IMAGENET_DEPTHS[d]
    spec = _imagenet(block, depths, stride_on="1x1", conv_bias="all", norm_eps=KERAS_EPS)
    _add(f"keras_resnet{d}", spec, "keras", KERAS_V1)
# ResNetV2: pre-activation bottlenecks striding their 3x3 in the last block of each stage but the
# last; a bare 7x7/2 stem (bias, no norm) and a zero-padded pool; projections only where the
# channels change (the first block), a 1x1 max-pool on a strided block; biases where no norm
# follows (stem, each block's last conv, projections); a final norm-ReLU before the pool.
for d in (50, 101, 152):
    block, depths = IMAGENET_DEPTHS[d]
    spec = _imagenet(
        block,
        depths,
        preact=True,
        stem="bare",
        shortcut="S",
        stride_at="last",
        conv_bias="unnormed",
        norm_eps=KERAS_EPS,
    )
    _add(f"keras_resnet{d}v2", spec, "keras_v2", KERAS_V2)

# CIFAR family (paper section 4.2): 6n+2 layers, widths 16/32/64, option-A shortcuts.
for n in (3, 5, 7, 9, 18, 200):
    spec = ResNetSpec("basic", (n, n, n), CIFAR_WIDTHS, stem="cifar", stem_width=16, shortcut="A")
    _add(f"resnet{6 * n + 2}", spec, "cifar", HE2015)
    # Option B (projection when the shape changes); its plain twin is the option-A one.
    _add(
        f"resnet{6 * n + 2}_b",
        dataclasses.replace(spec, shortcut="B"),
        "cifar",
        HE2015,
        plain_twin=False,
    )

# Pre-activation (Identity Mappings, 2016): ImageNet depths and the CIFAR 110/164/1001.
for d, (block, depths) in IMAGENET_DEPTHS.items():
    if d != 200:
        _add(f"preact_resnet{d}", _imagenet(block, depths, preact=True), "preact", HE2016)
for name, block, n in (
    ("preact_resnet110", "basic", 18),
    ("preact_resnet164", "bottleneck", 18),
    ("preact_resnet1001", "bottleneck", 111),
):
    spec = ResNetSpec(block, (n, n, n), CIFAR_WIDTHS, stem="cifar", stem_width=16, preact=True)
    _add(name, spec, "preact", HE2016)

# Wide ResNets WRN-d-k: pre-activation basic blocks, (d-4)/6 per stage, widths 16k/32k/64k.
for d, k in ((16, 4), (16, 8), (28, 10), (40, 2), (40, 4)):
    n = (d - 4) // 6
    spec = ResNetSpec(
        "basic", (n, n, n), (16 * k, 32 * k, 64 * k), stem="cifar", stem_width=16, preact=True
    )
    _add(f"wrn_{d}_{k}", spec, "wrn", ZAGORUYKO2016, depth=d)

# Speed-run nets (this project, docs/recipes.md): a 3x3/1 conv, a 2x2 max-pool, then BN-ReLU, so
# the first stage runs at half resolution (a quarter of its cost), and wider stages than the
# CIFAR family's 16/32/64: on a CPU the cost per image, not the parameter count, limits speed.
SPEEDRUN = "this project's Fashion-MNIST speed run (docs/recipes.md)"
_fast = {}
for name, depths, widths, stem_width in (
    ("fast_resnet8_24", (1, 1, 1), (24, 48, 96), 16),  # 24/48/96: the lightest speed-run net
    ("fast_resnet8_32", (1, 1, 1), (32, 64, 128), 16),  # 32/64/128: the wider speed-run net
    ("fast_resnet8", (1, 1, 1), (48, 96, 192), 32),
    ("fast_resnet8_64", (1, 1, 1), (64, 128, 256), 32),
    ("fast_resnet14", (2, 2, 2), (32, 64, 128), 32),
):
    _fast[name] = ResNetSpec("basic", depths, widths, stem="pool", stem_width=stem_width)
    _add(name, _fast[name], "fast", SPEEDRUN)
# Their `p` twins downsample by a 2x2 max-pool in front of stages 2 and 3 (every conv at stride 1,
# airbench's way): the same parameters and MACs, 1.1-1.2x faster to train here (measured for the
# 24- and 32-wide nets).
for name in ("fast_resnet8_32", "fast_resnet8_24", "fast_resnet8", "fast_resnet8_64"):
    _add(f"{name}p", dataclasses.replace(_fast[name], stride_on="pool"), "fast", SPEEDRUN)

# 3-D ResNets for volumes (Hara et al. 2018; MONAI's and MedicalNet's `resnet10`..`resnet200`):
# the ImageNet family with Conv3d, a 7x7x7 stem strided (1, 2, 2), 3x3x3 max-pool, projection (B)
# shortcuts without bias (Hara's and MedicalNet's; MONAI's default adds a bias to each projection
# conv: `bias_downsample=True`). Kinetics' 400 classes by default, as MONAI; MACs at 32x64x64.
for d, (block, depths) in {10: ("basic", (1, 1, 1, 1)), **IMAGENET_DEPTHS}.items():
    _add(
        f"resnet{d}_3d",
        _imagenet(block, depths, dims=3),
        "resnet3d",
        HARA2018,
        input_size=(32, 64, 64),
        num_classes=400,
    )
# torchvision's video nets (Kinetics-400, 16x112x112 clips): R3D (3x3x3 everywhere), MC3 (3-D
# first stage, 1x3x3 after: "mixed convolutions") and R(2+1)D (each 3x3x3 split in two).
for name, convs, stem in (
    ("r3d_18", ("3d",) * 4, "3d"),
    ("mc3_18", ("3d", "2d", "2d", "2d"), "3d"),
    ("r2plus1d_18", ("2plus1d",) * 4, "2plus1d"),
):
    spec = VideoResNetSpec(convs, stem=stem)
    _add(name, spec, "video", TRAN2018, input_size=(16, 112, 112), num_classes=400)
