"""Semantic segmentation: a U-Net whose encoder is any ResNet, mIoU / Dice, masks drawn to PNG.

The two kinds of skip meet here. Inside the encoder, ResNet's short identity skips carry a
block's input past two or three convs (He et al. 2015); across the network, U-Net's long skips
carry each encoder stage's map to the decoder stage of the same resolution (Ronneberger et al.
2015), where it is concatenated with the upsampled coarser map. `long_skips=False` keeps the
decoder but drops the concatenations; a plain twin (`plain18`) drops the short ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import draw_segmentation_masks

from ..models import ResNet
from ..normalization import IMAGENET_MEAN, IMAGENET_STD
from .backbone import Backbone
from .detection import palette

DEFAULT_HEAD = dict(
    num_classes=5, long_skips=True, size=128, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)
)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DecoderBlock(nn.Module):
    """Upsample to the skip's size, concatenate it (if any), then two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.convs = nn.Sequential(_conv_bn_relu(cin + skip, cout), _conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]):
        """`x` upsampled to `size`, joined with `skip` (if any), through the two convs."""
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class UNet(nn.Module):
    """A U-Net on a ResNet encoder.

    Args:
        name: registered encoder name.
        num_classes: object classes, background not counted (the net predicts 1 + num_classes).
        long_skips: concatenate each encoder map into the decoder (False: decoder sees only the
            upsampled coarser map).
        size: the side images are resized to for training and evaluation.
        mean, std: input normalisation (images come in as 0-1 floats).
        weights, in_chans, **model_options: passed to `Backbone`.
        body: an already built ResNet (from a checkpoint).

    Decoder widths are half the encoder's at each resolution (at least 16). `forward` takes a
    `[N, C, H, W]` 0-1 batch and returns logits `[N, 1 + num_classes, H, W]`.
    """

    def __init__(
        self,
        name: str = "resnet18",
        num_classes: int = 5,
        *,
        long_skips: bool = True,
        size: int = 128,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        weights: str | None = None,
        in_chans: int = 3,
        body: ResNet | None = None,
        **model_options,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, not {num_classes}")
        if body is None:
            body = Backbone(name, None, weights, in_chans, **model_options).body
        encoder = Backbone(body=body, out_indices=range(len(body.spec.depths) + 1))
        self.encoder = encoder
        chs = encoder.channels
        widths = [max(16, c // 2) for c in chs]
        self.decoder = nn.ModuleList()
        cin = chs[-1]
        for level in range(len(chs) - 2, -1, -1):
            skip = chs[level] if long_skips else 0
            self.decoder.append(DecoderBlock(cin, skip, widths[level]))
            cin = widths[level]
        self.classifier = nn.Conv2d(cin, num_classes + 1, 1)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.long_skips = long_skips
        self.head_config = dict(
            num_classes=num_classes,
            long_skips=long_skips,
            size=size,
            mean=list(mean),
            std=list(std),
        )

    @property
    def body(self) -> ResNet:
        """The ResNet encoder (what the checkpoint's "model" entry holds)."""
        return self.encoder.body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `[N, 1 + num_classes, H, W]` of a 0-1 batch `[N, C, H, W]`."""
        size = x.shape[-2:]
        maps = list(self.encoder((x - self.mean) / self.std).values())
        y = maps[-1]
        for block, skip in zip(self.decoder, reversed(maps[:-1]), strict=True):
            y = block(y, skip if self.long_skips else None, skip.shape[-2:])
        return F.interpolate(self.classifier(y), size=size, mode="bilinear", align_corners=False)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes (Milletari et al. 2016), over the batch.

    Cross-entropy alone lets a net sit on "all background" when objects cover a tenth of the
    pixels; the Dice term weighs each class by its own size.
    """
    probs = logits.float().softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + eps) / (total + eps)).mean()


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixel confusion matrix `[K, K]` (rows: truth, columns: prediction), K = 1 + classes."""
    k = target.flatten().long() * num_classes + pred.flatten().long()
    return torch.bincount(k, minlength=num_classes**2).view(num_classes, num_classes)


def segmentation_metrics(conf: torch.Tensor, classes: list[str] | None = None) -> dict:
    """mIoU and Dice from a confusion matrix (index 0 = background).

    Returns:
        `miou`: mean IoU over every class present in truth or prediction, background included
        (the PASCAL VOC convention); `miou_fg`: the same without the background; `dice`: mean
        Dice (F1) over foreground classes; `pixel_acc`; and `per_class` IoU by name.
    """
    conf = conf.double()
    tp = conf.diag()
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    union = tp + fp + fn
    seen = union > 0
    iou = torch.where(seen, tp / union.clamp(min=1), torch.zeros_like(tp))
    dice = torch.where(seen, 2 * tp / (2 * tp + fp + fn).clamp(min=1), torch.zeros_like(tp))
    fg = seen.clone()
    fg[0] = False
    names = ["background"] + list(classes or [f"class_{i}" for i in range(1, len(conf))])
    return dict(
        miou=float(iou[seen].mean()) if seen.any() else 0.0,
        miou_fg=float(iou[fg].mean()) if fg.any() else 0.0,
        dice=float(dice[fg].mean()) if fg.any() else 0.0,
        pixel_acc=float(tp.sum() / conf.sum().clamp(min=1)),
        per_class={n: round(float(v), 4) for n, v, s in zip(names, iou, seen, strict=True) if s},
    )


def draw_masks(image: torch.Tensor, semantic: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """The uint8 `[3, H, W]` image with each predicted class's pixels tinted in its colour."""
    image = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    labels = [c for c in semantic.unique().tolist() if c > 0]
    if not labels:
        return image.clone()
    masks = torch.stack([semantic == c for c in labels])
    return draw_segmentation_masks(image, masks, alpha=alpha, colors=[palette(c) for c in labels])
