"""`train(...)`: the public way to train, for the command line, the server and Python alike."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import ResNetError
from .config import TrainConfig
from .ensemble import train_ensemble
from .events import Callback
from .folds import is_folds_run, train_folds
from .runfolder import is_ensemble_run
from .trainer import train_single


def train(
    cfg: TrainConfig | dict | None = None,
    *,
    resume: str | Path | None = None,
    epochs: int | None = None,
    time_limit: float | None = None,
    time_budget: float | None = None,
    callbacks: Iterable[Callback | Callable] | None = None,
    stop: threading.Event | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    **overrides,
) -> dict:
    """Trains as `cfg` says (or resumes the run folder `resume`); returns the run's summary.

    Args:
        cfg: a `TrainConfig`, or a nested mapping of its sections (`{"model": {"name":
            "resnet20"}, "run": {"epochs": 5}}`); keyword `overrides` are sections too:
            `train(model={"name": "resnet20"}, data={"source": "scans/"})`.
        resume: a run folder (or its `last.pt`) to continue; it may get more `epochs`, a larger
            `time_limit` or a new `time_budget` (seconds of training over the whole run, resumed
            parts included); nothing else about it can change.
        callbacks: subscribers to the run's events (`engine.events.Callback` subclasses, or
            functions taking an event); a callback may `request_stop()`.
        stop: a `threading.Event`; once set, the run stops at the next step boundary with a
            `last.pt` that `resume` continues exactly. The summary then has status "stopped".
        progress, log: the console's progress bars and where its lines go (None: silent).

    With `run.ensemble` > 1 (or an ensemble folder to resume) the members train one after
    another through the same API (`engine.ensemble.train_ensemble`); so do the folds of a
    cross-validation, `data.folds` >= 2 without `data.fold` (`engine.folds.train_folds`).
    """
    kw = dict(callbacks=callbacks, stop=stop, progress=progress, log=log)
    if resume is not None and is_folds_run(resume):
        if epochs is not None or time_limit is not None or time_budget is not None:
            raise ResNetError("a cross-validation run resumes as it was configured")
        saved = TrainConfig.load(Path(resume) / "config.yaml")
        return train_folds(saved.updated({"run": {"out": str(resume)}}), **kw)
    if resume is not None and is_ensemble_run(resume):
        if epochs is not None or time_limit is not None or time_budget is not None:
            raise ResNetError(
                "an ensemble resumes as it was configured (no --epochs, --time-limit or "
                "--time-budget)"
            )
        saved = TrainConfig.load(Path(resume) / "config.yaml")
        return train_ensemble(saved.updated({"run": {"out": str(resume)}}), **kw)
    if resume is None:
        cfg = _as_config(cfg, overrides)
        if cfg.data.folds >= 2 and cfg.data.fold is None:
            return train_folds(cfg, **kw)
        if cfg.run.ensemble > 1:
            return train_ensemble(cfg, **kw)
    elif cfg is not None or overrides:
        raise ResNetError("a resumed run keeps its config; give either cfg or resume")
    times = dict(epochs=epochs, time_limit=time_limit, time_budget=time_budget)
    return train_single(cfg, resume=resume, **times, **kw)


def _as_config(cfg: TrainConfig | dict | None, overrides: dict) -> TrainConfig:
    if cfg is None:
        cfg = TrainConfig()
    elif isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    return cfg.updated(overrides) if overrides else cfg
