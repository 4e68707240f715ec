"""Training configuration: one dataclass per concern, composed into `TrainConfig`.

Unknown keys are refused (a typo in a YAML file must not silently fall back to a default), and
the resolved config is saved as `config.yaml` in every run folder.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data import DataConfig
from ..device import PRECISIONS
from ..errors import ResNetError
from ..storage import atomic_write_text

OPTIMIZERS = ("sgd", "adamw", "muon")
SCHEDULES = ("step", "cosine", "onecycle", "constant")


@dataclass
class ModelConfig:
    """Which net: a registered name plus ResNet options (drop_path_rate, norm, small_input, ...).

    `num_classes` and `in_chans` follow from the data; `small_input` defaults to on for
    ImageNet-family nets fed images of 64 px or less.
    """

    name: str = "resnet20"
    options: dict[str, Any] = field(default_factory=dict)
    # Start the first conv from the whitening filters of the training images' patches
    # (airbench's first layer; engine/whiten.py). For training from scratch.
    whiten_stem: bool = False
    # Keep the whitened first conv fixed for the whole run (airbench does): no gradient is
    # computed for it, so a step is a little cheaper. Needs whiten_stem, and a first conv with
    # no more filters than whitening fills (2 x in_chans x k x k), else it would freeze random ones.
    freeze_whitened: bool = False


@dataclass
class OptimConfig:
    """Optimiser and schedule. The learning rate is a pure function of the step."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    clip_grad: float | None = None
    ema_decay: float | None = None  # e.g. 0.999; evaluation then uses the averaged weights
    norm_bias_lr_mult: float = 1.0  # airbench trains norm biases faster
    # Lookahead (Zhang et al. 2019): every k steps the slow weights move alpha of the way to the
    # trained ones, and training restarts from them. 0 = off.
    lookahead_steps: int = 0
    lookahead_alpha: float = 0.5
    # optimizer "muon": the backbone's conv filters by Muon (orthogonalised momentum), the head,
    # norms and biases by SGD at `lr`. normalize: keep each filter bank at its first norm (for
    # post-activation nets, where a norm layer follows every conv; refused for the others).
    muon_lr: float = 0.2
    muon_momentum: float = 0.6
    muon_normalize: bool = True

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}")
        if self.lr <= 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("weight decay and warm-up must not be negative")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {self.ema_decay}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"gradient clipping must be positive, got {self.clip_grad}")
        if self.muon_lr <= 0 or not 0.0 <= self.muon_momentum < 1.0:
            raise ValueError("muon_lr must be positive and muon_momentum in [0, 1)")
        if self.lookahead_steps < 0 or not 0.0 < self.lookahead_alpha <= 1.0:
            raise ValueError("lookahead steps must not be negative and alpha must be in (0, 1]")


@dataclass
class FinetuneConfig:
    """Starting weights and what to train of them (transfer learning)."""

    weights: str | None = None
    freeze: str = "none"  # none | backbone | stages:K
    backbone_lr_mult: float = 1.0
    bn_eval: bool = False  # keep BatchNorm statistics fixed (small batches)
    unfreeze: dict[int, str] = field(default_factory=dict)  # epoch -> freeze mode (gradual)


@dataclass
class RunConfig:
    """How and where the run executes."""

    epochs: int = 6  # the default run: ~92.5 % on Fashion-MNIST in under 5 minutes on 2 cores
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    channels_last: bool = True
    compile: bool = False
    out: str | None = None  # default runs/<model>-<data>
    eval_every: int = 1
    tta: bool = True  # evaluate on the image and its mirror (only when flips are augmented)
    tta_shift: int = 0  # N > 0: also views moved N px each way (weighted 1/2, 1/4, 1/4)
    sync_bn: bool = False
    time_limit: float | None = None  # seconds: stop after the epoch that passes it
    # Seconds of training to plan for: the run trains as many epochs as fit (at most `epochs`),
    # re-planned after each epoch from the measured epoch times, so the learning-rate schedule
    # ends when the budget is spent. What a "best model in an hour" run wants; `time_limit`
    # only stops a run, mid-schedule.
    time_budget: float | None = None
    ensemble: int = 1  # K > 1: train K members (seeds seed..seed+K-1), predict with their average
    # The operating point of the clinical report's sensitivity / specificity: a probability, or
    # "youden" (picked on the validation split's predictions when a test split is reported).
    threshold: str = "youden"

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.eval_every < 1:
            raise ValueError("eval_every must be at least 1")
        if self.tta_shift < 0:
            raise ValueError(f"tta_shift must be 0 or more pixels, got {self.tta_shift}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise ValueError(f"time_limit must be positive seconds, got {self.time_limit}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget must be positive seconds, got {self.time_budget}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be at least 1 member, got {self.ensemble}")
        self.threshold = str(self.threshold).strip().lower()
        if self.threshold != "youden" and not 0.0 <= _number(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be a probability or youden, not {self.threshold!r}")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


class Config:
    """What every config of the package shares: built from a mapping with unknown keys refused,
    saved as YAML, copied with nested overrides. Subclasses are dataclasses; a field whose type is
    another dataclass is a section, built the same way."""

    def to_dict(self) -> dict:
        """The config as plain nested dicts (what `config.yaml` holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Builds the config from a mapping; unknown keys raise a one-line `ResNetError`."""
        return build_config(cls, d, "config")

    def updated(self, overrides: dict):
        """A copy with nested `{"optim": {"lr": 0.05}}` overrides applied (unknown keys refused)."""
        merged = _merge(self.to_dict(), overrides, "config")
        return type(self).from_dict(merged)

    def save(self, path: str | Path) -> None:
        """Writes the config as YAML, atomically."""
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @staticmethod
    def read_yaml(path: str | Path) -> dict:
        """The raw mapping of a config file (only the keys it sets)."""
        try:
            d = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ResNetError(f"config not found: {path}") from None
        except UnicodeDecodeError as e:
            raise ResNetError(f"{path} is not UTF-8 text: {e.reason} at byte {e.start}") from None
        except yaml.YAMLError as e:
            raise ResNetError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(d, dict):
            raise ResNetError(f"{path} must hold a mapping of sections")
        return d

    @classmethod
    def load(cls, path: str | Path):
        """Reads and builds a config file."""
        return cls.from_dict(cls.read_yaml(path))


@dataclass
class TrainConfig(Config):
    """A classification training run: model, data, optimiser, fine-tuning and run sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    run: RunConfig = field(default_factory=RunConfig)


def build_config(cls, d: dict, where: str):
    """Builds dataclass `cls` from mapping `d`, refusing unknown keys; dataclass-typed fields are
    built recursively, numbers given as strings (YAML's `1e-3`) converted."""
    if not isinstance(d, dict):
        raise ResNetError(f"{where} must be a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ResNetError(
            f"unknown key(s) in {where}: {', '.join(sorted(map(_one_line, unknown)))}; "
            f"known: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in d.items():
        sub = hints[k] if dataclasses.is_dataclass(hints[k]) else None
        kwargs[k] = (
            build_config(sub, v, f"{where}.{k}") if sub else _coerce(v, fields[k].type, where, k)
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ResNetError(f"{where}: {_one_line(e)}") from None


def _one_line(value) -> str:
    """`value` as text on one line (a YAML key or an error message can hold line breaks)."""
    return " ".join(str(value).split())


def _coerce(value, type_name: str, where: str, key: str):
    """YAML 1.1 reads `1e-3` as a string; numbers for numeric fields are converted here."""
    if isinstance(value, str) and type_name.split(" |")[0] in ("float", "int"):
        try:
            return float(value) if type_name.startswith("float") else int(value)
        except ValueError:
            raise ResNetError(f"{where}.{key} must be a number, not {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool) and type_name.startswith("float"):
        return float(value)
    return value


def _merge(base: dict, over: dict, where: str) -> dict:
    out = dict(base)
    for k, v in over.items():
        if k not in base:
            raise ResNetError(f"unknown key {where}.{k}")
        if isinstance(v, dict) and isinstance(base[k], dict) and k != "options" and k != "unfreeze":
            out[k] = _merge(base[k], v, f"{where}.{k}")
        elif isinstance(v, dict) and isinstance(base[k], dict):
            out[k] = {**base[k], **v}
        else:
            out[k] = v
    return out
