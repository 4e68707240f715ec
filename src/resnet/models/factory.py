"""Models with their weights: `create(name, weights=...)` and `model_from_weights(spec)`.

The registry builds a model from its spec alone; this module adds the weights (opened by
`weight_files`, loaded by `loading`), so the registry never depends on the weights code.
torchvision's and timm's classifiers ("tv:NAME", "timm:NAME") take the same path: their head and
first conv are where `foreign` says, and their own catalogued weights come from the libraries.
"""

from __future__ import annotations

import os

from torch import nn

from ..errors import ResNetError
from . import foreign
from .catalogue import get_weights, is_catalogue_spec
from .loading import load_weights, pretrained_cfg
from .registry import (
    ModelEntry,
    build,
    check_options,
    get_entry,
    model_for_spec,
    spec_from_dict,
    variant_spec,
)
from .resnet import ResNet
from .weight_files import WeightsSource, open_weights

_STRUCTURE = ("small_input", "norm", "act", "global_pool")  # options our weights files record


def _weights_shape(entry: ModelEntry, src: WeightsSource) -> tuple[int | None, int | None]:
    """`(classes, input channels)` of the weights' head and first conv (None: not found)."""
    if not entry.foreign:
        return src.num_classes, src.in_chans
    head, stem = (
        src.state.get(foreign.head_key(entry.spec)),
        src.state.get(foreign.stem_key(entry.spec)),
    )
    return (
        int(head.shape[0]) if head is not None else None,
        int(stem.shape[1]) if stem is not None and stem.dim() == 4 else None,
    )


def _structure(entry: ModelEntry, src: WeightsSource, in_chans: int | None) -> dict:
    """Structure options the weights need: what our files record, and for a foreign net the
    image size a ViT was trained at and torchvision's own builder options."""
    recorded = src.meta.get("model_options") or {}
    keys = foreign.STRUCTURE if entry.foreign else _STRUCTURE
    options = {k: recorded[k] for k in keys if k in recorded}
    if entry.foreign and src.info is not None:
        if foreign.family(entry.spec).small == "size" and src.preprocessing:
            options.setdefault("image_size", int(src.preprocessing["size"][0]))
        if src.info.source == "torchvision":
            for key, value in foreign.pretrained_options(entry.spec, in_chans or 3).items():
                options.setdefault(key, value)
    return options


def create(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    skip: bool | None = None,
    shortcut: str | None = None,
    weights: str | os.PathLike | None = None,
    **options,
) -> ResNet | nn.Module:
    """Builds a registered model, loaded with weights when they are given.

    Args:
        name: a registered name (`resnet.list_models()`), case and dashes ignored, or a
            torchvision / timm classifier, "tv:efficientnet_b0", "timm:convnext_tiny" (`foreign`).
        num_classes: classifier outputs; defaults to the weights' head, else the paper's (1000
            ImageNet, 10 CIFAR). A count other than the weights' gets a fresh head.
        in_chans: input channels; defaults to the weights' (else 3). Other counts than the
            weights' adapt the first conv (1 channel: the RGB kernels summed).
        skip: False gives the plain twin (the same layers, no shortcuts).
        shortcut: override the shortcut kind ("A", "B", "D", "S").
        weights: "torchvision:IMAGENET1K_V2", "torchvision:DEFAULT", "timm:resnet50.a1_in1k",
            "keras:resnet50", "fashion-mnist" (shipped), a foreign net's own
            ("torchvision:efficientnet_b0.IMAGENET1K_V1", "timm:efficientnet_b0.ra_in1k"),
            or a .pth/.pt/.safetensors path or a Keras .h5/.weights.h5/.keras file; see
            `resnet.models.catalogue`. The model then carries `pretrained_cfg` (classes,
            preprocessing, source) and `weights_report` (what was loaded and adapted).
        **options: ResNet options (small_input, zero_init_residual, drop_path_rate,
            block_dropout, head_dropout, norm, act, global_pool, grad_checkpointing); for a
            foreign net `foreign.OPTIONS` (small_input, image_size, drop_path_rate, ...).
    """
    kinds = dict(skip=skip, shortcut=shortcut)
    if weights is None:
        return build(name, num_classes=num_classes, in_chans=in_chans, **kinds, **options)
    entry = get_entry(name)
    variant_spec(entry, skip, shortcut)  # refuse a bad variant or option before any download
    check_options(entry, options)
    src = open_weights(weights, entry.name)
    classes, chans = _weights_shape(entry, src)
    num_classes = classes if num_classes is None else num_classes
    in_chans = chans if in_chans is None else in_chans
    for key, value in _structure(entry, src, in_chans).items():
        options.setdefault(key, value)
    model = build(entry.name, num_classes=num_classes, in_chans=in_chans, **kinds, **options)
    model.weights_report = load_weights(model, src)
    model.pretrained_cfg = pretrained_cfg(src, model.weights_report)
    return model


def model_from_weights(spec: str | os.PathLike, **overrides) -> ResNet | nn.Module:
    """Builds the model that shipped weights, a checkpoint or a catalogue entry describe, loaded.

    `resnet predict --weights fashion-mnist IMAGE` needs no model name: the shipped file says
    which model it is. Returns the model in eval mode with `pretrained_cfg` attached.
    """
    spec_s = os.fspath(spec)
    if is_catalogue_spec(spec_s):
        return create(get_weights(spec_s).arch, weights=spec_s, **overrides).eval()
    src = open_weights(spec_s)
    if "spec" not in src.meta:
        raise ResNetError(
            f"{spec_s} does not say which model it is; use resnet.create(NAME, weights={spec_s!r})"
        )
    options = dict(src.meta.get("model_options") or {})
    options.update(overrides)
    model = model_for_spec(spec_from_dict(src.meta["spec"]), **options)
    model.arch = src.meta.get("arch", "custom")
    report = load_weights(model, src)
    model.pretrained_cfg = pretrained_cfg(src, report)
    model.weights_report = report
    return model.eval()
