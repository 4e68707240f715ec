"""A run's model from its config and data: checks, construction, the whitened stem."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import models
from ..data import BUILTIN, DataBundle
from ..data.scan_index import is_scan_source
from ..data.scans import DEFAULT_VOLUME
from ..errors import ResNetError
from ..models import foreign
from ..models.resnet import SMALL_STEMS
from .config import TrainConfig
from .whiten import first_conv, whiten_first_conv_, whitenable_filters


def check_model_config(cfg: TrainConfig) -> None:
    """Refuses an unknown model name or option before any data is loaded."""
    entry = models.get_entry(cfg.model.name)
    if cfg.model.whiten_stem and cfg.finetune.weights:
        raise ResNetError(
            "whiten_stem initialises a net trained from scratch; it cannot be combined with "
            "--weights"
        )
    if cfg.data.multilabel and cfg.run.ensemble > 1:
        raise ResNetError("ensembles average softmax probabilities; train multi-label nets alone")
    if cfg.model.freeze_whitened and not cfg.model.whiten_stem:
        raise ResNetError(
            "freeze_whitened keeps the whitened first conv fixed; it needs whiten_stem"
        )
    if cfg.model.freeze_whitened and (cfg.finetune.freeze != "none" or cfg.finetune.unfreeze):
        raise ResNetError("freeze_whitened cannot be combined with --freeze or finetune.unfreeze")
    known = models.registry.options_for(entry)
    unknown = set(cfg.model.options) - known
    if unknown:
        raise ResNetError(
            f"unknown model option(s) {', '.join(sorted(unknown))}; known: "
            f"{', '.join(sorted(known))}"
        )


def with_scan_mode(cfg: TrainConfig) -> TrainConfig:
    """Scans given without --volume or --slices: a 2-D net reads slices, a 3-D net volumes."""
    d = cfg.data
    if d.volume or d.slices or d.source.lower() in BUILTIN:
        return cfg
    root = Path(d.source).expanduser()
    if not root.exists() or not is_scan_source(root):
        return cfg
    if models.get_entry(cfg.model.name).dims == 2:
        return cfg.updated({"data": {"slices": 1}})
    return cfg.updated({"data": {"volume": list(DEFAULT_VOLUME)}})


def check_model_data(cfg: TrainConfig, data: DataBundle) -> None:
    """Refuses a net whose dimensions do not fit the data (a 2-D net on volumes, ...)."""
    dims = models.get_entry(cfg.model.name).dims
    volumes = data.preprocessing.get("scan", {}).get("mode") == "volume"
    if volumes and dims != 3:
        raise ResNetError(
            f"{cfg.model.name} is a {dims}-D net and --volume gives it volumes: use a 3-D net "
            "(resnet18_3d, r3d_18, … in `resnet models`) or --slices"
        )
    if not volumes and dims != 2:
        raise ResNetError(
            f"{cfg.model.name} is a {dims}-D net for volumes: give DICOM / NIfTI scans with "
            "--volume D,H,W, or pick a 2-D net"
        )
    if volumes and (cfg.model.whiten_stem or cfg.run.tta_shift):
        raise ResNetError("whiten_stem and tta_shift are for 2-D images, not volumes")


def build_model(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    """The configured net for the data's classes and channels (with its pretrained weights)."""
    entry = models.get_entry(cfg.model.name)
    options = dict(cfg.model.options)
    size = tuple(data.preprocessing["size"])
    small_images = entry.dims == 2 and max(size) <= 64
    if entry.foreign:  # the family's own small-input form, or the size a ViT is built for
        options = foreign.fit_input(entry.spec, size, options)
        foreign.check_input(entry.spec, size, in_chans=data.in_chans, **options)
    elif small_images and entry.spec.stem not in SMALL_STEMS:
        options.setdefault("small_input", True)  # the 7x7/2 + max-pool stem wastes a 28-64 px image
    kwargs = dict(num_classes=len(data.classes), in_chans=data.in_chans, **options)
    if cfg.finetune.weights:
        kwargs["weights"] = cfg.finetune.weights
    try:
        return models.create(cfg.model.name, **kwargs)
    except TypeError as e:
        raise ResNetError(str(e)) from None


def whitening_images(cfg: TrainConfig, data: DataBundle, count: int) -> torch.Tensor:
    """Training images to whiten the stem from: the in-memory tensor, or the first batches of the
    first epoch for streamed data."""
    if data.train.images is not None:
        return data.train.images
    loader = data.loader("train", cfg.data, train=True, seed=cfg.run.seed)
    loader.set_epoch(0)
    batches, n = [], 0
    for x, _ in loader:
        batches.append(x)
        n += x.shape[0]
        if n >= count:
            break
    return torch.cat(batches)


def whiten_stem(model: nn.Module, cfg: TrainConfig, data: DataBundle, count: int = 5000) -> int:
    """Sets the first conv's filters to the training patches' whitening; returns how many."""
    try:
        return whiten_first_conv_(model, whitening_images(cfg, data, count), max_images=count)
    except ValueError as e:
        raise ResNetError(str(e)) from None


def freeze_whitened(model: nn.Module) -> None:
    """Keeps the whitened first conv fixed (resumed runs too: the checkpoint holds its filters)."""
    conv = first_conv(model)
    whitened = whitenable_filters(conv)
    if conv.out_channels > whitened:
        raise ResNetError(
            f"freeze_whitened: only {whitened} of the first conv's {conv.out_channels} filters "
            f"are whitened, the rest are random; use a net whose stem has at most {whitened} "
            f"filters, or train the first conv"
        )
    conv.weight.requires_grad_(False)
