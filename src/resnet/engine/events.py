"""What a training run announces, and how a subscriber asks it to stop.

The loop never prints: it emits events to callbacks. A progress bar is one subscriber, a log file
another, a web page's live chart a third. Payloads are frozen dataclasses of plain data (so they
serialise to JSON as they are); the one thing a callback may ask of the run is to stop at the next
step boundary (`Callback.request_stop`, or setting the `threading.Event` given to `train`). A run
stopped that way writes `last.pt` at that step, and `resume` continues it exactly.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    """The base of every event; `name` says which one it is ("run_start", "step", ...)."""

    name: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        """The payload as plain data plus its `event` name (what a JSON stream sends)."""
        return {"event": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunStart(Event):
    """A run is set up and about to train (also when it resumes)."""

    name: ClassVar[str] = "run_start"
    out: str
    config: dict
    model: str
    data: str
    train_size: int
    val_size: int | None
    test_size: int | None
    classes: list[str]
    in_memory: bool
    image_shape: tuple[int, ...]  # (C, H, W); (C, D, H, W) for volumes
    device: str
    precision: str
    world_size: int
    start_epoch: int
    start_step: int
    planned_epochs: int
    steps_per_epoch: int


@dataclass(frozen=True)
class StepProgress(Event):
    """One optimiser step done: `step` of `steps` in epoch `epoch` of `epochs` (1-based); loss and
    accuracy are the epoch's running means on this process, img/s over all processes."""

    name: ClassVar[str] = "step"
    epoch: int
    epochs: int
    step: int
    steps: int
    global_step: int
    loss: float
    acc: float
    lr: float
    img_s: float
    image_size: int | None = None


@dataclass(frozen=True)
class EpochEnd(Event):
    """An epoch ended: `row` is exactly the row appended to `metrics.csv`."""

    name: ClassVar[str] = "epoch_end"
    epoch: int
    epochs: int
    row: dict


@dataclass(frozen=True)
class CheckpointSaved(Event):
    """A checkpoint was written: `kind` is "best", "last" or "stop" (a mid-epoch `last.pt`)."""

    name: ClassVar[str] = "checkpoint"
    path: str
    kind: str
    epoch: int
    step: int


@dataclass(frozen=True)
class RunEnd(Event):
    """The run ended: finished, stopped on request (resumable) or by its time limit."""

    name: ClassVar[str] = "run_end"
    summary: dict
    status: str  # "finished" or "stopped"


@dataclass(frozen=True)
class RunError(Event):
    """The run failed; the exception propagates after this event."""

    name: ClassVar[str] = "error"
    message: str
    kind: str


@dataclass(frozen=True)
class LogLine(Event):
    """A line for a person (resuming, a time limit reached, a schedule capped ...)."""

    name: ClassVar[str] = "log"
    text: str = field(default="")


class Callback:
    """A subscriber: override the `on_*` methods of the events it cares about."""

    _stop: threading.Event | None = None

    def bind(self, stop: threading.Event) -> None:
        """Called by the run before it starts: where `request_stop` signals."""
        self._stop = stop

    def request_stop(self) -> None:
        """Asks the run to stop at the next step boundary, writing a resumable `last.pt`."""
        if self._stop is not None:
            self._stop.set()

    def on_event(self, event: Event) -> None:
        """Dispatches `event` to `on_<event.name>`."""
        getattr(self, f"on_{event.name}")(event)

    def on_run_start(self, event: RunStart) -> None:
        """The run is set up and about to train."""

    def on_step(self, event: StepProgress) -> None:
        """An optimiser step is done."""

    def on_epoch_end(self, event: EpochEnd) -> None:
        """An epoch ended (its metrics row is written)."""

    def on_checkpoint(self, event: CheckpointSaved) -> None:
        """A checkpoint was written."""

    def on_run_end(self, event: RunEnd) -> None:
        """The run ended."""

    def on_error(self, event: RunError) -> None:
        """The run failed."""

    def on_log(self, event: LogLine) -> None:
        """A line for a person."""


class FunctionCallback(Callback):
    """Turns a plain function `fn(event)` into a callback that receives every event."""

    def __init__(self, fn: Callable[[Event], None]):
        self.fn = fn

    def on_event(self, event: Event) -> None:
        """Passes every event to the function."""
        self.fn(event)


class Callbacks:
    """The callbacks of one run and its stop signal; `emit` calls each in order."""

    def __init__(self, callbacks: Iterable[Callback | Callable] = (), stop=None):
        self.stop = stop if stop is not None else threading.Event()
        self.items = [c if isinstance(c, Callback) else FunctionCallback(c) for c in callbacks]
        for c in self.items:
            c.bind(self.stop)

    def emit(self, event: Event) -> None:
        """Sends `event` to every callback."""
        for c in self.items:
            c.on_event(event)

    def log(self, text: str) -> None:
        """Emits a `LogLine`."""
        self.emit(LogLine(text))

    @property
    def stop_requested(self) -> bool:
        """Whether a callback (or the caller's event) has asked the run to stop."""
        return self.stop.is_set()
