"""Weight files: download with a SHA-256 check into the cache, the files shipped in the package,
and reading any of them as tensors only (safetensors, .pth/.pt, our checkpoints, Keras files).

`open_weights(spec)` turns a spec (a catalogue name, a path, a URL, a shipped name or a
state_dict) into a `WeightsSource`: the state_dict with its prefixes stripped, plus what the file
says about itself. Nothing here imports more than torch at import time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ResNetError
from ..storage import sha256_file, torch_load_safe
from .catalogue import FASHION_MNIST, Weights, cache_dir, get_weights, is_catalogue_spec
from .keras_weights import is_keras_file, read_keras_weights

log = logging.getLogger("resnet.weights")

CHECKPOINT_FORMAT = "resnet-checkpoint"  # engine/checkpoint.py header; models must not import it
PACKAGE_FORMAT = "resnet-weights"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / "weights"
PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / torch.compile wrappers
_CHECKPOINT_META = ("arch", "spec", "model_options", "classes", "preprocessing", "metrics")
_WRAPPED_STATE = ("model", "state_dict", "model_state_dict", "model_ema", "state_dict_ema")


# ---------------------------------------------------------------------------------------------
# Download and cache.


# Hashes are SHA-256 (full, or the prefix a publisher records: torchvision's 8 digits). MD5 is
# accepted only where a catalogue entry says so explicitly ("md5:<hex>", for Keras, which
# publishes nothing stronger) and only as the full 32-digit digest: a bare hex string is always
# SHA-256, so the SHA-256 path is not weakened by the MD5 one.
_ALGORITHMS = {"sha256": "SHA-256", "md5": "MD5"}


def _hash_spec(expected: str | None) -> tuple[str, str | None]:
    """`(algorithm, hex digest)` of a catalogue hash: "md5:<hex>" is MD5, anything else SHA-256."""
    if expected and expected.lower().startswith("md5:"):
        return "md5", expected[4:].strip().lower()
    return "sha256", expected.lower() if expected else None


def _hash_ok(digest: str, expected: str | None, algorithm: str = "sha256") -> bool:
    if expected is None:
        return True
    if algorithm == "md5":
        return len(expected) == 32 and digest == expected
    return digest.startswith(expected)


def _file_digest(path: Path, algorithm: str) -> str:
    if algorithm == "sha256":
        return sha256_file(path)
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _stream(url: str, f, h, *, desc: str, progress: bool, timeout: float) -> None:
    """Copies `url` into the open file `f`, updating the hash `h` and a progress bar."""
    from tqdm import tqdm  # a progress bar only when something is downloaded

    with urllib.request.urlopen(url, timeout=timeout) as r:
        total = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not progress,
            leave=False,
        ) as bar:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Downloads `url` to `dest` with a progress bar, checks its SHA-256 (full or prefix; or the
    full MD5 for an "md5:<hex>" hash), and renames it into place only when it is complete and right.

    Raises:
        ResNetError: one line naming the URL and where to put the file by hand (offline machine,
            HTTP error) or the hash that did not match.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    algorithm, expected = _hash_spec(sha256)
    label = _ALGORITHMS[algorithm]
    h = hashlib.new(algorithm)
    expect = f" ({label} {'' if algorithm == 'md5' else 'starting '}{expected})" if expected else ""
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                _stream(url, f, h, desc=dest.name, progress=progress, timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise ResNetError(
                f"cannot download {url} ({str(reason).splitlines()[0][:100]}); "
                f"put that file{expect} at {dest}"
            ) from None
        digest = h.hexdigest()
        if not _hash_ok(digest, expected, algorithm):
            raise ResNetError(
                f"{label} mismatch for {url}: got {digest[:16]}..., expected "
                f"{expected}...; the download is corrupt or the file changed: put the "
                f"right file at {dest}"
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sha256 is None:  # nothing published: remember this file's hash, check it on later loads
        Path(f"{dest}.sha256").write_text(digest + "\n")
    log.info("downloaded %s -> %s (%s %s)", url, dest, algorithm, digest)
    return dest


def fetch(w: Weights, *, root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The local file of catalogued weights: from the cache, torch hub's cache, or downloaded."""
    path = w.cache_path(root)
    if not path.exists() and w.source == "torchvision":
        hub = Path(torch.hub.get_dir()) / "checkpoints" / w.filename  # torchvision's own cache
        if hub.exists():
            path = hub
    if path.exists():
        recorded = Path(f"{path}.sha256")
        algorithm, expected = _hash_spec(
            w.sha256 or (recorded.read_text().strip() if recorded.exists() else None)
        )
        digest = _file_digest(path, algorithm)
        if not _hash_ok(digest, expected, algorithm):
            raise ResNetError(
                f"{path}: {_ALGORITHMS[algorithm]} {digest[:16]}... does not match {expected}... "
                f"expected for {w.name}; delete it or replace it with {w.url}"
            )
        return path
    return download(w.url, path, sha256=w.sha256, progress=progress)


# ---------------------------------------------------------------------------------------------
# Reading weight files: tensors only.


# What torch's weights-only unpickler raises for a damaged pickle, beyond what
# `torch_load_safe` words (bad memo indices, opcodes applied to the wrong objects, ...).
_DAMAGED_PICKLE = (
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    OverflowError,
    RecursionError,
    struct.error,
)


def read_torch_file(path: Path, what: str, mmap: bool = False) -> Any:
    """`torch_load_safe` (tensors and plain data only) where any damaged or empty file is a
    one-line ResNetError naming what was expected (`what`)."""
    if path.stat().st_size == 0:
        raise ResNetError(f"{path} is an empty file, not a {what}")
    try:
        return torch_load_safe(path, what, mmap=mmap)
    except _DAMAGED_PICKLE as e:
        detail = " ".join(str(e).split())[:80] or type(e).__name__
        raise ResNetError(
            f"{path} is not a readable {what} (truncated or corrupt?): {detail}"
        ) from None


def is_state_dict(obj: Any) -> bool:
    """True for a non-empty mapping of string names to tensors."""
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open  # only when a .safetensors file is read

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


def read_weights_file(
    path: str | os.PathLike, arch: str | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """`(state_dict, meta)` from a .safetensors, .pth/.pt file, one of our checkpoints, or a Keras
    file (.h5, .weights.h5, .keras: `keras_weights`, mapped onto `arch` or the net it holds).

    Only tensors and plain data are read (safetensors or `torch.load(weights_only=True)`); a file
    holding pickled code, a truncated file or an unknown layout gives a one-line ResNetError.
    `meta` carries what the file says about itself (classes, preprocessing, spec, options).
    """
    path = Path(path)
    if not path.is_file():
        raise ResNetError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if is_keras_file(path):
        return read_keras_weights(path, arch)
    meta: dict = {}
    obj = read_torch_file(path, "weights file")
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT and "model" in obj:
        meta = {k: obj.get(k) for k in _CHECKPOINT_META if k in obj}
        meta["note"] = "the 'model' entry of a resnet checkpoint"
        obj = obj["model"]
    elif not is_state_dict(obj) and isinstance(obj, Mapping):
        for key in _WRAPPED_STATE:
            if is_state_dict(obj.get(key)):
                meta["note"] = f"its {key!r} entry"
                obj = obj[key]
                break
    if not is_state_dict(obj):
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


def stem_key(state: Mapping[str, torch.Tensor]) -> str | None:
    """The key of the first conv's kernel: `conv1.weight`, a deep stem's, else the first 4-D."""
    for key in ("conv1.weight", "conv1.0.weight"):
        if key in state:
            return key
    return next((k for k, v in state.items() if v.dim() == 4), None)


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
        """Outputs of the classifier the weights carry (None: no `fc` head)."""
        w = self.state.get("fc.weight")
        return int(w.shape[0]) if w is not None and w.dim() == 2 else None

    @property
    def in_chans(self) -> int | None:
        """Input channels of the first conv (None: no conv found)."""
        key = stem_key(self.state)
        return int(self.state[key].shape[1]) if key else None

    @property
    def classes(self) -> list[str] | None:
        """Class names in output order, from the file or the catalogue entry."""
        if self.meta.get("classes"):
            return list(self.meta["classes"])
        return self.info.classes() if self.info else None

    @property
    def preprocessing(self) -> dict | None:
        """The eval transform the weights expect, from the file or the catalogue entry."""
        pre = self.meta.get("preprocessing") or (self.info.preprocessing if self.info else None)
        return dict(pre) if pre else None


# ---------------------------------------------------------------------------------------------
# Weights shipped inside the package.


def shipped_weights() -> list[str]:
    """Names of the weights shipped inside the package (`src/resnet/weights/<name>.json`)."""
    return sorted(
        p.stem for p in PACKAGE_DIR.glob("*.json") if p.with_suffix(".safetensors").exists()
    )


def _check_shipped_arch(path: Path, arch: str) -> None:
    shipped_arch = json.loads(path.with_suffix(".json").read_text()).get("arch")
    if shipped_arch and shipped_arch != arch:
        raise ResNetError(
            f"the shipped {FASHION_MNIST} weights are for {shipped_arch},"
            f" not {arch}; shipped: {', '.join(shipped_weights())}"
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
                _check_shipped_arch(path, arch)
            return path
    shipped = ", ".join(shipped_weights()) or "none in this install"
    raise ResNetError(
        f"no shipped weights named {name!r}"
        f"{f' for {arch}' if arch else ''} in {PACKAGE_DIR}; shipped: {shipped}"
    )


def is_shipped_spec(spec: str) -> bool:
    """True when `spec` names weights shipped in the package (e.g. "fashion-mnist:ARCH")."""
    s = spec.strip()
    return (
        s == FASHION_MNIST
        or s.startswith((f"{FASHION_MNIST}:", f"{FASHION_MNIST}-"))
        or ("/" not in s and "\\" not in s and (PACKAGE_DIR / f"{s}.json").exists())
    )


# ---------------------------------------------------------------------------------------------
# One entry point: a spec in, tensors and what they say about themselves out.


def _local_file(spec: str, arch: str | None, root, progress: bool) -> Path:
    """The file a non-catalogue spec names: a URL (downloaded), a path, or a shipped name."""
    if spec.startswith(("http://", "https://", "file://")):
        name = spec.rstrip("/").rsplit("/", 1)[-1] or "weights.pth"
        path = Path(root or cache_dir()) / "url" / name
        if not path.exists():
            download(spec, path, progress=progress)
        return path
    if Path(spec).expanduser().exists():
        return Path(spec).expanduser()
    if not is_shipped_spec(spec):
        raise ResNetError(
            f"weights {spec!r}: no such file, nor a known spec (torchvision:TAG, "
            f"timm:ARCH.TAG, keras:NAME, {FASHION_MNIST}, or a .pth/.pt/.safetensors/.h5/.keras "
            "path)"
        )
    return _shipped_path(spec, arch)


def open_weights(
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    arch: str | None = None,
    *,
    root: str | os.PathLike | None = None,
    progress: bool = True,
) -> WeightsSource:
    """Reads weights named by a spec into memory (downloading catalogued ones when needed).

    Args:
        source: "torchvision:IMAGENET1K_V2", "torchvision:DEFAULT", "timm:resnet50.a1_in1k",
            "keras:resnet50", "fashion-mnist" (shipped with the package; "fashion-mnist:ARCH"
            for another shipped model), a local .pth/.pt/.safetensors path (or one of our
            checkpoints), a Keras .h5/.weights.h5/.keras file, an http(s)/file URL, or a
            state_dict.
        arch: the registered model the weights go into (resolves "DEFAULT" and checks the match).
        root: the cache folder (default `cache_dir()`).
        progress: show a download progress bar.
    """
    if isinstance(source, Mapping):
        state, prefixes = strip_prefixes(source)
        return WeightsSource("state_dict", state, {"prefixes": prefixes})
    spec = os.fspath(source)
    info = None
    if is_catalogue_spec(spec):
        info = get_weights(spec, arch)
        path = fetch(info, root=root, progress=progress)
        spec = info.name
    else:
        path = _local_file(spec, arch, root, progress)
    state, meta = read_weights_file(path, arch or (info.arch if info else None))
    state, prefixes = strip_prefixes(state)
    meta["prefixes"] = prefixes
    return WeightsSource(spec, state, meta, info, path)
