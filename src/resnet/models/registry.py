"""The one registry of named variants: it feeds `create`, `resnet models`, the CLI and the tests."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
import os
from dataclasses import dataclass

import torch
from torch import nn

from .resnet import ResNet, ResNetSpec


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant: its spec plus what the table and defaults need."""

    name: str
    spec: ResNetSpec
    family: str
    paper: str
    input_size: int  # the family's native input, used for MACs
    num_classes: int  # the paper's default head
    depth: int
    defaults: tuple[tuple[str, object], ...] = ()  # constructor options the paper used

    @property
    def plain(self) -> bool:
        return not self.spec.skip


_REGISTRY: dict[str, ModelEntry] = {}
OPTIONS = frozenset(
    p.name for p in inspect.signature(ResNet).parameters.values() if p.kind is p.KEYWORD_ONLY
)


def register(entry: ModelEntry) -> ModelEntry:
    """Adds a variant; a name may be registered once."""
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def canonical_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _squash(name: str) -> str:
    return canonical_name(name).replace("_", "")


def get_entry(name: str) -> ModelEntry:
    key = canonical_name(name)
    if key not in _REGISTRY:  # "ResNet-20", "wrn-28-10", "resnext50-32x4d" name registered nets too
        key = next((n for n in _REGISTRY if _squash(n) == _squash(name)), key)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `resnet models` lists them"
        raise ValueError(f"unknown model {name!r}{hint}")
    return _REGISTRY[key]


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern (`resnet*`, `*plain*`), in table order."""
    pat = canonical_name(pattern)
    if not any(c in pat for c in "*?["):
        pat = f"*{pat}*"
    return [n for n in _REGISTRY if fnmatch.fnmatchcase(n, pat)]


def create(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    skip: bool | None = None,
    shortcut: str | None = None,
    weights: str | os.PathLike | None = None,
    **options,
) -> ResNet:
    """Builds a registered model.

    Args:
        name: a registered name (`resnet.list_models()`), case and dashes ignored.
        num_classes: classifier outputs; defaults to the weights' head, else the paper's (1000
            ImageNet, 10 CIFAR). A count other than the weights' gets a fresh head.
        in_chans: input channels; defaults to the weights' (else 3). Other counts than the
            weights' adapt the first conv (1 channel: the RGB kernels summed).
        skip: False gives the plain twin (the same layers, no shortcuts).
        shortcut: override the shortcut kind ("A", "B", "D").
        weights: "torchvision:IMAGENET1K_V2", "torchvision:DEFAULT", "timm:resnet50.a1_in1k",
            "fashion-mnist" (shipped), or a .pth/.pt/.safetensors path; see
            `resnet.models.weights`. The model then carries `pretrained_cfg` (classes,
            preprocessing, source) and `weights_report` (what was loaded and adapted).
        **options: ResNet options (small_input, zero_init_residual, drop_path_rate,
            block_dropout, head_dropout, norm, act, global_pool, grad_checkpointing).
    """
    entry = get_entry(name)
    spec = entry.spec
    if skip is not None:
        spec = dataclasses.replace(spec, skip=skip)
    if shortcut is not None:
        spec = dataclasses.replace(spec, shortcut=shortcut.upper())
    unknown = set(options) - OPTIONS
    if unknown:
        raise TypeError(
            f"unknown option(s) for {entry.name}: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(OPTIONS))}"
        )
    src = None
    if weights is not None:  # imported here: building a model without weights needs only torch
        from .weights import open_weights

        src = open_weights(weights, entry.name)
        num_classes = src.num_classes if num_classes is None else num_classes
        in_chans = src.in_chans if in_chans is None else in_chans
        for key in ("small_input", "norm", "act", "global_pool"):  # structure of our weights
            if key in (src.meta.get("model_options") or {}):
                options.setdefault(key, src.meta["model_options"][key])
    kwargs = dict(entry.defaults)
    kwargs.update(options)
    model = ResNet(
        spec,
        entry.num_classes if num_classes is None else num_classes,
        3 if in_chans is None else in_chans,
        **kwargs,
    )
    model.arch = entry.name
    if spec != entry.spec:
        twin = plain_name(entry.name) if not spec.skip else None
        same = twin in _REGISTRY and _REGISTRY[twin].spec == dataclasses.replace(
            spec, shortcut=_REGISTRY[twin].spec.shortcut
        )
        model.arch = twin if same else f"{entry.name}(custom)"
    if src is not None:
        from .weights import load_weights, pretrained_cfg

        model.weights_report = load_weights(model, src)
        model.pretrained_cfg = pretrained_cfg(src, model.weights_report)
    return model


def plain_name(name: str) -> str:
    """The plain twin's name: resnet56 -> plain56, preact_resnet164 -> preact_plain164,
    wrn_28_10 -> plain_wrn_28_10."""
    return name.replace("resnet", "plain", 1) if "resnet" in name else f"plain_{name}"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int, in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass at `input_size`, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.empty(1, in_chans, input_size, input_size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2


def model_info(name: str) -> dict:
    """Name, family, depth, parameters and MACs at the native input size, without real weights."""
    entry = get_entry(name)
    with torch.device("meta"):
        model = create(name)
    return dict(
        name=entry.name,
        family=entry.family,
        depth=entry.depth,
        skips=entry.spec.skip,
        params=count_params(model),
        macs=count_macs(model, entry.input_size),
        input_size=entry.input_size,
        num_classes=entry.num_classes,
        paper=entry.paper,
    )
