"""Whole-batch random augmentation of normalised 3-D volumes (CT/MRI) for the tensor loader."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .transforms import PRESETS


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """Rotations [n, 3, 3] acting on (x=W, y=H, z=D) from angles [n, 3] in radians.

    The angles are about the D axis (in the axial H-W plane), the H axis and the W axis; the
    result is Rz @ Ry @ Rx.
    """
    cz, cy, cx = angles.cos().unbind(1)
    sz, sy, sx = angles.sin().unbind(1)
    one, zero = torch.ones_like(cz), torch.zeros_like(cz)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotates each volume of `x` [B, C, D, H, W] about its centre, trilinear, zeros outside.

    The rotation is in voxel units (`affine_grid` works in [-1, 1] per axis, so the matrix is
    conjugated by the half-sizes), which keeps it rigid for volumes that are not cubes.
    """
    d, h, w = x.shape[-3:]
    half = torch.tensor([w, h, d], dtype=angles.dtype, device=angles.device) / 2
    rot = rotation_matrices(angles)
    theta = rot * half[None, None, :] / half[None, :, None]  # S^-1 R S
    theta = F.pad(theta, (0, 1))  # no translation
    dtype = torch.promote_types(x.dtype, torch.float32)
    grid = F.affine_grid(theta.to(dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(
        x.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out.to(x.dtype)


class VolumeAugment:
    """Augmentation of whole batches of normalised volumes [B, C, D, H, W].

    The same interface as `BatchAugment`: parameters for the *global* batch are drawn from a
    CPU generator, each with n as its first dimension, so they can be sliced per rank.
    "none" does nothing, "flip" mirrors left-right only, and every other preset adds a small
    rotation and an intensity jitter `x * (1 + a) + b`.
    """

    alternate_flip = False  # volumes never use the loader's derandomised flips

    def __init__(
        self, preset: str, flip: bool = True, max_degrees: float = 10.0, intensity: float = 0.1
    ):
        if preset not in PRESETS:
            raise ValueError(f"augmentation preset must be one of {', '.join(PRESETS)}")
        full = preset not in ("none", "flip")
        self.preset = preset
        self.flip = flip and preset != "none"  # off for laterality-sensitive data
        self.max_degrees = float(max_degrees) if full else 0.0
        self.intensity = float(intensity) if full else 0.0

    def sample(
        self, n: int, g: torch.Generator, h: int, w: int, flip: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Random parameters for n volumes; `flip` (bool [n]) replaces the coin tosses.

        `h` and `w` are accepted for compatibility with `BatchAugment` and not used.
        """
        if self.preset == "none":
            return {}
        coins = torch.rand(n, generator=g) < 0.5 if flip is None else flip.bool()
        params = {"flip": coins & self.flip}
        if self.preset == "flip":
            return params
        limit = torch.tensor([1.0, 0.5, 0.5]) * math.radians(self.max_degrees)
        jitter = torch.empty(n, 2).uniform_(-1.0, 1.0, generator=g) * self.intensity
        return params | {
            "angles": (torch.rand(n, 3, generator=g) * 2 - 1) * limit,
            "scale": jitter[:, 0],
            "shift": jitter[:, 1],
        }

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Augments the batch `x` [B, C, D, H, W] with parameters drawn by `sample`."""
        if not params:
            return x
        params = {k: v.to(x.device, non_blocking=True) for k, v in params.items()}
        if self.flip:
            x = torch.where(params["flip"].view(-1, 1, 1, 1, 1), x.flip(-1), x)
        if "angles" in params and self.max_degrees > 0:
            x = rotate(x, params["angles"])
        if "scale" in params and self.intensity > 0:
            shape = (-1, 1, 1, 1, 1)
            x = x * (1 + params["scale"].view(shape)) + params["shift"].view(shape)
        return x
