"""Runs made of parts: the members of an ensemble and the folds of a cross-validation.

Each part is an ordinary run folder inside the parent's folder. A finished part is read back, a
started one resumed, a new one trained; the parts' events reach the parent's callbacks, except
their ends: the parent announces its own (finished, or stopped with its folder to resume).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import ResNetError
from .config import TrainConfig
from .events import Callback, Callbacks, Event, RunEnd
from .runfolder import default_out
from .trainer import train_single


class PartEvents(Callback):
    """A part's events, passed on to the parent's callbacks except its `run_end`."""

    def __init__(self, events: Callbacks):
        self.events = events

    def on_event(self, event: Event) -> None:
        """Forwards every event but the part's end."""
        if not isinstance(event, RunEnd):
            self.events.emit(event)


def stopped(events: Callbacks, out: Path, summary: dict, **where) -> dict:
    """The parent's "stopped" end: resuming its folder goes on with the part `where` names."""
    summary = {**summary, "status": "stopped", "out": str(out), **where}
    events.emit(RunEnd(summary, "stopped"))
    return summary


def prepare_folder(
    cfg: TrainConfig, kind: str, is_kind: Callable[[Path], bool], finished: str
) -> tuple[TrainConfig, Path]:
    """The parent's folder, fixed in its config; refuses one holding another run or a finished
    one (`finished`: the file a finished parent holds)."""
    out = Path(cfg.run.out) if cfg.run.out else default_out(cfg)
    cfg = cfg.updated({"run": {"out": str(out)}})
    if (out / finished).exists() and (out / "summary.json").exists():
        raise ResNetError(f"{out} already holds {kind}, finished; use another --out")
    if (out / "config.yaml").exists():
        if not is_kind(out):
            raise ResNetError(f"{out} already holds a run; use another --out")
        saved = TrainConfig.load(out / "config.yaml").updated({"run": {"out": str(out)}})
        if saved.to_dict() != cfg.to_dict():
            raise ResNetError(
                f"{out} holds {kind} with another config; continue it with "
                f"`resnet train --resume {out}` or use another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    return cfg, out


def train_part(cfg: TrainConfig, folder: Path, tag: str, events: Callbacks) -> dict:
    """One part: read back if trained, resumed if started, else trained as `cfg` says."""
    kw = dict(callbacks=[PartEvents(events)], stop=events.stop, progress=False, log=None)
    if (folder / "summary.json").exists():
        events.log(f"{tag}: trained already ({folder})")
        return json.loads((folder / "summary.json").read_text())
    if (folder / "last.pt").exists():
        events.log(f"{tag}: resuming {folder}")
        return train_single(resume=folder, **kw)
    events.log(f"{tag}: training into {folder}")
    return train_single(cfg.updated({"run": {"out": str(folder)}}), **kw)
