"""Ensembles: K members trained with seeds seed..seed+K-1, then used as one classifier.

    runs/ens/
        config.yaml        the run's config (run.ensemble = K)
        member0/ ...       one ordinary run folder per member (best.pt, curves.png, ...)
        ensemble.json      written when every member is done: the member folders, their seeds
        val-test/          the ensemble's metrics.json and confusion_matrix.png
        summary.json       each member's accuracy and the ensemble's

`resnet val`, `resnet predict`, `resnet export` and `engine.checkpoint.load_model_or_ensemble`
take such a folder (or several checkpoints) and average the members' probabilities
(`models.ensemble.Ensemble`). Training the same config into the same folder again, or
`--resume` on it, goes on from the first unfinished member.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import ResNetError
from ..storage import atomic_write_text
from .config import TrainConfig
from .events import Callback, Callbacks, RunEnd
from .parts import prepare_folder, stopped, train_part
from .runfolder import MANIFEST, is_ensemble_run
from .trainer import run_callbacks
from .validate import validate


def train_ensemble(
    cfg: TrainConfig,
    *,
    callbacks: Iterable[Callback | Callable] | None = None,
    stop: threading.Event | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Trains `cfg.run.ensemble` members one after another (seeds seed, seed + 1, ...), then
    evaluates their average on the test split (else the validation split); returns the summary.
    An interrupted (or stopped) ensemble goes on from where it stopped when trained into the
    same folder or resumed. Each member is an ordinary run, with the same callbacks."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ResNetError(
            "ensemble training runs in one process (members one after another); under torchrun "
            "train each member with its own --seed and --out, then `resnet val` them together"
        )
    events = run_callbacks(callbacks, progress, log, stop)
    cfg, out = prepare_folder(cfg, "an ensemble run", is_ensemble_run, MANIFEST)
    members, seconds = [], 0.0
    for i in range(cfg.run.ensemble):
        if events.stop_requested:  # asked during the last member's final evaluation
            where = {"epoch": 0, "step": 0, "train_seconds": seconds}
            return stopped(events, out, where, member=i)
        summary = _train_member(cfg, out, i, events)
        if summary.get("status") == "stopped":
            return stopped(events, out, summary, member=i)
        seconds += summary["train_seconds"]
        members.append(summary)
    summary = _finish(cfg, out, members, seconds, progress)
    events.emit(RunEnd(summary, "finished"))
    return summary


def _train_member(cfg: TrainConfig, out: Path, i: int, events: Callbacks) -> dict:
    """Member i: read back if trained, resumed if started, else trained from its own seed."""
    tag = f"member {i + 1}/{cfg.run.ensemble} (seed {cfg.run.seed + i})"
    member = cfg.updated({"run": {"ensemble": 1, "seed": cfg.run.seed + i}})
    return train_part(member, out / f"member{i}", tag, events)


def _finish(
    cfg: TrainConfig, out: Path, members: list[dict], seconds: float, progress: bool
) -> dict:
    """Writes the manifest, evaluates the members' average and writes the summary."""
    k = cfg.run.ensemble
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
        metrics = validate(
            out, split=split, device=cfg.run.device, precision=cfg.run.precision, progress=progress
        )
        summary |= {
            f"{split}_{key}": metrics[name]
            for key, name in (
                ("acc", "top1"),
                ("top5", "top5"),
                ("loss", "loss"),
                ("macro_f1", "macro_f1"),
            )
        }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
