"""Files that survive a crash: atomic writes, tensor-only `torch.load`, SHA-256 of a file.

The base layer: every other part of the package writes and reads through these, so a kill
mid-write never leaves a half-written file and no file can run pickled code when loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import ResNetError


def atomic_write_bytes(path: str | os.PathLike, write) -> Path:
    """Calls `write(file_object)` on a temp file beside `path`, then renames it into place.

    A crash or kill mid-write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are for the group to read too
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` (UTF-8) to `path` atomically."""
    return atomic_write_bytes(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes `obj` as indented JSON to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def torch_load_safe(path: str | os.PathLike, what: str = "file", mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` with one-line errors: pickled code is refused, a
    truncated or corrupt file named as such. `mmap`: tensors stay on disk until touched (cheap
    when only the plain data is wanted; files of the legacy non-zip format cannot be mapped)."""
    try:
        mmap = mmap and Path(path).is_file() and zipfile.is_zipfile(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise ResNetError(
            f"{path} holds pickled objects beyond tensors and plain data; refusing to load it "
            f"(weights_only=True): re-save its state_dict ({_first_line(e, 80)})"
        ) from None
    # torch's weights-only unpickler raises KeyError / IndexError / struct.error on a damaged
    # pickle stream: as corrupt as a truncated zip.
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        struct.error,
    ) as e:
        raise ResNetError(
            f"{path} is not a readable {what} (truncated or corrupt?): {_first_line(e, 120)}"
        ) from None


def _first_line(e: BaseException, limit: int) -> str:
    """An exception's first line (its type name when it has no message), cut to `limit`."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]


def package_versions() -> dict[str, str]:
    """The versions of resnet, torch and torchvision, recorded in every checkpoint and export."""
    from importlib.metadata import PackageNotFoundError, version

    import torchvision

    try:
        own = version("resnet")
    except PackageNotFoundError:  # running from a source tree that was never installed
        own = "0+unknown"
    return {
        "resnet": own,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }
