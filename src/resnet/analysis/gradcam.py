"""Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391): where a classifier looked, as a heat-map.

The target layer defaults to the network's last stage (`model.feature_info[-1]["module"]`): its
maps are the last ones with spatial layout, and by then every unit sees class-level features.
torchvision's and timm's nets use their family's layer (`models.foreign`); token nets (ViT) have
no spatial map to default to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import eval_transform, load_image
from ..engine.report import save_figure
from ..errors import ResNetError
from ..models import Ensemble, ForeignSpec
from ..models.foreign import cam_layer


def default_layer(model: nn.Module) -> str:
    """The name of the last stage: `feature_info[-1]["module"]` for resnet models, the family's
    layer for a torchvision / timm net (`models.foreign`)."""
    if isinstance(getattr(model, "spec", None), ForeignSpec):
        layer = cam_layer(model)
        if layer is None:
            raise ResNetError(
                f"{model.arch} has no channels-first feature map to take Grad-CAM maps from "
                "(token or channels-last outputs); name a conv layer (--cam-layer)"
            )
        return layer
    info = getattr(model, "feature_info", None)
    if info:
        return info[-1]["module"]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ResNetError("the model has no convolution to take Grad-CAM maps from")
    return convs[-1]


class GradCAM:
    """Grad-CAM maps of `model` at `layer`.

    `cams, logits = GradCAM(model)(x)` gives one map per image, [N, H, W] in [0, 1] at the
    input's size (1 = the strongest evidence for the target class in that image); for a 3-D
    net fed volumes [N, C, D, H, W] the maps are volumes [N, D, H, W].

    Args:
        model: a classifier in eval mode (it is not modified; no parameter gradients are kept).
        layer: a module name from `model.named_modules()`; default: the last stage.
    """

    def __init__(self, model: nn.Module, layer: str | None = None):
        self.model = model
        self.layer_name = layer or default_layer(model)
        modules = dict(model.named_modules())
        if self.layer_name not in modules:
            near = [n for n in modules if n and "." not in n]
            raise ResNetError(
                f"no layer {self.layer_name!r} in the model; top-level layers: {', '.join(near)}"
            )
        self.layer = modules[self.layer_name]

    def __call__(
        self,
        x: torch.Tensor,
        target: int | torch.Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps for batch `x` and class `target` (default: each image's predicted class).

        Returns:
            `(cams [N, H, W] in [0, 1], logits [N, classes])`; H, W = `size` or the input's.
        """
        store: dict[str, torch.Tensor] = {}

        def hook(_module, _inputs, output):
            store["act"] = output
            return output.clone()  # later in-place ops must not touch the saved activation

        handle = self.layer.register_forward_hook(hook)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                inp = x.detach().clone().float().requires_grad_(True)
                logits = self.model(inp)
                if target is None:
                    idx = logits.argmax(1)
                elif isinstance(target, int):
                    idx = torch.full((len(x),), target, dtype=torch.long)
                else:
                    idx = torch.as_tensor(target, dtype=torch.long).reshape(-1)
                if idx.numel() != len(x) or idx.min() < 0 or idx.max() >= logits.shape[1]:
                    raise ResNetError(f"Grad-CAM target out of range for {logits.shape[1]} classes")
                score = logits.gather(1, idx[:, None]).sum()
                act = store["act"]
                if act.ndim not in (4, 5):
                    raise ResNetError(
                        f"layer {self.layer_name!r} gives {act.ndim}-D outputs "
                        f"{tuple(act.shape)}; Grad-CAM needs spatial maps [N, C, H, W]"
                    )
                (grad,) = torch.autograd.grad(score, act)
        finally:
            handle.remove()
        spatial = tuple(range(2, act.ndim))  # (H, W), or (D, H, W) for a 3-D net
        weights = grad.mean(dim=spatial, keepdim=True)  # global-average-pooled gradients
        cam = F.relu((weights * act).sum(1, keepdim=True)).detach()
        mode = "trilinear" if act.ndim == 5 else "bilinear"
        full = tuple(x.shape[2:])
        cam = F.interpolate(cam, size=size or full, mode=mode, align_corners=False)[:, 0]
        peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, *[1] * (cam.ndim - 1))
        return cam / peak, logits.detach()


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor | None = None,
    layer: str | None = None,
) -> torch.Tensor:
    """Grad-CAM maps [N, H, W] in [0, 1] for batch `x` (see `GradCAM`)."""
    return GradCAM(model, layer)(x, target)[0]


def to_image_frame(
    cam: torch.Tensor, image_hw: tuple[int, int], preprocessing: dict[str, Any] | None = None
) -> torch.Tensor:
    """Maps a model-input-sized map back onto the original image [H, W].

    With a resize + centre crop preprocessing the map covers only the cropped centre (zero
    elsewhere); with a plain resize it is stretched over the whole image.
    """
    h, w = image_hw
    resize = (preprocessing or {}).get("resize")
    if not resize:
        return F.interpolate(cam[None, None], size=(h, w), mode="bilinear", align_corners=False)[
            0, 0
        ]
    scale = resize / min(h, w) if isinstance(resize, int | float) else None
    if scale is None:  # [H, W] resize: stretch, then crop
        sy, sx = resize[0] / h, resize[1] / w
    else:
        sy = sx = scale
    ch, cw = preprocessing["size"]
    box_h, box_w = min(h, round(ch / sy)), min(w, round(cw / sx))
    top, left = (h - box_h) // 2, (w - box_w) // 2
    out = torch.zeros(h, w)
    out[top : top + box_h, left : left + box_w] = F.interpolate(
        cam[None, None], size=(box_h, box_w), mode="bilinear", align_corners=False
    )[0, 0]
    return out


def overlay(
    image: torch.Tensor, cam: torch.Tensor, alpha: float = 0.45, cmap: str = "jet"
) -> torch.Tensor:
    """An RGB uint8 [H, W, 3] picture: `image` (float [C, H, W] in [0, 1]) with `cam` (resized
    to the image's size) drawn over it in `cmap`."""
    import matplotlib  # optional heavy dependency: loaded when an overlay is drawn

    if image.ndim != 3:
        raise ResNetError(f"overlay needs one image [C, H, W], got {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if tuple(cam.shape) != (h, w):
        cam = F.interpolate(
            cam[None, None].float(), size=(h, w), mode="bilinear", align_corners=False
        )[0, 0]
    base = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    base = base.clamp(0, 1).permute(1, 2, 0)
    colours = torch.from_numpy(matplotlib.colormaps[cmap](cam.clamp(0, 1).numpy())[..., :3])
    mixed = (1 - alpha) * base + alpha * colours.float()
    return (mixed * 255).round().to(torch.uint8)


def save_overlay(
    path: str | os.PathLike,
    image: torch.Tensor,
    cam: torch.Tensor,
    title: str | None = None,
    alpha: float = 0.45,
) -> Path:
    """Writes the Grad-CAM overlay of `image` as a PNG (atomically), titled `title`."""
    # matplotlib loads only when an overlay is drawn; a bare Figure keeps pyplot's global
    # state out of it (the web app draws from several threads).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picture = overlay(image, cam, alpha)
    h, w = picture.shape[:2]
    fig = Figure(figsize=(4, 4 * h / w + (0.4 if title else 0)), dpi=100)
    FigureCanvasAgg(fig)  # Agg canvas: no display, no global pyplot state
    ax = fig.add_subplot()
    ax.imshow(picture.numpy(), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path, dpi=None)


def eager_model(classifier: Any) -> nn.Module:
    """`classifier.model` when it is one eager net Grad-CAM can take gradients of.

    Raises:
        ResNetError: for an exported model (no nn.Module) or an `Ensemble`.
    """
    model = getattr(classifier, "model", None)
    if not isinstance(model, nn.Module):
        raise ResNetError(
            "Grad-CAM needs gradients: use a checkpoint (not an exported "
            "ONNX / TorchScript / ExportedProgram file)"
        )
    if isinstance(model, Ensemble):
        raise ResNetError(
            "Grad-CAM explains one net: give one member of the ensemble "
            "(e.g. RUN/member0) for --cam"
        )
    return model


def save_cams(
    classifier: Any, results: list[dict], out_dir: str | os.PathLike, layer: str | None = None
) -> list[Path]:
    """Grad-CAM overlays for `predict_paths` results, one PNG per image in `out_dir`.

    The map is taken for each image's top-1 class and laid over the original image. Each
    result gains "cam" (the PNG's path) and "cam_layer".

    Args:
        classifier: anything with `.model` (an eager nn.Module), `.preprocessing`, `.classes`.
        results: `predict_paths` output (path, predictions[0]["index"]).
        out_dir: folder for the PNGs (`<n>_<image stem>.cam.png`).
        layer: target layer; default the last stage.
    """
    model = eager_model(classifier)
    cam_of = GradCAM(model, layer)
    pre = classifier.preprocessing
    tf = eval_transform(pre)
    device = next(model.parameters()).device
    out_dir = Path(out_dir)
    written = []
    for n, r in enumerate(results):
        image = load_image(r["path"], pre["in_chans"])
        top = r["predictions"][0]
        cam, _ = cam_of(tf(image)[None].to(device), target=int(top["index"]))
        full = to_image_frame(cam[0].cpu(), tuple(image.shape[-2:]), pre)
        path = out_dir / f"{n:04d}_{Path(r['path']).stem}.cam.png"
        title = f"{top['class']} {100 * top['probability']:.1f}%  (Grad-CAM, {cam_of.layer_name})"
        save_overlay(path, image, full, title=title)
        r["cam"], r["cam_layer"] = str(path), cam_of.layer_name
        written.append(path)
    return written
