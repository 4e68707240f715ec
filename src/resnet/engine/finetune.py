"""Fine-tuning helpers: freezing, BatchNorm kept in eval mode, per-part learning rates, unfreezing.

The trainer calls them in this order (config fields weights, freeze, backbone_lr_mult, bn_eval,
unfreeze):

    model = resnet.create(arch, weights=cfg.weights, num_classes=n, in_chans=c)
    apply_freeze(model, cfg.freeze)                       # "none" | "backbone" | "stages:K"
    opt = SGD(param_groups(model, wd, lr=lr, backbone_lr_mult=cfg.backbone_lr_mult,
                           include_frozen=True), momentum=0.9)   # engine.optim
    for epoch in range(epochs):
        unfreeze_at_epoch(model, epoch, cfg.unfreeze)     # e.g. "3:stages:2,6:none"
        model.train()
        set_bn_eval(model, only_frozen=not cfg.bn_eval)   # after every model.train()
        ...

`param_groups` holds every parameter, frozen ones too (they get no gradient, so optimizers skip
them), so unfreezing needs no new optimizer; each group carries `lr_mult` for schedules that set
`group["lr"]` themselves.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..errors import ResNetError
from ..models import Weights, get_weights, open_weights, unwrap
from ..models.catalogue import is_catalogue_spec
from ..models.foreign import head_prefixes

FREEZE_MODES = ("none", "backbone", "stages:K")
HEAD_PREFIXES = ("fc.", "head_drop.")
STEM_MODULES = ("conv1", "bn1", "act1", "maxpool")


def backbone_parts(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """The backbone in input order: ("stem", ...), ("layer1", ...), ..., ("final_norm", ...)."""
    model = unwrap(model)
    stem = [getattr(model, n) for n in STEM_MODULES if hasattr(model, n)]
    parts = [("stem", stem)]
    parts += [(n, [getattr(model, n)]) for n in getattr(model, "stage_names", [])]
    if hasattr(model, "final_norm"):
        parts.append(("final_norm", [model.final_norm]))
    return parts


def _frozen_count(mode: str, num_stages: int) -> int:
    """How many leading backbone parts a freeze mode freezes (stem = part 0)."""
    mode = mode.strip().lower()
    if mode == "none":
        return 0
    if mode in ("backbone", "probe", "linear-probe"):
        return num_stages + 2
    if mode.startswith("stages:"):
        try:
            k = int(mode.split(":", 1)[1])
        except ValueError:
            k = -1
        if not 0 <= k <= num_stages:
            raise ResNetError(f"freeze {mode!r}: K must be 0..{num_stages} (stages of this model)")
        return 1 + k + (1 if k == num_stages else 0)  # all stages frozen: the final norm too
    raise ResNetError(f"freeze must be one of none, backbone, stages:K, not {mode!r}")


def apply_freeze(model: nn.Module, mode: str) -> list[str]:
    """Freezes part of the backbone and unfreezes the rest; idempotent.

    Args:
        model: a ResNet (DDP / compiled wrappers are unwrapped).
        mode: "none"; "backbone" (everything but the classifier: a linear probe); "stages:K"
            (the stem and the first K stages).

    Returns:
        Names of the frozen parts ("stem", "layer1", ...).
    """
    heads = head_prefixes(unwrap(model))
    if heads is not None:
        return _freeze_foreign(unwrap(model), mode, heads)
    parts = backbone_parts(model)
    n = _frozen_count(mode, len(parts) - 2)
    frozen = []
    for i, (name, modules) in enumerate(parts):
        freeze = i < n
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(not freeze)
                if freeze:
                    p.grad = None
        if freeze and any(True for m in modules for _ in m.parameters()):
            frozen.append(name)
    for name, p in unwrap(model).named_parameters():
        if name.startswith(HEAD_PREFIXES):
            p.requires_grad_(True)
    return frozen


def _freeze_foreign(model: nn.Module, mode: str, heads: tuple[str, ...]) -> list[str]:
    """apply_freeze for a torchvision / timm net: "none" or "backbone" (all but its classifier);
    their stages have no common names, so "stages:K" is refused."""
    mode = mode.strip().lower()
    if mode not in ("none", "backbone", "probe", "linear-probe"):
        raise ResNetError(
            f"freeze {mode!r}: a torchvision / timm net freezes none or backbone (stages:K needs "
            "one of this package's ResNets)"
        )
    freeze = mode != "none"
    for name, p in model.named_parameters():
        keep = not freeze or name.startswith(heads)
        p.requires_grad_(keep)
        if not keep:
            p.grad = None
    return ["backbone"] if freeze else []


def linear_probe(model: nn.Module) -> list[str]:
    """Trains only the classifier: the backbone frozen, its BatchNorm in eval mode."""
    frozen = apply_freeze(model, "backbone")
    set_bn_eval(model, only_frozen=True)
    return frozen


_NORMS = (nn.modules.batchnorm._BatchNorm,)


def set_bn_eval(model: nn.Module, only_frozen: bool = True) -> int:
    """Puts BatchNorm layers in eval mode: running statistics used and left unchanged.

    Call it after every `model.train()`. With `only_frozen`, only norms whose parameters are all
    frozen; otherwise every BatchNorm (for small batches, whose statistics are too noisy), while
    trainable norms keep learning their scale and shift.

    Returns:
        How many BatchNorm layers were put in eval mode.
    """
    count = 0
    for m in unwrap(model).modules():
        if isinstance(m, _NORMS):
            params = list(m.parameters())
            if not only_frozen or (params and not any(p.requires_grad for p in params)):
                m.eval()
                count += 1
    return count


def parse_unfreeze(schedule: str | Mapping[int, str] | None) -> list[tuple[int, str]]:
    """ "3:stages:2,6:none" or {3: "stages:2", 6: "none"} -> [(3, "stages:2"), (6, "none")]."""
    if not schedule:
        return []
    if isinstance(schedule, str):
        items = []
        for part in schedule.split(","):
            epoch, sep, mode = part.strip().partition(":")
            if not sep or not epoch.strip().isdigit():
                raise ResNetError(
                    f"unfreeze schedule {schedule!r}: write EPOCH:MODE[,EPOCH:MODE]"
                    f", e.g. 3:stages:2,6:none"
                )
            items.append((int(epoch), mode.strip()))
    else:
        items = [(int(e), str(m)) for e, m in schedule.items()]
    for _, mode in items:
        _frozen_count(mode, 4)  # validates the mode's spelling (K is checked on the model)
    return sorted(items)


def unfreeze_at_epoch(
    model: nn.Module, epoch: int, schedule: str | Mapping[int, str] | None
) -> str | None:
    """Gradual unfreezing: applies the freeze mode the schedule sets for `epoch`.

    The mode in force is that of the latest entry at or before `epoch`, so calling this at the
    start of every epoch (also after a resume) gives the same state; before the first entry the
    model keeps the freeze it was given.

    Returns:
        The mode applied, or None when the schedule has no entry yet.
    """
    mode = None
    for e, m in parse_unfreeze(schedule):
        if e <= epoch:
            mode = m
    if mode is not None:
        apply_freeze(model, mode)
    return mode


def eval_preprocessing_for(
    weights, data_preprocessing: dict | None, *, arch: str | None = None
) -> dict | None:
    """The preprocessing a run trains and evaluates with when it starts from `weights`.

    Eval transforms follow the weights (e.g. resize 232 / crop 224 for torchvision V2) unless
    the data says otherwise: images smaller than the weights' crop (28 px grey Fashion-MNIST)
    keep their own size, and a channel count other than the weights' keeps the data's mean/std.

    Args:
        weights: None, a weights spec ("torchvision:IMAGENET1K_V2", "fashion-mnist", a path),
            a `Weights` entry, a preprocessing dict, or a model with `pretrained_cfg`.
        data_preprocessing: the data's {"in_chans", "size": [H, W], "mean", "std", "resize",
            "crop"} (None: follow the weights entirely).
        arch: the model, to resolve "torchvision:DEFAULT".
    """
    pre = _weights_preprocessing(weights, arch)
    if pre is None:
        return dict(data_preprocessing) if data_preprocessing else None
    if not data_preprocessing:
        return dict(pre)
    out = dict(data_preprocessing)
    size = data_preprocessing.get("size")
    crop = pre.get("crop") or min(pre["size"])
    if not size or min(size) >= crop:
        for key in ("size", "resize", "crop", "interpolation"):
            if key in pre:
                out[key] = pre[key]
    if data_preprocessing.get("in_chans", pre.get("in_chans")) == pre.get("in_chans"):
        out["mean"], out["std"] = list(pre["mean"]), list(pre["std"])
        if "channel_order" in pre:  # BGR weights (Keras v1): their mean/std are in BGR order
            out["channel_order"] = pre["channel_order"]
    return out


def _weights_preprocessing(weights, arch: str | None) -> dict | None:
    if weights is None:
        return None
    if isinstance(weights, dict):
        return weights
    if isinstance(weights, Weights):
        return dict(weights.preprocessing)
    if isinstance(weights, nn.Module):
        cfg = getattr(unwrap(weights), "pretrained_cfg", None) or {}
        return cfg.get("preprocessing")
    spec = str(weights)
    if is_catalogue_spec(spec):
        return dict(get_weights(spec, arch).preprocessing)
    return open_weights(spec, arch).preprocessing
