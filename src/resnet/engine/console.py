"""The console subscriber: progress bars and one line per epoch, as `resnet train` shows them."""

from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm

from .events import Callback, EpochEnd, LogLine, RunEnd, RunError, RunStart, StepProgress


class ConsoleProgress(Callback):
    """Draws a tqdm bar per epoch (when `bars`) and sends each log line to `log`.

    `eval_bars` tells the run to draw bars for its evaluation passes too.
    """

    def __init__(self, bars: bool = True, log: Callable[[str], None] | None = print):
        self.bars, self.eval_bars = bars, bars
        self.write = log or (lambda *a, **k: None)
        self.bar: tqdm | None = None

    def on_run_start(self, event: RunStart) -> None:
        """One line: the model, the data, the device and the run folder."""
        where = "in memory" if event.in_memory else "streamed from disk"
        shape = "x".join(map(str, event.image_shape))
        kind = "volumes" if len(event.image_shape) == 4 else "images"
        procs = f", {event.world_size} processes" if event.world_size > 1 else ""
        self.write(
            f"{event.model} on {event.data}: {event.train_size} training {kind} ({where}), "
            f"{len(event.classes)} classes, {shape}; {event.device}, {event.precision}"
            f"{procs}; run folder {event.out}"
        )

    def on_step(self, event: StepProgress) -> None:
        """Advances the epoch's bar; refreshes its figures every 10 steps."""
        if not self.bars:
            return
        if self.bar is None:
            size = f" @{event.image_size}px" if event.image_size else ""
            self.bar = tqdm(
                total=event.steps,
                initial=event.step - 1,
                leave=False,
                unit="batch",
                desc=f"epoch {event.epoch}/{event.epochs}{size}",
                dynamic_ncols=True,
            )
        self.bar.update(1)
        if event.step % 10 == 1 or event.step == event.steps:
            self.bar.set_postfix(
                loss=f"{event.loss:.4f}",
                acc=f"{100 * event.acc:.2f}%",
                lr=f"{event.lr:.4f}",
                img_s=f"{event.img_s:.0f}",
            )
        if event.step == event.steps:
            self._close()

    def on_epoch_end(self, event: EpochEnd) -> None:
        """One line per epoch: train loss and accuracy, validation figures, speed."""
        row = event.row
        val = (
            f", val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%"
            if "val_acc" in row
            else ""
        )
        self.write(
            f"epoch {event.epoch}/{event.epochs}: train loss {row['train_loss']:.4f} "
            f"acc {100 * row['train_acc']:.2f}%{val} "
            f"({row['seconds']:.1f}s, {row['img_s']:.0f} img/s)"
        )

    def on_log(self, event: LogLine) -> None:
        """Prints the line."""
        self._close()
        self.write(event.text)

    def on_run_end(self, event: RunEnd) -> None:
        """The closing line: the held-out accuracy and the run folder."""
        self._close()
        s = event.summary
        if event.status == "stopped":
            where = f"member {s['member'] + 1}, " if "member" in s else ""
            where += f"fold {s['fold']}, " if s.get("fold") else ""
            self.write(
                f"stopped at {where}epoch {s['epoch']}, step {s['step']}; resume with "
                f"`resnet train --resume {s['out']}`"
            )
            return
        if "folds" in s and isinstance(s.get("val_acc"), dict):
            self.write(_folds_line(s))
            return
        split = next((k for k in ("test", "val") if s.get(f"{k}_acc") is not None), None)
        if "members" in s and not split:
            return  # an ensemble without a held-out split has nothing to report
        if split and "members" in s:  # an ensemble: its accuracy against its best member's
            best = max(m[f"{split}_acc"] for m in s["members"])
            self.write(
                f"ensemble of {len(s['members'])}: {split} accuracy "
                f"{100 * s[f'{split}_acc']:.2f}% (best member "
                f"{100 * best:.2f}%) after {s['train_seconds']:.0f}s of training; run folder "
                f"{s['out']}"
            )
            return
        acc = f": {split} accuracy {100 * s[f'{split}_acc']:.2f}%" if split else ""
        if split and s.get(f"{split}_auroc") is not None:
            lo, hi = s[f"{split}_auroc_ci95"] or (None, None)
            ci = f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None else ""
            acc += f", AUROC {s[f'{split}_auroc']:.3f}{ci}"
        self.write(f"done in {s['train_seconds']:.0f}s of training{acc}; run folder {s['out']}")

    def on_error(self, event: RunError) -> None:
        """Closes an open bar so the error line is not drawn over it."""
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _folds_line(s: dict) -> str:
    """The closing line of a cross-validation: each figure's mean and sd over the folds."""
    shown = [
        f"{key.removeprefix('val_')} {s[key]['mean']:.3f} ± {s[key]['sd']:.3f}"
        for key in ("val_auroc", "val_acc", "val_sensitivity", "val_specificity")
        if isinstance(s.get(key), dict)
    ]
    return (
        f"{s['folds']}-fold cross-validation: {', '.join(shown)} (mean ± sd over folds); "
        f"run folder {s['out']}"
    )
