"""Self-describing checkpoints: written atomically, read with `weights_only=True`.

A checkpoint holds everything `predict`, `val` and `export` need, so they take only its path:

    format, version       "resnet-checkpoint", 1
    arch                  registered name ("resnet20") or "custom"
    spec, model_options   ResNetSpec.to_dict() and the ResNet constructor options
    model                 the state_dict
    classes               class names, in output order
    preprocessing         {"in_chans", "size": [H, W], "mean", "std", "resize", "crop"}
    config, epoch, step, optimizer, scheduler, ema, rng, metrics, versions   (training state)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ResNetError
from ..models import ResNet, ResNetSpec
from ..storage import atomic_write_bytes, package_versions, torch_load_safe

FORMAT = "resnet-checkpoint"
VERSION = 1


def model_state(model: ResNet) -> dict[str, Any]:
    """The part of a checkpoint that rebuilds the model."""
    model = getattr(model, "module", model)  # DDP / compiled wrappers
    model = getattr(model, "_orig_mod", model)
    return {
        "arch": getattr(model, "arch", "custom"),
        "spec": model.spec.to_dict(),
        "model_options": dict(model.options),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_checkpoint(path: str | os.PathLike, model: ResNet, **extra) -> Path:
    """Writes model + `extra` (classes, preprocessing, training state) atomically."""
    state = {"format": FORMAT, "version": VERSION, **model_state(model)}
    state["versions"] = package_versions()
    state.update(extra)
    return atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """Reads a checkpoint safely: tensors and plain data only, never pickled code. `mmap` leaves
    the tensors on disk until used (for reading a checkpoint's metadata only)."""
    path = Path(path)
    if not path.exists():
        raise ResNetError(f"checkpoint not found: {path}")
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                path = path / name
                break
        else:
            from .ensemble import is_ensemble_run

            if is_ensemble_run(path):
                raise ResNetError(f"{path} is an ensemble run: `resnet val`, `predict` and "
                                  f"`export` take it whole; elsewhere give one member, e.g. "
                                  f"{path}/member0")
            raise ResNetError(f"{path} is a folder without best.pt or last.pt")
    state = torch_load_safe(path, "checkpoint", mmap=mmap)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ResNetError(
            f"{path} is not a resnet checkpoint (no '{FORMAT}' header); "
            "for plain state_dicts use `resnet.create(..., weights=PATH)`"
        )
    if state.get("version", 0) > VERSION:
        raise ResNetError(f"{path} was written by a newer resnet (format {state['version']})")
    return state


def build_model(state: dict[str, Any]) -> ResNet:
    """Rebuilds the model a checkpoint describes and loads its weights (strict)."""
    model = ResNet(ResNetSpec.from_dict(state["spec"]), **state["model_options"])
    model.arch = state.get("arch", "custom")
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        raise ResNetError(
            f"checkpoint weights do not fit its model {model.arch}: {str(e).splitlines()[0][:200]}"
        ) from None
    return model


def load_model(path: str | os.PathLike) -> tuple[ResNet, dict[str, Any]]:
    """`(model in eval mode, checkpoint dict)` for a checkpoint file or run folder."""
    state = load_checkpoint(path)
    return build_model(state).eval(), state
