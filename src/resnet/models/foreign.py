"""torchvision's and timm's classifiers as models of this package: `tv:NAME` and `timm:NAME`.

`tv:NAME` is any torchvision classification builder
(`torchvision.models.list_models(module=torchvision.models)`), `timm:NAME` any `timm.list_models()`
name. They build through `resnet.create` by the package's rules: `num_classes` sizes the head,
`in_chans` the first conv (with pretrained weights: the RGB kernels summed for grey input), and
the net carries `spec` (a `ForeignSpec`), `options` and `arch`, so a checkpoint rebuilds it.

What the package needs to know per family (torchvision's, from its model code):

| tv: family              | first conv         | head         | Grad-CAM     | 28-64 px input  |
|-------------------------|--------------------|--------------|--------------|-----------------|
| resnet, resnext, wide_* | conv1              | fc           | layer4       | s1, -maxpool    |
| efficientnet (b*, v2_*) | features.0.0       | classifier.1 | features     | s1              |
| mobilenet_v2            | features.0.0       | classifier.1 | features     | s1              |
| mobilenet_v3_*          | features.0.0       | classifier.3 | features     | s1              |
| mnasnet*                | layers.0           | classifier.1 | layers       | s1              |
| regnet_x/y_*            | stem.0             | fc           | trunk_output | s1              |
| convnext_*              | features.0.0       | classifier.2 | features     | s1 (4x4 kernel) |
| densenet*               | features.conv0     | classifier   | features     | s1, -pool0      |
| shufflenet_v2_*         | conv1.0            | fc           | conv5        | s1, -maxpool    |
| squeezenet*             | features.0         | classifier.1 | features     | s1, -features.2 |
| googlenet               | conv1.conv         | fc           | inception5b  | s1, -maxpool1   |
| inception_v3            | Conv2d_1a_3x3.conv | fc           | Mixed_7c     | no: >= 75 px    |
| vgg*                    | features.0         | classifier.6 | features     | as is (>= 32)   |
| alexnet                 | features.0         | classifier.6 | features     | as is (>= 63)   |
| vit_*_P                 | conv_proj          | heads.head   | none: tokens | size, P divides |
| swin_*, swin_v2_*       | features.0.0       | head         | permute      | as is           |
| maxvit_t                | stem.0.0           | classifier.5 | blocks       | no: 224 px      |

s1: the first conv at stride 1 (the pretrained kernel kept, so ImageNet weights still load);
-X: module X (a stem max-pool) replaced by identity; size: built at the image size
(`image_size`); as is: built unchanged, the sizes in brackets the least it takes.

timm models describe themselves: the first conv and head are `pretrained_cfg["first_conv"]` and
`["classifier"]`, the Grad-CAM layer is `feature_info[-1]` (`bn2` after an EfficientNet's
`conv_head`; none for token or channels-last maps), and 28-64 px inputs get the first conv at
stride 1 and a stem `maxpool` dropped, except nets with a fixed input size (ViT, DeiT, Swin, ...)
which are built at the image size (`img_size`). googlenet and inception_v3 are built without
their auxiliary heads. An input size a net cannot take is refused by `check_input`.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ResNetError

PREFIXES = {"tv": "tv", "torchvision": "tv", "timm": "timm"}  # accepted spellings -> canonical
LIBRARIES = {"tv": "torchvision", "timm": "timm"}
OPTIONS = frozenset({"small_input", "image_size", "drop_path_rate", "transform_input"})
STRUCTURE = ("small_input", "image_size", "transform_input")  # what a weights file passes on
SMALL_SIDE = 64  # inputs up to this side get a family's small-input form


@dataclass(frozen=True)
class ForeignSpec:
    """A torchvision (`source="tv"`) or timm classifier by its library's name."""

    source: str
    name: str

    dims = 2  # images (N, C, H, W)

    @property
    def arch(self) -> str:
        """The package's name for it: "tv:efficientnet_b0", "timm:resnet10t"."""
        return f"{self.source}:{self.name}"

    @property
    def library(self) -> str:
        """ "torchvision" or "timm"."""
        return LIBRARIES[self.source]

    def to_dict(self) -> dict:
        """The spec as plain data, for checkpoints."""
        return {"kind": "foreign", "source": self.source, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> ForeignSpec:
        """The spec `to_dict` wrote."""
        if d.get("source") not in LIBRARIES or not isinstance(d.get("name"), str):
            raise ResNetError(f"malformed foreign model spec {d!r}")
        return cls(d["source"], d["name"])


@dataclass(frozen=True)
class Family:
    """Where a family keeps its first conv, head and Grad-CAM layer, and how it meets small input.

    Attributes:
        names: shell patterns of the library's names.
        stem: module path of the first conv.
        head: module paths of the classifier(s) (a Linear, or SqueezeNet's 1x1 conv).
        cam: default Grad-CAM layer (None: the net has no channels-first feature map).
        small: "stride" (first conv at stride 1 for 28-64 px), "size" (built at the image size)
            or "none" (built as is; `check_input` refuses sizes it cannot take).
        pool: a stem max-pool replaced by identity with `small_input`.
        multiple: the image side must be a multiple of this ("size": the patch).
        note: what the family needs, for refusals.
        fixed: builder options always passed.
        pretrained: builder options torchvision's own weights need.
    """

    names: tuple[str, ...]
    stem: str
    head: tuple[str, ...]
    cam: str | None
    small: str = "stride"
    pool: str | None = None
    multiple: int = 1
    note: str = ""
    fixed: tuple[tuple[str, object], ...] = ()
    pretrained: tuple[tuple[str, object], ...] = ()


_NO_AUX = (("aux_logits", False), ("init_weights", True))
TV_FAMILIES = (
    Family(("resnet*", "resnext*", "wide_resnet*"), "conv1", ("fc",), "layer4", pool="maxpool"),
    Family(("efficientnet_*",), "features.0.0", ("classifier.1",), "features"),
    Family(("mobilenet_v2",), "features.0.0", ("classifier.1",), "features"),
    Family(("mobilenet_v3_*",), "features.0.0", ("classifier.3",), "features"),
    Family(("mnasnet*",), "layers.0", ("classifier.1",), "layers"),
    Family(("regnet_*",), "stem.0", ("fc",), "trunk_output"),
    Family(("convnext_*",), "features.0.0", ("classifier.2",), "features"),
    Family(("densenet*",), "features.conv0", ("classifier",), "features", pool="features.pool0"),
    Family(("shufflenet_v2_*",), "conv1.0", ("fc",), "conv5", pool="maxpool"),
    Family(("squeezenet*",), "features.0", ("classifier.1",), "features", pool="features.2"),
    Family(
        ("googlenet",),
        "conv1.conv",
        ("fc",),
        "inception5b",
        pool="maxpool1",
        fixed=_NO_AUX,
        pretrained=(("transform_input", True),),
    ),
    Family(
        ("inception_v3",),
        "Conv2d_1a_3x3.conv",
        ("fc",),
        "Mixed_7c",
        small="none",
        note="inception_v3 needs 75 px images at least",
        fixed=_NO_AUX,
        pretrained=(("transform_input", True),),
    ),
    Family(("vgg*",), "features.0", ("classifier.6",), "features", small="none"),
    Family(("alexnet",), "features.0", ("classifier.6",), "features", small="none"),
    *(
        Family((f"vit_*_{p}",), "conv_proj", ("heads.head",), None, small="size", multiple=p)
        for p in (14, 16, 32)
    ),
    Family(("swin_*",), "features.0.0", ("head",), "permute", small="none"),
    Family(
        ("maxvit_t",),
        "stem.0.0",
        ("classifier.5",),
        "blocks",
        small="none",
        note="maxvit_t takes 224 px images",
    ),
)


def is_foreign(name: str) -> bool:
    """True for "tv:NAME", "torchvision:NAME" and "timm:NAME"."""
    prefix, sep, _ = str(name).partition(":")
    return bool(sep) and prefix.strip().lower() in PREFIXES


@functools.cache
def available(source: str) -> tuple[str, ...]:
    """The names a library builds: torchvision's classifiers ("tv") or timm's models ("timm")."""
    if source == "tv":
        import torchvision  # heavy: only once a tv: name is asked for

        return tuple(torchvision.models.list_models(module=torchvision.models))
    try:
        import timm  # optional: only once a timm: name is asked for
    except ImportError:
        raise ResNetError("timm: models need the timm package (pip install timm)") from None
    return tuple(timm.list_models())


def parse(name: str) -> ForeignSpec:
    """The spec "tv:NAME" / "timm:NAME" means, checked against the library's names.

    Raises:
        ResNetError: an unknown name (close names suggested) or a name with a weights tag.
    """
    prefix, _, rest = str(name).partition(":")
    source = PREFIXES[prefix.strip().lower()]
    key = rest.strip()
    if "." in key:
        arch = key.split(".", 1)[0]
        raise ResNetError(
            f"{name!r} names weights: use --model {source}:{arch} --weights "
            f"{LIBRARIES[source]}:{key}"
        )
    names = available(source)
    for candidate in (key, key.lower(), key.lower().replace("-", "_")):
        if candidate in names:
            return ForeignSpec(source, candidate)
    close = difflib.get_close_matches(key.lower(), names, n=3, cutoff=0.6)
    hint = (
        f"; did you mean {', '.join(f'{source}:{c}' for c in close)}?"
        if close
        else "; `resnet models --all` lists them"
    )
    raise ResNetError(f"unknown {LIBRARIES[source]} model {name!r}{hint}")


def list_foreign(pattern: str = "*") -> list[str]:
    """torchvision's and timm's names ("tv:...", "timm:...") matching a shell pattern; a plain
    word matches names containing it. timm's are left out when timm is not installed."""
    pat = pattern.strip().lower()
    if not any(c in pat for c in "*?["):
        pat = f"*{pat}*"
    names = []
    for source in LIBRARIES:
        try:
            names += [f"{source}:{n}" for n in available(source)]
        except ResNetError:
            continue
    return [n for n in names if fnmatch.fnmatchcase(n.lower(), pat)]


# ---------------------------------------------------------------------------------------------
# Per-family facts.


def _timm_cfg(name: str):
    """timm's default pretrained cfg for an architecture (None where it has none)."""
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(name)
    except RuntimeError:
        return None


def _derived(model: nn.Module, names: tuple[str, ...]) -> Family:
    """Facts read off a built net: its first conv and last Linear (a library's new family)."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not convs or not linears:
        raise ResNetError(f"{names[0]}: no conv stem and linear head found to adapt")
    return Family(names, convs[0], (linears[-1],), convs[-1], small="none")


@functools.cache
def family(spec: ForeignSpec) -> Family:
    """Where `spec`'s first conv, head and Grad-CAM layer are, and how it meets small input."""
    if spec.source == "tv":
        for fam in TV_FAMILIES:
            if any(fnmatch.fnmatchcase(spec.name, p) for p in fam.names):
                return fam
        with torch.device("meta"):
            bare = Family((spec.name,), "", (), None)
            return _derived(_build_tv(spec, bare, 1000, 3, {}), (spec.name,))
    cfg = _timm_cfg(spec.name)
    first = getattr(cfg, "first_conv", None)
    head = getattr(cfg, "classifier", None)
    if not first or not head:
        with torch.device("meta"):
            return _derived(_build_timm(spec, 1000, 3, {}), (spec.name,))
    first = first if isinstance(first, str) else first[0]
    head = (head,) if isinstance(head, str) else tuple(head)
    small = "size" if cfg.fixed_input_size else "stride"
    return Family((spec.name,), first, head, None, small=small)


def default_size(spec: ForeignSpec) -> int:
    """The side of the images the family is made for (224; inception_v3 299; timm's cfg)."""
    if spec.source == "timm":
        cfg = _timm_cfg(spec.name)
        return int(cfg.input_size[-1]) if cfg is not None else 224
    return 299 if spec.name == "inception_v3" else 224


def head_key(spec: ForeignSpec) -> str:
    """The state_dict key of the classifier's weight (its rows are the classes)."""
    return f"{family(spec).head[0]}.weight"


def stem_key(spec: ForeignSpec) -> str:
    """The state_dict key of the first conv's kernel."""
    return f"{family(spec).stem}.weight"


def adaptation_keys(model: nn.Module) -> tuple[str, tuple[str, ...]] | None:
    """`(first conv kernel key, head keys)` of a foreign net, for `load_weights`; None for ours."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ForeignSpec):
        return None
    fam = family(spec)
    return stem_key(spec), tuple(f"{h}.{p}" for h in fam.head for p in ("weight", "bias"))


def head_prefixes(model: nn.Module) -> tuple[str, ...] | None:
    """The parameter-name prefixes of a foreign net's classifier ("classifier.1.", ...); None
    for the package's own nets."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ForeignSpec):
        return None
    return tuple(f"{h}." for h in family(spec).head)


def cam_layer(model: nn.Module) -> str | None:
    """The default Grad-CAM layer of a foreign net (None: it has no channels-first map)."""
    spec = model.spec
    fam = family(spec)
    if spec.source == "tv" or fam.small == "size":
        return fam.cam
    if getattr(model, "output_fmt", "NCHW") not in (None, "NCHW"):
        return None  # channels-last maps (Swin, ...): Grad-CAM would pool the wrong axis
    if hasattr(model, "conv_head") and isinstance(getattr(model, "bn2", None), nn.Module):
        return "bn2"  # EfficientNet: the 1x1 conv head's normed, activated maps
    info = getattr(model, "feature_info", None)
    return info[-1]["module"] if info else None


def pretrained_options(spec: ForeignSpec, in_chans: int) -> dict:
    """Builder options torchvision's own weights need (googlenet's transform_input)."""
    return dict(family(spec).pretrained) if spec.source == "tv" and in_chans == 3 else {}


# ---------------------------------------------------------------------------------------------
# Building.


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _new_stem(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """The first conv for `in_chans` inputs, initialised from the family's 3-channel one
    (input channel i takes channel i mod 3's kernels): the family's initial distribution kept."""
    new = nn.Conv2d(
        in_chans,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight[:, torch.arange(in_chans) % conv.in_channels])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _build_tv(spec: ForeignSpec, fam: Family, num_classes: int, in_chans: int, kwargs: dict):
    import torchvision  # heavy: only when a tv: net is built

    model = torchvision.models.get_model(
        spec.name, weights=None, num_classes=num_classes, **dict(fam.fixed), **kwargs
    )
    depth_drop = torchvision.ops.StochasticDepth
    if "stochastic_depth_prob" in kwargs and not any(
        isinstance(m, depth_drop) for m in model.modules()
    ):  # some builders swallow unknown keywords
        raise ResNetError(f"{spec.arch} has no stochastic depth for drop_path_rate to set")
    if in_chans != 3 and fam.stem:
        _set_module(model, fam.stem, _new_stem(model.get_submodule(fam.stem), in_chans))
    return model


def _build_timm(spec: ForeignSpec, num_classes: int, in_chans: int, kwargs: dict):
    import timm  # optional: only when a timm: net is built

    return timm.create_model(
        spec.name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
    )


def _shrink_stem(model: nn.Module, spec: ForeignSpec, fam: Family) -> None:
    """The small-input form: the first conv at stride 1, a stem max-pool replaced by identity."""
    conv = model.get_submodule(fam.stem)
    if not isinstance(conv, nn.Conv2d):
        raise ResNetError(f"{spec.arch}: its first layer {fam.stem} is no conv to set to stride 1")
    conv.stride = (1, 1)
    pool = fam.pool
    if spec.source == "timm" and isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        pool = "maxpool"
    if pool:
        _set_module(model, pool, nn.Identity())


def _builder_kwargs(spec: ForeignSpec, fam: Family, options: dict) -> dict:
    """The library's keyword arguments for our options."""
    kwargs = {}
    if options["image_size"] is not None:
        kwargs["image_size" if spec.source == "tv" else "img_size"] = options["image_size"]
    if options["drop_path_rate"] is not None:
        key = "stochastic_depth_prob" if spec.source == "tv" else "drop_path_rate"
        kwargs[key] = options["drop_path_rate"]
    if options["transform_input"] is not None:
        kwargs["transform_input"] = options["transform_input"]
    return kwargs


def _check_options(spec: ForeignSpec, fam: Family, options: dict) -> None:
    """Refuses options the family cannot honour, in one line each."""
    if options["small_input"] and fam.small != "stride":
        why = fam.note or (
            f"it is built at the image size: pass image_size (a multiple of {fam.multiple})"
            if fam.small == "size"
            else "its stem is used as is"
        )
        raise ResNetError(f"{spec.arch} has no small-input form: {why}")
    size = options["image_size"]
    if size is not None and fam.small != "size":
        raise ResNetError(f"{spec.arch} takes any image size: image_size is for ViT-like nets")
    if size is not None and (size < fam.multiple or size % fam.multiple):
        raise ResNetError(
            f"{spec.arch} cuts images into {fam.multiple} px patches: the image side must be a "
            f"multiple of {fam.multiple}, not {size} (e.g. --image-size "
            f"{max(fam.multiple, round(size / fam.multiple) * fam.multiple)})"
        )
    if options["transform_input"] and not fam.pretrained:
        raise ResNetError(f"{spec.arch} takes no transform_input (googlenet, inception_v3 do)")


def build(
    spec: ForeignSpec,
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    small_input: bool = False,
    image_size: int | None = None,
    drop_path_rate: float | None = None,
    transform_input: bool | None = None,
) -> nn.Module:
    """The torchvision / timm net `spec` names, with fresh weights, fitted to our options.

    Args:
        spec: which net.
        num_classes: classifier outputs.
        in_chans: input channels (the first conv is rebuilt for other than 3).
        small_input: the family's 28-64 px form (table above).
        image_size: the side ViT-like nets are built for (a multiple of their patch).
        drop_path_rate: stochastic depth (timm's drop_path_rate, torchvision's
            stochastic_depth_prob); None: the family's default.
        transform_input: googlenet / inception_v3's input re-normalisation (set with
            torchvision's weights, as torchvision does).

    Returns:
        The library's module, carrying `spec`, `options` and `arch`.
    """
    options = dict(
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=bool(small_input),
        image_size=image_size,
        drop_path_rate=drop_path_rate,
        transform_input=transform_input,
    )
    fam = family(spec)
    _check_options(spec, fam, options)
    kwargs = _builder_kwargs(spec, fam, options)
    try:
        if spec.source == "tv":
            model = _build_tv(spec, fam, num_classes, in_chans, kwargs)
        else:
            model = _build_timm(spec, num_classes, in_chans, kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        detail = " ".join(str(e).split())[:160] or type(e).__name__
        raise ResNetError(f"{spec.arch} cannot be built with {kwargs}: {detail}") from None
    if small_input:
        _shrink_stem(model, spec, fam)
    model.spec, model.options, model.arch = spec, options, spec.arch
    return model


def on_meta(spec: ForeignSpec, **options) -> nn.Module:
    """The net with weightless (meta) tensors, for counting and shape checks without compute."""
    try:
        with torch.device("meta"):
            return build(spec, **options)
    except (NotImplementedError, RuntimeError):  # a builder that reads tensor values (RegNet)
        return build(spec, **options).to("meta")


def fit_input(spec: ForeignSpec, size: tuple[int, int], options: dict) -> dict:
    """`options` completed for `size` (H, W) images: the small-input form at 28-64 px where the
    family has one, the image size for ViT-like nets. Options already set are kept."""
    fam = family(spec)
    out = dict(options)
    if fam.small == "stride" and max(size) <= SMALL_SIDE:
        out.setdefault("small_input", True)
    if fam.small == "size":
        if size[0] != size[1]:
            raise ResNetError(f"{spec.arch} takes square images, not {size[0]}x{size[1]}")
        out.setdefault("image_size", int(size[0]))
    return out


def check_input(spec: ForeignSpec, size: tuple[int, int], **options) -> None:
    """Refuses, in one line, an image size the net `spec` and `options` (`build`'s) describe
    cannot take (too small for its downsampling, another size than a ViT is built for), found
    by a forward on meta tensors: no weights are made or downloaded for it."""
    twin = on_meta(spec, **options)
    x = torch.empty(1, twin.options["in_chans"], *size, device="meta")
    try:
        with torch.no_grad():
            twin.eval()(x)
    except (RuntimeError, ValueError, AssertionError, IndexError) as e:
        detail = " ".join(str(e).split())[:140] or type(e).__name__
        note = family(spec).note
        hint = f"; {note}" if note else "; use larger images (--image-size)"
        raise ResNetError(
            f"{spec.arch} cannot take {size[0]}x{size[1]} px images ({detail}){hint}"
        ) from None
