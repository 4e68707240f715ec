"""Known pretrained weights (typed registry), their download and cache, and the one loader.

`load_weights(model, source)` adapts torchvision and timm key layouts, DDP / compile prefixes,
`in_chans` != 3 and a different head, and reads only tensors (`weights_only=True` or
safetensors). Nothing here imports more than torch at import time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ResNetError
from ..normalization import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD
from ..storage import sha256_file, torch_load_safe

log = logging.getLogger("resnet.weights")

IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
INCEPTION = (INCEPTION_MEAN, INCEPTION_STD)
CHECKPOINT_FORMAT = "resnet-checkpoint"  # engine/checkpoint.py header; models must not import it
PACKAGE_FORMAT = "resnet-weights"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / "weights"
FASHION_MNIST = "fashion-mnist"
PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / torch.compile wrappers
HEAD = ("fc.weight", "fc.bias")


@dataclass(frozen=True)
class Weights:
    """One known set of weights: where it comes from, how to check it, how to feed it.

    Attributes:
        name: the spec string, e.g. "torchvision:resnet50.IMAGENET1K_V2", "timm:resnet50.a1_in1k".
        arch: the registered model these weights fit.
        source: "torchvision" or "timm".
        url: where the file is downloaded from.
        filename: the file's name in the cache (`$RESNET_CACHE/<source>/<filename>`).
        sha256: the SHA-256 hex digest, or the prefix of it the publisher records (torchvision
            records the first 8 hex digits in the file name and checks only those); None where no
            hash is published (timm's Hugging Face files): the first download's hash is then kept
            beside the file and later loads are checked against it.
        num_classes: outputs of the classifier the weights carry.
        categories: "imagenet-1k" (names from torchvision, resolved by `classes()`) or names.
        preprocessing: the eval transform: {"in_chans", "size": [H, W], "mean", "std", "resize",
            "crop", "interpolation"}; resize is the shorter side before the centre crop.
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
        return Path(root or cache_dir()) / self.source / self.filename

    def classes(self) -> list[str] | None:
        """Class names in output order (ImageNet names come from torchvision, imported lazily)."""
        if not isinstance(self.categories, str):
            return list(self.categories)
        if self.categories == "imagenet-1k":
            try:
                from torchvision.models import ResNet18_Weights
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
_TIMM_RECIPE = {
    "a1": "arXiv:2110.00476 (ResNet strikes back, A1)",
    "a2": "arXiv:2110.00476 (A2)",
    "a3": "arXiv:2110.00476 (A3)",
    "tv": "torchvision V1 weights re-hosted by timm",
    "tv2": "torchvision V2 weights re-hosted by timm",
}


def _build_registry() -> tuple[dict[str, Weights], dict[str, str]]:
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
    return table, defaults


WEIGHTS, DEFAULT_TAGS = _build_registry()


def cache_dir() -> Path:
    """`$RESNET_CACHE`, else `~/.cache/resnet`."""
    return Path(os.environ.get("RESNET_CACHE") or Path.home() / ".cache" / "resnet").expanduser()


def list_weights(pattern: str = "*") -> list[str]:
    """Known weight names matching a shell pattern ("torchvision:*", "*resnet50*")."""
    return [n for n in WEIGHTS if fnmatch.fnmatchcase(n, pattern)]


def get_weights(spec: str, arch: str | None = None) -> Weights:
    """The registry entry a spec names.

    Args:
        spec: "torchvision:IMAGENET1K_V2", "torchvision:DEFAULT" (needs `arch`),
            "torchvision:resnet50.IMAGENET1K_V2", "timm:resnet50.a1_in1k", or "timm:a1_in1k"
            (needs `arch`).
        arch: the model the weights are for.
    """
    source, _, tag = spec.partition(":")
    source = source.strip().lower()
    if source not in ("torchvision", "timm") or not tag:
        raise ResNetError(
            f"unknown weights {spec!r}: use torchvision:TAG, timm:ARCH.TAG, a file "
            f"path or {FASHION_MNIST!r}"
        )
    if "." in tag and not tag.startswith("ResNet"):
        tag_arch, tag = tag.split(".", 1)
    elif "_Weights." in tag:  # torchvision's own spelling, ResNet50_Weights.IMAGENET1K_V2
        tag_arch, tag = tag.split("_Weights.", 1)
        tag_arch = tag_arch.lower()
    else:
        tag_arch = None
    if tag_arch and arch and tag_arch != arch:
        raise ResNetError(f"{spec} are weights for {tag_arch}, not for {arch}")
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
# Download and cache.


def _hash_ok(digest: str, expected: str | None) -> bool:
    return expected is None or digest.startswith(expected.lower())


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Downloads `url` to `dest` with a progress bar, checks its SHA-256 (full or prefix), and
    renames it into place only when it is complete and right.

    Raises:
        ResNetError: one line naming the URL and where to put the file by hand (offline machine,
            HTTP error) or the hash that did not match.
    """
    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    h = hashlib.sha256()
    expect = f" (SHA-256 starting {sha256})" if sha256 else ""
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, os.fdopen(fd, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0) or None
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=not progress,
                    leave=False,
                ) as bar:
                    while chunk := r.read(1 << 20):
                        f.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise ResNetError(
                f"cannot download {url} ({str(reason).splitlines()[0][:100]}); "
                f"put that file{expect} at {dest}"
            ) from None
        digest = h.hexdigest()
        if not _hash_ok(digest, sha256):
            raise ResNetError(
                f"SHA-256 mismatch for {url}: got {digest[:16]}..., expected "
                f"{sha256}...; the download is corrupt or the file changed: put the "
                f"right file at {dest}"
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sha256 is None:  # nothing published: remember this file's hash, check it on later loads
        Path(f"{dest}.sha256").write_text(digest + "\n")
    log.info("downloaded %s -> %s (sha256 %s)", url, dest, digest)
    return dest


def fetch(w: Weights, *, root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The local file of registered weights: from the cache, torch hub's cache, or downloaded."""
    path = w.cache_path(root)
    if not path.exists() and w.source == "torchvision":
        hub = Path(torch.hub.get_dir()) / "checkpoints" / w.filename  # torchvision's own cache
        if hub.exists():
            path = hub
    if path.exists():
        recorded = Path(f"{path}.sha256")
        expected = w.sha256 or (recorded.read_text().strip() if recorded.exists() else None)
        digest = sha256_file(path)
        if not _hash_ok(digest, expected):
            raise ResNetError(
                f"{path}: SHA-256 {digest[:16]}... does not match {expected}... "
                f"expected for {w.name}; delete it or replace it with {w.url}"
            )
        return path
    return download(w.url, path, sha256=w.sha256, progress=progress)


# ---------------------------------------------------------------------------------------------
# Reading weight files: tensors only.


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_weights_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """`(state_dict, meta)` from a .safetensors, .pth/.pt file or one of our checkpoints.

    Only tensors and plain data are read (safetensors or `torch.load(weights_only=True)`); a file
    holding pickled code, a truncated file or an unknown layout gives a one-line ResNetError.
    `meta` carries what the file says about itself (classes, preprocessing, spec, options).
    """
    path = Path(path)
    if not path.is_file():
        raise ResNetError(f"weights file not found: {path}")
    meta: dict = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
                meta = dict(f.metadata() or {})
        except Exception as e:  # safetensors raises its own error type for a bad header
            raise ResNetError(
                f"{path} is not a readable safetensors file (truncated or "
                f"corrupt?): {str(e).splitlines()[0][:120]}"
            ) from None
        sidecar = path.with_suffix(".json")
        if sidecar.exists():
            meta = json.loads(sidecar.read_text())
        return state, meta
    obj = torch_load_safe(path, "weights file")
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        meta = {
            k: obj.get(k)
            for k in ("arch", "spec", "model_options", "classes", "preprocessing", "metrics")
            if k in obj
        }
        meta["note"] = "the 'model' entry of a resnet checkpoint"
        obj = obj["model"]
    elif not _is_state_dict(obj) and isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict", "model_ema", "state_dict_ema"):
            if _is_state_dict(obj.get(key)):
                meta["note"] = f"its {key!r} entry"
                obj = obj[key]
                break
    if not _is_state_dict(obj):
        raise ResNetError(f"{path} holds no state_dict (a mapping of names to tensors)")
    return dict(obj), meta


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Removes `module.` (DDP) and `_orig_mod.` (torch.compile) from the front of every key."""
    out, seen = {}, []
    for k, v in state.items():
        key = k
        while key.startswith(PREFIXES):
            p = next(p for p in PREFIXES if key.startswith(p))
            key = key[len(p) :]
            if p not in seen:
                seen.append(p)
        out[key] = v
    return out, seen


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first-conv kernel for `in_chans` inputs made from one for C (usually RGB) inputs.

    Fewer channels: each new channel sums the kernels that fold onto it (1 channel: the sum of
    R, G and B), so a grey image gives the RGB model's response to the grey image replicated.
    More channels: the kernels repeat cyclically (R, G, B, R, ...) and each copy is divided by the
    number of copies of its kernel (3/N when 3 divides N), which keeps that equality exactly.
    """
    c = weight.shape[1]
    if in_chans == c:
        return weight
    w = weight.float()
    if in_chans < c:
        out = torch.zeros(w.shape[0], in_chans, *w.shape[2:], dtype=w.dtype)
        out.index_add_(1, torch.arange(c) % in_chans, w)
    else:
        idx = torch.arange(in_chans) % c
        copies = torch.bincount(idx, minlength=c).to(w.dtype)
        out = w[:, idx] / copies[idx].view(1, -1, *([1] * (w.dim() - 2)))
    return out.to(weight.dtype)


def _unwrap(model: nn.Module) -> nn.Module:
    for attr in ("module", "_orig_mod"):  # DDP, torch.compile
        while isinstance(getattr(model, attr, None), nn.Module):
            model = getattr(model, attr)
    return model


def _stem_key(target: Mapping[str, torch.Tensor]) -> str | None:
    for key in ("conv1.weight", "conv1.0.weight"):
        if key in target:
            return key
    first = next((k for k, v in target.items() if v.dim() == 4), None)
    return first


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


@dataclass
class LoadReport:
    """What `load_weights` did: the keys it loaded, what it adapted, what was left out."""

    source: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    head: str = "loaded"  # "loaded", "new" (fresh classifier) or "none" (model has no head)
    meta: dict = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.source}: {self.loaded} tensors loaded"]
        parts += self.adapted
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {_few(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {_few(self.unexpected)}")
        return "; ".join(parts)

    __str__ = summary


@dataclass
class WeightsSource:
    """Weights read into memory: the state_dict and what is known about it."""

    spec: str
    state: dict[str, torch.Tensor]
    meta: dict
    info: Weights | None = None
    path: Path | None = None

    @property
    def num_classes(self) -> int | None:
        w = self.state.get("fc.weight")
        return int(w.shape[0]) if w is not None and w.dim() == 2 else None

    @property
    def in_chans(self) -> int | None:
        key = _stem_key(self.state)
        return int(self.state[key].shape[1]) if key else None

    @property
    def classes(self) -> list[str] | None:
        if self.meta.get("classes"):
            return list(self.meta["classes"])
        return self.info.classes() if self.info else None

    @property
    def preprocessing(self) -> dict | None:
        pre = self.meta.get("preprocessing") or (self.info.preprocessing if self.info else None)
        return dict(pre) if pre else None


def shipped_weights() -> list[str]:
    """Names of the weights shipped inside the package (`src/resnet/weights/<name>.json`)."""
    return sorted(
        p.stem for p in PACKAGE_DIR.glob("*.json") if p.with_suffix(".safetensors").exists()
    )


def _shipped_path(spec: str, arch: str | None) -> Path:
    name = spec.strip()
    if name.startswith(f"{FASHION_MNIST}:"):
        name = f"{FASHION_MNIST}-{name.split(':', 1)[1]}"
    candidates = [name]
    if name == FASHION_MNIST and arch:
        candidates.insert(0, f"{FASHION_MNIST}-{arch}")
    for c in candidates:
        path = PACKAGE_DIR / f"{c}.safetensors"
        if path.exists() and path.with_suffix(".json").exists():
            if c == name and arch and c == FASHION_MNIST:
                shipped_arch = json.loads(path.with_suffix(".json").read_text()).get("arch")
                if shipped_arch and shipped_arch != arch:
                    raise ResNetError(
                        f"the shipped {FASHION_MNIST} weights are for {shipped_arch},"
                        f" not {arch}; shipped: {', '.join(shipped_weights())}"
                    )
            return path
    shipped = ", ".join(shipped_weights()) or "none in this install"
    raise ResNetError(
        f"no shipped weights named {name!r}"
        f"{f' for {arch}' if arch else ''} in {PACKAGE_DIR}; shipped: {shipped}"
    )


def is_shipped_spec(spec: str) -> bool:
    s = spec.strip()
    return (
        s == FASHION_MNIST
        or s.startswith((f"{FASHION_MNIST}:", f"{FASHION_MNIST}-"))
        or ("/" not in s and "\\" not in s and (PACKAGE_DIR / f"{s}.json").exists())
    )


def open_weights(
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    arch: str | None = None,
    *,
    root: str | os.PathLike | None = None,
    progress: bool = True,
) -> WeightsSource:
    """Reads weights named by a spec into memory (downloading registered ones when needed).

    Args:
        source: "torchvision:IMAGENET1K_V2", "torchvision:DEFAULT", "timm:resnet50.a1_in1k",
            "fashion-mnist" (shipped with the package; "fashion-mnist:ARCH" for another shipped
            model), a local .pth/.pt/.safetensors path (or one of our checkpoints), an
            http(s)/file URL, or a state_dict.
        arch: the registered model the weights go into (resolves "DEFAULT" and checks the match).
        root: the cache folder (default `cache_dir()`).
        progress: show a download progress bar.
    """
    if isinstance(source, Mapping):
        state, prefixes = strip_prefixes(source)
        return WeightsSource("state_dict", state, {"prefixes": prefixes})
    spec = os.fspath(source)
    info = None
    if spec.split(":", 1)[0].lower() in ("torchvision", "timm"):
        info = get_weights(spec, arch)
        path = fetch(info, root=root, progress=progress)
        spec = info.name
    elif spec.startswith(("http://", "https://", "file://")):
        name = spec.rstrip("/").rsplit("/", 1)[-1] or "weights.pth"
        path = Path(root or cache_dir()) / "url" / name
        if not path.exists():
            download(spec, path, progress=progress)
    elif Path(spec).expanduser().exists():
        path = Path(spec).expanduser()
    elif not is_shipped_spec(spec):
        raise ResNetError(
            f"weights {spec!r}: no such file, nor a known spec (torchvision:TAG, "
            f"timm:ARCH.TAG, {FASHION_MNIST}, or a .pth/.pt/.safetensors path)"
        )
    else:
        path = _shipped_path(spec, arch)
    state, meta = read_weights_file(path)
    state, prefixes = strip_prefixes(state)
    meta["prefixes"] = prefixes
    return WeightsSource(spec, state, meta, info, path)


def load_weights(
    model: nn.Module,
    source: str | os.PathLike | Mapping | WeightsSource,
    *,
    strict_head: bool = False,
    strict: bool = True,
    progress: bool = True,
) -> LoadReport:
    """Loads weights into `model`, adapting what can be adapted, and says what it did.

    Adapts: torchvision and timm layouts (the same names as ours), `module.` / `_orig_mod.`
    prefixes, a first conv for other than 3 input channels (`adapt_input_conv`), and a head of
    another size (left freshly initialised and reported, unless `strict_head`).

    Args:
        model: the network (a DDP or compiled wrapper is unwrapped).
        source: a spec for `open_weights`, a state_dict, or an opened `WeightsSource`.
        strict_head: raise instead of keeping a fresh classifier when the class counts differ.
        strict: raise when body tensors are missing or unexpected (False: load what fits and
            report the rest).
        progress: show a download progress bar.

    Returns:
        A LoadReport with loaded / missing / unexpected keys and the adaptations made.
    """
    target_model = _unwrap(model)
    arch = getattr(target_model, "arch", None)
    src = (
        source
        if isinstance(source, WeightsSource)
        else open_weights(source, arch if arch and "(" not in arch else None, progress=progress)
    )
    state = dict(src.state)
    target = target_model.state_dict()
    report = LoadReport(source=src.spec, meta=dict(src.meta))
    if src.meta.get("prefixes"):
        report.adapted.append(f"stripped prefix {' and '.join(src.meta['prefixes'])}")
    if src.meta.get("note"):
        report.adapted.append(f"read {src.meta['note']}")

    stem = _stem_key(target)
    fresh: set[str] = set()
    if stem and stem in state and state[stem].dim() == 4:
        have, want = state[stem].shape[1], target[stem].shape[1]
        if state[stem].shape[2:] != target[stem].shape[2:]:  # e.g. 7x7 -> small_input's 3x3
            fresh.add(stem)
            k_in, k_here = tuple(state[stem].shape[2:]), tuple(target[stem].shape[2:])
            report.adapted.append(
                f"first conv re-initialised (kernel {k_in} in the weights, {k_here} here)"
            )
            del state[stem]
        elif have != want and state[stem].shape[0] == target[stem].shape[0]:
            state[stem] = adapt_input_conv(state[stem], want)
            rule = "summed" if want < have else "repeated and rescaled"
            report.adapted.append(f"first conv {have} -> {want} input channels ({rule})")

    head_shapes = [
        (tuple(state[k].shape), tuple(target[k].shape)) for k in HEAD if k in state and k in target
    ]
    no_head = all(k not in target for k in HEAD)
    if no_head and any(k in state for k in HEAD):
        for k in HEAD:
            state.pop(k, None)
        report.head = "none"
        report.adapted.append("dropped the weights' classifier (the model has no head)")
    elif any(a != b for a, b in head_shapes) or (not no_head and any(k not in state for k in HEAD)):
        had = state["fc.weight"].shape[0] if "fc.weight" in state else 0
        now = target["fc.weight"].shape[0]
        if strict_head:
            raise ResNetError(
                f"the weights' classifier has {had or 'no'} outputs, the model "
                f"{now}: pass num_classes={had} or allow a fresh head"
            )
        for k in HEAD:
            state.pop(k, None)
        report.head = "new"
        report.adapted.append(f"new {now}-class head (weights had {had or 'none'})")

    bad = [k for k in state if k in target and state[k].shape != target[k].shape]
    if bad:
        k = bad[0]
        raise ResNetError(
            f"weights do not fit {arch or 'this model'}: {len(bad)} tensors differ "
            f"in shape, e.g. {k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        )
    fresh |= set(HEAD) if report.head == "new" else set()
    missing = [
        k
        for k in target
        if k not in state and k not in fresh and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in target]
    if strict and (missing or unexpected):
        parts = ([f"{len(missing)} missing ({_few(missing)})"] if missing else []) + (
            [f"{len(unexpected)} unexpected ({_few(unexpected)})"] if unexpected else []
        )
        raise ResNetError(
            f"weights {src.spec} do not match {arch or 'this model'}: {'; '.join(parts)}"
        )
    for k in unexpected:
        state.pop(k)
    with torch.no_grad():
        target_model.load_state_dict(state, strict=False)
    report.loaded = len(state)
    report.missing, report.unexpected = missing, unexpected
    log.info("%s", report.summary())
    return report


def pretrained_cfg(src: WeightsSource, report: LoadReport) -> dict:
    """What a model built from weights carries as `model.pretrained_cfg`."""
    info = src.info
    cfg = {
        "weights": src.spec,
        "classes": src.classes if report.head == "loaded" else None,
        "preprocessing": src.preprocessing,
        "head": report.head,
    }
    if info is not None:
        cfg.update(
            top1=info.top1,
            top5=info.top5,
            recipe=info.recipe,
            licence=info.licence,
            url=info.url,
            sha256=info.sha256,
        )
    for k in ("recipe", "test_acc", "licence"):
        if k in src.meta:
            cfg[k] = src.meta[k]
    return cfg


def model_from_weights(spec: str | os.PathLike, **overrides):
    """Builds the model that shipped weights, a checkpoint or a registry entry describe, loaded.

    `resnet predict --weights fashion-mnist IMAGE` needs no model name: the shipped file says
    which model it is. Returns the model in eval mode with `pretrained_cfg` attached.
    """
    from .registry import create
    from .resnet import ResNet, ResNetSpec

    spec_s = os.fspath(spec)
    if spec_s.split(":", 1)[0].lower() in ("torchvision", "timm"):
        return create(get_weights(spec_s).arch, weights=spec_s, **overrides).eval()
    src = open_weights(spec_s)
    if "spec" not in src.meta:
        raise ResNetError(
            f"{spec_s} does not say which model it is; use resnet.create(NAME, weights={spec_s!r})"
        )
    options = dict(src.meta.get("model_options") or {})
    options.update(overrides)
    model = ResNet(ResNetSpec.from_dict(src.meta["spec"]), **options)
    model.arch = src.meta.get("arch", "custom")
    report = load_weights(model, src)
    model.pretrained_cfg = pretrained_cfg(src, report)
    model.weights_report = report
    return model.eval()
