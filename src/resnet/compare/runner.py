"""The comparison's plan and its resumable loop.

OUT/<model>/seed<k>/   one run folder per model and seed, trained through `resnet.engine.train`
OUT/compare.json       settings, each run's and each model's measurements, the summary rows
OUT/compare.md, compare.csv, accuracy_vs_*.png    the report (`compare.report`)

Run again after a kill, the loop keeps finished runs (a run folder with summary.json), resumes
unfinished ones from their last.pt and reuses the measurements compare.json holds.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..device import resolve_device
from ..engine import TrainConfig, train
from ..engine.build import check_model_config
from ..errors import ResNetError
from ..export.benchmark import machine
from ..storage import write_json
from .measure import PeakMemory, inference_figures, parse_backends, run_figures
from .report import write_report

FORMAT, VERSION = "resnet-compare", 1
RECORD = "compare.json"


@dataclass(frozen=True)
class ComparePlan:
    """What a comparison trains and measures, and where.

    Attributes:
        models: model names (`resnet models`, and whatever else `resnet.models.create` takes).
        seeds: runs per model, seeds 0..seeds-1.
        out: the comparison folder.
        backends: inference modes to time: "auto" (every mode), "eager", or a comma list.
        timing_seconds: timing per inference mode and batch size.
    """

    models: tuple[str, ...]
    seeds: int = 3
    out: str = "runs/compare"
    backends: str = "auto"
    timing_seconds: float = 0.5

    def __post_init__(self):
        names = tuple(dict.fromkeys(m.strip() for m in self.models if m.strip()))
        object.__setattr__(self, "models", names)
        if not names:
            raise ResNetError("no models to compare; give --models a,b,...")
        if self.seeds < 1:
            raise ResNetError(f"seeds must be at least 1, got {self.seeds}")
        if self.timing_seconds <= 0:
            raise ResNetError(f"timing seconds must be positive, got {self.timing_seconds}")
        parse_backends(self.backends)

    def pairs(self) -> list[tuple[str, int]]:
        """Every (model, seed) to train, model by model."""
        return [(m, s) for m in self.models for s in range(self.seeds)]


def folder_name(model: str) -> str:
    """A model name as a folder name: "tv:efficientnet_b0" -> "tv-efficientnet_b0"."""
    return re.sub(r"[^\w.-]+", "-", model.strip()).strip("-") or "model"


def run_folder(out: str | Path, model: str, seed: int) -> Path:
    """`OUT/<model>/seed<k>`: the run folder of one model and seed."""
    return Path(out) / folder_name(model) / f"seed{seed}"


def run_status(folder: Path) -> str:
    """ "done" (summary.json written), "resume" (a last.pt to go on from) or "new"."""
    if (folder / "summary.json").exists():
        return "done"
    return "resume" if (folder / "last.pt").exists() else "new"


def run_config(base: TrainConfig, model: str, seed: int, folder: Path) -> TrainConfig:
    """The shared config with this run's model, seed and folder."""
    return base.updated({"model": {"name": model}, "run": {"seed": seed, "out": str(folder)}})


def check_plan(base: TrainConfig, plan: ComparePlan) -> None:
    """Refuses, before any training, an unknown model (or option) and settings a comparison
    cannot take (ensembles, cross-validation)."""
    if base.run.ensemble > 1 or base.data.folds >= 2:
        raise ResNetError("compare trains one net per model and seed: drop --ensemble / --folds")
    names = [folder_name(m) for m in plan.models]
    if len(set(names)) < len(names):
        raise ResNetError(f"two model names share a folder name: {', '.join(plan.models)}")
    for model in plan.models:
        try:
            check_model_config(run_config(base, model, 0, Path(plan.out)))
        except (ValueError, TypeError) as e:
            raise ResNetError(str(e).splitlines()[0]) from None


def settings(base: TrainConfig) -> dict[str, Any]:
    """What every run shares: the config less the model name, seed and run folder."""
    d = json.loads(json.dumps(base.to_dict()))
    del d["model"]["name"], d["run"]["seed"], d["run"]["out"]
    return d


def first_difference(old: Any, new: Any, where: str = "") -> str | None:
    """The first key where two settings differ ("optim.lr: 0.1 -> 0.05"), or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in dict.fromkeys([*old, *new]):
            diff = first_difference(old.get(k), new.get(k), f"{where}.{k}" if where else k)
            if diff:
                return diff
        return None
    return None if old == new else f"{where}: {old!r} -> {new!r}"


def load_record(base: TrainConfig, plan: ComparePlan) -> dict[str, Any]:
    """compare.json of an earlier invocation with the same settings, or a fresh record."""
    path = Path(plan.out) / RECORD
    fresh = {"format": FORMAT, "version": VERSION, "settings": settings(base), "invocations": 0}
    fresh |= {"runs": {}, "inference": {}}
    if not path.exists():
        return fresh
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ResNetError(f"{path} is not a comparison record; move it away or use another --out")
    diff = first_difference(record.get("settings"), fresh["settings"])
    if diff:
        raise ResNetError(
            f"{plan.out} holds a comparison with other settings ({diff}); run it as it was "
            f"configured, or use another --out"
        )
    return {**fresh, **record}


def _save(plan: ComparePlan, record: dict[str, Any]) -> None:
    write_json(Path(plan.out) / RECORD, record)


@dataclass
class _Loop:
    """What every step of one invocation shares."""

    base: TrainConfig
    plan: ComparePlan
    record: dict[str, Any]
    progress: bool
    log: Callable[[str], None]
    stop: threading.Event | None

    def train_pair(self, model: str, seed: int, tag: str) -> str:
        """Trains (or resumes, or keeps) one model x seed; returns "finished" or "stopped"."""
        folder, key = run_folder(self.plan.out, model, seed), f"{model}/seed{seed}"
        status, entry = run_status(folder), self.record["runs"].get(key) or {}
        if status == "done":
            if entry.get("status") != "finished":  # trained, but killed before it was recorded
                self.record["runs"][key] = {**entry, **run_figures(folder), "peak_memory_mb": None}
            self.log(f"compare {tag} {key}: finished already, kept ({folder})")
            return "finished"
        verb = "resuming" if status == "resume" else "training"
        self.log(f"compare {tag} {key}: {verb} into {folder}")
        peak = PeakMemory(resolve_device(self.base.run.device))
        kw = dict(progress=self.progress, log=self.log, stop=self.stop)
        with peak:
            if status == "resume":
                summary = train(resume=folder, **kw)
            else:
                summary = train(run_config(self.base, model, seed, folder), **kw)
        trained = entry.get("trained", 0) + 1
        if summary.get("status") == "stopped":
            self.record["runs"][key] = {"status": "stopped", "trained": trained}
            return "stopped"
        figures = {**run_figures(folder), "peak_memory_mb": round(peak.mb, 1)}
        self.record["runs"][key] = {**figures, "memory": peak.kind, "trained": trained}
        return "finished"

    def measure(self, model: str) -> None:
        """Times the model's inference (first seed's best weights) unless compare.json holds it
        for the same backends; the model's size comes with it."""
        done = self.record["inference"].get(model)
        if done and done.get("backends") == self.plan.backends:
            self.log(f"compare: {model}: inference measured already, kept")
            return
        folder = run_folder(self.plan.out, model, 0)
        self.log(f"compare: {model}: timing inference ({self.plan.backends})")
        figures = inference_figures(
            folder,
            parse_backends(self.plan.backends),
            min_seconds=self.plan.timing_seconds,
            log=self.log if self.progress else None,
        )
        self.record["inference"][model] = {**figures, "backends": self.plan.backends}


def compare(
    base: TrainConfig,
    plan: ComparePlan,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Trains every model x seed of `plan` with the shared config `base`, measures them and
    writes the report; returns compare.json's contents.

    Args:
        base: the config every run shares (its model name, seed and folder are replaced).
        plan: models, seeds, the comparison folder and the inference backends to time.
        progress, log: the trainer's progress bars, and where the lines of progress go.
        stop: once set, the run in progress stops at its next step boundary (resumable), the
            loop ends and the report covers what is finished.

    Raises:
        ResNetError: an unknown model or option (before anything trains), a folder holding a
            comparison with other settings, or a run that fails.
    """
    check_plan(base, plan)
    record = load_record(base, plan)
    record["invocations"] += 1
    record |= {"models": list(plan.models), "seeds": plan.seeds, "backends": plan.backends}
    loop = _Loop(base, plan, record, progress, log or (lambda s: None), stop)
    pairs = plan.pairs()
    for i, (model, seed) in enumerate(pairs, 1):
        status = loop.train_pair(model, seed, f"[{i}/{len(pairs)}]")
        _save(plan, record)
        if status == "stopped":
            loop.log("compare: stopped; run the same command again to go on")
            return write_report(Path(plan.out), record)
    for model in plan.models:
        loop.measure(model)
        _save(plan, record)
    record["machine"] = machine()
    return write_report(Path(plan.out), record)
