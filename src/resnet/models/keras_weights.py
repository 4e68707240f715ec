"""Keras ResNet weights (.weights.h5, .keras, legacy .h5) read with h5py, mapped onto our nets.

Keras names its layers `conv1_conv`, `conv2_block1_1_conv`, `conv2_block1_preact_bn`, `post_bn`,
`predictions`; `read_keras_weights(path, arch)` finds each of them by name, turns kernels from
Keras' HWIO into our OIHW (a dense kernel is transposed), BatchNorm's gamma/beta/moving
statistics into weight/bias/running_mean/running_var, and checks every layer against the net it
goes into: a missing, extra or misshapen layer is one line naming the first such layer.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ResNetError
from .catalogue import keras_preprocessing
from .registry import build, get_entry, list_models
from .resnet import ResNetSpec

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")  # .weights.h5 ends in .h5
# A layer's arrays in Keras' order, and the names our modules give them.
_ROLES = {
    "conv": (("kernel", "weight"), ("bias", "bias")),
    "bn": (
        ("gamma", "weight"),
        ("beta", "bias"),
        ("moving_mean", "running_mean"),
        ("moving_variance", "running_var"),
    ),
    "dense": (("kernel", "weight"), ("bias", "bias")),
}
_KINDS = ((nn.Conv2d, "conv"), (nn.BatchNorm2d, "bn"), (nn.Linear, "dense"))
_TOP = {"conv1": "conv1_conv", "bn1": "conv1_bn", "final_norm": "post_bn", "fc": "predictions"}
_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(conv|bn|downsample\.)(\d)")

# A layer's arrays: (the name the file gives it, or None where it gives none; the array).
Layers = dict[str, list[tuple[str | None, np.ndarray]]]


def is_keras_file(path: str | Path) -> bool:
    """True for the file names Keras writes weights to: .h5, .weights.h5, .hdf5, .keras."""
    return Path(path).suffix.lower() in KERAS_SUFFIXES


def keras_param_count(model: nn.Module) -> int:
    """What Keras' `count_params()` says for the same net: our parameters plus BatchNorm's moving
    mean and variance, which Keras counts as (non-trainable) weights and we keep as buffers."""
    stats = sum(
        b.numel()
        for name, b in model.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
    return sum(p.numel() for p in model.parameters()) + stats


# ---------------------------------------------------------------------------------------------
# Reading: layer name -> arrays, whatever the file format.


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _short(weight_name) -> str:
    """'conv1_conv/kernel:0' -> 'kernel'."""
    return _text(weight_name).rsplit("/", 1)[-1].split(":", 1)[0]


def _legacy_layers(group) -> Layers:
    """Keras 2 / legacy H5: `layer_names` on the group, `weight_names` on each layer."""
    layers: Layers = {}
    for raw in group.attrs.get("layer_names", []):
        name = _text(raw)
        if name not in group:
            continue
        g = group[name]
        arrays = [(_short(w), np.asarray(g[_text(w)])) for w in g.attrs.get("weight_names", [])]
        if arrays:
            layers[name] = arrays
    return layers


def _keras3_layers(group, path: Path) -> Layers:
    """Keras 3 .weights.h5: `layers/<path>/vars/0, 1, ...`, the layer's name in `vars.attrs`."""
    import h5py  # only when a Keras file is read (see read_keras_layers)

    found: list[tuple[str, object]] = []
    group.visititems(lambda key, obj: found.append((key, obj)))
    layers: Layers = {}
    for key, obj in found:
        if not (isinstance(obj, h5py.Group) and key.rsplit("/", 1)[-1] == "vars" and len(obj)):
            continue
        if "name" not in obj.attrs:
            raise ResNetError(
                f"{path}: layer {key.rsplit('/', 1)[0]!r} carries no Keras layer name (an older "
                "Keras 3 file); save it again with a recent Keras, or as a legacy .h5"
            )
        order = sorted(obj, key=lambda k: (len(k), k))  # "0", "1", ..., "10"
        layers[_text(obj.attrs["name"])] = [(None, np.asarray(obj[k])) for k in order]
    return layers


def _layers(f, path: Path) -> Layers:
    if "model_weights" in f:  # a whole legacy model (model.save("x.h5"))
        return _legacy_layers(f["model_weights"])
    if "layer_names" in f.attrs:  # legacy weights only (Keras' own downloads)
        return _legacy_layers(f)
    if "layers" in f:  # Keras 3 (.weights.h5, or inside a .keras archive)
        return _keras3_layers(f["layers"], path)
    return {}


@contextmanager
def _open_h5(path: Path) -> Iterator[object]:
    """The HDF5 file at `path`; for a .keras archive, its `model.weights.h5`, in memory."""
    import h5py  # only when a Keras file is read (see read_keras_layers)

    if path.suffix.lower() != ".keras":
        with h5py.File(path, "r") as f:
            yield f
        return
    try:
        with zipfile.ZipFile(path) as z:
            data = z.read("model.weights.h5")
    except (zipfile.BadZipFile, KeyError) as e:
        raise ResNetError(
            f"{path} is not a Keras archive with model.weights.h5 inside ({e})"
        ) from None
    with h5py.File(io.BytesIO(data), "r") as f:
        yield f


def read_keras_layers(path: str | Path) -> Layers:
    """Every layer with weights in a Keras file, in file order: name -> [(weight name, array)].

    Reads Keras 3 `.weights.h5`, `.keras` archives and legacy (Keras 2) `.h5` files, whole
    models or weights only. h5py is imported here, when a Keras file is read, so that
    `import resnet` stays light.
    """
    path = Path(path)
    try:
        with _open_h5(path) as f:
            return _layers(f, path)
    except OSError as e:
        reason = str(e).splitlines()[0][:100]
        raise ResNetError(
            f"{path} is not a readable HDF5 file (truncated, or not Keras weights?): {reason}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Mapping: our modules <-> Keras layer names.


def keras_layer_name(module: str, preact: bool) -> str | None:
    """The Keras layer a module of ours is (None: Keras' ResNets have no such layer).

    `layer2.0.conv1` -> `conv3_block1_1_conv`; `.downsample.0/1` -> `_0_conv/_0_bn`; in
    pre-activation nets a block's bn1 is `_preact_bn` and bn2/bn3 are `_1_bn`/`_2_bn`.
    """
    if module in _TOP:
        return _TOP[module]
    m = _BLOCK.fullmatch(module)
    if not m:
        return None
    prefix = f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}"
    kind, k = m[3], int(m[4])
    if kind == "downsample.":
        return f"{prefix}_0_{'conv' if k == 0 else 'bn'}" if k < 2 else None
    if kind == "conv":
        return f"{prefix}_{k}_conv"
    if preact:
        return f"{prefix}_preact_bn" if k == 1 else f"{prefix}_{k - 1}_bn"
    return f"{prefix}_{k}_bn"


def _keras_nets() -> list[str]:
    return [n for n in list_models("keras_*") if get_entry(n).spec.skip]


def _kind(module: nn.Module) -> str | None:
    return next((kind for cls, kind in _KINDS if type(module) is cls), None)


def _expected(model: nn.Module, arch: str) -> list[tuple[str, str, str, nn.Module]]:
    """`(keras name, module path, kind, module)` for each layer of `model` that holds weights."""
    spec = getattr(model, "spec", None)
    out = []
    for path, m in model.named_modules():
        kind = _kind(m)
        name = keras_layer_name(path, spec.preact) if kind else None
        if name is None and (kind or any(m.parameters(recurse=False))):
            raise ResNetError(
                f"{arch} has no Keras counterpart for its layer {path}: Keras weights fit "
                f"{', '.join(_keras_nets())}"
            )
        if name is not None:
            out.append((name, path, kind, m))
    return out


def guess_arch(layers: Layers) -> str | None:
    """The registered Keras net a file's layer names describe (None: no Keras ResNet we know)."""
    depths: dict[int, int] = {}
    for name in layers:
        m = re.match(r"conv(\d)_block(\d+)_", name)
        if m:
            depths[int(m[1])] = max(depths.get(int(m[1]), 0), int(m[2]))
    stages = tuple(depths.get(s, 0) for s in (2, 3, 4, 5))
    v2 = any(n.endswith("_preact_bn") for n in layers)
    for name in _keras_nets():
        spec = get_entry(name).spec
        if spec.preact == v2 and spec.depths == stages:
            return name
    return None


# ---------------------------------------------------------------------------------------------
# Arrays -> our tensors, checked layer by layer.


def _ordered(arrays: list, roles: list[str]) -> list[np.ndarray]:
    """The arrays in `roles` order: by their names where the file gives them, else as stored."""
    names = [n for n, _ in arrays]
    if sorted(n or "" for n in names) == sorted(roles):
        by_name = dict(arrays)
        return [by_name[r] for r in roles]
    return [a for _, a in arrays]


def _to_torch(array: np.ndarray, kind: str, role: str) -> torch.Tensor:
    """A Keras array in our layout: conv kernels HWIO -> OIHW, dense (in, out) -> (out, in)."""
    if role == "kernel":
        array = array.transpose(3, 2, 0, 1) if kind == "conv" else array.T
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class _Mismatch(ResNetError):
    """One layer of the file does not fit the model (the message names it)."""


def _layer_tensors(arrays: list, name: str, path: str, kind: str, module: nn.Module) -> dict:
    """Our `{path.param: tensor}` for one Keras layer; raises _Mismatch naming the layer."""
    pairs = [(k, ours) for k, ours in _ROLES[kind] if getattr(module, ours, None) is not None]
    if len(arrays) != len(pairs):
        wanted = ", ".join(k for k, _ in pairs)
        raise _Mismatch(
            f"Keras layer {name} holds {len(arrays)} arrays, {path} takes {len(pairs)} ({wanted})"
        )
    out = {}
    for (role, ours), array in zip(pairs, _ordered(arrays, [k for k, _ in pairs]), strict=True):
        tensor = _to_torch(array, kind, role)
        want = tuple(getattr(module, ours).shape)
        if tuple(tensor.shape) != want:
            raise _Mismatch(
                f"Keras layer {name} {role} has shape {tuple(array.shape)}, {path} needs "
                f"{want} in our layout"
            )
        out[f"{path}.{ours}"] = tensor
    return out


def _reference(arch: str, layers: Layers) -> nn.Module:
    """`arch` on the meta device with the file's classes and input channels (shapes only)."""
    head = [a for _, a in layers.get("predictions", [])]
    stem = [a for _, a in layers.get("conv1_conv", []) if a.ndim == 4]
    # No `predictions` layer (Keras' include_top=False): a model without a head.
    num_classes = next((int(a.shape[0]) for a in head if a.ndim == 1), None if head else 0)
    in_chans = int(stem[0].shape[2]) if stem else None
    with torch.device("meta"):
        return build(arch, num_classes=num_classes, in_chans=in_chans)


def keras_state_dict(layers: Layers, arch: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Our state_dict for `arch` from a Keras file's layers, and the head and input channels
    it has (`{"num_classes", "in_chans"}`).

    Raises:
        _Mismatch (a ResNetError): the first layer the model has and the file lacks, holds in
            another shape, or the first the file has and the model lacks.
    """
    state: dict[str, torch.Tensor] = {}
    reference = _reference(arch, layers)
    expected = _expected(reference, arch)
    for name, path, kind, module in expected:
        if name not in layers:
            raise _Mismatch(f"Keras layer {name} (for {path}) is missing")
        state.update(_layer_tensors(layers[name], name, path, kind, module))
    known = {name for name, *_ in expected}
    extra = [n for n in layers if n not in known]
    if extra:
        more = f" (+{len(extra) - 1} more)" if len(extra) > 1 else ""
        raise _Mismatch(f"Keras layer {extra[0]}{more} has no place in {arch}")
    return state, dict(num_classes=reference.num_classes, in_chans=reference.options["in_chans"])


def _arch_spec(arch: str) -> ResNetSpec:
    try:
        spec = get_entry(arch).spec
    except ValueError as e:
        raise ResNetError(str(e)) from None
    if not isinstance(spec, ResNetSpec) or spec.dims != 2:
        raise ResNetError(
            f"{arch} is not an image ResNet: Keras weights fit {', '.join(_keras_nets())}"
        )
    return spec


def read_keras_weights(path: str | Path, arch: str | None = None) -> tuple[dict, dict]:
    """`(state_dict, meta)` from a Keras file, for `arch` (None: the net the file's layers name).

    `meta` records the net the file holds (`arch`, `spec`, `model_options`: `model_from_weights`
    rebuilds it) and its Keras preprocessing (caffe/BGR for v1, [-1, 1] for v2), so it travels
    with the weights.

    Raises:
        ResNetError: one line: not HDF5 / not a Keras archive, no weights in it, or the first
            layer that does not fit `arch` (with the net the file seems to hold).
    """
    path = Path(path)
    layers = read_keras_layers(path)
    if not layers:
        raise ResNetError(f"{path} holds no Keras weights (no layer with arrays in it)")
    guess = guess_arch(layers)
    target = arch or guess
    if target is None:
        raise ResNetError(
            f"{path} is not a Keras ResNet this package knows ({', '.join(_keras_nets())}); "
            "name the model: resnet.create(NAME, weights=...)"
        )
    spec = _arch_spec(target)
    try:
        state, options = keras_state_dict(layers, target)
    except _Mismatch as e:
        hint = f"; the file holds {guess}" if guess and guess != target else ""
        raise ResNetError(f"{path} does not fit {target}: {e}{hint}") from None
    meta = {
        "note": "a Keras file (layers by name, kernels HWIO -> OIHW)",
        "preprocessing": keras_preprocessing(v2=spec.preact),
    }
    if guess:
        meta.update(arch=guess, spec=get_entry(guess).spec.to_dict(), model_options=options)
    return state, meta
