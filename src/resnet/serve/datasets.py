"""Data sets of the server: uploaded ZIPs, registered server folders and the built-in sets.

An upload arrives as a file on disk (streamed there by the route, never held in memory) and is
checked before anything is extracted: member names (no `..`, no absolute paths or drive
letters), no symlinks or other special files, the member count, the total uncompressed size
and each member's compression ratio. It is then extracted into a temp folder beside the store,
scanned, and renamed into place as `<datasets>/<id>/` in one step, so a data set is either all
there or absent. Every image is checked against the pixel limit from its header before anything
decodes it; uploaded images over the limit are removed (and reported), so training never decodes
them. The listing of classes and unreadable files is the package's own scan (`resnet.data.scan`),
so a data set accepted here is one `resnet train` accepts.

<datasets>/<id>/dataset.json   id, name, kind (upload | path), layout, source (what a run's
                               data.source names), classes, counts per split, samples, unreadable
<datasets>/<id>/data/          the extracted files (uploads only)
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import stat
import tempfile
import time
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..data import fashion_mnist, scan
from ..data.composite import DEFAULT_CLASSES
from ..data.images import is_image_file
from ..errors import ResNetError
from ..storage import write_json
from .errors import ApiError
from .jobs import RUN_ID
from .settings import MiB, ServeSettings

META = "dataset.json"
BUILTIN_IDS = ("fashion-mnist", "composite")  # the ids builtins() can list
SPLITS = ("train", "val", "test")
MAX_RATIO = 1000  # uncompressed / compressed size of one member (deflate's own limit is ~1030)
RATIO_FLOOR = 1 << 20  # members smaller than this are not judged by their ratio
SAMPLES_KEPT = 16  # sample files remembered per class
THUMB_PX = 64
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class DatasetStore:
    """The data sets a server knows: uploads and registered folders under `settings.datasets`,
    plus Fashion-MNIST and the composite detection/segmentation set when installed."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.root = Path(settings.datasets)
        self._fashion: dict | None = None

    # -- adding -------------------------------------------------------------------------
    def add_zip(self, zip_path: Path, filename: str) -> dict:
        """Checks, extracts and scans an uploaded ZIP; returns its description."""
        with open(zip_path, "rb") as f:
            if f.read(4) not in ZIP_MAGIC:
                raise ApiError(415, f"{_short(filename)} is not a ZIP file")
        try:
            with zipfile.ZipFile(zip_path) as z:
                members = self._checked_members(z)
                self.root.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.root))
                try:
                    _extract(z, members, tmp / "data")
                    return self._finish(tmp, filename, "upload", tmp / "data")
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            EOFError,
            NotImplementedError,
            UnicodeDecodeError,  # a member name flagged UTF-8 that is not
        ) as e:
            raise ApiError(422, f"not a readable ZIP: {_short(e)}") from None

    def add_path(self, path: str) -> dict:
        """Registers a folder (or CSV) on the server's disk as a data set, after scanning it."""
        source = Path(path).expanduser()
        if not source.exists():
            raise ApiError(404, f"no such folder on the server: {_short(path)}")
        if not source.is_dir() and source.suffix.lower() != ".csv":
            raise ApiError(422, f"{_short(path)} is neither a folder nor a CSV")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".path-", dir=self.root))
        try:
            return self._finish(tmp, source.name, "path", source.resolve())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _checked_members(self, z: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
        infos = z.infolist()
        if len(infos) > self.settings.zip_members:
            raise ApiError(
                413, f"ZIP has {len(infos)} members; the limit is {self.settings.zip_members}"
            )
        total = 0
        for info in infos:
            _check_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ApiError(422, f"ZIP member {_short(info.filename)} is a symlink")
            kind = stat.S_IFMT(mode)  # 0 when the ZIP records no Unix file type
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise ApiError(422, f"ZIP member {_short(info.filename)} is not a regular file")
            total += info.file_size
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(
                info.compress_size, 1
            ):
                raise ApiError(
                    413,
                    f"ZIP member {_short(info.filename)} expands over "
                    f"{MAX_RATIO}x (a decompression bomb?)",
                )
        limit = self.settings.zip_total_mb * MiB
        if total > limit:
            raise ApiError(
                413, f"ZIP expands to {total / MiB:.0f} MiB; the limit is {limit / MiB:.0f} MiB"
            )
        return [i for i in infos if not i.is_dir() and not _ignored(i.filename)]

    def _finish(self, tmp: Path, name: str, kind: str, files: Path) -> dict:
        """Scans `files`, writes dataset.json into `tmp` and renames `tmp` into place."""
        base, source, layout = _layout(files)
        over = _over_pixel_limit(base, self.settings.max_pixels)
        if over and kind == "path":
            raise ApiError(413, f"{len(over)} image(s) over the pixel limit, e.g. {over[0]}")
        for rel in over:  # uploaded copies only: training must never decode them
            (base / rel).unlink()
        meta = _describe(base, source, layout)
        meta["unreadable"] = [{"file": r, "reason": "over the pixel limit"} for r in over] + meta[
            "unreadable"
        ]
        ds_id = self._new_id(name)
        final = self.root / ds_id
        if kind == "upload":  # the paths it will have once renamed into place
            source = final / "data" / source.relative_to(files)
            meta["base"] = str(final / "data" / base.relative_to(files))
        meta.update(id=ds_id, name=_short(name), kind=kind, source=str(source), created=time.time())
        write_json(tmp / META, meta)
        tmp.rename(final)
        return meta

    def _new_id(self, name: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).stem).strip("-.")[:60] or "dataset"
        ds_id, n = stem, 1
        while (self.root / ds_id).exists() or ds_id in BUILTIN_IDS:  # installed or not
            n += 1
            ds_id = f"{stem}-{n}"
        return ds_id

    # -- reading ------------------------------------------------------------------------
    def builtins(self) -> dict[str, dict]:
        """The built-in sets that are installed: Fashion-MNIST, the composite set built on it."""
        if self._fashion is None:
            try:
                _, labels = fashion_mnist.load_fashion_mnist("test", download=False)
                _, train_labels = fashion_mnist.load_fashion_mnist("train", download=False)
            except (ResNetError, OSError):
                self._fashion = {}
            else:
                names = list(fashion_mnist.CLASSES)
                count = lambda ys: {names[k]: v for k, v in sorted(Counter(ys.tolist()).items())}  # noqa: E731
                self._fashion = {
                    "fashion-mnist": dict(
                        id="fashion-mnist",
                        name="Fashion-MNIST",
                        kind="builtin",
                        layout="builtin",
                        source="fashion-mnist",
                        tasks=["classify"],
                        classes=names,
                        counts={"train": count(train_labels), "test": count(labels)},
                        unreadable=[],
                    ),
                    "composite": dict(
                        id="composite",
                        name="Composite (Fashion-MNIST items on canvases)",
                        kind="builtin",
                        layout="builtin",
                        source="composite",
                        tasks=["detect", "segment"],
                        classes=list(DEFAULT_CLASSES),
                        counts={},
                        unreadable=[],
                    ),
                }
        return self._fashion

    def list(self) -> list[dict]:
        """Every data set: built-ins first, then uploads and folders, newest first."""
        found = [m for m in (_read_meta(d) for d in self._folders()) if m]
        found.sort(key=lambda m: m.get("created", 0), reverse=True)
        return [_summary(m) for m in [*self.builtins().values(), *found]]

    def get(self, ds_id: str, samples: int = 4) -> dict:
        """One data set's description with up to `samples` thumbnails per class."""
        meta = self.meta(ds_id)
        out = {k: v for k, v in meta.items() if k != "samples"}
        if meta["kind"] == "builtin":
            out["thumbnails"] = self._builtin_thumbnails(ds_id, samples)
            return out
        base = Path(meta["base"])
        out["thumbnails"] = {
            c: [
                t
                for t in (
                    _thumbnail(base / rel, self.settings.max_pixels) for rel in files[:samples]
                )
                if t
            ]
            for c, files in meta.get("samples", {}).items()
        }
        return out

    def meta(self, ds_id: str) -> dict:
        """The stored description of `ds_id` (404 if unknown, 422 if not a plain name)."""
        if ds_id in self.builtins():
            return self.builtins()[ds_id]
        if not RUN_ID.fullmatch(ds_id or "") or ".." in ds_id:
            raise ApiError(422, f"invalid data set id {ds_id[:100]!r}")
        meta = _read_meta(self.root / ds_id)
        if meta is None:
            raise ApiError(404, f"no data set {ds_id!r}")
        return meta

    def resolve(self, source: str) -> str:
        """What a run's `data.source` should say for `source`: a data set id becomes its
        folder (or CSV); "fashion-mnist", "synthetic" and server paths stay as they are."""
        if source in ("fashion-mnist", "synthetic", "composite"):
            return source
        if RUN_ID.fullmatch(source) and ".." not in source:
            meta = _read_meta(self.root / source)
            if meta:
                return meta["source"]
        if not Path(source).expanduser().exists():
            raise ApiError(
                422,
                f"data.source {_short(source)!r} is neither a data set id nor a path on the server",
            )
        return source

    def _folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")]

    def _builtin_thumbnails(self, ds_id: str, samples: int) -> dict[str, list[str]]:
        if ds_id != "fashion-mnist":
            return {}
        images, labels = fashion_mnist.load_fashion_mnist("test", download=False)
        out: dict[str, list[str]] = {}
        for k, name in enumerate(fashion_mnist.CLASSES):
            idx = (labels == k).nonzero().flatten()[:samples].tolist()
            out[name] = [_png_b64(Image.fromarray(images[i, 0].numpy())) for i in idx]
        return out


# -- ZIP members ----------------------------------------------------------------------------
def _check_name(name: str) -> None:
    """Refuses member names that could land outside the extraction folder (422)."""
    bad = (
        not name
        or "\x00" in name
        or name.startswith(("/", "\\"))
        or re.match(r"^[A-Za-z]:", name)
        or any(part == ".." for part in re.split(r"[\\/]", name))
    )
    if bad:
        raise ApiError(422, f"ZIP member {_short(name)!r} points outside the upload")


def _ignored(name: str) -> bool:
    """macOS resource forks and hidden files travel in many ZIPs; they are not data."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _extract(z: zipfile.ZipFile, members: list[zipfile.ZipInfo], dest: Path) -> None:
    """Extracts `members`, each at most its declared size, every path checked to stay in."""
    dest.mkdir(parents=True)
    root = dest.resolve()
    for info in members:
        target = (root / info.filename.replace("\\", "/")).resolve()
        if root not in target.parents:
            raise ApiError(422, f"ZIP member {_short(info.filename)!r} points outside the upload")
        target.parent.mkdir(parents=True, exist_ok=True)
        left = info.file_size
        with open(target, "wb") as out:
            for chunk in _member_chunks(z, info):
                left -= len(chunk)
                if left < 0:
                    raise ApiError(
                        413, f"ZIP member {_short(info.filename)} is larger than it declares"
                    )
                out.write(chunk)


def _member_chunks(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """A member's bytes, 1 MiB at a time; a damaged member (bad offset, corrupt deflate
    stream, encrypted) is a 422, kept apart from errors writing the extracted copy."""
    try:
        with z.open(info) as src:
            while chunk := src.read(1 << 20):
                yield chunk
    except (OSError, RuntimeError, ValueError, EOFError, zlib.error) as e:
        raise ApiError(
            422, f"ZIP member {_short(info.filename)} is unreadable: {_short(str(e))}"
        ) from None


# -- layout and scanning --------------------------------------------------------------------
def _layout(files: Path) -> tuple[Path, Path, str]:
    """`(folder the images are in, what data.source names, layout)` of extracted files:
    "split" (train/ val/ test/ of class folders), "csv" (images + a path,label CSV) or
    "folders" (class folders). A single wrapping folder is looked through."""
    base = files
    if base.is_file():  # a registered CSV
        return base.parent, base, "csv"
    while True:
        entries = [p for p in base.iterdir() if not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in SPLITS:
            base = entries[0]
            continue
        break
    if (base / "train").is_dir():
        return base, base, "split"
    csvs = sorted(base.glob("*.csv"))
    if len(csvs) == 1:
        return base, csvs[0], "csv"
    if len(csvs) > 1:
        raise ApiError(422, "more than one CSV at the top of the upload: keep one path,label CSV")
    if any(p.is_dir() for p in entries):
        return base, base, "folders"
    raise ApiError(
        422,
        "no layout found: expected class folders (optionally under train/ val/ "
        "test/) or images with a path,label CSV",
    )


def _over_pixel_limit(base: Path, max_pixels: int) -> list[str]:
    """Images whose header declares more than `max_pixels` (read from headers only)."""
    over = []
    for p in sorted(base.rglob("*")):
        if not p.is_file() or not is_image_file(p):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(p) as img:
                    size = img.width * img.height
        except Image.DecompressionBombError:  # PIL's own limit, past ours: never decode it
            size = max_pixels + 1
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            continue  # unreadable: the scan reports it
        if size > max_pixels:
            over.append(str(p.relative_to(base)))
    return over


def _describe(base: Path, source: Path, layout: str) -> dict:
    """Class counts per split, sample files per class and unreadable files, from the
    package's own scan (`resnet.data.scan`, unreadable images skipped)."""
    splits = (
        {s: base / s for s in SPLITS if (base / s).is_dir()}
        if layout == "split"
        else {"all": source}
    )
    counts, samples, unreadable, classes = {}, {}, [], None
    for split, where in splits.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                files = scan(where, "skip", classes if split != "train" else None)
        except ResNetError as e:
            raise ApiError(
                422, f"{split}: {str(e).splitlines()[0]}".replace(str(base), "")
            ) from None
        classes = classes or files.classes
        counts[split] = {files.classes[k]: n for k, n in sorted(Counter(files.labels).items())}
        for path, label in zip(files.paths, files.labels, strict=True):
            kept = samples.setdefault(files.classes[label], [])
            if len(kept) < SAMPLES_KEPT:
                kept.append(str(Path(path).relative_to(base)))
        unreadable += [
            {"file": _relative(p, base), "reason": "cannot be decoded"} for p in files.skipped
        ]
    return dict(
        layout=layout,
        base=str(base),
        classes=classes,
        counts=counts,
        samples=samples,
        unreadable=unreadable,
    )


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return Path(path).name


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "id" in meta else None


def _summary(meta: dict) -> dict:
    """A listing entry: no sample paths, unreadable files counted."""
    out = {k: v for k, v in meta.items() if k not in ("samples", "unreadable", "base")}
    out["unreadable"] = len(meta.get("unreadable", []))
    out["images"] = sum(sum(c.values()) for c in meta.get("counts", {}).values())
    return out


def _thumbnail(path: Path, max_pixels: int) -> str | None:
    """A small PNG of an image as base64 (None if it is unreadable or over the pixel limit)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    return None
                img.thumbnail((THUMB_PX, THUMB_PX))
                return _png_b64(img.convert("RGB") if img.mode not in ("L", "RGB") else img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _short(text: Any) -> str:
    """At most 120 characters of `text`, on one line (control characters shown as "?")."""
    return "".join(c if c.isprintable() else "?" for c in str(text)[:120])
