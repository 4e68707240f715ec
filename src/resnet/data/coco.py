"""Bring-your-own detection and segmentation data: COCO-format JSON and image + mask-PNG folders.

Both datasets yield `(image uint8 [3, H, W], target)` with the same target keys as
`resnet.data.composite.CompositeSet`: `boxes` (x1 y1 x2 y2), `labels` (1..C), `masks`
(uint8 [K, H, W]), `semantic` (int64 [H, W]) and `image_id`; `classes` lists the C names.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ResNetError
from ..storage import atomic_write_text
from .images import IMAGE_EXTENSIONS, read_rgb, write_png
from .masks import masks_to_boxes, paint_semantic


def coco_dict(dataset, *, image_files: list[str] | None = None) -> dict[str, Any]:
    """The COCO-format dict of a dataset of `(image, target)` pairs (masks as compressed RLE).

    Args:
        dataset: yields `(image [3, H, W], target)` and has `classes`.
        image_files: file names to record; default `{index:06d}.png`.
    """
    from pycocotools import mask as mask_utils  # optional C extension, only for COCO output

    images, annotations = [], []
    for i in range(len(dataset)):
        image, target = dataset[i]
        h, w = image.shape[-2:]
        name = image_files[i] if image_files else f"{i:06d}.png"
        images.append(dict(id=i + 1, file_name=name, height=int(h), width=int(w)))
        masks = target.get("masks")
        for k, (box, label) in enumerate(
            zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True)
        ):
            x1, y1, x2, y2 = box
            ann = dict(
                id=len(annotations) + 1,
                image_id=i + 1,
                category_id=int(label),
                bbox=[x1, y1, x2 - x1, y2 - y1],
                iscrowd=0,
                area=(x2 - x1) * (y2 - y1),
            )
            if masks is not None and len(masks):
                rle = mask_utils.encode(np.asfortranarray(masks[k].numpy().astype(np.uint8)))
                ann["area"] = float(mask_utils.area(rle))
                ann["segmentation"] = dict(size=list(rle["size"]), counts=rle["counts"].decode())
            annotations.append(ann)
    categories = [dict(id=c + 1, name=name) for c, name in enumerate(dataset.classes)]
    return dict(images=images, annotations=annotations, categories=categories)


def write_coco(dataset, out_dir: str | os.PathLike) -> Path:
    """Writes `out_dir/annotations.json` and `out_dir/images/*.png` (atomically, file by file).

    Returns:
        The path of the JSON file; `CocoDataset(path)` reads it back.
    """
    out = Path(out_dir)
    data = coco_dict(dataset)
    for i, entry in enumerate(data["images"]):
        write_png(out / "images" / entry["file_name"], dataset[i][0].permute(1, 2, 0).numpy())
    data["info"] = dict(
        description=f"written by resnet from {type(dataset).__name__}",
        params=getattr(dataset, "params", {}),
    )
    return atomic_write_text(out / "annotations.json", json.dumps(data))


def load_coco_api(data: dict[str, Any] | str | os.PathLike):
    """A `pycocotools.coco.COCO` over a dict or a JSON file, without its chatter on stdout."""
    from pycocotools.coco import COCO  # optional C extension, only for COCO data

    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(data, dict):
            api = COCO()
            api.dataset = data
            api.createIndex()
            return api
        return COCO(str(data))


# What malformed annotations raise inside pycocotools and the item builder.
_MALFORMED = (
    ValueError,  # bad JSON (JSONDecodeError), not UTF-8 (UnicodeDecodeError), NaN sizes
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    AssertionError,
    OverflowError,
    RecursionError,
)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


class CocoDataset(torch.utils.data.Dataset):
    """Images and annotations in COCO format: boxes, polygons, or RLE masks.

    Category ids are mapped, in increasing order, to labels 1..C. Crowd annotations are left out
    of the targets. Annotations without a segmentation get a mask filling their box.

    Args:
        annotations: the JSON file, or a folder holding `annotations.json`.
        images: folder of the image files (default: `images/` beside the JSON, else its folder).
    """

    def __init__(self, annotations: str | os.PathLike, images: str | os.PathLike | None = None):
        path = Path(annotations)
        if path.is_dir():
            path = path / "annotations.json"
        if not path.is_file():
            raise ResNetError(f"COCO annotations not found: {path}")
        try:
            self.api = load_coco_api(path)
            self.ids = sorted(self.api.imgs)
            cat_ids = sorted(self.api.cats)
            self.classes = [str(self.api.cats[c]["name"]) for c in cat_ids]
        except _MALFORMED as e:  # bad JSON, not UTF-8, missing keys, ids of mixed types, ...
            raise ResNetError(f"{path} is not a COCO annotation file: {_one_line(e)}") from None
        if images is None:
            images = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
        self.root = Path(images)
        if not self.ids:
            raise ResNetError(f"{path} lists no images")
        if not cat_ids:
            raise ResNetError(f"{path} lists no categories")
        self.cat_to_label = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.label_to_cat = {v: k for k, v in self.cat_to_label.items()}
        self.in_chans = 3
        self.params = dict(annotations=str(path), images=str(self.root))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        info = self.api.imgs[self.ids[index]]
        try:
            return self._item(info, index)
        except _MALFORMED as e:  # an annotation with missing or mistyped fields
            raise ResNetError(
                f"{self.params['annotations']}: malformed entry for image {info.get('id')!r} "
                f"({_one_line(e)})"
            ) from None

    def _mask(self, ann: dict, info: dict, h: int, w: int) -> np.ndarray:
        """The h x w mask of one annotation's segmentation (polygons or RLE), checked first."""
        where = f"{self.params['annotations']}: the segmentation of image {info.get('id')!r}"
        seg = ann["segmentation"]
        if isinstance(seg, dict):
            if list(seg.get("size", [h, w])) != [h, w]:
                raise ResNetError(f"{where} is not {h}x{w}")
            if not isinstance(seg.get("counts"), (str, list)):
                raise ResNetError(f"{where} is an RLE without 'counts'")
        elif not isinstance(seg, list) or not all(_is_polygon(p) for p in seg):
            raise ResNetError(
                f"{where} is neither an RLE nor polygons (lists of an even number, at least 6, "
                "of x, y coordinates)"
            )
        with warnings.catch_warnings():  # pycocotools vs numpy 2 (harmless)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return self.api.annToMask(dict(ann, image_id=info["id"]))
            except Exception as e:  # pycocotools raises bare Exceptions on malformed RLEs
                raise ResNetError(f"{where} cannot be decoded: {e}") from None

    def _item(self, info: dict, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = read_rgb(self.root / str(info["file_name"]))
        h, w = image.shape[-2:]
        # Masks are drawn at the size the JSON states: it must be the image's (and is then bounded).
        if [info.get("height"), info.get("width")] != [h, w]:
            raise ResNetError(
                f"{self.params['annotations']}: image {info.get('id')!r} is {h}x{w}, the "
                f"annotations say {info.get('height')!r}x{info.get('width')!r}"
            )
        anns = [a for a in self.api.imgToAnns.get(info["id"], []) if not a.get("iscrowd", 0)]
        boxes, labels, masks = [], [], []
        for a in anns:
            x, y, bw, bh = a["bbox"]
            if not all(math.isfinite(v) for v in (x, y, bw, bh)):
                raise ResNetError(
                    f"{self.params['annotations']}: image {info.get('id')!r} has a box that is "
                    f"not finite: {a['bbox']}"
                )
            if bw <= 0 or bh <= 0:
                continue
            if a["category_id"] not in self.cat_to_label:
                raise ResNetError(
                    f"{self.params['annotations']}: image {info.get('id')!r} has a box of "
                    f"category {a['category_id']!r}, which 'categories' does not list"
                )
            boxes.append([x, y, x + bw, y + bh])
            labels.append(self.cat_to_label[a["category_id"]])
            if a.get("segmentation"):
                m = self._mask(a, info, h, w)
            else:
                m = np.zeros((h, w), dtype=np.uint8)
                m[int(y) : int(np.ceil(y + bh)), int(x) : int(np.ceil(x + bw))] = 1
            masks.append(torch.from_numpy(m))
        boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        labels_t = torch.tensor(labels, dtype=torch.int64)
        masks_t = torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.uint8)
        return image, dict(
            boxes=boxes_t,
            labels=labels_t,
            masks=masks_t,
            semantic=paint_semantic(masks_t, labels_t, (h, w)),
            image_id=torch.tensor(index),
        )


class MaskFolderDataset(torch.utils.data.Dataset):
    """A folder of images and label masks: `images/NAME.*` with `masks/NAME.png`.

    A mask holds a class index per pixel (grey or palette PNG; 0 is the background). Class names
    come from `classes.txt` (one per line, the first naming the background) or are `class_1`...
    For detection each class present in a mask counts as one instance spanning its pixels.

    Args:
        root: the folder holding `images/` and `masks/`.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise ResNetError(f"{self.root} needs images/ and masks/ folders")
        self.items = []
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                m = mask_dir / f"{p.stem}.png"
                if not m.is_file():
                    raise ResNetError(f"no mask for {p.name}: expected {m}")
                self.items.append((p, m))
        if not self.items:
            raise ResNetError(f"{img_dir} holds no images")
        names_file = self.root / "classes.txt"
        if names_file.is_file():
            names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
            self.classes = names[1:]
        else:
            top = max(int(self._mask(m).max()) for _, m in self.items)
            self.classes = [f"class_{i}" for i in range(1, top + 1)]
        if not self.classes:
            raise ResNetError(f"{self.root}: the masks hold only background")
        self.in_chans = 3
        self.params = dict(root=str(self.root))

    @staticmethod
    def _mask(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise ResNetError(f"{path}: a mask must be a grey or palette PNG of class indices")
            return np.asarray(im).astype(np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_path, mask_path = self.items[index]
        image = read_rgb(image_path)
        semantic = torch.from_numpy(self._mask(mask_path))
        if semantic.shape != image.shape[-2:]:
            raise ResNetError(
                f"{mask_path} is {tuple(semantic.shape)}, its image {tuple(image.shape[-2:])}"
            )
        if int(semantic.max()) > len(self.classes):
            raise ResNetError(
                f"{mask_path} has class {int(semantic.max())}, but only "
                f"{len(self.classes)} classes are named"
            )
        labels = torch.tensor([c for c in semantic.unique().tolist() if c > 0], dtype=torch.int64)
        masks = (
            torch.stack([(semantic == c) for c in labels]).to(torch.uint8)
            if len(labels)
            else torch.zeros(0, *semantic.shape, dtype=torch.uint8)
        )
        return image, dict(
            boxes=masks_to_boxes(masks),
            labels=labels,
            masks=masks,
            semantic=semantic,
            image_id=torch.tensor(index),
        )


def open_dataset(path: str | os.PathLike, images: str | os.PathLike | None = None):
    """A COCO JSON file (or a folder holding `annotations.json`), or an images/ + masks/ folder."""
    p = Path(path)
    if not p.exists():
        raise ResNetError(f"data not found: {p}")
    if p.is_file() and p.suffix.lower() == ".json":
        return CocoDataset(p, images)
    if p.is_dir() and (p / "annotations.json").is_file():
        return CocoDataset(p / "annotations.json", images)
    if p.is_dir() and (p / "masks").is_dir():
        return MaskFolderDataset(p)
    raise ResNetError(
        f"{p}: expected a COCO .json file, a folder with annotations.json, or a "
        "folder with images/ and masks/"
    )


def _is_polygon(p) -> bool:
    """True for a COCO polygon: an even number (at least 6) of finite x, y coordinates."""
    return (
        isinstance(p, list)
        and len(p) >= 6
        and len(p) % 2 == 0
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in p)
    )
