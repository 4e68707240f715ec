"""Reading user images (grey, RGB, RGBA, palette, 16-bit PNG/TIFF) and indexing folders and CSVs."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ResNetError
from ..storage import atomic_write_bytes
from .labels import multi_hot
from .tables import REQUIRED, read_label_csv, row_entry, shown

# File suffixes read as images, by folder scans and by detection/segmentation folders alike.
IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".pgm",
    ".ppm",
    ".pbm",
)
# The largest image decoded by default (width x height): 40 megapixels, well below Pillow's own
# decompression-bomb warning (about 89 MP), and far above any real photo or scan a net is fed.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_FRAMES = 1_000
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
HIGH_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def is_image_file(path: Path) -> bool:
    """Whether `path` has one of the `IMAGE_EXTENSIONS` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _grey(mode: str, img: Image.Image) -> bool:
    if mode in GREY_MODES:
        return True
    if mode == "P":  # palette: grey when every palette entry has R == G == B
        pal = img.getpalette() or []
        return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))
    return False


class UnreadableImage(ResNetError):
    """Bytes or a file that do not decode as an image (truncated, another format, corrupt)."""


class ImageTooLarge(ResNetError):
    """An image over the pixel or frame limit (a decompression bomb, or just too big)."""


def _name(source) -> str:
    return "image" if isinstance(source, bytes | bytearray | memoryview) else str(source)


def _open(source) -> Image.Image:
    """Opens an image lazily (header only): from bytes or a path."""
    if isinstance(source, bytes | bytearray | memoryview):
        return Image.open(io.BytesIO(bytes(source)))
    return Image.open(Path(source))


def _check_size(img: Image.Image, name: str, max_pixels: int, max_frames: int) -> None:
    """Refuses an image whose header announces more than `max_pixels` or `max_frames`."""
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLarge(
            f"{name} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}"
        )
    frames = getattr(img, "n_frames", 1) if getattr(img, "is_animated", False) else 1
    if frames > max_frames:
        raise ImageTooLarge(f"{name} has {frames} frames, over the limit of {max_frames}")


# What Pillow raises for damaged files: its own errors, and short reads in pure-Python plugins.
_CORRUPT = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
)


def _first_line(e: BaseException) -> str:
    """The first line of an error's message (at most 120 characters), else its type."""
    return (str(e).splitlines() or [""])[0][:120] or type(e).__name__


def decode_image(
    source: bytes | str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Image.Image:
    """The one way user images are decoded: size checked from the header before any pixel.

    Reads the header, refuses an image over `max_pixels` (width x height) or `max_frames` (an
    animation) before its pixels are decompressed, then loads the first frame and applies the
    EXIF orientation (a phone photo taken upright comes out upright).

    Raises:
        ImageTooLarge: over a limit (decompression bombs included).
        UnreadableImage: not an image, or corrupt.
    """
    name = _name(source)
    try:
        img = _open(source)
        try:
            _check_size(img, name, max_pixels, max_frames)
            img.load()
            if img.getexif().get(0x0112, 1) != 1:  # orientation tag: not already upright
                turned = ImageOps.exif_transpose(img)
                img.close()
                img = turned
        except BaseException:
            img.close()
            raise
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(
            f"{name} is refused as a decompression bomb: {str(e).splitlines()[0][:160]}"
        ) from None
    except _CORRUPT as e:
        raise UnreadableImage(f"cannot read image {name}: {_first_line(e)}") from None
    return img


def probe_image(path: Path) -> tuple[bool, tuple[int, int]]:
    """Checks that `path` decodes; returns (is grey, (H, W)). Raises ResNetError if not."""
    with decode_image(path) as img:
        return _grey(img.mode, img), (img.height, img.width)


def image_to_tensor(img: Image.Image, in_chans: int, name: str = "image") -> torch.Tensor:
    """A decoded image as float32 [in_chans, H, W] in [0, 1], whatever its mode and bit depth.

    16-bit grey (common for X-ray and CT exports) keeps its full range: it is scaled by 65535,
    not squeezed to 8 bits first. Alpha is dropped; palette images are expanded.
    """
    mode = img.mode
    try:
        if mode in HIGH_BIT_MODES:
            arr = np.asarray(img).astype(np.float32)
            if mode.startswith("I;16"):
                arr /= 65535.0
            elif mode == "I":  # 32-bit container; 16-bit PNGs often open this way
                arr /= 65535.0 if arr.max(initial=0) > 255 else 255.0
            arr = np.clip(arr, 0.0, 1.0)[None]
        else:
            target = "L" if _grey(mode, img) else "RGB"
            if mode in ("P", "PA"):
                img = img.convert("RGBA")
            arr = np.asarray(img.convert(target), dtype=np.float32) / 255.0  # alpha dropped
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    except (OSError, ValueError) as e:
        raise UnreadableImage(f"cannot read image {name}: {_first_line(e)}") from None
    x = torch.from_numpy(np.ascontiguousarray(arr))
    if x.shape[0] == in_chans:
        return x
    if x.shape[0] == 1:
        return x.expand(in_chans, -1, -1).clone()
    if in_chans == 1:  # colour image into a grey model: ITU-R 601 luma
        w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        return (x * w).sum(0, keepdim=True)
    raise ResNetError(f"{name} has {x.shape[0]} channels; the model expects {in_chans}")


def load_image(
    path: str | Path, in_chans: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """Decodes an image file into float32 [in_chans, H, W] in [0, 1] (see `image_to_tensor`);
    images over `max_pixels` are refused (`ImageTooLarge`) before their pixels are read."""
    with decode_image(path, max_pixels=max_pixels) as img:
        return image_to_tensor(img, in_chans, str(path))


def read_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decodes an image as 8-bit RGB, uint8 [3, H, W] (detection and segmentation inputs)."""
    with decode_image(path, max_pixels=max_pixels) as img:
        return rgb_tensor(img)


def rgb_tensor(img: Image.Image) -> torch.Tensor:
    """A decoded image as 8-bit RGB, uint8 [3, H, W]."""
    return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).contiguous()


def write_png(path: Path, array: np.ndarray) -> None:
    """Writes an array ([H, W] or [H, W, 3] uint8) as a PNG, atomically."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


@dataclass
class ImageList:
    """Labelled image files: what a folder or CSV holds, after checking every file."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]
    in_chans: int
    sizes: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # with --group-by: one id per file

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: list[int]) -> ImageList:
        """The files at `indices`, in that order (the list of skipped files is not carried)."""
        return ImageList(
            [self.paths[i] for i in indices],
            [self.labels[i] for i in indices],
            self.classes,
            self.in_chans,
            [self.sizes[i] for i in indices],
            groups=[self.groups[i] for i in indices] if self.groups else [],
        )


def _check_files(
    items: list[tuple[Path, str]],
    classes: list[str],
    on_bad: str,
    groups: list[str] | None = None,
) -> ImageList:
    index = {c: i for i, c in enumerate(classes)}
    paths, labels, sizes, skipped, grey, kept = [], [], [], [], True, []

    def encode(label):  # a class index, or a multi-hot row for a tuple of findings
        return multi_hot(label, classes) if isinstance(label, tuple) else index[label]

    for n, (path, label) in enumerate(items):
        try:
            is_grey, size = probe_image(path)
            grey &= is_grey
        except ResNetError:
            if on_bad == "error":
                raise
            warnings.warn(
                f"skipping unreadable image {path} (use --bad-images error to stop)", stacklevel=2
            )
            skipped.append(str(path))
            continue
        paths.append(path)
        labels.append(encode(label))
        sizes.append(size)
        kept.append(n)
    if not paths:
        raise ResNetError("no readable images found")
    kept_groups = [groups[n] for n in kept] if groups else []
    return ImageList(paths, labels, classes, 1 if grey else 3, sizes, skipped, kept_groups)


def scan_class_folders(
    root: Path, on_bad: str = "skip", classes: list[str] | None = None, group_by: str | None = None
) -> ImageList:
    """ImageFolder layout: one sub-folder per class. Every class folder must hold images.

    `group_by` "folder[:N]" groups the files by the N-th folder below their class folder
    (root/<class>/<patient>/image.png: "folder")."""
    if not root.is_dir():
        raise ResNetError(f"not a folder: {root}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise ResNetError(f"{root} has no class folders (expected {root}/<class>/<image>)")
    classes = classes or found
    unknown = set(found) - set(classes)
    if unknown:
        raise ResNetError(
            f"{root} has classes not in the training set: {', '.join(sorted(unknown))}"
        )
    items, other = [], []
    for c in found:
        files = sorted(
            p for p in (root / c).rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        images = [p for p in files if is_image_file(p)]
        other += [p for p in files if not is_image_file(p)]
        if not images:
            raise ResNetError(f"class folder {root / c} has no images")
        items += [(p, c) for p in images]
    if other:
        warnings.warn(
            f"ignoring {len(other)} non-image file(s) under {root}, e.g. {other[0]}", stacklevel=2
        )
    groups = [folder_group(p, root / c, group_by) for p, c in items] if group_by else None
    return _check_files(items, classes, on_bad, groups)


def folder_group(path: Path, base: Path, group_by: str) -> str:
    """The group "folder[:N]" names: the N-th folder of `path` below `base` (N = 1 default)."""
    kind, _, level = group_by.partition(":")
    if kind != "folder" or not (level or "1").isdigit() or int(level or "1") < 1:
        raise ResNetError(
            f"--group-by {group_by}: image folders group by folder or folder:N (or use a CSV "
            "with a patient column)"
        )
    n = int(level or "1")
    parts = path.relative_to(base).parts
    if len(parts) <= n:
        raise ResNetError(
            f"{shown(path)}: no folder at level {n} below {base} for --group-by {group_by}"
        )
    return parts[n - 1]


def scan_csv(
    csv_path: Path,
    on_bad: str = "skip",
    classes: list[str] | None = None,
    group_by: str | None = None,
    multilabel: bool = False,
) -> ImageList:
    """A CSV with the columns `path,label` (and any others); relative paths are relative to the
    CSV's folder. `group_by` names a column holding each row's group (a patient id), or
    "folder[:N]" (the N-th folder of the path below the CSV's folder). With `multilabel`, a
    label lists findings separated by ";" or "|" (empty: none) and becomes a multi-hot row."""
    header, rows = read_label_csv(csv_path)
    if group_by and group_by in REQUIRED:
        raise ResNetError(f"--group-by {group_by}: pick a column other than path and label")
    items, groups = [], []
    for n, r in enumerate(rows, start=2):
        p, label = row_entry(r, n, csv_path, multilabel)
        items.append((p, label))
        if group_by:
            groups.append(_csv_group(r, header, group_by, p, csv_path, n))
    found = sorted({f for _, label in items for f in (label if multilabel else [label])})
    if multilabel and not found:
        raise ResNetError(f"{csv_path}: no findings in any label (multi-label needs some)")
    classes = classes or found
    unknown = set(found) - set(classes)
    if unknown:
        raise ResNetError(
            f"{csv_path}: labels not in the training set: {shown(', '.join(sorted(unknown)))}"
        )
    return _check_files(items, classes, on_bad, groups or None)


def _csv_group(row: dict, header: list[str], group_by: str, path: Path, csv_path: Path, n: int):
    """A CSV row's group: its `group_by` column, or a folder of its path."""
    if group_by in header:
        if not row[group_by]:
            raise ResNetError(f"{csv_path}:{n}: empty {group_by!r}")
        return row[group_by]
    if group_by.startswith("folder"):
        return folder_group(path, csv_path.parent, group_by)
    raise ResNetError(
        f"--group-by {group_by}: {csv_path} has no such column "
        f"(columns: {shown(', '.join(header))})"
    )


def scan(
    source: Path,
    on_bad: str = "skip",
    classes: list[str] | None = None,
    group_by: str | None = None,
    multilabel: bool = False,
) -> ImageList:
    """Indexes a CSV (`*.csv`, see `scan_csv`) or an ImageFolder layout (`scan_class_folders`),
    with each file's group when `group_by` is given (multi-label: CSVs only)."""
    if source.suffix.lower() == ".csv":
        return scan_csv(source, on_bad, classes, group_by, multilabel)
    if multilabel:
        raise ResNetError(
            f"multi-label data is a CSV of path,label (findings a;b); {source} is not"
        )
    return scan_class_folders(source, on_bad, classes, group_by)
