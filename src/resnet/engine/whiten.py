"""Patch-whitening initialisation of a net's first convolution (airbench's first layer).

The first conv's filters are set to the whitening transform of the training images' own patches:
each filter is an eigenvector of the patch covariance divided by the square root of its
eigenvalue, once with each sign (a ReLU or max-pool after the conv then keeps both halves). The
net starts from decorrelated, unit-variance features instead of random ones, which speeds up the
first epochs of a short run. Filters beyond twice the patch dimension keep their random init; a
conv with fewer filters than that gets the eigenvectors of largest variance.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The net's first convolution (the first of three in a deep stem)."""
    conv = getattr(model, "conv1", None)
    if isinstance(conv, nn.Sequential):  # the deep stem: three convs, whiten the first
        conv = conv[0]
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ValueError(f"{type(model).__name__} has no plain first convolution to whiten")
    return conv


def whitenable_filters(conv: nn.Conv2d) -> int:
    """How many of `conv`'s filters whitening can fill: each patch direction, with both signs."""
    return min(conv.out_channels, 2 * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1])


def patch_whitening(
    images: torch.Tensor, kernel: int, filters: int, eps: float = 5e-4, max_patches: int = 10**6
) -> torch.Tensor:
    """Whitening filters [min(filters, 2d), C, k, k] for the k x k patches of `images` [N, C, H, W]
    (d = C k k), largest-variance directions first, each followed by its negative.

    Patches are taken with a stride that keeps their number near `max_patches`, a chunk of
    images at a time, so large images cost bounded memory.
    """
    n, c, h, w = images.shape
    d = c * kernel * kernel
    stride = max(1, math.ceil(math.sqrt(n * h * w / max_patches)))
    total, s1, s2 = 0, torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    for chunk in images.split(256):
        p = chunk.double().unfold(2, kernel, stride).unfold(3, kernel, stride)  # B C H' W' k k
        p = p.permute(0, 2, 3, 1, 4, 5).reshape(-1, d)
        total += p.shape[0]
        s1 += p.sum(0)
        s2 += p.T @ p
    mean = s1 / total
    cov = s2 / total - torch.outer(mean, mean)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    order = eigvals.argsort(descending=True)[: max(1, filters // 2)]
    v = (eigvecs[:, order] / (eigvals[order].clamp_min(0) + eps).sqrt()).T  # [m, d]
    v = torch.stack((v, -v), 1).reshape(-1, c, kernel, kernel)
    return v[:filters].float()


@torch.no_grad()
def whiten_first_conv_(
    model: nn.Module, images: torch.Tensor, eps: float = 5e-4, max_images: int = 5000
) -> int:
    """Sets `model`'s first conv to whitening filters of `images` (normalised, [N, C, H, W]).

    Uses the first `max_images` images. Returns how many filters were set.
    """
    conv = first_conv(model)
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or images.shape[1] != conv.in_channels:
        raise ValueError(
            f"cannot whiten a {conv.kernel_size} conv of {conv.in_channels} input "
            f"channels with {images.shape[1]}-channel images"
        )
    w = patch_whitening(images[:max_images].cpu(), k, conv.out_channels, eps)
    conv.weight[: w.shape[0]] = w.to(conv.weight.device, conv.weight.dtype)
    return w.shape[0]
