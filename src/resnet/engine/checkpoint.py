"""Self-describing checkpoints: written atomically, read with `weights_only=True`.

A checkpoint holds everything `predict`, `val` and `export` need, so they take only its path:

    format, version       "resnet-checkpoint", 1
    arch                  registered name ("resnet20", "tv:efficientnet_b0") or "custom"
    spec, model_options   ResNetSpec.to_dict() and the ResNet constructor options (a torchvision
                          / timm net: ForeignSpec.to_dict(), {"kind": "foreign", "source",
                          "name"}, and `foreign.build`'s options)
    model                 the state_dict
    classes               class names, in output order
    preprocessing         {"in_chans", "size": [H, W], "mean", "std", "resize", "crop"}
    config, epoch, step, optimizer, scheduler, ema, rng, metrics, versions   (training state)
    temperature           optional: the softmax temperature `resnet calibrate` fitted
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ResNetError
from ..models import Ensemble, ResNet, model_for_spec, spec_from_dict, unwrap
from ..models.weight_files import read_torch_file
from ..storage import atomic_write_bytes, package_versions
from .runfolder import checkpoint_in, is_ensemble_run, member_paths

FORMAT = "resnet-checkpoint"
VERSION = 1


def model_state(model: ResNet) -> dict[str, Any]:
    """The part of a checkpoint that rebuilds the model."""
    model = unwrap(model)  # DDP / compiled wrappers
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
    path = checkpoint_in(path)
    state = read_torch_file(path, "checkpoint", mmap=mmap)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ResNetError(
            f"{path} is not a resnet checkpoint (no '{FORMAT}' header); "
            "for plain state_dicts use `resnet.create(..., weights=PATH)`"
        )
    version = state.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResNetError(f"{path} has a malformed format version ({type(version).__name__})")
    if version > VERSION:
        raise ResNetError(f"{path} was written by a newer resnet (format {state['version']})")
    return state


def update_checkpoint(path: str | os.PathLike, **fields) -> Path:
    """Sets top-level `fields` in a checkpoint (a file, or a run folder's best.pt) and rewrites
    it atomically: a crash mid-write leaves the old file. Returns the file written.

    Example: `update_checkpoint("runs/r/best.pt", temperature=1.7)`.
    """
    path = Path(path)
    state = load_checkpoint(path)  # weights_only=True; also checks the header and version
    state.update(fields)
    return atomic_write_bytes(checkpoint_in(path), lambda f: torch.save(state, f))


def build_model(state: dict[str, Any]) -> ResNet:
    """Rebuilds the model a checkpoint describes (2-D, 3-D or video layout) and loads its
    weights (strict)."""
    model = model_for_spec(spec_from_dict(state["spec"]), **state["model_options"])
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


def load_model_or_ensemble(source: str | os.PathLike | Sequence[str | os.PathLike]):
    """`(model in eval mode, checkpoint dict)` for a checkpoint, a run folder, an ensemble folder
    or a list of them (two or more checkpoints: an `Ensemble` of them). Members must predict the
    same classes from the same preprocessing; the dict is the first member's, plus `members`."""
    sources = [source] if isinstance(source, str | os.PathLike) else list(source)
    if not sources:
        raise ResNetError("no checkpoint given")
    paths: list[Path] = []
    for s in sources:
        paths += member_paths(s) if is_ensemble_run(s) else [Path(s)]
    if len(paths) == 1:
        return load_model(paths[0])
    models, states = [], []
    for p in paths:
        model, state = load_model(p)
        if "classes" not in state or "preprocessing" not in state:
            raise ResNetError(f"{p} lacks class names or preprocessing; cannot ensemble it")
        if states and state["classes"] != states[0]["classes"]:
            raise ResNetError(f"{p} predicts other classes than {paths[0]}; cannot ensemble them")
        if states and state["preprocessing"] != states[0]["preprocessing"]:
            raise ResNetError(
                f"{p} expects other input preprocessing than {paths[0]} "
                f"(size, normalisation or channels); cannot ensemble them"
            )
        models.append(model)
        states.append(state)
    first = states[0]
    arch = first.get("arch", "model")
    members = [str(p) for p in paths]
    state = {**first, "arch": f"ensemble of {len(paths)} ({arch})", "members": members}
    return Ensemble(models).eval(), state
