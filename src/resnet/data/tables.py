"""Label CSVs: the columns `path,label` (and any others), read with one-line errors.

Both image data sets (`images.scan_csv`) and scan data sets (`scan_index.index_csv`) read them
here: UTF-8 (a BOM allowed), a header with `path` and `label`, one row per sample, paths
relative to the CSV's folder; for multi-label data a label lists findings ("a;b", `labels`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import ResNetError
from .labels import findings

REQUIRED = ("path", "label")


def shown(value) -> str:
    """`value` as one line: line breaks and other control characters (from a CSV cell) escaped."""
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not set(REQUIRED) <= set(header):
            raise ResNetError(
                f"{path}: needs the columns {','.join(REQUIRED)} "
                f"(found {shown(','.join(header)) or 'none'})"
            )
        rows = []
        for n, r in enumerate(reader, start=2):
            if None in r or None in r.values():
                raise ResNetError(f"{path}:{n}: expected {len(header)} fields")
            rows.append({k.strip(): (v or "").strip() for k, v in r.items()})
    return header, rows


def read_label_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The CSV's stripped header and rows; one-line errors for a missing, non-UTF-8, malformed
    or empty file, or one without the `path,label` columns."""
    if not path.is_file():
        raise ResNetError(f"CSV not found: {path}")
    try:
        header, rows = _rows(path)
    except UnicodeDecodeError as e:
        raise ResNetError(f"{path} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    except csv.Error as e:
        raise ResNetError(f"{path}: malformed CSV ({shown(e)})") from None
    if not rows:
        raise ResNetError(f"{path} has no rows")
    return header, rows


def row_entry(
    row: dict[str, str], n: int, table: Path, multilabel: bool, *, folders: bool = False
) -> tuple[Path, str | tuple[str, ...]]:
    """(path, label) of row `n`: the path made absolute (and checked to be a file, or with
    `folders` any existing path: a DICOM series folder), the label or its findings."""
    p = Path(row["path"])
    p = p if p.is_absolute() else table.parent / p
    if not row["label"] and not multilabel:
        raise ResNetError(f"{table}:{n}: empty label")
    if not (p.exists() if folders else p.is_file()):
        raise ResNetError(
            f"{table}:{n}: {'not found' if folders else 'file not found'}: {shown(p)}"
        )
    return p, findings(row["label"]) if multilabel else row["label"]
