"""The one loader: weights into a model, adapting what can be adapted, and a report of it.

`load_weights(model, source)` accepts torchvision's and timm's key layouts (the same names as
ours), DDP / compile prefixes, `in_chans` != 3 and a different head, and reads only tensors
(`weights_only=True` or safetensors). A torchvision / timm net (`foreign`) names its own first
conv and head. Nothing here imports more than torch at import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ResNetError
from .foreign import adaptation_keys
from .weight_files import WeightsSource, open_weights, stem_key
from .wrappers import unwrap

log = logging.getLogger("resnet.weights")

HEAD = ("fc.weight", "fc.bias")


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
        """One line: tensors loaded, adaptations, and the first missing / unexpected keys."""
        parts = [f"{self.source}: {self.loaded} tensors loaded"]
        parts += self.adapted
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {_few(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {_few(self.unexpected)}")
        return "; ".join(parts)

    __str__ = summary


def _adapt_stem(
    state: dict, target: Mapping, report: LoadReport, stem: str | None = None
) -> set[str]:
    """Fits the weights' first conv (`stem`, default: ours) to the model's; returns the keys
    left freshly initialised."""
    stem = stem or stem_key(target)
    if not (stem and stem in state and state[stem].dim() == 4):
        return set()
    have, want = state[stem].shape[1], target[stem].shape[1]
    if state[stem].shape[2:] != target[stem].shape[2:]:  # e.g. 7x7 -> small_input's 3x3
        k_in, k_here = tuple(state[stem].shape[2:]), tuple(target[stem].shape[2:])
        report.adapted.append(
            f"first conv re-initialised (kernel {k_in} in the weights, {k_here} here)"
        )
        del state[stem]
        bias = stem.removesuffix("weight") + "bias"  # Keras' stems have one: it goes too
        state.pop(bias, None)
        return {stem, bias}
    if have != want and state[stem].shape[0] == target[stem].shape[0]:
        state[stem] = adapt_input_conv(state[stem], want)
        rule = "summed" if want < have else "repeated and rescaled"
        report.adapted.append(f"first conv {have} -> {want} input channels ({rule})")
    return set()


def _adapt_head(
    state: dict, target: Mapping, report: LoadReport, strict_head: bool, head=HEAD
) -> None:
    """Drops the weights' classifier (`head`: its keys, weight first) where the model has none
    or one of another size."""
    head_shapes = [
        (tuple(state[k].shape), tuple(target[k].shape)) for k in head if k in state and k in target
    ]
    no_head = all(k not in target for k in head)
    if no_head and any(k in state for k in head):
        for k in head:
            state.pop(k, None)
        report.head = "none"
        report.adapted.append("dropped the weights' classifier (the model has no head)")
    elif any(a != b for a, b in head_shapes) or (not no_head and any(k not in state for k in head)):
        had = state[head[0]].shape[0] if head[0] in state else 0
        now = target[head[0]].shape[0]
        if strict_head:
            raise ResNetError(
                f"the weights' classifier has {had or 'no'} outputs, the model "
                f"{now}: pass num_classes={had} or allow a fresh head"
            )
        for k in head:
            state.pop(k, None)
        report.head = "new"
        report.adapted.append(f"new {now}-class head (weights had {had or 'none'})")


def _match_keys(
    state: dict, target: Mapping, fresh: set[str], *, strict: bool, spec: str, arch: str | None
) -> tuple[list[str], list[str]]:
    """`(missing, unexpected)` keys; raises on a shape mismatch, or on either when `strict`."""
    bad = [k for k in state if k in target and state[k].shape != target[k].shape]
    if bad:
        k = bad[0]
        raise ResNetError(
            f"weights do not fit {arch or 'this model'}: {len(bad)} tensors differ "
            f"in shape, e.g. {k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        )
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
        raise ResNetError(f"weights {spec} do not match {arch or 'this model'}: {'; '.join(parts)}")
    return missing, unexpected


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
    target_model = unwrap(model)
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
    stem, head = adaptation_keys(target_model) or (None, HEAD)
    fresh = _adapt_stem(state, target, report, stem)
    _adapt_head(state, target, report, strict_head, head)
    if report.head == "new":
        fresh |= set(head)
    missing, unexpected = _match_keys(state, target, fresh, strict=strict, spec=src.spec, arch=arch)
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
