"""Scans as training data: DICOM / NIfTI decoded into volumes (3-D nets) or slices (2-D nets).

Every scan goes the same way, in training, `resnet val` and `resnet predict`:

1. read (`dicom.read_dicom` / `read_series`, `nifti.read_nifti`) at full range (HU for CT);
2. reoriented to one layout, "SPL" (slices from inferior to superior, rows from anterior to
   posterior, columns from the patient's right to left: how a radiologist sees an axial slice);
3. resampled to `spacing` (z, y, x) mm when given;
4. windowed to [0, 1] (a preset such as "lung", "W,L" in HU, or per-scan min-max);
5. brought to the net's size: `volume` (D, H, W) by trilinear resizing, or by a centre crop
   after resampling (which keeps the physical scale, and refuses a scan smaller than the crop);
   in slice mode every slice is resized (or cropped) to `size` x `size`, and `slices` K
   neighbouring slices become the K channels (2.5-D; K = 1 is plain slices).

What was done is recorded in the checkpoint's preprocessing under "scan" (`ScanOptions`), so a
checkpoint predicts on a new DICOM file, series folder or NIfTI file exactly as it trained.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ResNetError
from .bundle import DataBundle, Split
from .config import DataConfig
from .dicom import find_series, read_dicom, read_series
from .grouping import group_salt, held_out
from .labels import strata
from .loaders import TensorLoader
from .nifti import is_nifti, read_nifti
from .scan_index import ScanIndex, ScanRef, index_scans, is_scan_file
from .splits import VALIDATION_SEED, stratified_subset
from .transforms import make_preprocessing
from .volumes import Volume, apply_window, center_crop, parse_window, reorient, resample, resize

ORIENTATION = "SPL"
DEFAULT_VOLUME = (32, 64, 64)


@dataclass(frozen=True)
class ScanOptions:
    """How scans become net inputs (recorded in a checkpoint's preprocessing as "scan").

    Attributes:
        mode: "volume" (3-D nets, inputs [1, D, H, W]) or "slices" (2-D nets, [K, size, size]).
        volume: (D, H, W) of volume mode.
        slices: K neighbouring slices as channels (slice mode; odd).
        size: the side of a slice in slice mode.
        window: a window preset, "W,L" or None (per-scan min-max).
        spacing: (z, y, x) mm to resample to first, or None.
    """

    mode: str
    volume: tuple[int, int, int] | None = None
    slices: int = 1
    size: int | None = None
    window: str | None = None
    spacing: tuple[float, float, float] | None = None
    orientation: str = ORIENTATION

    @classmethod
    def from_config(cls, cfg: DataConfig) -> ScanOptions:
        """The options a data config asks for (volume mode unless `slices` is set)."""
        parse_window(cfg.window)  # a bad window fails before any scan is read
        spacing = tuple(cfg.spacing) if cfg.spacing else None
        if cfg.slices:
            return cls("slices", None, cfg.slices, cfg.image_size, cfg.window, spacing)
        return cls("volume", tuple(cfg.volume or DEFAULT_VOLUME), 1, None, cfg.window, spacing)

    @classmethod
    def from_dict(cls, d: dict) -> ScanOptions:
        """From a checkpoint's preprocessing["scan"]."""
        d = dict(d)
        for key in ("volume", "spacing"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def to_dict(self) -> dict:
        """Plain JSON data."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def channels(self) -> int:
        """Input channels of the net: 1 for volumes, K for slices."""
        return 1 if self.mode == "volume" else self.slices


def read_scan(ref: ScanRef) -> Volume:
    """A scan as a `Volume` at full range (patient ids salted-hashed in its metadata)."""
    if ref.files:
        return read_series(ref.files, salt=group_salt())
    if is_nifti(ref.path):
        return read_nifti(ref.path)
    return read_dicom(ref.path, salt=group_salt())


def _grey_spl(volume: Volume) -> Volume:
    """One channel (colour averaged), in the SPL layout when the orientation is known."""
    if volume.array.ndim == 4:
        volume = Volume(volume.array.mean(axis=3, dtype=np.float32), volume.meta)
    if volume.meta.orientation:
        volume = reorient(volume, ORIENTATION)
    return volume


def prepare(volume: Volume, opts: ScanOptions, name: str = "scan") -> torch.Tensor:
    """A scan in [0, 1] at the net's size: [D, H, W] (volume mode) or [D0, size, size]."""
    volume = _grey_spl(volume)
    try:
        if opts.spacing:
            volume = resample(volume, opts.spacing)
        volume = Volume(apply_window(volume.array, parse_window(opts.window)), volume.meta)
        d0, h0, w0 = volume.array.shape
        size = opts.size or h0
        shape = opts.volume if opts.mode == "volume" else (d0, size, size)
        volume = center_crop(volume, shape) if opts.spacing else resize(volume, shape)
    except ResNetError as e:
        raise ResNetError(f"{name}: {e}") from None
    return torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))


def slice_stacks(volume: torch.Tensor, k: int) -> torch.Tensor:
    """[D, H, W] -> [D, k, H, W]: each slice with its k // 2 neighbours each side (edges
    repeated), the 2.5-D input of a 2-D net."""
    d = volume.shape[0]
    offsets = torch.arange(k) - k // 2
    index = (torch.arange(d)[:, None] + offsets[None]).clamp(0, d - 1)
    return volume[index]


def net_inputs(scan: torch.Tensor, opts: ScanOptions) -> torch.Tensor:
    """A prepared scan as the net's samples, in [0, 1]: [1, 1, D, H, W] or [D, K, S, S]."""
    if opts.mode == "volume":
        return scan[None, None]
    return slice_stacks(scan, opts.slices)


# ---------------------------------------------------------------------------------------------
# Decoding a data set


def _decode(index: ScanIndex, opts: ScanOptions, on_bad: str, desc: str):
    """(prepared scans, hashed patient ids, kept indices); bad scans skipped with a warning."""
    scans, patients, keep = [], [], []
    # None: no bar when stderr is not a terminal (a log, a pipe), where it would only add noise
    # around the one-line error a refused run prints.
    quiet = True if len(index.refs) < 20 else None
    bar = tqdm(index.refs, desc=desc, unit="scan", leave=False, disable=quiet)
    for i, ref in enumerate(bar):
        try:
            volume = read_scan(ref)
            scans.append(prepare(volume, opts, str(ref.path)))
        except ResNetError as e:
            if on_bad == "error":
                raise
            warnings.warn(f"skipping {e} (use --bad-images error to stop)", stacklevel=2)
            continue
        patients.append(volume.meta.patient)
        keep.append(i)
    if not scans:
        raise ResNetError("no readable scans found")
    return scans, patients, keep


def _groups(index: ScanIndex, patients: list[str], keep: list[int]) -> list[str]:
    """The kept scans' groups; "patient" without a column takes the header's hashed PatientID."""
    groups = []
    for patient, i in zip(patients, keep, strict=True):
        group = index.groups[i]
        if group is None:
            if not patient:
                raise ResNetError(
                    f"{index.refs[i].path} has no PatientID: give the CSV a patient column or "
                    "use --group-by folder"
                )
            group = patient
        groups.append(group)
    return groups


def _split(labels: list[int], groups: list[str], cfg: DataConfig) -> tuple[list, list, dict]:
    """(train, val) scan indices by group, and the hashed record of who went where."""
    return held_out(
        labels,
        groups,
        val_split=cfg.val_split,
        folds=cfg.folds,
        fold=cfg.fold,
        group_by=cfg.group_by or "scan",
        seed=VALIDATION_SEED,
    )


def _tensors(scans, labels, picks, opts: ScanOptions) -> tuple[torch.Tensor, ...]:
    """The picked scans as samples (volumes, or every slice of them) with their labels and the
    position of each sample's scan in `picks` (its "owner")."""
    xs = [net_inputs(scans[i], opts) for i in picks]
    ys = [
        torch.tensor([labels[i]] * len(x), dtype=torch.long) for x, i in zip(xs, picks, strict=True)
    ]
    owners = [torch.full((len(x),), k, dtype=torch.long) for k, x in enumerate(xs)]
    return torch.cat(xs), torch.cat(ys), torch.cat(owners)


def _check_memory(scans: list[torch.Tensor], opts: ScanOptions, limit_gb: float) -> None:
    """Refuses a data set whose samples would not fit the in-memory budget."""
    n = sum(int(s.numel()) for s in scans) * opts.channels * 4
    if n > limit_gb * 2**30:
        raise ResNetError(
            f"the scans take {n / 2**30:.1f} GB as float32 inputs, over --memory-limit "
            f"{limit_gb} GB: use a smaller --volume, fewer --slices or raise the limit"
        )


def _normalised(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def _stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of samples [N, C, ...]."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return flat.mean(1).tolist(), flat.std(1).clamp_min(1e-3).tolist()


def preprocessing(opts: ScanOptions, x: torch.Tensor, mean, std) -> dict:
    """The eval preprocessing a scan checkpoint carries (sizes, mean/std and "scan")."""
    return make_preprocessing(opts.channels, tuple(x.shape[-2:]), mean, std) | {
        "scan": opts.to_dict()
    }


def scan_bundle(cfg: DataConfig, root: Path) -> DataBundle:
    """A data set of scans: decoded into memory, split by group, recorded (see the module doc)."""
    opts = ScanOptions.from_config(cfg)
    index = index_scans(root, cfg.group_by, None, cfg.multilabel)
    scans, patients, keep = _decode(index, opts, cfg.bad_images, "reading scans")
    _check_memory(scans, opts, cfg.memory_limit_gb)
    labels = [index.labels[i] for i in keep]
    train, val, record = _split(labels, _groups(index, patients, keep), cfg)
    if cfg.subset:
        train = [
            train[i] for i in stratified_subset(strata([labels[i] for i in train]), cfg.subset)
        ]
    x, y, _ = _tensors(scans, labels, train, opts)
    mean, std = _stats(x)
    pre = preprocessing(opts, x, mean, std) | ({"multilabel": True} if cfg.multilabel else {})
    val_split = None
    if val:
        vx, vy, owners = _tensors(scans, labels, val, opts)
        val_split = Split(vy, _normalised(vx, mean, std), owners=owners)
    bundle = DataBundle(
        str(root), index.classes, pre, Split(y, _normalised(x, mean, std)), val_split, None
    )
    bundle.split_record = record
    return bundle


def scan_eval_loader(
    source: str,
    split: str,
    pre: dict,
    classes: list[str],
    data_cfg: DataConfig,
    *,
    batch_size: int = 16,
    bad_images: str = "skip",
) -> TensorLoader:
    """One split of a scan source preprocessed as a checkpoint says: "train" / "val" as the
    training run split it (the same groups and folds), or "all" (another data set). The
    loader's `owners` holds each sample's scan (slices of one scan share it)."""
    opts = ScanOptions.from_dict(pre["scan"])
    root = Path(source).expanduser()
    if not root.exists():
        raise ResNetError(f"data not found: {root}")
    if split == "test":
        raise ResNetError(f"{root}: scan data sets have no test split; use --split val or all")
    group_by = data_cfg.group_by if split != "all" else None
    index = index_scans(root, group_by, classes, bool(pre.get("multilabel")))
    scans, patients, keep = _decode(index, opts, bad_images, split)
    labels = [index.labels[i] for i in keep]
    picks = list(range(len(keep)))
    if split != "all":
        train, val, record = _split(labels, _groups(index, patients, keep), data_cfg)
        picks = val if split == "val" else train
        if not picks:
            raise ResNetError("this run held out no validation split (val_split 0)")
    x, y, owners = _tensors(scans, labels, picks, opts)
    loader = TensorLoader(
        _normalised(x, pre["mean"], pre["std"]), y, batch_size=batch_size, shuffle=False
    )
    loader.owners = owners  # slices: which scan each sample is, for per-scan metrics
    loader.split_record = record if split != "all" else None  # checked against the run's
    return loader


# ---------------------------------------------------------------------------------------------
# Prediction inputs


def expand_scans(paths: list[str | Path]) -> list[ScanRef]:
    """The scans named: NIfTI or DICOM files, and every series / NIfTI file in a folder."""
    refs: list[ScanRef] = []
    for item in paths:
        p = Path(item)
        if not p.exists():
            raise ResNetError(f"no such file or folder: {p}")
        if p.is_file():
            if not is_scan_file(p):
                raise ResNetError(f"{p} is not a DICOM or NIfTI file; this model reads scans")
            refs.append(ScanRef(p))
            continue
        found = [ScanRef(f) for f in sorted(p.rglob("*")) if f.is_file() and is_nifti(f)]
        has_dicom = any(is_scan_file(f) and not is_nifti(f) for f in p.rglob("*") if f.is_file())
        if has_dicom:
            for files in find_series(p).values():
                found.append(ScanRef(files[0].parent, tuple(files)))
        if not found:
            raise ResNetError(f"{p} holds no DICOM or NIfTI scans")
        refs += found
    return refs


def scan_input(ref: ScanRef, pre: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(net input, display): the normalised samples of one scan ([1, 1, D, H, W] or [D, K, S,
    S]) and the prepared scan [D, H, W] in [0, 1] (what Grad-CAM draws over)."""
    opts = ScanOptions.from_dict(pre["scan"])
    scan = prepare(read_scan(ref), opts, str(ref.path))
    return _normalised(net_inputs(scan, opts), pre["mean"], pre["std"]), scan


def scan_samples(pre: dict, paths: list[str | Path], n: int) -> torch.Tensor:
    """The first `n` net inputs from the scans under `paths` (export parity checks)."""
    xs, have = [], 0
    for ref in expand_scans(paths):
        x = scan_input(ref, pre)[0]
        xs.append(x)
        have += len(x)
        if have >= n:
            break
    return torch.cat(xs)[:n]
