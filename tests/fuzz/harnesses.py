"""Fuzz harnesses: one function per parser of untrusted bytes, `fn(data: bytes) -> None`.

Each harness hands `data` to a parser the way a user's file reaches it (written to a temp file
where the parser takes a path). A `ResNetError` with a one-line message is the expected refusal
and returns normally; any other exception, or a multi-line message, propagates: a finding.
`tests/fuzz/run.py` drives these under atheris; `tests/test_fuzz_replay.py` replays the corpora.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from resnet.data.coco import CocoDataset
from resnet.data.dicom import read_dicom
from resnet.data.images import decode_image, image_to_tensor, scan_csv
from resnet.data.nifti import read_nifti
from resnet.engine.checkpoint import load_checkpoint
from resnet.engine.config import TrainConfig
from resnet.errors import ResNetError
from resnet.models.weight_files import read_weights_file
from resnet.serve.datasets import DatasetStore
from resnet.serve.errors import ApiError
from resnet.serve.settings import ServeSettings

_work: Path | None = None


def work_dir() -> Path:
    """The harnesses' scratch folder (made once per process, removed at exit), with two tiny
    real PNGs `a.png` and `sub/b.png` that CSV and COCO inputs can point at."""
    global _work
    if _work is None:
        _work = Path(tempfile.mkdtemp(prefix="resnet-fuzz-"))
        atexit.register(shutil.rmtree, _work, True)
        (_work / "sub").mkdir()
        (_work / "images").mkdir()
        rng = np.random.default_rng(0)
        for name in ("a.png", "sub/b.png", "images/a.png"):
            Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(_work / name)
    return _work


def _write(name: str, data: bytes) -> Path:
    path = work_dir() / name
    path.write_bytes(data)
    return path


@contextlib.contextmanager
def _refusal_ok(*allowed: type[BaseException]) -> Iterator[None]:
    """Turns the package's own refusal into a normal return; its message must be one line."""
    try:
        yield
    except (ResNetError, *allowed) as e:
        message = str(e)
        if "\n" in message or not message.strip():
            raise AssertionError(f"{type(e).__name__} message is not one line: {message!r}") from e


def image(data: bytes) -> None:
    """Uploaded image bytes: `decode_image` (header checks, EXIF turn) then `image_to_tensor`."""
    with _refusal_ok():
        with decode_image(data) as img:
            image_to_tensor(img, 3)
            image_to_tensor(img, 1)


def labels_csv(data: bytes) -> None:
    """A `path,label` CSV beside two real PNGs: `scan_csv` plain, then multi-label grouped."""
    path = _write("labels.csv", data)
    with _refusal_ok():
        scan_csv(path)
    with _refusal_ok():
        scan_csv(path, multilabel=True, group_by="folder")


def config(data: bytes) -> None:
    """A YAML training config: `Config.read_yaml` then `TrainConfig.from_dict`."""
    path = _write("config.yaml", data)
    with _refusal_ok():
        TrainConfig.load(path)


def checkpoint(data: bytes) -> None:
    """A `.pt` file: `load_checkpoint`, and `read_weights_file` on the same bytes."""
    path = _write("model.pt", data)
    with _refusal_ok():
        load_checkpoint(path)
    with _refusal_ok():
        read_weights_file(path)


def safetensors(data: bytes) -> None:
    """A `.safetensors` weights file: `read_weights_file`."""
    path = _write("weights.safetensors", data)
    with _refusal_ok():
        read_weights_file(path)


def coco(data: bytes) -> None:
    """A COCO annotation JSON with `images/a.png` beside it: `CocoDataset`, then its items."""
    path = _write("annotations.json", data)
    with _refusal_ok():
        ds = CocoDataset(path)
        for i in range(min(len(ds), 4)):
            ds[i]


def dicom(data: bytes) -> None:
    """One DICOM file: `read_dicom`."""
    path = _write("scan.dcm", data)
    with _refusal_ok():
        read_dicom(path)


def nifti(data: bytes) -> None:
    """One NIfTI-1/2 file: `read_nifti`."""
    path = _write("scan.nii", data)
    with _refusal_ok():
        read_nifti(path)


def zip_upload(data: bytes) -> None:
    """An uploaded data-set ZIP: `DatasetStore.add_zip` (checks, extraction, scan); the server's
    `ApiError` (an HTTP status and a one-line message) is its refusal, as `ResNetError` is."""
    root = work_dir() / "serve"
    path = _write("upload.zip", data)
    store = DatasetStore(ServeSettings(runs=root / "runs", datasets=root / "datasets"))
    try:
        with _refusal_ok(ApiError):
            store.add_zip(path, "upload.zip")
    finally:
        shutil.rmtree(root, ignore_errors=True)


HARNESSES: dict[str, Callable[[bytes], None]] = {
    "image": image,
    "labels_csv": labels_csv,
    "config": config,
    "checkpoint": checkpoint,
    "safetensors": safetensors,
    "coco": coco,
    "dicom": dicom,
    "nifti": nifti,
    "zip_upload": zip_upload,
}
