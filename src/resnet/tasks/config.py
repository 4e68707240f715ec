"""The detection / segmentation training config: one flat dataclass, unknown keys refused.

`TaskConfig` is what `config.yaml` of a task run and the "config" entry of its checkpoints hold.
`resnet train --task detect|segment` builds the classifier's nested `TrainConfig`; a task run
takes from it what means something here (`from_train_config`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..engine.config import Config, TrainConfig, build_config
from ..errors import ResNetError

TASKS = ("detect", "segment")
METRIC = {"detect": "map", "segment": "miou"}


@dataclass
class TaskConfig(Config):
    """A detection or segmentation run on a ResNet backbone.

    Attributes:
        task: "detect" or "segment".
        model: the backbone, any registered name (plain18 for the plain twin).
        weights: starting weights, as `resnet.create(weights=...)` takes them.
        small_input, norm: backbone options.
        data: "composite", a COCO .json / folder, or an images/ + masks/ folder.
        val_data: default the composite's own val set, or `val_split` of `data`.
        num_train, num_val, size, classes, data_seed: the composite set (`size` is also the
            side images are trained at).
        epochs, max_steps, batch_size: the budget (`max_steps` wins over `epochs`).
        lr, weight_decay, warmup_steps, grad_clip: AdamW, linear warm-up, cosine decay to 5 %.
        flip: random horizontal flips.
        seed: weights, batch order and flips.
        out: the run folder (default `runs/<task>-<model>`).
        progress: progress bars and a line per epoch.
        neck, out_channels, out_indices, extra, head_convs, score_thresh: the detector.
        long_skips: the U-Net's encoder-to-decoder concatenations.
        dice_weight: segmentation loss = cross-entropy + dice_weight * soft Dice (foreground).
    """

    task: str = "detect"
    model: str = "resnet18"
    weights: str | None = None
    small_input: bool = False
    norm: str = "batch"
    data: str = "composite"
    val_data: str | None = None
    val_split: float = 0.2
    num_train: int = 512
    num_val: int = 128
    size: int = 128
    classes: str | list | None = None
    data_seed: int = 0
    epochs: int = 4
    max_steps: int | None = None
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    grad_clip: float | None = 10.0
    flip: bool = True
    seed: int = 0
    out: str | None = None
    progress: bool = True
    neck: str = "fpn"
    out_channels: int = 64
    out_indices: list[int] = field(default_factory=lambda: [2, 3, 4])
    extra: str | None = None
    head_convs: int = 2
    score_thresh: float = 0.05
    long_skips: bool = True
    dice_weight: float = 1.0

    def __post_init__(self):
        if self.task not in TASKS:
            raise ResNetError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")
        for key in ("epochs", "batch_size", "num_train", "num_val", "size"):
            if int(getattr(self, key)) < 1:
                raise ResNetError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise ResNetError(f"max_steps must be >= 1, got {self.max_steps}")
        if not self.lr > 0 or not 0 < self.val_split < 1:
            raise ResNetError("lr must be > 0 and val_split in (0, 1)")
        if self.out is None:
            self.out = f"runs/{self.task}-{self.model}"
        self.out_indices = list(self.out_indices)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskConfig:
        """Builds the config from flat keys or a nested `TrainConfig` dict (`from_train_config`).

        Keys given as None take their default (except `max_steps`, where None means "use
        `epochs`"); unknown keys raise `ResNetError`.
        """
        if any(isinstance(d.get(k), dict) for k in ("model", "data", "optim", "run")):
            task = d.get("task")
            d = from_train_config({k: v for k, v in d.items() if k != "task"})
            if task is not None:
                d["task"] = task
        unknown = set(d) - set(FIELDS)
        if unknown:
            raise ResNetError(f"unknown task config keys: {', '.join(sorted(unknown))}")
        given = {k: v for k, v in d.items() if v is not None or k == "max_steps"}
        return build_config(cls, given, "task config")


FIELDS = tuple(f.name for f in dataclasses.fields(TaskConfig))

# Keys only a task run has, which `--opt KEY=VALUE` may set.
_TASK_KEYS = (
    "neck",
    "out_channels",
    "out_indices",
    "extra",
    "head_convs",
    "score_thresh",
    "long_skips",
    "dice_weight",
    "num_train",
    "num_val",
    "classes",
    "data_seed",
    "max_steps",
    "warmup_steps",
    "val_data",
)

# The classifier's nested TrainConfig (what `resnet train` builds) -> our flat keys.
_FROM_TRAIN_CONFIG = {
    ("model", "name"): "model",
    ("data", "source"): "data",
    ("data", "val_split"): "val_split",
    ("data", "subset"): "num_train",
    ("data", "flip"): "flip",
    ("data", "batch_size"): "batch_size",
    ("data", "image_size"): "size",
    ("optim", "lr"): "lr",
    ("optim", "weight_decay"): "weight_decay",
    ("optim", "clip_grad"): "grad_clip",
    ("finetune", "weights"): "weights",
    ("run", "epochs"): "epochs",
    ("run", "seed"): "seed",
    ("run", "out"): "out",
}
# Classifier settings a task run accepts and ignores (they do not change its result here).
_HARMLESS = {("run", "precision"), ("run", "device"), ("run", "channels_last")}


def _model_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Task keys given as model options (`--opt neck=none`); anything else raises."""
    flat = {}
    for k, v in (options or {}).items():
        if k not in FIELDS:
            raise ResNetError(
                f"unknown option {k!r} for a task backbone; known: "
                f"small_input, norm, {', '.join(_TASK_KEYS)}"
            )
        flat[k] = v
    return flat


def from_train_config(nested: dict[str, Any]) -> dict[str, Any]:
    """Flat task keys from a `resnet.engine.config.TrainConfig` dict.

    Only values that differ from TrainConfig's defaults are taken (its defaults are the
    classifier's: resnet20, Fashion-MNIST, SGD at 0.1), so ours apply otherwise. Model options
    (`--opt KEY=VALUE`) may also carry task keys such as `neck=none` or `long_skips=false`;
    settings that mean nothing here (optimizer, schedule, ...) raise.
    """
    defaults = TrainConfig().to_dict()
    flat: dict[str, Any] = {}
    ignored = []
    for section, values in nested.items():
        if not isinstance(values, dict):
            raise ResNetError(f"task config: section {section!r} must be a mapping")
        for key, value in values.items():
            if key == "options" and section == "model":
                flat.update(_model_options(value))
            elif value == defaults.get(section, {}).get(key):
                continue
            elif (section, key) in _FROM_TRAIN_CONFIG:
                mapped = _FROM_TRAIN_CONFIG[(section, key)]
                fashion = mapped == "data" and value == "fashion-mnist"
                flat[mapped] = "composite" if fashion else value
            elif (section, key) not in _HARMLESS:
                ignored.append(f"{section}.{key}")
    if ignored:
        raise ResNetError(f"not used by detection/segmentation: {', '.join(ignored)}")
    return flat


def task_config(config: TaskConfig | dict[str, Any], task: str | None = None) -> TaskConfig:
    """A `TaskConfig` from a config or a mapping (see `TaskConfig.from_dict`); `task` wins."""
    if isinstance(config, TaskConfig):
        return config if task is None else config.updated({"task": task})
    return TaskConfig.from_dict(config if task is None else {**config, "task": task})
