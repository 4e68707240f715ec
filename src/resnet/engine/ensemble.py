"""Ensembles: K members trained with seeds seed..seed+K-1, then used as one classifier.

    runs/ens/
        config.yaml        the run's config (run.ensemble = K)
        member0/ ...       one ordinary run folder per member (best.pt, curves.png, ...)
        ensemble.json      written when every member is done: the member folders, their seeds
        val-test/          the ensemble's metrics.json and confusion_matrix.png
        summary.json       each member's accuracy and the ensemble's

`resnet val`, `resnet predict`, `resnet export` and `load_model_or_ensemble` take such a folder
(or several checkpoints) and average the members' probabilities (`models.ensemble.Ensemble`).
Training the same config into the same folder again, or `--resume` on it, goes on from the first
unfinished member.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import ResNetError
from ..models.ensemble import Ensemble
from ..storage import atomic_write_text
from .checkpoint import load_model
from .config import TrainConfig

MANIFEST = "ensemble.json"


def is_ensemble_run(path: str | os.PathLike) -> bool:
    """A folder that holds (or was started as) an ensemble run."""
    path = Path(path)
    if (path / MANIFEST).exists():
        return True
    if not (path / "config.yaml").exists() or (path / "last.pt").exists():
        return False
    return int(TrainConfig.read_yaml(path / "config.yaml").get("run", {}).get("ensemble", 1)) > 1


def member_paths(path: str | os.PathLike) -> list[Path]:
    """The member run folders of a finished ensemble folder."""
    path = Path(path)
    if not (path / MANIFEST).exists():
        raise ResNetError(f"{path} is an ensemble run whose members are not all trained yet; "
                          f"resume it with `resnet train --resume {path}`")
    manifest = json.loads((path / MANIFEST).read_text())
    return [path / m for m in manifest["members"]]


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
            raise ResNetError(f"{p} expects other input preprocessing than {paths[0]} "
                              f"(size, normalisation or channels); cannot ensemble them")
        models.append(model)
        states.append(state)
    first = states[0]
    arch = first.get("arch", "model")
    members = [str(p) for p in paths]
    state = {**first, "arch": f"ensemble of {len(paths)} ({arch})", "members": members}
    return Ensemble(models).eval(), state


def train_ensemble(cfg: TrainConfig, *, progress: bool = True, log=print) -> dict:
    """Trains `cfg.run.ensemble` members one after another (seeds seed, seed + 1, ...), then
    evaluates their average on the test split (else the validation split); returns the summary.
    An interrupted ensemble goes on from where it stopped when trained into the same folder."""
    from .trainer import default_out, train
    from .validate import validate

    k = cfg.run.ensemble
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ResNetError("ensemble training runs in one process (members one after another); "
                          "under torchrun train each member with its own --seed and --out, then "
                          "`resnet val` them together")
    out = Path(cfg.run.out) if cfg.run.out else default_out(cfg)
    cfg = cfg.updated({"run": {"out": str(out)}})
    if (out / MANIFEST).exists() and (out / "summary.json").exists():
        raise ResNetError(f"{out} already holds a finished ensemble; use another --out")
    if (out / "config.yaml").exists():
        if not is_ensemble_run(out):
            raise ResNetError(f"{out} already holds a run; use another --out")
        saved = TrainConfig.load(out / "config.yaml").updated({"run": {"out": str(out)}})
        if saved.to_dict() != cfg.to_dict():
            raise ResNetError(f"{out} holds an ensemble run with another config; continue it "
                              f"with `resnet train --resume {out}` or use another --out")
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    members, seconds = [], 0.0
    for i in range(k):
        folder = out / f"member{i}"
        tag = f"member {i + 1}/{k} (seed {cfg.run.seed + i})"
        if (folder / "summary.json").exists():
            log(f"{tag}: trained already ({folder})")
            summary = json.loads((folder / "summary.json").read_text())
        elif (folder / "last.pt").exists():
            log(f"{tag}: resuming {folder}")
            summary = train(resume=folder, progress=progress, log=log)
        else:
            log(f"{tag}: training into {folder}")
            member = cfg.updated({"run": {"ensemble": 1, "seed": cfg.run.seed + i,
                                          "out": str(folder)}})
            summary = train(member, progress=progress, log=log)
        seconds += summary["train_seconds"]
        members.append(summary)
    manifest = {
        "format": "resnet-ensemble",
        "members": [f"member{i}" for i in range(k)],
        "seeds": [cfg.run.seed + i for i in range(k)],
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    # The split a single run reports: test where the data has one, else the held-out val split.
    split = next((s for s in ("test", "val") if members[0].get(f"{s}_acc") is not None), None)
    summary = {
        "model": f"ensemble of {k} {cfg.model.name}",
        "members": [
            {"seed": cfg.run.seed + i, "train_seconds": m["train_seconds"]}
            | ({f"{split}_acc": m[f"{split}_acc"]} if split else {})
            for i, m in enumerate(members)
        ],
        "train_seconds": round(seconds, 2),
        "out": str(out),
    }
    if split:
        # The members' own figures came from autocast in the run's precision: so does this one.
        metrics = validate(out, split=split, device=cfg.run.device, precision=cfg.run.precision,
                           progress=progress)
        summary |= {f"{split}_{key}": metrics[name] for key, name in (
            ("acc", "top1"), ("top5", "top5"), ("loss", "loss"), ("macro_f1", "macro_f1"))}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if split:
        best = max(m[f"{split}_acc"] for m in summary["members"])
        log(f"ensemble of {k}: {split} accuracy {100 * summary[f'{split}_acc']:.2f}% (best "
            f"member {100 * best:.2f}%) after {seconds:.0f}s of training; run folder {out}")
    return summary

