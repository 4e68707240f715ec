"""Finding scans: which samples a CSV or a folder of DICOM / NIfTI data holds, with their groups.

A scan is one sample: a DICOM file (single- or multi-frame), one DICOM series (a folder holding
one SeriesInstanceUID, or the files of one series found in a class folder) or a NIfTI file.

Two layouts are read:

- a CSV (the source itself, or `labels.csv` inside the source folder) with the columns `path`
  and `label`, and any others (a `patient` column, a site, ...); `path` names a DICOM file, a
  series folder or a NIfTI file, relative to the CSV's folder;
- class folders, `root/<class>/...`: every NIfTI file and every DICOM series under a class
  folder is one scan of that class.

Groups (`group_by`) keep one patient's scans on one side of a split: "patient" (a `patient`
CSV column, else the DICOM PatientID, read later from the header as a salted hash), "folder"
or "folder:N" (the N-th folder of the scan's path below the data root, or below its class
folder; N = 1 by default), or the name of any other CSV column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ResNetError
from .dicom import find_series
from .labels import multi_hot
from .nifti import is_nifti
from .tables import read_label_csv, row_entry

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
CSV_NAME = "labels.csv"
# Names of a binary task's negative class: listed first, so the other one is the positive.
NEGATIVE_NAMES = {"normal", "negative", "healthy", "benign", "control", "no", "absent", "0"}


@dataclass(frozen=True)
class ScanRef:
    """One scan: `path` (a file or a series folder) and, for a series found in a folder, its
    files."""

    path: Path
    files: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        """The path's name without .dcm / .nii / .nii.gz (the folder's name for a series)."""
        name = self.path.name
        for suffix in (".nii.gz", ".nii", *DICOM_SUFFIXES):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name


@dataclass
class ScanIndex:
    """The scans of a data source: refs, class names, label indices and group ids.

    A group id of None means "the DICOM PatientID, once the header is read" (`group_by
    patient` without a patient column). Raw ids stay in memory: only hashes are written.
    """

    refs: list[ScanRef]
    labels: list[int] | list[list[int]]  # class indices, or multi-hot rows (multi-label)
    classes: list[str]
    groups: list[str | None] = field(default_factory=list)


def is_dicom_file(path: Path) -> bool:
    """A DICOM suffix, or the DICM magic at byte 128 (files exported without a suffix)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_scan_file(path: Path) -> bool:
    """Whether `path` is a NIfTI or DICOM file."""
    return path.is_file() and (is_nifti(path) or is_dicom_file(path))


def is_scan_path(path: Path, limit: int = 200) -> bool:
    """A scan file, or a folder with one among its first `limit` files (recursively)."""
    if path.is_file():
        return is_scan_file(path)
    if not path.is_dir():
        return False
    for n, p in enumerate(q for q in path.rglob("*") if q.is_file()):
        if n >= limit:
            break
        if not p.name.startswith(".") and is_scan_file(p):
            return True
    return False


def csv_of(root: Path) -> Path | None:
    """The labels CSV a source names: itself (`*.csv`) or `labels.csv` in the folder."""
    if root.suffix.lower() == ".csv":
        return root
    candidate = root / CSV_NAME
    return candidate if root.is_dir() and candidate.is_file() else None


def is_scan_source(root: Path) -> bool:
    """Whether a data source holds scans (DICOM / NIfTI) rather than 2-D image files."""
    table = csv_of(root)
    if table is not None:
        _, rows = read_label_csv(table)
        first = Path(rows[0]["path"])
        return is_scan_path(first if first.is_absolute() else table.parent / first)
    if not root.is_dir():
        return False
    classes = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    return any(is_scan_path(d, limit=20) for d in classes[:5])


def _folder_group(path: Path, base: Path, level: int) -> str:
    """The `level`-th folder of `path` below `base` (1: the first)."""
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        raise ResNetError(f"{path} is not under {base}: --group-by folder needs it") from None
    if len(parts) <= level:
        raise ResNetError(
            f"{path}: no folder at level {level} below {base} for --group-by folder:{level}"
        )
    return parts[level - 1]


def _folder_level(group_by: str) -> int | None:
    """N for "folder" / "folder:N", None for other modes."""
    if group_by != "folder" and not group_by.startswith("folder:"):
        return None
    text = group_by.partition(":")[2] or "1"
    if not text.isdigit() or int(text) < 1:
        raise ResNetError(f"--group-by {group_by}: the level must be a positive whole number")
    return int(text)


def _row_group(row: dict, header: list[str], group_by: str | None, path: Path, base: Path):
    """The group of one CSV row (None: the DICOM PatientID, read with the pixels)."""
    if group_by is None:
        return str(path)
    level = _folder_level(group_by)
    if level is not None:
        return _folder_group(path, base, level)
    if group_by in header:
        if not row[group_by]:
            raise ResNetError(f"{base}: an empty {group_by!r} value for {path}")
        return row[group_by]
    if group_by == "patient":
        return None
    raise ResNetError(
        f"--group-by {group_by}: no such CSV column (columns: {', '.join(header)}); "
        "use patient, folder, folder:N or a column name"
    )


def index_csv(
    table: Path, group_by: str | None, classes: list[str] | None = None, multilabel: bool = False
) -> ScanIndex:
    """The scans a labels CSV names (see the module doc); with `multilabel`, labels list
    findings separated by ";" (`data.labels`)."""
    header, rows = read_label_csv(table)
    refs, names, groups = [], [], []
    for n, row in enumerate(rows, start=2):
        p, name = row_entry(row, n, table, multilabel, folders=True)
        refs.append(ScanRef(p))
        names.append(name)
        groups.append(_row_group(row, header, group_by, p, table.parent))
    return _indexed(refs, names, groups, classes, str(table))


def _class_scans(folder: Path) -> list[ScanRef]:
    """Every NIfTI file and every DICOM series under one class folder."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    refs = [ScanRef(p) for p in files if is_nifti(p)]
    if any(is_dicom_file(p) for p in files):
        for series in find_series(folder).values():
            first = series[0]
            path = first if len(series) == 1 else first.parent
            refs.append(ScanRef(path, tuple(series)))
    return sorted(refs, key=lambda r: str(r.path))


def index_folders(root: Path, group_by: str | None, classes: list[str] | None = None) -> ScanIndex:
    """The scans of class folders `root/<class>/...` (see the module doc)."""
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise ResNetError(f"{root} has no class folders and no {CSV_NAME}")
    level = _folder_level(group_by) if group_by else None
    if group_by and level is None and group_by != "patient":
        raise ResNetError(
            f"--group-by {group_by}: class folders have no columns; use patient or folder[:N] "
            f"(or a {CSV_NAME} with a {group_by!r} column)"
        )
    refs, names, groups = [], [], []
    for c in found:
        scans = _class_scans(root / c)
        if not scans:
            raise ResNetError(f"class folder {root / c} has no DICOM or NIfTI scans")
        for ref in scans:
            refs.append(ref)
            names.append(c)
            if level is not None:
                groups.append(_folder_group(ref.path, root / c, level))
            else:
                groups.append(None if group_by == "patient" else str(ref.path))
    return _indexed(refs, names, groups, classes, str(root))


def class_order(found: set[str], positive: str | None = None) -> list[str]:
    """Class names in label order: sorted, but for two classes the positive one last (the one
    sensitivity, ROC curves and thresholds are about): `positive`, else the one that is not a
    usual negative name (normal, negative, healthy, benign, control, …)."""
    names = sorted(found)
    if positive is not None:
        if positive not in found:
            raise ResNetError(f"--positive {positive}: no such class (classes: {', '.join(names)})")
        return [n for n in names if n != positive] + [positive]
    if len(names) == 2 and names[1].lower() in NEGATIVE_NAMES:
        names.reverse()
    return names


def _indexed(refs, names, groups, classes: list[str] | None, where: str) -> ScanIndex:
    """Label indices (multi-hot rows for tuples of findings) against `classes` (default:
    `class_order` of the names found)."""
    multilabel = any(isinstance(n, tuple) for n in names)
    found = sorted({f for n in names for f in (n if multilabel else [n])})
    classes = list(classes or (found if multilabel else class_order(set(found))))
    unknown = set(found) - set(classes)
    if unknown:
        raise ResNetError(f"{where}: labels not in the training set: {', '.join(sorted(unknown))}")
    index = {c: i for i, c in enumerate(classes)}
    labels = [multi_hot(n, classes) if multilabel else index[n] for n in names]
    return ScanIndex(refs, labels, classes, groups)


def index_scans(
    root: Path, group_by: str | None, classes: list[str] | None = None, multilabel: bool = False
) -> ScanIndex:
    """The scans of a source: its labels CSV, else its class folders."""
    table = csv_of(root)
    if table is not None:
        return index_csv(table, group_by, classes, multilabel)
    if not root.is_dir():
        raise ResNetError(f"{root}: not a folder or a CSV of scans")
    if multilabel:
        raise ResNetError(f"{root}: multi-label scans are listed in a {CSV_NAME} (findings a;b)")
    return index_folders(root, group_by, classes)
