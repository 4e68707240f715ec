"""Keras 3 export (.keras): a functional Keras model mirroring one of our ResNets layer by layer.

The Keras model is built from the net's spec and modules (not from keras.applications), channels
last. Every PyTorch padding becomes an explicit ZeroPadding2D before a 'valid' conv or pool, so
strided convs sample the same pixels as PyTorch's symmetric padding (Keras' 'same' pads the
bottom/right first). The max-pool of the ImageNet stem follows a ReLU, so zero padding equals
PyTorch's -inf padding there; the bare stem's pool is zero-padded in our net too. An option-A
shortcut (subsample, zero channels appended) is a frozen 1x1 conv with an identity kernel: exact,
and loadable without custom layers (a Lambda would need `safe_mode=False`).

The model takes what a Keras user has: RGB images in [0, 1], NHWC, resized / cropped as the
`preprocessing` says. Its first layers apply our normalisation (a frozen 1x1 conv `rgb_to_bgr`
for Caffe-style weights, then a Normalization layer with our mean and std). The class names and
preprocessing travel as an extra `resnet.json` entry of the .keras zip, beside Keras' own
config.json / metadata.json / model.weights.h5 (`keras.saving.load_model` ignores it; Keras
does not keep it when the model is saved again). The Keras model outputs raw logits: a
calibrated checkpoint's temperature is in that metadata, and `load_classifier` divides by it.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ResNetError
from ..models.blocks import BLOCKS
from ..models.keras_weights import keras_layer_name
from ..models.layers import GlobalPool, PadShortcut
from ..models.resnet import ResNet
from .metadata import EXTRA_FILE, decode, encode

INPUT_LAYOUT = "NHWC RGB in [0, 1], resized / cropped as 'preprocessing' says; normalised inside"
SUPPORTED = (
    "2-D ResNets with an imagenet, cifar or bare stem (small_input too), basic or bottleneck "
    "blocks (post- or pre-activation, stride on the 1x1 or 3x3), A/B/S shortcuts, BatchNorm, "
    "ReLU and average pooling: the imagenet (resnet18-200), resnet*_v1, keras, keras_v2, cifar, "
    "preact, wide and wrn families and their plain twins"
)


def require_keras():
    """The `keras` module (3.x), or a one-line ResNetError saying how to install it.

    The one place this package imports Keras: with no KERAS_BACKEND set it picks "torch" first
    (TensorFlow is not needed; a backend chosen before stays).
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras  # optional heavy dependency: loaded only when a model meets Keras
    except ImportError:
        raise ResNetError(
            "Keras export and inference need Keras 3 (torch backend): pip install keras"
        ) from None
    if not str(keras.__version__).startswith("3."):
        raise ResNetError(
            f"Keras export needs Keras 3 (found {keras.__version__}): pip install -U keras"
        )
    return keras


def check_supported(model: nn.Module, arch: str = "the model") -> None:
    """Refuses, in one line naming the supported families, a net this export does not map."""
    spec = getattr(model, "spec", None)
    reason = None
    if not isinstance(model, ResNet) or spec is None:
        reason = "is not a single ResNet (an ensemble, a video or a task model)"
    elif spec.dims != 2:
        reason = "is a 3-D net"
    elif spec.stem not in ("imagenet", "cifar", "bare"):
        reason = f"has the {spec.stem!r} stem"
    elif spec.shortcut not in ("A", "B", "S"):
        reason = f"has option-{spec.shortcut} shortcuts"
    elif spec.groups != 1:
        reason = "has grouped convolutions (ResNeXt)"
    elif spec.stride_on == "pool":
        reason = "downsamples by max-pools in its stages"
    else:
        opts = model.options
        for key, want in (("norm", "batch"), ("act", "relu"), ("global_pool", "avg")):
            if opts.get(key, want) != want:
                reason = f"has {key}={opts[key]!r} (needs {want!r})"
                break
    if reason:
        raise ResNetError(f"Keras export covers {SUPPORTED}; {arch} {reason}")


class _Builder:
    """Builds the Keras graph from our modules, copying each layer's weights as it goes."""

    def __init__(self, keras, preact: bool):
        self.k = keras
        self.L = keras.layers
        self.preact = preact

    def _name(self, path: str) -> str:
        """Keras applications' name for a layer of ours (conv2_block1_1_conv), else our path."""
        return keras_layer_name(path, self.preact) or path.replace(".", "_")

    def conv(self, x, m: nn.Conv2d, path: str):
        """ZeroPadding2D (PyTorch's symmetric padding) + a 'valid' Conv2D with our weights."""
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            raise ResNetError(f"Keras export: {path} pads {m.padding!r}/{m.padding_mode}")
        name = self._name(path)
        if any(m.padding):
            x = self.L.ZeroPadding2D(tuple(m.padding), name=f"{name}_pad")(x)
        layer = self.L.Conv2D(
            m.out_channels,
            m.kernel_size,
            strides=m.stride,
            padding="valid",
            dilation_rate=m.dilation,
            groups=m.groups,
            use_bias=m.bias is not None,
            name=name,
        )
        x = layer(x)
        weights = [m.weight.detach().permute(2, 3, 1, 0)]  # OIHW -> HWIO
        if m.bias is not None:
            weights.append(m.bias.detach())
        layer.set_weights([_np(w) for w in weights])
        return x

    def bn(self, x, m: nn.BatchNorm2d, path: str):
        """BatchNormalization with our eps and running statistics (momentum is irrelevant)."""
        if not m.affine or m.running_mean is None:
            raise ResNetError(f"Keras export: {path} is a BatchNorm without affine or statistics")
        layer = self.L.BatchNormalization(axis=-1, epsilon=m.eps, name=self._name(path))
        x = layer(x)
        stats = (m.weight, m.bias, m.running_mean, m.running_var)
        layer.set_weights([_np(t.detach()) for t in stats])
        return x

    def module(self, x, m: nn.Module, path: str):
        """One of our leaf modules (or a Sequential of them) as Keras layers."""
        if isinstance(m, nn.Identity | nn.Dropout):  # dropout: identity at inference
            return x
        if isinstance(m, nn.Sequential):
            for name, child in m.named_children():
                x = self.module(x, child, f"{path}.{name}")
            return x
        if type(m) is nn.Conv2d:
            return self.conv(x, m, path)
        if type(m) is nn.BatchNorm2d:
            return self.bn(x, m, path)
        if type(m) is nn.ReLU:
            return self.L.ReLU(name=path.replace(".", "_"))(x)
        if type(m) is nn.ZeroPad2d:
            left, right, top, bottom = m.padding
            return self.L.ZeroPadding2D(((top, bottom), (left, right)), name=_id(path))(x)
        if type(m) is nn.MaxPool2d:
            return self.max_pool(x, m, path)
        if isinstance(m, PadShortcut):
            return self.pad_shortcut(x, m, path)
        raise ResNetError(f"Keras export: no Keras layer for {path} ({type(m).__name__})")

    def max_pool(self, x, m: nn.MaxPool2d, path: str):
        """A max-pool; its padding is zeros, which equals PyTorch's -inf after a ReLU (stems)."""
        if m.ceil_mode or m.dilation not in (1, (1, 1)):
            raise ResNetError(f"Keras export: {path} pools with ceil_mode or dilation")
        pad = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
        if any(pad):
            x = self.L.ZeroPadding2D(pad, name=f"{_id(path)}_pad")(x)
        stride = m.stride or m.kernel_size
        return self.L.MaxPooling2D(m.kernel_size, strides=stride, name=_id(path))(x)

    def pad_shortcut(self, x, m: PadShortcut, path: str):
        """Option A: subsample by the stride, append zero channels. A 1x1 max-pool when no
        channels are added (Keras' ResNetV2 does the same), else a frozen identity 1x1 conv."""
        if not m.extra:
            pool = self.L.MaxPooling2D(1, strides=m.stride, name=_id(path))
            return pool(x) if m.stride > 1 else x
        cin = int(x.shape[-1])
        layer = self.L.Conv2D(
            cin + m.extra, 1, strides=m.stride, use_bias=False, trainable=False, name=_id(path)
        )
        x = layer(x)
        kernel = np.zeros((1, 1, cin, cin + m.extra), dtype=np.float32)
        kernel[0, 0, np.arange(cin), np.arange(cin)] = 1.0
        layer.set_weights([kernel])
        return x

    def block(self, x, b: nn.Module, path: str):
        """One residual block: the branch, the shortcut, the sum (and a ReLU post-activation)."""
        if not isinstance(b.pool, nn.Identity):
            raise ResNetError(f"Keras export: {path} downsamples by a max-pool")
        convs = [n for n in ("conv1", "conv2", "conv3") if hasattr(b, n)]
        if b.preact:
            pre = self.module(self.module(x, b.bn1, f"{path}.bn1"), b.act1, f"{path}.act1")
            out = pre
            for i, n in enumerate(convs):
                if i:
                    out = self.module(out, getattr(b, f"bn{i + 1}"), f"{path}.bn{i + 1}")
                    out = self.module(out, getattr(b, f"act{i + 1}"), f"{path}.act{i + 1}")
                out = self.module(out, getattr(b, n), f"{path}.{n}")
        else:
            pre, out = x, x
            for i, n in enumerate(convs):
                out = self.module(out, getattr(b, n), f"{path}.{n}")
                out = self.module(out, getattr(b, f"bn{i + 1}"), f"{path}.bn{i + 1}")
                if i < len(convs) - 1:
                    out = self.module(out, getattr(b, f"act{i + 1}"), f"{path}.act{i + 1}")
        if b.skip:
            if b.downsample is None:
                identity = x
            else:
                source = pre if b.project_preact else x
                identity = self.module(source, b.downsample, f"{path}.downsample")
            out = self.L.Add(name=f"{_id(path)}_add")([out, identity])
        if not b.preact:
            last = f"act{len(convs)}"
            out = self.module(out, getattr(b, last), f"{path}.{last}")
        return out


def _id(path: str) -> str:
    return path.replace(".", "_")


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.float().cpu().numpy())


def keras_model(model: ResNet, preprocessing: dict[str, Any], arch: str = "the model"):
    """A `keras.Model` computing `model`'s logits from NHWC RGB images in [0, 1].

    Raises:
        ResNetError: a net outside the supported families (one line naming them).
    """
    check_supported(model, arch)
    if preprocessing.get("scan"):
        raise ResNetError("Keras export covers 2-D image models, not scan models")
    keras = require_keras()
    L = keras.layers
    model = model.eval()
    chans = int(model.options["in_chans"])
    inputs = keras.Input(shape=(None, None, chans), name="input")
    x = inputs
    if str(preprocessing.get("channel_order") or "rgb").lower() == "bgr" and chans == 3:
        flip = L.Conv2D(3, 1, use_bias=False, trainable=False, name="rgb_to_bgr")
        x = flip(x)
        flip.set_weights([np.eye(3, dtype=np.float32)[::-1].reshape(1, 1, 3, 3).copy()])
    mean = np.asarray(preprocessing["mean"], dtype=np.float64)
    std = np.asarray(preprocessing["std"], dtype=np.float64)
    x = L.Normalization(axis=-1, mean=mean, variance=std**2, name="normalize")(x)
    b = _Builder(keras, model.spec.preact)
    with torch.no_grad():
        x = b.module(x, model.conv1, "conv1")
        if model.pool_first:
            raise ResNetError(f"Keras export covers {SUPPORTED}; {arch} pools before its norm")
        for name in ("bn1", "act1", "maxpool"):
            x = b.module(x, getattr(model, name), name)
        for stage_name in model.stage_names:
            for i, block in enumerate(getattr(model, stage_name)):
                if type(block) not in BLOCKS.values():
                    raise ResNetError(f"Keras export: no mapping for {type(block).__name__}")
                x = b.block(x, block, f"{stage_name}.{i}")
        x = b.module(x, model.final_norm, "final_norm")
        x = b.module(x, model.final_act, "final_act")
        if not isinstance(model.global_pool, GlobalPool) or model.global_pool.kind != "avg":
            raise ResNetError(f"Keras export covers {SUPPORTED}; {arch} does not average-pool")
        x = L.GlobalAveragePooling2D(name="avg_pool")(x)
        if isinstance(model.fc, nn.Linear):
            dense = L.Dense(model.fc.out_features, name="predictions")
            x = dense(x)
            dense.set_weights([_np(model.fc.weight.detach().T), _np(model.fc.bias.detach())])
    return keras.Model(inputs, x, name=re.sub(r"\W", "_", arch) or "resnet")


def keras_bytes(model: nn.Module, metadata: dict[str, Any]) -> bytes:
    """The bytes of a .keras archive of `model`, `metadata` added as its `resnet.json` entry."""
    meta = {**metadata, "input_layout": INPUT_LAYOUT}
    km = keras_model(model, meta["preprocessing"], str(meta.get("arch", "the model")))
    with tempfile.TemporaryDirectory(prefix="resnet-keras-") as tmp:
        path = Path(tmp) / "model.keras"
        km.save(path)
        with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(EXTRA_FILE, encode(meta))
        return path.read_bytes()


def _entry(path: str | os.PathLike) -> bytes:
    """The `resnet.json` entry of a .keras archive (empty when it has none)."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.read(EXTRA_FILE)
    except (zipfile.BadZipFile, KeyError):
        return b""


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The resnet metadata (`resnet.json`) inside a .keras archive."""
    return decode(_entry(path), str(path))


class KerasRunner:
    """Runs a Keras model on our normalised NCHW batches: undoes the normalisation (and the BGR
    flip), feeds NHWC RGB in [0, 1], returns the logits as a float32 torch tensor."""

    def __init__(self, model, preprocessing: dict[str, Any]):
        self.model = model
        self.keras = require_keras()
        c = int(preprocessing["in_chans"])
        self.mean = torch.tensor(preprocessing["mean"], dtype=torch.float32).view(1, c, 1, 1)
        self.std = torch.tensor(preprocessing["std"], dtype=torch.float32).view(1, c, 1, 1)
        order = str(preprocessing.get("channel_order") or "rgb").lower()
        self.bgr = order == "bgr" and c == 3

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a normalised batch [N, C, H, W]."""
        images = x.detach().float().cpu() * self.std + self.mean
        if self.bgr:
            images = images.flip(1)
        nhwc = images.permute(0, 2, 3, 1).contiguous().numpy()
        out = self.model(nhwc, training=False)
        if isinstance(out, torch.Tensor):  # the torch backend: no round trip through numpy
            return out.detach().float().cpu()
        return torch.from_numpy(np.asarray(self.keras.ops.convert_to_numpy(out), np.float32))


def load(
    data: bytes | str | os.PathLike,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """`(runner, metadata)` for a .keras archive's bytes or file, opened with
    `keras.saving.load_model` (safe mode: the archive holds only built-in layers)."""
    keras = require_keras()
    where = "the .keras archive" if isinstance(data, bytes) else str(data)
    with tempfile.TemporaryDirectory(prefix="resnet-keras-") as tmp:
        path = Path(tmp) / "model.keras"  # load_model insists on the .keras suffix
        if isinstance(data, bytes):
            path.write_bytes(data)
        elif not Path(data).is_file():
            raise ResNetError(f"Keras model not found: {data}")
        elif Path(data).suffix.lower() == ".keras":
            path = Path(data)
        else:
            path.write_bytes(Path(data).read_bytes())
        meta = decode(_entry(path), where)
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001 - Keras raises ValueError/TypeError/OSError
            lines = str(e).strip().splitlines()
            reason = lines[0][:200] if lines else type(e).__name__
            raise ResNetError(f"{where} did not load in Keras: {reason}") from None
    return KerasRunner(model, meta["preprocessing"]), meta
