"""The catalogue of known pretrained weights: the typed `Weights` record and its entries.

Data only: torchvision's, timm's and Keras' ResNet weights (where they are downloaded from, their
hash, eval preprocessing, accuracy, recipe and licence) and the look-ups `list_weights` and
`get_weights`. Downloading and reading the files is `weight_files`; loading them is `loading`.
The weights of torchvision's and timm's other classifiers ("tv:NAME", "timm:NAME" models) are
read from torchvision's Weights enums and timm's pretrained cfgs when asked for.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ResNetError
from ..normalization import (
    CAFFE_BGR_MEAN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
)
from .foreign import ForeignSpec, is_foreign, parse

IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
INCEPTION = (INCEPTION_MEAN, INCEPTION_STD)
FASHION_MNIST = "fashion-mnist"
SOURCES = ("torchvision", "timm", "keras")  # the catalogue's prefixes: "torchvision:TAG", ...
ALIASES = {"tv": "torchvision"}  # "tv:efficientnet_b0.IMAGENET1K_V1" is torchvision's
HUB_HASH = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's file-name hash: a SHA-256 prefix


@dataclass(frozen=True)
class Weights:
    """One known set of weights: where it comes from, how to check it, how to feed it.

    Attributes:
        name: the spec string, e.g. "torchvision:resnet50.IMAGENET1K_V2", "timm:resnet50.a1_in1k",
            "keras:resnet50".
        arch: the registered model these weights fit.
        source: "torchvision", "timm" or "keras".
        url: where the file is downloaded from.
        filename: the file's name in the cache (`$RESNET_CACHE/<source>/<filename>`).
        sha256: the SHA-256 hex digest, or the prefix of it the publisher records (torchvision
            records the first 8 hex digits in the file name and checks only those); None where no
            hash is published (timm's Hugging Face files): the first download's hash is then kept
            beside the file and later loads are checked against it. "md5:<32 hex digits>" where the
            publisher gives only an MD5 (Keras): checked in full, never as a prefix.
        num_classes: outputs of the classifier the weights carry.
        categories: "imagenet-1k" (names from torchvision, resolved by `classes()`) or names.
        preprocessing: the eval transform: {"in_chans", "size": [H, W], "mean", "std", "resize",
            "crop", "interpolation"}; resize is the shorter side before the centre crop. Weights
            that want BGR input add "channel_order": "bgr" (the transform flips RGB first; mean
            and std are then in BGR order). mean/std apply to [0, 1] pixels.
        top1, top5: ImageNet-1k accuracy (%) the publisher reports at that transform (None: not
            recorded here).
        recipe: where the training recipe is described.
        licence: the licence the publisher gives for the weights.
        hf_repo: the Hugging Face repository (timm weights).
        test_size: a larger eval size the publisher reports better results at (timm), or None.
    """

    name: str
    arch: str
    source: str
    url: str
    filename: str
    sha256: str | None
    num_classes: int
    categories: str | tuple[str, ...]
    preprocessing: dict = field(hash=False)
    top1: float | None = None
    top5: float | None = None
    recipe: str = ""
    licence: str = ""
    hf_repo: str | None = None
    test_size: int | None = None

    def cache_path(self, root: str | os.PathLike | None = None) -> Path:
        """Where the file lives in the cache: `<root or cache_dir()>/<source>/<filename>`."""
        return Path(root or cache_dir()) / self.source / self.filename

    def classes(self) -> list[str] | None:
        """Class names in output order (ImageNet names come from torchvision, imported lazily)."""
        if not isinstance(self.categories, str):
            return list(self.categories)
        if self.categories == "imagenet-1k":
            try:
                from torchvision.models import ResNet18_Weights  # only for the class names
            except ImportError:  # pragma: no cover - torchvision is a dependency
                return None
            return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
        return None


def _pre(size: int, resize: int, interpolation: str, norm=IMAGENET) -> dict:
    mean, std = norm
    return {
        "in_chans": 3,
        "size": [size, size],
        "mean": list(mean),
        "std": list(std),
        "resize": resize,
        "crop": size,
        "interpolation": interpolation,
    }


def keras_preprocessing(v2: bool) -> dict:
    """The eval transform Keras' ResNets expect, as [0, 1]-pixel mean/std.

    v1 ("caffe": `keras.applications.resnet.preprocess_input`): RGB -> BGR, minus the Caffe mean
    on 0-255 values, no scaling: mean = CAFFE_BGR_MEAN / 255, std = 1 / 255, at 224 px.
    v2 ("tf": `resnet_v2.preprocess_input`): x / 127.5 - 1, i.e. mean = std = 0.5, at 299 px, the
    size keras-applications reports their accuracy at. Resize: a 0.875 centre crop (the README
    says "single center crop" without the fraction; 0.875 is the usual one).
    """
    if v2:
        return _pre(299, math.floor(299 / 0.875), "bilinear", INCEPTION)
    caffe = (tuple(m / 255.0 for m in CAFFE_BGR_MEAN), (1.0 / 255.0,) * 3)
    return _pre(224, 256, "bilinear", caffe) | {"channel_order": "bgr"}


# torchvision/models/resnet.py (torchvision 0.29.1): arch, tag, file, acc@1, acc@5, eval resize
# (ImageClassification's resize_size; crop 224, bilinear), recipe. Licence: BSD-3-Clause (the
# torchvision repository); the V1 files carry only an 8-digit SHA-256 prefix, as torchvision's own.
_TV_RECIPE = "https://github.com/pytorch/vision/tree/main/references/classification#"
_TV_NEW = "https://github.com/pytorch/vision/issues/3995#new-recipe"
_TV_V1 = _TV_RECIPE + "resnet"
_TORCHVISION = (
    ("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 69.758, 89.078, 256, _TV_V1),
    ("resnet34", "IMAGENET1K_V1", "resnet34-b627a593.pth", 73.314, 91.42, 256, _TV_V1),
    ("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 76.13, 92.862, 256, _TV_V1),
    (
        "resnet50",
        "IMAGENET1K_V2",
        "resnet50-11ad3fa6.pth",
        80.858,
        95.434,
        232,
        "https://github.com/pytorch/vision/issues/3995#issuecomment-1013906621",
    ),
    ("resnet101", "IMAGENET1K_V1", "resnet101-63fe2227.pth", 77.374, 93.546, 256, _TV_V1),
    ("resnet101", "IMAGENET1K_V2", "resnet101-cd907fc2.pth", 81.886, 95.78, 232, _TV_NEW),
    ("resnet152", "IMAGENET1K_V1", "resnet152-394f9c45.pth", 78.312, 94.046, 256, _TV_V1),
    ("resnet152", "IMAGENET1K_V2", "resnet152-f82ba261.pth", 82.284, 96.002, 232, _TV_NEW),
    (
        "resnext50_32x4d",
        "IMAGENET1K_V1",
        "resnext50_32x4d-7cdf4587.pth",
        77.618,
        93.698,
        256,
        _TV_RECIPE + "resnext",
    ),
    (
        "resnext50_32x4d",
        "IMAGENET1K_V2",
        "resnext50_32x4d-1a0047aa.pth",
        81.198,
        95.34,
        232,
        _TV_NEW,
    ),
    (
        "resnext101_32x8d",
        "IMAGENET1K_V1",
        "resnext101_32x8d-8ba56ff5.pth",
        79.312,
        94.526,
        256,
        _TV_RECIPE + "resnext",
    ),
    (
        "resnext101_32x8d",
        "IMAGENET1K_V2",
        "resnext101_32x8d-110c445d.pth",
        82.834,
        96.228,
        232,
        _TV_NEW + "-with-fixres",
    ),
    (
        "resnext101_64x4d",
        "IMAGENET1K_V1",
        "resnext101_64x4d-173b62eb.pth",
        83.246,
        96.454,
        232,
        "https://github.com/pytorch/vision/pull/5935",
    ),
    (
        "wide_resnet50_2",
        "IMAGENET1K_V1",
        "wide_resnet50_2-95faca4d.pth",
        78.468,
        94.086,
        256,
        "https://github.com/pytorch/vision/pull/912#issue-445437439",
    ),
    (
        "wide_resnet50_2",
        "IMAGENET1K_V2",
        "wide_resnet50_2-9ba9bcbe.pth",
        81.602,
        95.758,
        232,
        _TV_NEW + "-with-fixres",
    ),
    (
        "wide_resnet101_2",
        "IMAGENET1K_V1",
        "wide_resnet101_2-32ee1156.pth",
        78.848,
        94.284,
        256,
        "https://github.com/pytorch/vision/pull/912#issue-445437439",
    ),
    (
        "wide_resnet101_2",
        "IMAGENET1K_V2",
        "wide_resnet101_2-d733dc28.pth",
        82.51,
        96.02,
        232,
        _TV_NEW,
    ),
)

# timm 1.0.31 pretrained cfgs of the tags whose architecture has exactly our keys and shapes
# (checked: resnet18/34/50/101/152, their -d twins, resnext, wide): arch, tag, input size,
# crop_pct, interpolation, mean/std, licence, test size. Files: hf.co/timm/<arch>.<tag>,
# model.safetensors. timm publishes no SHA-256 for them; accuracy is left to timm's results
# tables except the ResNet-strikes-back paper's resnet50 A1 (80.4 at 224 px).
APL, NC, BSD = "apache-2.0", "cc-by-nc-4.0", "bsd-3-clause"
CUBIC, LINEAR = "bicubic", "bilinear"
_TIMM = (
    ("resnet18", "a1_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet18", "a2_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet18", "a3_in1k", 160, 0.95, CUBIC, IMAGENET, APL, 224),
    ("resnet18", "fb_ssl_yfcc100m_ft_in1k", 224, 0.875, LINEAR, IMAGENET, NC, None),
    ("resnet18", "fb_swsl_ig1b_ft_in1k", 224, 0.875, LINEAR, IMAGENET, NC, None),
    ("resnet18", "gluon_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnet18", "tv_in1k", 224, 0.875, LINEAR, IMAGENET, BSD, None),
    ("resnet18d", "ra2_in1k", 224, 0.875, CUBIC, IMAGENET, APL, 288),
    ("resnet18d", "ra4_e3600_r224_in1k", 224, 0.9, CUBIC, INCEPTION, APL, 288),
    ("resnet34", "a1_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet34", "a2_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet34", "a3_in1k", 160, 0.95, CUBIC, IMAGENET, APL, 224),
    ("resnet34", "bt_in1k", 224, 0.875, CUBIC, IMAGENET, APL, 288),
    ("resnet34", "gluon_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnet34", "ra4_e3600_r224_in1k", 224, 0.9, CUBIC, INCEPTION, APL, 288),
    ("resnet34", "tv_in1k", 224, 0.875, LINEAR, IMAGENET, BSD, None),
    ("resnet34d", "ra2_in1k", 224, 0.875, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "a1_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "a1h_in1k", 176, 0.9, CUBIC, IMAGENET, APL, 224),
    ("resnet50", "a2_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "a3_in1k", 160, 0.95, CUBIC, IMAGENET, APL, 224),
    ("resnet50", "am_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnet50", "b1k_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "b2k_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "bt_in1k", 224, 0.875, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "c1_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "c2_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "d_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "fb_ssl_yfcc100m_ft_in1k", 224, 0.875, LINEAR, IMAGENET, NC, None),
    ("resnet50", "fb_swsl_ig1b_ft_in1k", 224, 0.875, LINEAR, IMAGENET, NC, None),
    ("resnet50", "gluon_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnet50", "ra_in1k", 224, 0.875, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "ram_in1k", 224, 0.875, CUBIC, IMAGENET, APL, 288),
    ("resnet50", "tv2_in1k", 176, 0.875, LINEAR, IMAGENET, BSD, 224),
    ("resnet50", "tv_in1k", 224, 0.875, LINEAR, IMAGENET, BSD, None),
    ("resnet50d", "a1_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet50d", "a2_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet50d", "a3_in1k", 160, 0.95, CUBIC, IMAGENET, APL, 224),
    ("resnet50d", "gluon_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnet50d", "ra2_in1k", 224, 0.875, CUBIC, IMAGENET, APL, 288),
    ("resnet50d", "ra4_e3600_r224_in1k", 224, 0.95, CUBIC, INCEPTION, APL, 288),
    ("resnet101", "a1_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet101", "a1h_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet101", "a2_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet101", "a3_in1k", 160, 0.95, CUBIC, IMAGENET, APL, 224),
    ("resnet101", "gluon_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnet101", "tv2_in1k", 176, 0.875, LINEAR, IMAGENET, BSD, 224),
    ("resnet101", "tv_in1k", 224, 0.875, LINEAR, IMAGENET, BSD, None),
    ("resnet101d", "gluon_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnet101d", "ra2_in1k", 256, 0.95, CUBIC, IMAGENET, APL, 320),
    ("resnet152", "a1_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet152", "a1h_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet152", "a2_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnet152", "a3_in1k", 160, 0.95, CUBIC, IMAGENET, APL, 224),
    ("resnet152", "gluon_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnet152", "tv2_in1k", 176, 0.875, LINEAR, IMAGENET, BSD, 224),
    ("resnet152", "tv_in1k", 224, 0.875, LINEAR, IMAGENET, BSD, None),
    ("resnet152d", "gluon_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnet152d", "ra2_in1k", 256, 0.95, CUBIC, IMAGENET, APL, 320),
    ("resnext50_32x4d", "a1_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnext50_32x4d", "a1h_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnext50_32x4d", "a2_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnext50_32x4d", "a3_in1k", 160, 0.95, CUBIC, IMAGENET, APL, 224),
    ("resnext50_32x4d", "fb_ssl_yfcc100m_ft_in1k", 224, 0.875, LINEAR, IMAGENET, NC, None),
    ("resnext50_32x4d", "fb_swsl_ig1b_ft_in1k", 224, 0.875, LINEAR, IMAGENET, NC, None),
    ("resnext50_32x4d", "gluon_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnext50_32x4d", "ra_in1k", 224, 0.875, CUBIC, IMAGENET, APL, 288),
    ("resnext50_32x4d", "tv2_in1k", 176, 0.875, LINEAR, IMAGENET, BSD, 224),
    ("resnext50_32x4d", "tv_in1k", 224, 0.875, LINEAR, IMAGENET, BSD, None),
    ("resnext101_32x8d", "fb_ssl_yfcc100m_ft_in1k", 224, 0.875, LINEAR, IMAGENET, NC, None),
    ("resnext101_32x8d", "fb_swsl_ig1b_ft_in1k", 224, 0.875, LINEAR, IMAGENET, NC, None),
    ("resnext101_32x8d", "fb_wsl_ig1b_ft_in1k", 224, 0.875, LINEAR, IMAGENET, NC, None),
    ("resnext101_32x8d", "tv2_in1k", 176, 0.875, LINEAR, IMAGENET, BSD, 224),
    ("resnext101_32x8d", "tv_in1k", 224, 0.875, LINEAR, IMAGENET, BSD, None),
    ("resnext101_64x4d", "c1_in1k", 224, 0.95, CUBIC, IMAGENET, APL, 288),
    ("resnext101_64x4d", "gluon_in1k", 224, 0.875, CUBIC, IMAGENET, APL, None),
    ("resnext101_64x4d", "tv_in1k", 224, 0.875, LINEAR, IMAGENET, BSD, None),
    ("wide_resnet50_2", "racm_in1k", 224, 0.875, CUBIC, IMAGENET, APL, 288),
    ("wide_resnet50_2", "tv2_in1k", 176, 0.875, LINEAR, IMAGENET, BSD, 224),
    ("wide_resnet50_2", "tv_in1k", 224, 0.875, LINEAR, IMAGENET, BSD, None),
    ("wide_resnet101_2", "tv2_in1k", 176, 0.875, LINEAR, IMAGENET, BSD, 224),
    ("wide_resnet101_2", "tv_in1k", 224, 0.875, LINEAR, IMAGENET, BSD, None),
)
_TIMM_TOP1 = {"resnet50.a1_in1k": 80.4}

# keras/src/applications/resnet.py (keras 3.15): the files Keras downloads for
# `weights="imagenet"` with the classifier, and the MD5 it checks them with (the first of its two
# WEIGHTS_HASHES; the second is the _notop file's). Keras publishes no SHA-256. Accuracy: the
# keras-applications README (single centre crop; v1 at 224 px, v2 at 299 px).
_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_KERAS = (
    ("resnet50", "2cb95161c43110f7111970584f804107", 74.928, 92.060),
    ("resnet101", "f1aeb4b969a6efcfb50fad2f0c20cfc5", 76.420, 92.786),
    ("resnet152", "100835be76be38e30d865e96f2aaae62", 76.604, 93.118),
    ("resnet50v2", "3ef43a0b657b3be2300d5770ece849e0", 75.960, 93.034),
    ("resnet101v2", "6343647c601c52e1368623803854d971", 77.234, 93.816),
    ("resnet152v2", "a49b44d1979771252814e80f8ec446f9", 78.032, 94.162),
)
_KERAS_RECIPE = {
    False: "He+ 2015's Caffe models, ported by keras-applications (caffe preprocessing)",
    True: "keras-applications ResNetV2 (inception preprocessing, [-1, 1])",
}
_TIMM_RECIPE = {
    "a1": "arXiv:2110.00476 (ResNet strikes back, A1)",
    "a2": "arXiv:2110.00476 (A2)",
    "a3": "arXiv:2110.00476 (A3)",
    "tv": "torchvision V1 weights re-hosted by timm",
    "tv2": "torchvision V2 weights re-hosted by timm",
}


def _torchvision_entries() -> tuple[dict[str, Weights], dict[str, str]]:
    table: dict[str, Weights] = {}
    defaults: dict[str, str] = {}
    for arch, tag, fname, top1, top5, resize, recipe in _TORCHVISION:
        name = f"torchvision:{arch}.{tag}"
        table[name] = Weights(
            name=name,
            arch=arch,
            source="torchvision",
            url=f"https://download.pytorch.org/models/{fname}",
            filename=fname,
            sha256=fname.rsplit("-", 1)[1].split(".")[0],
            num_classes=1000,
            categories="imagenet-1k",
            preprocessing=_pre(224, resize, "bilinear"),
            top1=top1,
            top5=top5,
            recipe=recipe,
            licence="BSD-3-Clause (torchvision)",
        )
        defaults[arch] = tag  # V2 where it exists: torchvision's DEFAULT
    return table, defaults


def _timm_entries() -> dict[str, Weights]:
    table: dict[str, Weights] = {}
    for arch, tag, size, crop_pct, interp, norm, licence, test_size in _TIMM:
        key = f"{arch}.{tag}"
        name = f"timm:{key}"
        repo = f"timm/{key}"
        table[name] = Weights(
            name=name,
            arch=arch,
            source="timm",
            url=f"https://huggingface.co/{repo}/resolve/main/model.safetensors",
            filename=f"{key}.safetensors",
            sha256=None,
            num_classes=1000,
            categories="imagenet-1k",
            preprocessing=_pre(size, math.floor(size / crop_pct), interp, norm),
            top1=_TIMM_TOP1.get(key),
            recipe=_TIMM_RECIPE.get(tag.split("_")[0], tag),
            licence=licence,
            hf_repo=repo,
            test_size=test_size,
        )
    return table


def _keras_entries() -> dict[str, Weights]:
    table: dict[str, Weights] = {}
    for key, md5, top1, top5 in _KERAS:
        v2 = key.endswith("v2")
        filename = f"{key}_weights_tf_dim_ordering_tf_kernels.h5"
        table[f"keras:{key}"] = Weights(
            name=f"keras:{key}",
            arch=f"keras_{key}",
            source="keras",
            url=_KERAS_URL + filename,
            filename=filename,
            sha256=f"md5:{md5}",
            num_classes=1000,
            categories="imagenet-1k",
            preprocessing=keras_preprocessing(v2),
            top1=top1,
            top5=top5,
            recipe=_KERAS_RECIPE[v2],
            licence="MIT (keras-applications)",
        )
    return table


def _build_catalogue() -> tuple[dict[str, Weights], dict[str, str]]:
    table, defaults = _torchvision_entries()
    table.update(_timm_entries())
    table.update(_keras_entries())
    return table, defaults


WEIGHTS, DEFAULT_TAGS = _build_catalogue()


def cache_dir() -> Path:
    """`$RESNET_CACHE`, else `~/.cache/resnet`."""
    return Path(os.environ.get("RESNET_CACHE") or Path.home() / ".cache" / "resnet").expanduser()


def list_weights(pattern: str = "*") -> list[str]:
    """Known weight names matching a shell pattern ("torchvision:*", "*resnet50*")."""
    return [n for n in WEIGHTS if fnmatch.fnmatchcase(n, pattern)]


def is_catalogue_spec(spec: str) -> bool:
    """True when `spec` names catalogued weights ("torchvision:...", "tv:...", "timm:...",
    "keras:...")."""
    prefix = spec.split(":", 1)[0].strip().lower()
    return prefix in SOURCES or prefix in ALIASES


def _keras_weights(spec: str, tag: str, arch: str | None) -> Weights:
    """The Keras entry "keras:resnet50" names, checked against the model it goes into."""
    name = f"keras:{tag.strip().lower()}"
    if name not in WEIGHTS:
        known = ", ".join(n.split(":", 1)[1] for n in list_weights("keras:*"))
        raise ResNetError(f"unknown weights {spec!r}; Keras has {known}")
    w = WEIGHTS[name]
    if arch and arch != w.arch:
        raise ResNetError(f"{name} are weights for {w.arch}, not for {arch}")
    return w


def _split_tag(tag: str) -> tuple[str | None, str]:
    """`(arch or None, tag)` of "ARCH.TAG", "TAG" or torchvision's "ResNet50_Weights.TAG"."""
    if "_Weights." in tag:  # torchvision's own spelling, ResNet50_Weights.IMAGENET1K_V2
        tag_arch, tag = tag.split("_Weights.", 1)
        return tag_arch.lower(), tag
    if "." in tag:
        tag_arch, tag = tag.split(".", 1)
        return tag_arch, tag
    return None, tag


def _library_net(source: str, arch: str) -> ForeignSpec | None:
    """The torchvision / timm net "SOURCE:ARCH.TAG" weights are for, where the catalogue has no
    entry of ours for ARCH and the library has a net of that name."""
    if any(w.source == source and w.arch == arch for w in WEIGHTS.values()):
        return None
    prefix = "tv" if source == "torchvision" else "timm"
    try:
        return parse(f"{prefix}:{arch}")
    except ResNetError:
        return None


def get_weights(spec: str, arch: str | None = None) -> Weights:
    """The catalogue entry a spec names.

    Args:
        spec: "torchvision:IMAGENET1K_V2", "torchvision:DEFAULT" (needs `arch`),
            "torchvision:resnet50.IMAGENET1K_V2", "timm:resnet50.a1_in1k", "timm:a1_in1k"
            (needs `arch`), or "keras:resnet50" (Keras' names: resnet50 ... resnet152v2). For
            torchvision's and timm's other nets: "torchvision:efficientnet_b0.IMAGENET1K_V1"
            ("tv:" works too), "timm:efficientnet_b0.ra_in1k", or DEFAULT with the net as `arch`.
        arch: the model the weights are for (a registered name, or "tv:NAME" / "timm:NAME").
    """
    source, _, tag = spec.partition(":")
    source = source.strip().lower()
    source = ALIASES.get(source, source)
    if source not in SOURCES or not tag:
        raise ResNetError(
            f"unknown weights {spec!r}: use torchvision:TAG, timm:ARCH.TAG, keras:NAME, a file "
            f"path or {FASHION_MNIST!r}"
        )
    if source == "keras":
        return _keras_weights(spec, tag, arch)
    tag_arch, tag = _split_tag(tag.strip())
    if arch and is_foreign(arch):
        return _foreign_weights(spec, source, tag_arch, tag, parse(arch))
    if tag_arch and arch and tag_arch != arch:
        raise ResNetError(f"{spec} are weights for {tag_arch}, not for {arch}")
    if tag_arch and not arch and (net := _library_net(source, tag_arch)):
        return _foreign_weights(spec, source, tag_arch, tag, net)
    arch = tag_arch or arch
    if arch is None:
        raise ResNetError(f"weights {spec!r} name no model: write {source}:ARCH.{tag}")
    if source == "torchvision":
        tag = tag.upper()
        if tag == "DEFAULT":
            if arch not in DEFAULT_TAGS:
                raise ResNetError(
                    f"torchvision has no weights for {arch}; it has them for "
                    f"{', '.join(DEFAULT_TAGS)}"
                )
            tag = DEFAULT_TAGS[arch]
    name = f"{source}:{arch}.{tag}"
    if name not in WEIGHTS:
        known = [n.split(".", 1)[1] for n in list_weights(f"{source}:{arch}.*")]
        hint = f"known for {arch}: {', '.join(known)}" if known else f"{source} has none for {arch}"
        raise ResNetError(f"unknown weights {name}; {hint}")
    return WEIGHTS[name]


# ---------------------------------------------------------------------------------------------
# The weights of torchvision's and timm's other classifiers, read from the libraries when asked.


def _foreign_weights(
    spec: str, source: str, tag_arch: str | None, tag: str, net: ForeignSpec
) -> Weights:
    """The weights `spec` names for the torchvision / timm net `net`."""
    if net.library != source:
        raise ResNetError(f"{spec} are {source} weights; {net.arch} is a {net.library} model")
    if tag_arch and tag_arch.lower() != net.name.lower():
        raise ResNetError(f"{spec} are weights for {source}:{tag_arch}, not for {net.arch}")
    return _torchvision_weights(net, tag) if net.source == "tv" else _timm_weights(net, tag)


def _torchvision_weights(net: ForeignSpec, tag: str) -> Weights:
    """An entry from torchvision's Weights enum: its URL, the SHA-256 prefix in its file name
    (what torchvision's loader checks), its eval transform, categories and accuracy."""
    import torchvision  # heavy: only when a tv: net's weights are asked for

    try:
        enum = torchvision.models.get_model_weights(net.name)
    except ValueError:
        raise ResNetError(f"torchvision publishes no weights for {net.arch}") from None
    try:
        w = enum[tag.strip().upper()]
    except KeyError:
        known = ", ".join([m.name for m in enum] + ["DEFAULT"])
        raise ResNetError(
            f"unknown weights torchvision:{net.name}.{tag}; known for {net.arch}: {known}"
        ) from None
    filename = w.url.rsplit("/", 1)[-1]
    digest = HUB_HASH.search(filename)
    t = w.transforms()
    metrics = w.meta.get("_metrics", {}).get("ImageNet-1K", {})
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    norm = (tuple(t.mean), tuple(t.std))
    return Weights(
        name=f"torchvision:{net.name}.{w.name}",
        arch=net.arch,
        source="torchvision",
        url=w.url,
        filename=filename,
        sha256=digest.group(1) if digest else None,
        num_classes=len(w.meta["categories"]),
        categories=tuple(w.meta["categories"]),
        preprocessing=_pre(crop, resize, t.interpolation.value, norm),
        top1=metrics.get("acc@1"),
        top5=metrics.get("acc@5"),
        recipe=w.meta.get("recipe", ""),
        licence=w.meta.get("license") or "BSD-3-Clause (torchvision)",
    )


def _timm_cfg(net: ForeignSpec, tag: str):
    """timm's pretrained cfg for `net` and `tag` (DEFAULT: timm's default tag)."""
    from timm.models import get_pretrained_cfg  # optional: only for a timm: net's weights

    key = net.name if tag.upper() == "DEFAULT" else f"{net.name}.{tag}"
    try:
        cfg = get_pretrained_cfg(key)
    except RuntimeError:
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        import timm

        known = ", ".join(n.split(".", 1)[1] for n in timm.list_pretrained(f"{net.name}.*"))
        raise ResNetError(
            f"unknown weights timm:{key}; "
            + (f"known for {net.arch}: {known}" if known else f"timm has none for {net.arch}")
        )
    if cfg.custom_load:
        raise ResNetError(f"timm:{net.name}.{cfg.tag} loads through timm's own converter")
    return cfg


def _timm_weights(net: ForeignSpec, tag: str) -> Weights:
    """An entry from timm's pretrained cfg: the Hugging Face file (no published hash: the first
    download's is kept and checked after), or the release URL with its SHA-256 prefix."""
    cfg = _timm_cfg(net, tag)
    key = f"{net.name}.{cfg.tag}"
    if cfg.hf_hub_id:
        file = cfg.hf_hub_filename or "model.safetensors"
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{file}"
        filename, digest = f"{key}{os.path.splitext(file)[1]}", None
    else:
        url = cfg.url
        filename = url.rsplit("/", 1)[-1]
        found = HUB_HASH.search(filename)
        digest = found.group(1) if found else None
    size = int(cfg.input_size[-1])
    pre = _pre(size, math.floor(size / cfg.crop_pct), cfg.interpolation, (cfg.mean, cfg.std)) | {
        "in_chans": int(cfg.input_size[0])
    }
    return Weights(
        name=f"timm:{key}",
        arch=net.arch,
        source="timm",
        url=url,
        filename=filename,
        sha256=digest,
        num_classes=int(cfg.num_classes),
        categories="imagenet-1k" if cfg.num_classes == 1000 else "unknown",
        preprocessing=pre,
        recipe=cfg.paper_name or cfg.origin_url or _TIMM_RECIPE.get(cfg.tag.split("_")[0], cfg.tag),
        licence=cfg.license or "",
        hf_repo=cfg.hf_hub_id,
        test_size=int(cfg.test_input_size[-1]) if cfg.test_input_size else None,
    )
