"""Run folders: default names, what a folder holds (a run, an ensemble), and resume checks.

runs/<model>-<data>/       config.yaml, last.pt, best.pt, metrics.csv, curves.png,
                           summary.json, confusion_matrix.png, <split>_metrics.json
runs/<ensemble>/           config.yaml (run.ensemble = K), member0/ ... member{K-1}/,
                           ensemble.json (when every member is done), summary.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ResNetError
from .config import TrainConfig

MANIFEST = "ensemble.json"


def default_out(cfg: TrainConfig) -> Path:
    """`runs/<model>-<data>`, numbered 2, 3, ... past folders that exist already."""
    data = Path(cfg.data.source).stem if cfg.data.source != "fashion-mnist" else "fashion-mnist"
    base = Path("runs") / f"{cfg.model.name.replace(':', '-')}-{data}"  # tv:NAME -> tv-NAME
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}{n}")
    return out


def new_run_problem(out: Path) -> str | None:
    """Why `out` cannot take a new run (it holds one already), or None."""
    if (out / "last.pt").exists():
        return f"{out} already holds a run; use --resume {out} or another --out"
    return None


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
        raise ResNetError(
            f"{path} is an ensemble run whose members are not all trained yet; "
            f"resume it with `resnet train --resume {path}`"
        )
    manifest = json.loads((path / MANIFEST).read_text())
    return [path / m for m in manifest["members"]]


def checkpoint_in(path: Path) -> Path:
    """The checkpoint a run folder stands for (best.pt, else last.pt), or `path` if a file."""
    if not path.is_dir():
        return path
    for name in ("best.pt", "last.pt"):
        if (path / name).exists():
            return path / name
    if is_ensemble_run(path):
        raise ResNetError(
            f"{path} is an ensemble run: `resnet val`, `predict` and `export` take it whole; "
            f"elsewhere give one member, e.g. {path}/member0"
        )
    raise ResNetError(f"{path} is a folder without best.pt or last.pt")


def resume_checkpoint(resume: str | os.PathLike) -> Path:
    """The checkpoint to resume from: `last.pt` of a run folder, or the file given."""
    resume = Path(resume)
    return resume / "last.pt" if resume.is_dir() else resume


# What a training run rewrites in its folder while it holds the lock (engine.runlock).
RUN_WRITES = ("last.pt", "best.pt", "metrics.csv", "curves.png", "config.yaml")


def remove_stale_temps(out: Path) -> list[str]:
    """Deletes the temp files of writes a killed run never finished (`.last.pt.*.tmp` is a
    checkpoint's size); for the process holding the folder's lock only, the one writer of the
    files in RUN_WRITES. Returns their names."""
    stale = [p for name in RUN_WRITES for p in out.glob(f".{name}.*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return [p.name for p in stale]


def resume_hint(out: Path, nproc: int = 1) -> str:
    """How to go on with the run in `out` (trained by `nproc` processes) after it failed:
    resume it once it has a `last.pt` (an ensemble member: its ensemble), else run the same
    command again."""
    procs = f" --nproc {nproc}" if nproc > 1 else ""
    if is_ensemble_run(out.parent):
        return f"resume with `resnet train --resume {out.parent}`"
    if (out / "last.pt").exists():
        return f"resume with `resnet train --resume {out}{procs}`"
    return "run the same command again"


def resumed_config(
    state: dict,
    ckpt: Path,
    epochs: int | None,
    time_limit: float | None,
    time_budget: float | None,
) -> TrainConfig:
    """The config of a resumed run: as saved, with a longer run, a new limit or a new budget
    (the whole run's training time, resumed parts included); nothing else may change."""
    if "optimizer" not in state:
        raise ResNetError(f"{ckpt} holds no training state to resume")
    cfg = TrainConfig.from_dict(state["config"])
    if epochs is not None and epochs <= state["epoch"] + 1:
        raise ResNetError(f"{ckpt} already finished epoch {state['epoch'] + 1}")
    cfg = with_run_overrides(cfg, epochs, time_limit, time_budget)
    used, left = state.get("train_seconds", 0.0), state["epoch"] + 1 < cfg.run.epochs
    if "partial_epoch" in state:  # the limit is checked between epochs: this one may finish
        used -= state["partial_epoch"]["seconds"]
    if left and cfg.run.time_limit and used >= cfg.run.time_limit:
        raise ResNetError(
            f"{ckpt} has trained {used:.0f} s, at or past the time limit of "
            f"{cfg.run.time_limit:.0f} s; resume with a larger --time-limit (the whole "
            f"run's training time) to go on"
        )
    return cfg


def with_run_overrides(
    cfg: TrainConfig, epochs: int | None, time_limit: float | None, time_budget: float | None
) -> TrainConfig:
    """`cfg` with whichever of epochs / time limit / time budget are given."""
    run = {
        k: v
        for k, v in (("epochs", epochs), ("time_limit", time_limit), ("time_budget", time_budget))
        if v is not None
    }
    return cfg.updated({"run": run}) if run else cfg
