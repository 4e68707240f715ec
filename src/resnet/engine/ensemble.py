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
from .events import Callback, Callbacks, Event, RunEnd
from .runfolder import MANIFEST, default_out, is_ensemble_run
from .trainer import run_callbacks, train_single
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
    cfg, out = _prepare_folder(cfg)
    members, seconds = [], 0.0
    for i in range(cfg.run.ensemble):
        if events.stop_requested:  # asked during the last member's final evaluation
            return _stopped(events, out, i, {"epoch": 0, "step": 0, "train_seconds": seconds})
        summary = _train_member(cfg, out, i, events)
        if summary.get("status") == "stopped":
            return _stopped(events, out, i, summary)
        seconds += summary["train_seconds"]
        members.append(summary)
    summary = _finish(cfg, out, members, seconds, progress)
    events.emit(RunEnd(summary, "finished"))
    return summary


def _stopped(events: Callbacks, out: Path, member: int, summary: dict) -> dict:
    """The ensemble's own "stopped" end: resuming the ensemble folder goes on with `member`."""
    summary = {**summary, "status": "stopped", "out": str(out), "member": member}
    events.emit(RunEnd(summary, "stopped"))
    return summary


class _MemberEvents(Callback):
    """A member run's events, passed on to the ensemble's callbacks except its `run_end`: the
    ensemble announces its own end (finished, or stopped with the ensemble folder to resume)."""

    def __init__(self, events: Callbacks):
        self.events = events

    def on_event(self, event: Event) -> None:
        """Forwards every event but the member's end."""
        if not isinstance(event, RunEnd):
            self.events.emit(event)


def _prepare_folder(cfg: TrainConfig) -> tuple[TrainConfig, Path]:
    """The ensemble's folder, fixed in its config; refuses one holding another run."""
    out = Path(cfg.run.out) if cfg.run.out else default_out(cfg)
    cfg = cfg.updated({"run": {"out": str(out)}})
    if (out / MANIFEST).exists() and (out / "summary.json").exists():
        raise ResNetError(f"{out} already holds a finished ensemble; use another --out")
    if (out / "config.yaml").exists():
        if not is_ensemble_run(out):
            raise ResNetError(f"{out} already holds a run; use another --out")
        saved = TrainConfig.load(out / "config.yaml").updated({"run": {"out": str(out)}})
        if saved.to_dict() != cfg.to_dict():
            raise ResNetError(
                f"{out} holds an ensemble run with another config; continue it with "
                f"`resnet train --resume {out}` or use another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    return cfg, out


def _train_member(cfg: TrainConfig, out: Path, i: int, events: Callbacks) -> dict:
    """Member i: read back if trained, resumed if started, else trained from its own seed."""
    folder = out / f"member{i}"
    tag = f"member {i + 1}/{cfg.run.ensemble} (seed {cfg.run.seed + i})"
    kw = dict(callbacks=[_MemberEvents(events)], stop=events.stop, progress=False, log=None)
    if (folder / "summary.json").exists():
        events.log(f"{tag}: trained already ({folder})")
        return json.loads((folder / "summary.json").read_text())
    if (folder / "last.pt").exists():
        events.log(f"{tag}: resuming {folder}")
        return train_single(resume=folder, **kw)
    events.log(f"{tag}: training into {folder}")
    run = {"ensemble": 1, "seed": cfg.run.seed + i, "out": str(folder)}
    return train_single(cfg.updated({"run": run}), **kw)


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
