"""Object detection on a ResNet backbone: torchvision's FCOS head, COCO mAP, boxes drawn to PNG.

FCOS (Tian et al. 2019) is the head used: it is anchor-free (one point per feature-map location,
where RetinaNet tiles 9 anchors and matches each by IoU), single-stage (no RoI pooling and
1024-wide MLP as in Faster R-CNN), and its shared conv towers can be made thin, so it trains
fastest on a few CPU cores at small canvas sizes. `benchmarks/backbones.py --heads` times the three.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.utils import draw_bounding_boxes

from ..data.coco import coco_dict, load_coco_api
from ..models import ResNet
from ..normalization import IMAGENET_MEAN, IMAGENET_STD
from .backbone import Backbone, build_neck

# What rebuilds a detector beyond its ResNet body (stored in the checkpoint's "head").
DEFAULT_HEAD = dict(
    num_classes=5,
    neck="fpn",
    out_channels=64,
    out_indices=[2, 3, 4],
    extra=None,
    head_convs=2,
    size=128,
    score_thresh=0.05,
    nms_thresh=0.6,
    detections_per_img=100,
    mean=list(IMAGENET_MEAN),
    std=list(IMAGENET_STD),
)


class Detector(nn.Module):
    """FCOS on a ResNet backbone (with or without a feature pyramid).

    Args:
        name: registered backbone name.
        num_classes: object classes, background not counted (labels are 1..num_classes).
        neck: "fpn" or "none" (each stage projected on its own, no top-down fusion).
        out_channels: channels of every level the head sees.
        out_indices: the backbone stages used (1..4).
        extra: extra pyramid levels: None, "pool" or "p6p7".
        head_convs: conv layers in each of FCOS's two towers (torchvision's default is 4).
        size: images are resized so their shorter side is `size` (longer side at most 2x).
        score_thresh, nms_thresh, detections_per_img: post-processing.
        mean, std: input normalisation (images come in as 0-1 floats).
        weights, in_chans, **model_options: passed to `Backbone`.
        body: an already built ResNet (from a checkpoint).

    Called with a list of `[C, H, W]` 0-1 images (and targets while training) it returns
    torchvision's loss dict, or one dict of boxes, labels and scores per image.
    """

    def __init__(
        self,
        name: str = "resnet18",
        num_classes: int = 5,
        *,
        neck: str = "fpn",
        out_channels: int = 64,
        out_indices: Sequence[int] = (2, 3, 4),
        extra: str | None = None,
        head_convs: int = 2,
        size: int = 128,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        weights: str | None = None,
        in_chans: int = 3,
        body: ResNet | None = None,
        **model_options,
    ):
        super().__init__()
        # torchvision's detection models load only when a detector is built
        from torchvision.models.detection import FCOS
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.fcos import FCOSHead

        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, not {num_classes}")
        if out_channels % 16:
            raise ValueError(
                f"out_channels must be a multiple of 16 (FCOS's GroupNorm), not {out_channels}"
            )
        backbone = Backbone(name, out_indices, weights, in_chans, body=body, **model_options)
        features = build_neck(backbone, neck, out_channels, extra)
        # One point per location; its size (the level's stride) sets FCOS's scale ranges.
        anchors = AnchorGenerator(
            tuple((s,) for s in features.strides), ((1.0,),) * len(features.strides)
        )
        head = FCOSHead(out_channels, 1, num_classes + 1, num_convs=head_convs)
        self.fcos = FCOS(
            features,
            num_classes + 1,
            min_size=size,
            max_size=2 * size,
            image_mean=list(mean),
            image_std=list(std),
            anchor_generator=anchors,
            head=head,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        self.head_config = dict(
            num_classes=num_classes,
            neck=neck,
            out_channels=out_channels,
            out_indices=list(backbone.out_indices),
            extra=extra,
            head_convs=head_convs,
            size=size,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            mean=list(mean),
            std=list(std),
        )

    @property
    def body(self) -> ResNet:
        """The ResNet inside (what the checkpoint's "model" entry holds)."""
        return self.fcos.backbone.backbone.body

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        """FCOS's loss dict (with `targets`, in train mode) or one detection dict per image."""
        return self.fcos(images, targets)


def detection_targets(targets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Only what FCOS reads: boxes and labels."""
    return [dict(boxes=t["boxes"].float(), labels=t["labels"]) for t in targets]


@torch.no_grad()
def predict_boxes(model: Detector, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Detections for uint8 `[C, H, W]` images, in their own pixel coordinates."""
    model.eval()
    return model([im.float() / 255 for im in images])


def coco_map(
    dataset, predictions: list[dict[str, torch.Tensor]], indices: Sequence[int] | None = None
) -> dict[str, float]:
    """COCO box mAP@[.5:.95] and mAP@.5 (pycocotools) of predictions on `dataset[indices]`.

    Returns:
        {"map", "map50", "map75", "map_small", "map_medium", "map_large"} in 0-1.
    """
    from pycocotools.cocoeval import COCOeval  # optional dependency, needed only to score

    indices = list(range(len(dataset))) if indices is None else list(indices)
    subset = Subset(dataset, indices)
    gt = load_coco_api(coco_dict(subset))
    results = []
    for i, pred in enumerate(predictions):
        for box, score, label in zip(
            pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            results.append(
                dict(
                    image_id=i + 1,
                    category_id=int(label),
                    score=float(score),
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                )
            )
    keys = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
    if not results or not gt.getAnnIds():
        return dict.fromkeys(keys, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval reports -1 where a size range holds no object.
    return {k: max(float(v), 0.0) for k, v in zip(keys, ev.stats[:6], strict=True)}


class Subset:
    """Items `indices` of a dataset, keeping its `classes`."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices, self.classes = dataset, indices, dataset.classes

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def draw_detections(
    image: torch.Tensor,
    prediction: dict[str, torch.Tensor],
    classes: list[str],
    score_thresh: float = 0.3,
) -> torch.Tensor:
    """The uint8 `[3, H, W]` image with boxes, class names and scores drawn on it."""
    keep = prediction["scores"] >= score_thresh
    boxes = prediction["boxes"][keep]
    labels = prediction["labels"][keep].tolist()
    scores = prediction["scores"][keep].tolist()
    text = [f"{_name(classes, c)} {s:.2f}" for c, s in zip(labels, scores, strict=True)]
    colours = [palette(c) for c in labels]
    image = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    return draw_bounding_boxes(image, boxes, text, colors=colours, width=2)


def _name(classes: list[str], label: int) -> str:
    return classes[label - 1] if 0 < label <= len(classes) else str(label)


def palette(label: int) -> tuple[int, int, int]:
    """A distinct colour per class label (matplotlib's tab10/tab20)."""
    import matplotlib  # optional heavy dependency: loaded when something is drawn

    r, g, b, _ = matplotlib.colormaps["tab20"]((2 * (label - 1)) % 20 + (label - 1) // 10 % 2)
    return int(r * 255), int(g * 255), int(b * 255)


def detections_to_list(
    prediction: dict[str, torch.Tensor], classes: list[str], score_thresh: float = 0.3
) -> list[dict[str, Any]]:
    """Plain-data detections: `[{"label", "class", "score", "box": [x1, y1, x2, y2]}]`."""
    out = []
    for box, score, label in zip(
        prediction["boxes"].tolist(),
        prediction["scores"].tolist(),
        prediction["labels"].tolist(),
        strict=True,
    ):
        if score >= score_thresh:
            out.append(
                dict(
                    label=int(label),
                    **{"class": _name(classes, label)},
                    score=round(float(score), 4),
                    box=[round(v, 1) for v in box],
                )
            )
    return out
