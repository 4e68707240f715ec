"""Training and evaluation: configs, the training loop with its events, checkpoints, metrics.

resnet.engine.train(cfg, callbacks=[...], stop=threading.Event())   # the public API
"""

from .checkpoint import load_checkpoint, load_model, load_model_or_ensemble, save_checkpoint
from .config import Config, TrainConfig
from .events import (
    Callback,
    CheckpointSaved,
    EpochEnd,
    Event,
    LogLine,
    RunEnd,
    RunError,
    RunStart,
    StepProgress,
)
from .trainer import Trainer
from .training import train
from .validate import validate

__all__ = [
    "Callback",
    "CheckpointSaved",
    "Config",
    "EpochEnd",
    "Event",
    "LogLine",
    "RunEnd",
    "RunError",
    "RunStart",
    "StepProgress",
    "TrainConfig",
    "Trainer",
    "load_checkpoint",
    "load_model",
    "load_model_or_ensemble",
    "save_checkpoint",
    "train",
    "validate",
]
