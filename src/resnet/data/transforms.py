"""Transform presets: per-image (torchvision v2) for streaming, whole-batch for in-memory data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

PRESETS = ("none", "flip", "flip_erase", "light", "paper", "erase", "strong")
# Random erasing (Zhong et al. 2017) per preset: the probability an image gets one erased box.
ERASE_P = {"flip_erase": 0.5, "erase": 0.5, "strong": 0.25}
# none: nothing; flip: mirror only; flip_erase: mirror + random erasing with p 0.5, no translation;
# light: mirror + translation by size/16 (2 px at 32, airbench's);
# paper: mirror + translation by size/8 (4 px at 32, the 2015 paper's CIFAR setting);
# erase: paper + random erasing with p 0.5 (Zhong et al.'s setting);
# strong: paper + TrivialAugment (streamed data) + random erasing + MixUp/CutMix.


def make_preprocessing(
    in_chans: int,
    size: tuple[int, int],
    mean,
    std,
    resize: int | None = None,
    crop: int | None = None,
) -> dict:
    """The eval preprocessing a checkpoint carries; predict/val/export rebuild it from this."""
    return {
        "in_chans": int(in_chans),
        "size": [int(size[0]), int(size[1])],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "resize": resize,
        "crop": crop,
    }


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Images [N, C, H, W] (uint8 in 0-255 or float in 0-1) as float32 `(x - mean) / std`."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return images.float().div_(255.0 if images.dtype == torch.uint8 else 1.0).sub_(m).div_(s)


CHANNEL_ORDERS = ("rgb", "bgr")


class ToModelInput(torch.nn.Module):
    """RGB in [0, 1] -> the weights' input: channels put in the order they want, then normalised.

    A preprocessing dict with "channel_order": "bgr" (Caffe-trained weights, Keras' v1 ResNets)
    flips RGB to BGR first; its mean/std are then in BGR order. The one place the flag is read:
    the eval and training transforms both end here.
    """

    def __init__(self, pre: dict):
        super().__init__()
        order = str(pre.get("channel_order") or "rgb").lower()
        if order not in CHANNEL_ORDERS:
            raise ValueError(
                f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, not {order!r}"
            )
        self.bgr = order == "bgr"
        self.normalize = v2.Normalize(pre["mean"], pre["std"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` [..., C, H, W] reordered (BGR weights) and normalised."""
        return self.normalize(x.flip(-3) if self.bgr else x)


class EvalTransform:
    """Float [C, H, W] in [0, 1] -> the model's input: resize (+ centre crop) to size, normalise
    (in the channel order the weights want, `ToModelInput`)."""

    def __init__(self, pre: dict):
        self.size = tuple(pre["size"])
        self.resize = pre.get("resize")
        self.crop = pre.get("crop")
        self.interpolation = v2.InterpolationMode(pre.get("interpolation") or "bilinear")
        self.normalize = ToModelInput(pre)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input for one image or a batch (float, [..., C, H, W])."""
        if self.resize:
            x = v2.functional.resize(x, self.resize, self.interpolation, antialias=True)
            x = v2.functional.center_crop(x, list(self.size))
        elif tuple(x.shape[-2:]) != self.size:
            x = v2.functional.resize(x, list(self.size), self.interpolation, antialias=True)
        return self.normalize(x)


def eval_transform(pre: dict) -> EvalTransform:
    """The evaluation transform (resize, centre crop, normalise) that `pre` describes."""
    return EvalTransform(pre)


def pad_for(size: int, preset: str = "paper") -> int:
    """Translation range of a preset: 4 px at 32 px for 'paper', 'erase' and 'strong' (the paper's
    CIFAR setting), 2 px for 'light', none for 'none', 'flip' and 'flip_erase'."""
    if preset in ("none", "flip", "flip_erase"):
        return 0
    return max(1, size // 16) if preset == "light" else max(1, size // 8)


def train_transform(pre: dict, preset: str, flip: bool = True) -> v2.Compose:
    """Per-image training transform for data streamed from disk."""
    if preset not in PRESETS:
        raise ValueError(f"augmentation preset must be one of {', '.join(PRESETS)}")
    h, w = pre["size"]
    ops: list = []
    if preset == "none":
        ops.append(EvalTransform(pre))
        return v2.Compose(ops)
    if max(h, w) >= 96:  # ImageNet-style images: scale augmentation
        ops.append(v2.RandomResizedCrop((h, w), antialias=True))
    else:
        ops.append(v2.Resize((h, w), antialias=True))
        if pad_for(h, preset):
            ops.append(v2.RandomCrop((h, w), padding=pad_for(h, preset)))
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    if preset == "strong":
        ops += [
            v2.ToDtype(torch.uint8, scale=True),
            v2.TrivialAugmentWide(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    ops.append(ToModelInput(pre))
    if preset in ERASE_P:
        ops.append(v2.RandomErasing(p=ERASE_P[preset]))
    return v2.Compose(ops)


class BatchAugment:
    """Augmentation of whole batches of normalised tensors (the airbench approach).

    Random parameters are drawn for the *global* batch from a given generator and can be sliced
    per rank, so one process and N processes see exactly the same augmented samples.
    """

    def __init__(self, preset: str, size: int, flip: bool = True, alternate_flip: bool = False):
        if preset not in PRESETS:
            raise ValueError(f"augmentation preset must be one of {', '.join(PRESETS)}")
        self.preset = preset
        self.pad = pad_for(size, preset)
        self.flip = flip and preset != "none"
        self.alternate_flip = alternate_flip and self.flip  # the loader supplies the flips
        self.erase_p = ERASE_P.get(preset, 0.0)

    def sample(
        self, n: int, g: torch.Generator, h: int, w: int, flip: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Random parameters for n images; `flip` (bool [n]) replaces the coin tosses."""
        p = self.pad
        params = {
            "dy": torch.randint(0, 2 * p + 1, (n,), generator=g),
            "dx": torch.randint(0, 2 * p + 1, (n,), generator=g),
            "flip": torch.rand(n, generator=g) < 0.5 if flip is None else flip,
        }
        if self.erase_p:  # random erasing: 2-33 % of the area, aspect 0.3-3.3
            area = torch.empty(n).uniform_(0.02, 0.33, generator=g) * h * w
            ratio = torch.exp(torch.empty(n).uniform_(-1.2, 1.2, generator=g))
            eh = (area * ratio).sqrt().round().clamp(1, h).long()
            ew = (area / ratio).sqrt().round().clamp(1, w).long()
            params |= {
                "erase": torch.rand(n, generator=g) < self.erase_p,
                "eh": eh,
                "ew": ew,
                "ey": (torch.rand(n, generator=g) * (h - eh + 1)).long(),
                "ex": (torch.rand(n, generator=g) * (w - ew + 1)).long(),
            }
        return params

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Augments the batch `x` [B, C, H, W] with parameters drawn by `sample`."""
        b, c, h, w = x.shape
        params = {k: v.to(x.device, non_blocking=True) for k, v in params.items()}
        if self.pad:
            p = self.pad
            xp = F.pad(x, (p, p, p, p))  # zero = the mean after normalisation
            rows = (params["dy"][:, None] + torch.arange(h, device=x.device))[
                :, None, :, None
            ].expand(b, c, h, w + 2 * p)
            xp = xp.gather(2, rows)
            cols = (params["dx"][:, None] + torch.arange(w, device=x.device))[
                :, None, None, :
            ].expand(b, c, h, w)
            x = xp.gather(3, cols)
        if self.flip:
            x = torch.where(params["flip"][:, None, None, None], x.flip(3), x)
        if self.erase_p:
            ys = torch.arange(h, device=x.device)[None, :, None]
            xs = torch.arange(w, device=x.device)[None, None, :]
            ey, ex = params["ey"][:, None, None], params["ex"][:, None, None]
            box = (
                (ys >= ey)
                & (ys < ey + params["eh"][:, None, None])
                & (xs >= ex)
                & (xs < ex + params["ew"][:, None, None])
            )
            x = x.masked_fill((box & params["erase"][:, None, None])[:, None], 0.0)
        return x


def mixup_cutmix(num_classes: int) -> v2.RandomChoice:
    """MixUp or CutMix on a batch (soft labels), as in the 'strong' preset."""
    return v2.RandomChoice(
        [
            v2.MixUp(num_classes=num_classes, alpha=0.2),
            v2.CutMix(num_classes=num_classes, alpha=1.0),
        ]
    )
