"""The one registry of named variants: it feeds `create`, `resnet models`, the CLI and the tests.

`build(name)` makes a registered model with fresh weights; `factory.create` adds the weights.
torchvision's and timm's classifiers ("tv:NAME", "timm:NAME", `foreign`) resolve through the
same `get_entry` and `build` without being listed one by one: their libraries hold the names.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import inspect
from dataclasses import dataclass
from importlib.metadata import version

import torch
from torch import nn

from . import foreign
from .foreign import ForeignSpec
from .resnet import ResNet, ResNetSpec
from .video import VideoResNet, VideoResNetSpec

AnySpec = ResNetSpec | VideoResNetSpec | ForeignSpec


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant: its spec plus what the table and defaults need."""

    name: str
    spec: AnySpec
    family: str
    paper: str
    input_size: int | tuple[int, ...]  # the family's native input (3-D: D, H, W), for MACs
    num_classes: int  # the paper's default head
    depth: int
    defaults: tuple[tuple[str, object], ...] = ()  # constructor options the paper used

    @property
    def dims(self) -> int:
        """2 for image nets (N, C, H, W), 3 for volume and video nets (N, C, D, H, W)."""
        return self.spec.dims

    @property
    def plain(self) -> bool:
        """True for a net without shortcuts (the plain twin of a residual net)."""
        return not self.foreign and not self.spec.skip

    @property
    def foreign(self) -> bool:
        """True for a torchvision or timm classifier ("tv:NAME", "timm:NAME")."""
        return isinstance(self.spec, ForeignSpec)


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
    """The registry's spelling of a name: lower case, underscores for dashes."""
    return name.strip().lower().replace("-", "_")


def _squash(name: str) -> str:
    return canonical_name(name).replace("_", "")


@functools.cache
def _foreign_entry(spec: ForeignSpec) -> ModelEntry:
    lib = spec.library
    return ModelEntry(
        name=spec.arch,
        spec=spec,
        family=lib,
        paper=f"{lib} {version(lib)}",
        input_size=foreign.default_size(spec),
        num_classes=1000,
        depth=0,  # not counted for other libraries' nets
    )


def get_entry(name: str) -> ModelEntry:
    """The registered variant a name means (case, dashes and underscores forgiven); "tv:NAME"
    and "timm:NAME" give torchvision's and timm's classifiers.

    Raises:
        ValueError: no such model; the message suggests close names (ResNetError for tv:/timm:).
    """
    if foreign.is_foreign(name):
        return _foreign_entry(foreign.parse(name))
    key = canonical_name(name)
    if key not in _REGISTRY:  # "ResNet-20", "wrn-28-10", "resnext50-32x4d" name registered nets too
        key = next((n for n in _REGISTRY if _squash(n) == _squash(name)), key)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `resnet models` lists them"
        raise ValueError(f"unknown model {name!r}{hint}")
    return _REGISTRY[key]


def list_models(pattern: str = "*", dims: int | None = 2) -> list[str]:
    """Registered names matching a shell-style pattern (`resnet*`, `*plain*`), in table order.

    `dims` picks image nets (2, the default: what every 2-D pipeline can feed), volume and
    video nets (3), or all (None).
    """
    pat = canonical_name(pattern)
    if not any(c in pat for c in "*?["):
        pat = f"*{pat}*"
    return [
        n
        for n, e in _REGISTRY.items()
        if fnmatch.fnmatchcase(n, pat) and (dims is None or e.dims == dims)
    ]


def variant_spec(
    entry: ModelEntry, skip: bool | None = None, shortcut: str | None = None
) -> AnySpec:
    """The entry's spec, or its plain twin (`skip=False`) / another shortcut kind."""
    spec = entry.spec
    if entry.foreign and (skip is not None or shortcut is not None):
        raise ValueError(f"plain twins and shortcut kinds are for our ResNets, not {entry.name}")
    if skip is not None:
        spec = dataclasses.replace(spec, skip=skip)
    if shortcut is not None:
        spec = dataclasses.replace(spec, shortcut=shortcut.upper())
    return spec


def options_for(entry: ModelEntry) -> frozenset[str]:
    """The constructor options an entry's net takes (`ResNet`'s, or `foreign.OPTIONS`)."""
    return foreign.OPTIONS if entry.foreign else OPTIONS


def check_options(entry: ModelEntry, options: dict) -> None:
    """Raises TypeError naming the options the entry's net does not take."""
    known = options_for(entry)
    unknown = set(options) - known
    if unknown:
        raise TypeError(
            f"unknown option(s) for {entry.name}: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )


def _arch_name(entry: ModelEntry, spec: AnySpec) -> str:
    """The registered name a (possibly changed) spec goes by: the entry's, its plain twin's, or
    `<name>(custom)`."""
    if spec == entry.spec:
        return entry.name
    twin = plain_name(entry.name) if not spec.skip else None
    same = twin in _REGISTRY and _REGISTRY[twin].spec == dataclasses.replace(
        spec, shortcut=_REGISTRY[twin].spec.shortcut
    )
    return twin if same else f"{entry.name}(custom)"


def build(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    skip: bool | None = None,
    shortcut: str | None = None,
    **options,
) -> ResNet | VideoResNet:
    """Builds a registered model with fresh weights (`resnet.create` also loads weights).

    Args:
        name: a registered name (`resnet.list_models()`), case and dashes ignored.
        num_classes: classifier outputs; defaults to the paper's (1000 ImageNet, 10 CIFAR).
        in_chans: input channels (default 3).
        skip: False gives the plain twin (the same layers, no shortcuts).
        shortcut: override the shortcut kind ("A", "B", "D", "S").
        **options: ResNet options (small_input, zero_init_residual, drop_path_rate,
            block_dropout, head_dropout, norm, act, global_pool, grad_checkpointing).
    """
    entry = get_entry(name)
    spec = variant_spec(entry, skip, shortcut)
    check_options(entry, options)
    kwargs = dict(entry.defaults)
    kwargs.update(options)
    model = model_for_spec(
        spec,
        entry.num_classes if num_classes is None else num_classes,
        3 if in_chans is None else in_chans,
        **kwargs,
    )
    model.arch = entry.name if entry.foreign else _arch_name(entry, spec)
    return model


def model_for_spec(spec: AnySpec, *args, **options) -> nn.Module:
    """The module a spec describes: `ResNet` (2-D or 3-D), torchvision-layout `VideoResNet`, or
    a torchvision / timm classifier (`foreign.build`)."""
    if isinstance(spec, ForeignSpec):
        return foreign.build(spec, *args, **options)
    cls = VideoResNet if isinstance(spec, VideoResNetSpec) else ResNet
    return cls(spec, *args, **options)


def spec_from_dict(d: dict) -> AnySpec:
    """The spec a checkpoint recorded (`spec.to_dict()`): video specs carry `kind: video`,
    torchvision / timm nets `kind: foreign`."""
    if d.get("kind") == "video":
        return VideoResNetSpec.from_dict(d)
    if d.get("kind") == "foreign":
        return ForeignSpec.from_dict(d)
    return ResNetSpec.from_dict(d)


def plain_name(name: str) -> str:
    """The plain twin's name: resnet56 -> plain56, preact_resnet164 -> preact_plain164,
    wrn_28_10 -> plain_wrn_28_10."""
    return name.replace("resnet", "plain", 1) if "resnet" in name else f"plain_{name}"


def count_params(model: nn.Module) -> int:
    """Number of parameters (every element of every parameter tensor)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int | tuple[int, ...], in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass at `input_size`, counted on the meta device.

    `input_size`: a side (a square image, or a cube for a 3-D net) or the full (D, H, W) / (H, W).
    """
    from torch.utils.flop_counter import FlopCounterMode  # heavy (pulls in triton): only here

    if isinstance(input_size, int):
        dims = getattr(getattr(model, "spec", None), "dims", 2)
        input_size = (input_size,) * dims
    x = torch.empty(1, in_chans, *input_size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2


def _meta_model(entry: ModelEntry, size: int | tuple[int, ...]) -> nn.Module:
    """The entry's net on the meta device (a ViT-like foreign net built for `size`)."""
    if not entry.foreign:
        with torch.device("meta"):
            return build(entry.name)
    options = {}
    if isinstance(size, int) and foreign.family(entry.spec).small == "size":
        options["image_size"] = size
    return foreign.on_meta(entry.spec, **options)


def model_info(name: str, input_size: int | tuple[int, ...] | None = None) -> dict:
    """Name, family, depth, parameters and MACs at `input_size` (default: the net's native
    size), without real weights. Foreign nets have depth 0 and skips None (not counted)."""
    entry = get_entry(name)
    size = input_size or entry.input_size
    model = _meta_model(entry, size)
    return dict(
        name=entry.name,
        family=entry.family,
        depth=entry.depth,
        skips=None if entry.foreign else entry.spec.skip,
        params=count_params(model),
        macs=count_macs(model, size),
        input_size=size,
        num_classes=entry.num_classes,
        paper=entry.paper,
    )
