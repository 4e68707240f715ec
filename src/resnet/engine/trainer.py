"""One training run: `Trainer(cfg).fit()` trains a net and writes its run folder.

Random choices are functions of (seed, epoch): data order and augmentation come from a generator
seeded per epoch, dropout / drop-path from the global generator reseeded per epoch. A checkpoint
is written at the end of each epoch, so a run killed at any moment resumes from the last epoch end
and replays the interrupted epoch exactly; on the CPU a resumed run ends with the same weights.
A run asked to stop (a callback's `request_stop`, or the `stop` event) ends at the next step
boundary with a `last.pt` that also holds the position in the epoch, the global random state and
the epoch's running sums: resuming skips the batches already trained and goes on exactly.

The loop never prints: it announces what happens to its callbacks (`engine.events`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..data import load_data
from ..data.loaders import epoch_seed
from ..data.transforms import mixup_cutmix
from ..device import autocast, precision_name, resolve_device, resolve_precision
from ..errors import ResNetError
from ..storage import WriteError, write_json
from . import distributed, finetune
from .build import (
    build_model,
    check_model_config,
    check_model_data,
    freeze_whitened,
    whiten_stem,
    with_scan_mode,
)
from .checkpoint import build_model as build_model_from_state
from .checkpoint import load_checkpoint, save_checkpoint
from .clinical_summary import clinical_outputs, per_scan, youden_threshold
from .config import TrainConfig
from .console import ConsoleProgress
from .evaluate import collect_logits, evaluate, metrics_from_logits
from .events import (
    Callback,
    Callbacks,
    CheckpointSaved,
    EpochEnd,
    RunEnd,
    RunError,
    RunStart,
    StepProgress,
)
from .optim import Lookahead, build_optimizer, ema_update, epochs_within, lr_factor, set_lr
from .report import plot_confusion, plot_curves, write_metrics_csv
from .runfolder import (
    default_out,
    new_run_problem,
    remove_stale_temps,
    resume_checkpoint,
    resume_hint,
    resumed_config,
    with_run_overrides,
)
from .runlock import check_free, run_lock


def _seed_epoch(seed: int, epoch: int) -> None:
    torch.manual_seed(epoch_seed(seed, epoch) + 7919)  # offset: not the data generator's stream


def run_callbacks(
    callbacks: Iterable[Callback | Callable] | None,
    progress: bool,
    log: Callable[[str], None] | None,
    stop: threading.Event | None,
) -> Callbacks:
    """The callbacks of a run: the console (bars when `progress`, lines to `log`) first."""
    console = [ConsoleProgress(bars=progress, log=log)] if progress or log else []
    return Callbacks([*console, *(callbacks or ())], stop)


class _Stopped(Exception):
    """Raised inside an epoch when a stop was requested; carries the step reached."""

    def __init__(self, step: int):
        self.step = step


class Trainer:
    """The pieces of one run; `fit()` trains. Use `resnet.train(config)` unless you need the parts.

    Args:
        cfg: the run's config (or None with `resume`).
        resume: a run folder or `last.pt` to continue.
        epochs, time_limit, time_budget: what a resumed run may change.
        progress, log: the console subscriber's bars and line writer (None: no console).
        callbacks: more subscribers (`engine.events.Callback` or functions of an event).
        stop: a `threading.Event` that, once set, stops the run at the next step boundary.
    """

    def __init__(
        self,
        cfg: TrainConfig | None = None,
        *,
        resume: str | Path | None = None,
        epochs: int | None = None,
        time_limit: float | None = None,
        time_budget: float | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = print,
        callbacks: Iterable[Callback | Callable] | None = None,
        stop: threading.Event | None = None,
    ):
        state, ckpt = None, None
        if resume is not None:
            ckpt = resume_checkpoint(resume)
            state = load_checkpoint(ckpt)
            cfg = resumed_config(state, ckpt, epochs, time_limit, time_budget)
        elif cfg is None:
            raise ValueError("a TrainConfig or a run folder to resume is needed")
        else:
            cfg = with_run_overrides(cfg, epochs, time_limit, time_budget)
        if cfg.run.ensemble > 1:
            raise ResNetError(
                "a Trainer trains one net; run.ensemble > 1 trains through resnet.train "
                "(members one after another)"
            )
        check_model_config(cfg)  # a typo in the model fails before the data set is read
        self.cfg = cfg
        self._setup_processes()
        self.events = run_callbacks(callbacks, progress and self.main, log, stop)
        if not self.main:  # only rank 0 reports; every rank still honours the stop request
            self.events.items = []
        self.out = ckpt.parent if ckpt is not None else self._new_run_folder()
        self._check_unlocked()  # a folder another process trains into: refused before the data
        torch.manual_seed(cfg.run.seed)
        self._setup_data(state)
        self._setup_model(state)
        self._setup_optimizer()
        self._setup_loaders()
        self.start_epoch, self.history, self.best = 0, [], -1.0
        self.best_loss = float("inf")  # breaks ties of validation accuracy
        self.train_seconds, self.epoch_seconds = 0.0, []
        self.partial: dict | None = None  # where a stopped epoch resumes
        if state is not None:
            self._restore(state)
        self._wrap()

    # -- set-up ---------------------------------------------------------------------------
    def _setup_processes(self) -> None:
        """Device, precision and (under torchrun) the process group."""
        self.device = resolve_device(self.cfg.run.device)
        if self.cfg.run.sync_bn and self.device.type != "cuda":
            raise ResNetError(
                "--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); on CPU processes use "
                "--opt norm=group for small per-process batches"
            )
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick kernels
        self.amp_dtype, self.needs_scaler = resolve_precision(self.cfg.run.precision, self.device)
        self.distributed = distributed.setup(self.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0

    @property
    def progress(self) -> bool:
        """Whether evaluation passes draw progress bars (the console subscriber asks for them)."""
        return any(getattr(c, "eval_bars", False) for c in self.events.items)

    def log(self, text: str) -> None:
        """Sends a line for a person to the callbacks."""
        self.events.log(text)

    def _new_run_folder(self) -> Path:
        """Rank 0 picks the folder (and refuses one holding a run); the others follow it."""
        out, problem = None, None
        if self.main:
            out = Path(self.cfg.run.out) if self.cfg.run.out else default_out(self.cfg)
            problem = new_run_problem(out)
        out, problem = distributed.broadcast_object((out, problem))
        if problem:
            raise ResNetError(problem)
        return out

    def _check_unlocked(self) -> None:
        """Rank 0 checks the folder's lock (`engine.runlock`); every rank gets its verdict."""
        problem = None
        if self.main:
            try:
                check_free(self.out)
            except ResNetError as e:
                problem = str(e)
        problem = distributed.broadcast_object(problem)
        if problem:
            raise ResNetError(problem)

    def _setup_data(self, state: dict | None) -> None:
        """The data set, with the preprocessing pretrained weights (or the resumed run) use."""
        cfg = self.cfg = with_scan_mode(self.cfg)
        self.data = load_data(cfg.data)
        check_model_data(cfg, self.data)
        if cfg.finetune.weights and state is None:
            pre = finetune.eval_preprocessing_for(
                cfg.finetune.weights, self.data.preprocessing, arch=cfg.model.name
            )
            if pre and pre != self.data.preprocessing:
                self.data.set_preprocessing(pre)
        elif state is not None and state["preprocessing"] != self.data.preprocessing:
            self.data.set_preprocessing(state["preprocessing"])  # a fine-tuning run resumed
        if self.device.type == "cuda" and self.data.in_memory:
            self.data.to(self.device)
        if cfg.run.tta_shift >= min(self.data.preprocessing["size"]):
            raise ResNetError(
                f"tta_shift {cfg.run.tta_shift} px must be smaller than the "
                f"{min(self.data.preprocessing['size'])} px images"
            )

    def _setup_model(self, state: dict | None) -> None:
        """The net, whitened / frozen as configured, on the device in its memory format."""
        cfg = self.cfg
        self.model = build_model(cfg, self.data)
        if cfg.model.whiten_stem and state is None:
            n = whiten_stem(self.model, cfg, self.data)
            self.log(f"first conv: {n} filters set to the training patches' whitening")
        if cfg.run.sync_bn and self.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device, memory_format=self.memory_format)
        ft = cfg.finetune
        if ft.freeze != "none" or ft.bn_eval or ft.unfreeze:
            finetune.apply_freeze(self.model, ft.freeze)
        if cfg.model.freeze_whitened:  # after the fine-tuning freeze, which may unfreeze the stem
            freeze_whitened(self.model)

    @property
    def memory_format(self) -> torch.memory_format:
        """channels_last for 2-D nets when configured; volumes stay contiguous."""
        volumes = self.data.preprocessing.get("scan", {}).get("mode") == "volume"
        if self.cfg.run.channels_last and not volumes:
            return torch.channels_last
        return torch.contiguous_format

    def _setup_optimizer(self) -> None:
        """Optimiser, gradient scaler, weight average (EMA) and lookahead."""
        cfg = self.cfg
        self.optimizer = build_optimizer(self.model, cfg.optim, cfg.finetune.backbone_lr_mult)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.needs_scaler else None
        self.class_weights = (
            class_weights(self.data.train.labels, len(self.data.classes))
            if cfg.data.balance == "loss"
            else None
        )
        if self.class_weights is not None:
            self.class_weights = self.class_weights.to(self.device)
        self.ema = None
        if cfg.optim.ema_decay:
            self.ema = AveragedModel(
                self.model, multi_avg_fn=ema_update(cfg.optim.ema_decay), use_buffers=True
            )
        self.lookahead = None
        if cfg.optim.lookahead_steps:
            self.lookahead = Lookahead(
                self.model, cfg.optim.lookahead_steps, cfg.optim.lookahead_alpha
            )

    def _setup_loaders(self) -> None:
        """Training and evaluation loaders, and the step schedule they imply."""
        cfg = self.cfg
        loader_kw = dict(
            seed=cfg.run.seed,
            rank=self.rank,
            world_size=self.world,
            channels_last=cfg.run.channels_last,
            pin_memory=self.device.type == "cuda",
        )
        self.train_loader = self.data.loader("train", cfg.data, train=True, **loader_kw)
        self.eval_loaders = {
            s: self.data.loader(s, cfg.data, train=False, **loader_kw)
            for s in ("val", "test")
            if getattr(self.data, s) is not None
        }
        self.steps_per_epoch = len(self.train_loader)
        # The epochs the learning-rate schedule spans: run.epochs, or with run.time_budget the
        # number that fit the budget, re-planned after every epoch (`plan`).
        self.planned_epochs, self._capped = cfg.run.epochs, False
        self.total_steps = cfg.run.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.optim.warmup_epochs * self.steps_per_epoch)

    def _wrap(self) -> None:
        self.net = self.model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.cfg.run.compile:
            self.net = torch.compile(self.net)

    # -- fine-tuning ----------------------------------------------------------------------
    def _train_mode(self) -> None:
        self.model.train()
        ft = self.cfg.finetune
        if ft.freeze != "none" or ft.bn_eval:
            finetune.set_bn_eval(self.model, only_frozen=not ft.bn_eval)

    def _maybe_unfreeze(self, epoch: int) -> None:
        mode = self.cfg.finetune.unfreeze.get(epoch) or self.cfg.finetune.unfreeze.get(str(epoch))
        if mode is None:
            return
        finetune.apply_freeze(self.model, mode)
        self.optimizer = build_optimizer(
            self.model, self.cfg.optim, self.cfg.finetune.backbone_lr_mult
        )
        if hasattr(self, "net"):
            self._wrap()  # DDP's reducer must see the new set of trainable parameters
        self.log(f"epoch {epoch + 1}: trainable parts now '{mode}'")

    # -- state ----------------------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        """The weights evaluated and saved as the model: the EMA where there is one."""
        return self.ema.module if self.ema is not None else self.model

    def _state(self, epoch: int, step: int) -> dict:
        extra = {
            "classes": self.data.classes,
            "preprocessing": self.data.preprocessing,
            "config": self.cfg.to_dict(),
            "epoch": epoch,
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "best_val_acc": self.best,
            "best_val_loss": self.best_loss,
            "train_seconds": self.train_seconds,
            "planned_epochs": self.planned_epochs,
            # Resuming reseeds from (seed, epoch), which replays exactly; a run stopped inside
            # an epoch restores this state after skipping the batches it had trained.
            "rng": {"torch": torch.get_rng_state()},
        }
        if self.scaler is not None:
            extra["scaler"] = self.scaler.state_dict()
        if self.ema is not None:  # "model" holds the weights we evaluate; training resumes raw
            extra["raw_model"] = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            extra["ema_n_averaged"] = self.ema.n_averaged.detach().cpu()
        if self.lookahead is not None:
            extra["lookahead"] = self.lookahead.state_dict()
        return extra

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state.get("raw_model", state["model"]))
        if self.ema is not None:
            self.ema.module.load_state_dict(state["model"])
            self.ema.n_averaged.copy_(state["ema_n_averaged"])
        if self.lookahead is not None:
            if "lookahead" not in state:
                raise ResNetError(
                    "this checkpoint's config asks for lookahead but it holds no lookahead state "
                    "(a damaged or edited checkpoint)"
                )
            self.lookahead.load_state_dict(state["lookahead"])
        # The unfreezing done so far (in the stopped epoch too), before its optimiser state.
        reached = state["epoch"] + (1 if "partial_epoch" in state else 0)
        for epoch in sorted(int(e) for e in self.cfg.finetune.unfreeze if int(e) <= reached):
            self._maybe_unfreeze(epoch)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.history = list(state["history"])
        self.best = state["best_val_acc"]
        self.best_loss = state.get("best_val_loss", float("inf"))
        self.train_seconds = state.get("train_seconds", 0.0)
        self.epoch_seconds = [row["seconds"] for row in self.history]
        self.partial = state.get("partial_epoch")
        if self.partial is not None:  # the plan below sees the times of whole epochs only
            self.partial = dict(self.partial, rng=self._saved_rng(self.partial, state))
            self.train_seconds -= self.partial["seconds"]
        self._check_budget_left()
        where = (
            f"in epoch {self.start_epoch + 1} at step {self.partial['step']}"
            if self.partial
            else (f"after epoch {self.start_epoch}")
        )
        self.log(f"resuming {self.out} {where}")

    def _saved_rng(self, partial: dict, state: dict) -> dict:
        """This process's random state when the run stopped (CPU, and CUDA where it ran)."""
        per_rank = partial.get("rng_per_rank")
        if per_rank and self.rank < len(per_rank):
            return per_rank[self.rank]
        return {"cpu": state["rng"]["torch"], "cuda": None}  # another world size: rank 0's

    def _check_budget_left(self) -> None:
        """With a time budget: the plan the uninterrupted run made after this epoch (the same
        inputs give the same plan), or a new one for a new budget; a spent budget is refused."""
        budget = self.cfg.run.time_budget
        if self.start_epoch == 0:
            return  # stopped inside the first epoch: nothing measured, nothing spent to refuse
        done = self.plan(self.start_epoch) <= self.start_epoch < self.cfg.run.epochs
        # Without summary.json the run was stopped in its final evaluation: finish that.
        if budget and done and (self.out / "summary.json").exists():
            raise ResNetError(
                f"{self.out} has trained {self.train_seconds:.0f} s of its time budget of "
                f"{budget:.0f} s; resume with a larger --time-budget (the whole run's training "
                f"time) to go on"
            )

    def _save(self, epoch: int, step: int, improved: bool, partial: dict | None = None) -> None:
        if not self.main:
            return
        state = self._state(epoch, step)
        if partial is not None:
            state["partial_epoch"] = partial
        # best.pt first: a kill between the two writes never leaves last.pt ahead of best.pt.
        if improved:
            path = save_checkpoint(self.out / "best.pt", self.eval_model(), **state)
            self.events.emit(CheckpointSaved(str(path), "best", epoch + 1, step))
        path = save_checkpoint(self.out / "last.pt", self.eval_model(), **state)
        kind = "stop" if partial is not None else "last"
        self.events.emit(CheckpointSaved(str(path), kind, epoch + 1, step))

    # -- the schedule ---------------------------------------------------------------------
    def _set_plan(self, epochs: int) -> None:
        self.planned_epochs = epochs
        self.total_steps = epochs * self.steps_per_epoch

    def plan(self, done: int) -> int:
        """The epochs the run will train, after `done` of them; with `run.time_budget`, re-plans
        them (and so the learning-rate schedule) from the epoch times measured so far."""
        run = self.cfg.run
        if not run.time_budget:
            return self.planned_epochs
        if done >= self.planned_epochs:  # the schedule has ended: a fast last epoch adds none
            return self.planned_epochs
        fits = epochs_within(run.time_budget, self.train_seconds, self.epoch_seconds, done, 10**9)
        fits = distributed.broadcast_object(fits)  # rank 0's times: every rank stops together
        if fits > run.epochs and not self._capped:
            self._capped = True
            self.log(
                f"time budget: {fits} epochs would fit in {run.time_budget:.0f} s; "
                f"run.epochs caps the run at {run.epochs} (raise --epochs to use it all)"
            )
        self._set_plan(min(fits, run.epochs))
        return self.planned_epochs

    # -- one epoch ------------------------------------------------------------------------
    def _epoch_inputs(self, epoch: int):
        """The epoch's image size (progressive resizing) and batch mixing (the strong preset)."""
        cfg = self.cfg
        size = (cfg.data.early_size,) * 2 if epoch < cfg.data.early_epochs else None
        # DataConfig refuses "strong" for volumes and multi-label data (MixUp mixes single labels).
        mix = mixup_cutmix(len(self.data.classes)) if cfg.data.augment == "strong" else None
        return size, mix

    def _batches(self, epoch: int, start: int):
        """The epoch's batches from `start`: earlier ones are drawn (so every random choice
        after them is the same) but not trained, and a stopped epoch's random state comes back."""
        self.train_loader.set_epoch(epoch)
        _seed_epoch(self.cfg.run.seed, epoch)
        batches = iter(self.train_loader)
        for _ in range(start):
            next(batches)
        if start and self.partial is not None:
            torch.set_rng_state(self.partial["rng"]["cpu"])
            if self.partial["rng"].get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(self.partial["rng"]["cuda"], self.device)
        return batches

    def _step(self, x: torch.Tensor, y: torch.Tensor, size, mix, where: str) -> tuple:
        """One optimiser step; returns (loss, logits). Every process agrees on a bad loss, so
        they stop together."""
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if size is not None:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True)
        target = y
        if mix is not None:
            x, target = mix(x, y)
        with autocast(self.device, self.amp_dtype):
            out = self.net(x)
            loss = self._loss(out.float(), target)
        bad = (~torch.isfinite(loss.detach())).float()
        if self.distributed:  # every rank stops together, or the others wait forever
            distributed.all_reduce_sum(bad)
        if bad.item():
            raise ResNetError(
                f"loss became {loss.item()} at {where}; stopped. The last good checkpoint is "
                f"{self.out / 'last.pt'} (try a lower --lr)"
            )
        self._update(loss)
        return loss, out

    def _loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over classes, or binary cross-entropy per label (multi-label)."""
        if self.cfg.data.multilabel:
            return F.binary_cross_entropy_with_logits(
                out, target.float(), pos_weight=self.class_weights
            )
        return F.cross_entropy(
            out, target, weight=self.class_weights, label_smoothing=self.cfg.optim.label_smoothing
        )

    def _update(self, loss: torch.Tensor) -> None:
        """Backward pass, clipping, optimiser step, lookahead and weight average."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.optim.clip_grad:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.lookahead is not None:
            self.lookahead.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def _sums(self, epoch: int) -> tuple[int, torch.Tensor, float]:
        """Where the epoch starts: (batch, [loss sum, correct, seen], seconds already spent)."""
        p, sums = self.partial, torch.zeros(3, dtype=torch.float64)
        if p is None or p["epoch"] != epoch:
            return 0, sums, 0.0
        if self.main:  # the saved sums are every process's: rank 0 carries them on
            sums = torch.tensor(p["sums"], dtype=torch.float64)
        return p["step"], sums, p["seconds"]

    def train_one_epoch(self, epoch: int) -> dict:
        """Trains one epoch (or the rest of a stopped one); returns its metrics row.

        Raises `_Stopped` (after saving a resumable `last.pt`) when a stop was requested.
        """
        cfg = self.cfg
        self._train_mode()
        start, sums, spent = self._sums(epoch)
        size, mix = self._epoch_inputs(epoch)
        batches = self._batches(epoch, start)
        self.partial = None
        t0, lr = time.perf_counter() - spent, 0.0
        for i in range(start, self.steps_per_epoch):
            if i > start and self._stop_agreed():
                self._stop_inside(epoch, i, sums, time.perf_counter() - t0)
            x, y = next(batches)
            step = epoch * self.steps_per_epoch + i
            factor = lr_factor(step, self.total_steps, cfg.optim.schedule, self.warmup_steps)
            lr = set_lr(self.optimizer, cfg.optim.lr, factor)
            where = f"epoch {epoch + 1}, step {i + 1}"
            loss, out = self._step(x, y, size, mix, where)
            n = y.shape[0]
            sums += torch.stack(
                [
                    loss.detach().double().cpu() * n,
                    hits(out.detach(), y.to(out.device)).double().cpu(),
                    torch.tensor(float(n), dtype=torch.float64),
                ]
            )
            self._announce_step(epoch, i, sums, lr, t0, size)
        return self._epoch_row(sums, lr, time.perf_counter() - t0)

    def _stop_agreed(self) -> bool:
        """Whether a stop was requested, agreed by every process (rank 0's request counts)."""
        if not self.distributed:
            return self.events.stop_requested
        flag = torch.tensor(float(self.events.stop_requested), device=self.device)
        distributed.all_reduce_sum(flag)
        return bool(flag.item())

    def _announce_step(self, epoch, i, sums, lr, t0, size) -> None:
        if not self.events.items:
            return
        seen = max(float(sums[2]), 1.0)
        self.events.emit(
            StepProgress(
                epoch=epoch + 1,
                epochs=self.planned_epochs,
                step=i + 1,
                steps=self.steps_per_epoch,
                global_step=epoch * self.steps_per_epoch + i + 1,
                loss=float(sums[0]) / seen,
                acc=float(sums[1]) / seen,
                lr=lr,
                img_s=seen * self.world / max(time.perf_counter() - t0, 1e-9),
                image_size=size[0] if size else None,
            )
        )

    def _stop_inside(self, epoch: int, step: int, sums: torch.Tensor, seconds: float) -> None:
        """Saves a `last.pt` that resumes at batch `step` of `epoch`, then ends the run."""
        totals = sums.clone()
        distributed.all_reduce_sum(totals)  # every process stops here together
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        # Each process's own random state (augmentation may draw unequal counts per process).
        rng = distributed.all_gather_object({"cpu": torch.get_rng_state(), "cuda": cuda})
        partial = {
            "epoch": epoch,
            "step": step,
            "sums": totals.tolist(),
            "seconds": seconds,
            "rng_per_rank": rng,
        }
        self.train_seconds += seconds
        self._save(epoch - 1, epoch * self.steps_per_epoch + step, False, partial)
        raise _Stopped(step)

    def _epoch_row(self, sums: torch.Tensor, lr: float, seconds: float) -> dict:
        """The epoch's training figures over every process, and its time."""
        totals = sums.clone()
        distributed.all_reduce_sum(totals)
        self.train_seconds += seconds
        self.epoch_seconds.append(seconds)
        return {
            "lr": lr,
            "train_loss": float(totals[0] / totals[2]),
            "train_acc": float(totals[1] / totals[2]),
            "seconds": seconds,
            "img_s": float(totals[2]) / seconds,
        }

    def evaluate(self, split: str, model: nn.Module | None = None) -> dict:
        """Metrics of `model` (default: the evaluated weights) on a split."""
        return evaluate(
            model or self.eval_model(),
            self.eval_loaders[split],
            len(self.data.classes),
            self.device,
            amp_dtype=self.amp_dtype,
            tta=self.cfg.run.tta and self.cfg.data.flip,  # no mirrored view if flips are off
            tta_shift=self.cfg.run.tta_shift,
            progress=self.progress,
            desc=split,
        )

    # -- the run --------------------------------------------------------------------------
    def _run_start_event(self) -> RunStart:
        d, pre = self.data, self.data.preprocessing
        return RunStart(
            out=str(self.out),
            config=self.cfg.to_dict(),
            model=self.cfg.model.name,
            data=d.name,
            train_size=len(d.train),
            val_size=len(d.val) if d.val is not None else None,
            test_size=len(d.test) if d.test is not None else None,
            classes=list(d.classes),
            in_memory=d.in_memory,
            image_shape=tuple(d.train.images.shape[1:])
            if d.in_memory
            else (d.in_chans, pre["size"][0], pre["size"][1]),
            device=str(self.device),
            precision=precision_name(self.amp_dtype),
            world_size=self.world,
            start_epoch=self.start_epoch,
            start_step=self.partial["step"] if self.partial else 0,
            planned_epochs=self.planned_epochs,
            steps_per_epoch=self.steps_per_epoch,
        )

    def fit(self) -> dict:
        """Trains to the end (or until stopped); returns the summary. Rank 0 holds the run
        folder's lock meanwhile (`engine.runlock`: one writer per folder)."""
        try:
            with run_lock(self.out) if self.main else contextlib.nullcontext():
                return self._fit()
        except BaseException as e:
            problem = self._outside_problem(e)
            shown = problem or e
            self.events.emit(RunError(str(shown) or type(shown).__name__, type(shown).__name__))
            if problem is None:
                raise
            raise problem from None

    def _outside_problem(self, e: BaseException) -> ResNetError | None:
        """A failure from outside the run as one line with how to go on, else None: a full or
        read-only disk, or another training process gone (killed, crashed)."""
        if isinstance(e, WriteError):
            return e.then(resume_hint(self.out, self.world))
        if isinstance(e, RuntimeError) and distributed.peer_lost(e):
            return ResNetError(
                f"training process {self.rank} of {self.world} lost contact with the others "
                f"(one was stopped or died): {resume_hint(self.out, self.world)}"
            )
        return None

    def _fit(self) -> dict:
        """The run itself: config and split files, the epochs, the final evaluation."""
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.out)  # half-written files of a killed run: ours to drop
            self.cfg.save(self.out / "config.yaml")
            if self.data.split_record is not None:  # hashed groups only, never raw ids
                write_json(self.out / "splits.json", self.data.split_record)
            if self.history:  # resumed: outputs a failed write may have left behind catch up
                self._write_epoch_outputs()
        self.events.emit(self._run_start_event())
        try:
            epoch = self._epochs()
        except _Stopped as s:
            summary = {
                "status": "stopped",
                "out": str(self.out),
                "epoch": self._epoch + 1,
                "step": s.step,
                "train_seconds": round(self.train_seconds, 2),
            }
            self.events.emit(RunEnd(summary, "stopped"))
            return summary
        summary = self.finish(epoch)
        self.events.emit(RunEnd(summary, "finished"))
        return summary

    def _epochs(self) -> int:
        """The epoch loop; returns the index of the last epoch trained."""
        epoch = self.start_epoch - 1
        while epoch + 1 < self.planned_epochs:
            epoch = self._epoch = epoch + 1
            if not (self.partial and self.partial["epoch"] == epoch):  # else done on resume
                self._maybe_unfreeze(epoch)
            row = {"epoch": epoch + 1, **self.train_one_epoch(epoch)}
            last = epoch + 1 >= self.plan(epoch + 1)
            improved = self._validate_epoch(row, last)
            self.history.append(
                {k: (float(v) if isinstance(v, float) else v) for k, v in row.items()}
            )
            self._save(epoch, (epoch + 1) * self.steps_per_epoch, improved)
            if self.main:
                self._write_epoch_outputs()
            self.events.emit(EpochEnd(epoch + 1, self.planned_epochs, dict(self.history[-1])))
            if self._stop_between_epochs(epoch, last):
                break
        return epoch

    def _validate_epoch(self, row: dict, last: bool) -> bool:
        """Adds the validation figures to `row` when due; returns whether the net improved."""
        if "val" not in self.eval_loaders:
            return True  # no validation split: the latest weights are the best we know
        if row["epoch"] % self.cfg.run.eval_every != 0 and not last:
            return False
        m = self.evaluate("val")
        row |= {"val_loss": m["loss"], "val_acc": m["top1"]}
        if "top5" in m:
            row["val_top5"] = m["top5"]
        # Better accuracy, or the same with a lower loss (small validation sets tie often).
        improved = m["top1"] > self.best or (m["top1"] == self.best and m["loss"] < self.best_loss)
        if improved:
            self.best, self.best_loss = m["top1"], m["loss"]
        return improved

    def _write_epoch_outputs(self) -> None:
        write_metrics_csv(self.out / "metrics.csv", self.history)
        title = f"{self.cfg.model.name} on {self.data.name}"
        plot_curves(self.history, self.out / "curves.png", title)

    def _stop_between_epochs(self, epoch: int, last: bool) -> bool:
        """The time limit, or a stop asked for during the epoch's last step or evaluation.
        Rank 0's clock decides, so no rank starts an epoch the others have left."""
        limit = self.cfg.run.time_limit
        over = bool(limit and self.train_seconds >= limit)
        if distributed.broadcast_object(over) and not last:
            self.log(f"time limit of {limit:.0f}s reached after epoch {epoch + 1}")
            return True
        if distributed.broadcast_object(self.events.stop_requested) and not last:
            raise _Stopped(self.steps_per_epoch)
        return False

    def finish(self, epoch: int) -> dict:
        """Final evaluation with the best weights: summary.json and the confusion matrix."""
        summary = self._summary(epoch)
        model = self.eval_model()
        distributed.barrier()  # rank 0 has written best.pt; every rank now sees the same files
        best_path = self.out / "best.pt"
        if best_path.exists() and "val" in self.eval_loaders:
            state = load_checkpoint(best_path)
            model = build_model_from_state(state)
            model.to(self.device, memory_format=self.memory_format)
            summary["best_epoch"] = state["epoch"] + 1
        split = next((s for s in ("test", "val") if s in self.eval_loaders), None)
        if split:
            summary |= self._final_metrics(split, model)
        if self.main:
            write_json(self.out / "summary.json", summary)
        return summary

    def _summary(self, epoch: int) -> dict:
        cfg = self.cfg
        return {
            "model": cfg.model.name,
            "data": self.data.name,
            "epochs": epoch + 1,
            "classes": self.data.classes,
            "train_seconds": round(self.train_seconds, 2),
            **({"time_budget": cfg.run.time_budget} if cfg.run.time_budget else {}),
            "best_val_acc": self.best if self.best >= 0 else None,
            "final_val_acc": self.history[-1].get("val_acc") if self.history else None,
            "final_train_loss": self.history[-1]["train_loss"] if self.history else None,
            "out": str(self.out),
        }

    def _final_metrics(self, split: str, model: nn.Module) -> dict:
        """The held-out split's figures (one pass over it in one process: the clinical report
        reuses its logits); writes its metrics JSON and confusion matrix."""
        clinical = {}
        if self.world == 1:
            logits, labels = self._logits(split, model)
            m = metrics_from_logits(logits, labels)
            clinical = self._clinical(split, model, logits, labels)
        else:
            m = self.evaluate(split, model)
        if self.main and "confusion_matrix" in m:
            plot_confusion(
                torch.tensor(m["confusion_matrix"]),
                self.data.classes,
                self.out / "confusion_matrix.png",
                f"{self.cfg.model.name}, {split} split: {100 * m['top1']:.2f}% top-1",
            )
        if self.main:
            write_json(self.out / f"{split}_metrics.json", m)
        return {
            f"{split}_acc": m["top1"],
            f"{split}_top5": m.get("top5"),
            f"{split}_loss": m["loss"],
            f"{split}_macro_f1": m["macro_f1"],
            **clinical,
        }

    def _clinical(self, split: str, model: nn.Module, logits, labels) -> dict:
        """AUROC, sensitivity, specificity (with CIs), ECE and their PNGs for `split`; a
        binary test split takes Youden's threshold from the validation split."""
        threshold, ml = self.cfg.run.threshold, self.cfg.data.multilabel
        binary = len(self.data.classes) == 2 and not ml
        if threshold == "youden" and binary and split == "test" and "val" in self.eval_loaders:
            threshold = youden_threshold(*self._pooled("val", *self._logits("val", model)))
        unit = "scan" if self.data.preprocessing.get("scan") else "image"
        logits, labels = self._pooled(split, logits, labels)
        return clinical_outputs(
            logits, labels, self.data.classes, self.out, split, threshold=threshold, unit=unit
        )

    def _logits(self, split: str, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """A split's logits and labels, one per sample."""
        return collect_logits(
            model,
            self.eval_loaders[split],
            self.device,
            amp_dtype=self.amp_dtype,
            tta=self.cfg.run.tta and self.cfg.data.flip,
            tta_shift=self.cfg.run.tta_shift,
        )

    def _pooled(self, split: str, logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Slices of scans pooled per scan (`per_scan`); other samples unchanged."""
        owners = getattr(getattr(self.data, split), "owners", None)
        return per_scan(logits, labels, owners, self.cfg.data.multilabel)


def class_weights(labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Loss weights that make each class count as much as the others: N / (C x count) per
    class, or for multi-hot labels each label's negatives / positives (BCE's pos_weight)."""
    if labels.dim() == 2:
        pos = labels.sum(0).double()
        return ((len(labels) - pos) / pos.clamp_min(1)).float()
    counts = torch.bincount(labels.cpu(), minlength=num_classes or 0)
    return (counts.sum() / (len(counts) * counts.clamp_min(1).double())).float()


def hits(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct predictions in a batch: top-1 hits, or for multi-hot labels the per-label
    accuracy summed over samples (so accuracy is the mean per-label accuracy)."""
    if y.dim() == 2:
        return ((out > 0) == (y > 0)).float().mean(1).sum()
    return (out.argmax(1) == y).sum()


def train_single(cfg: TrainConfig | None = None, **kwargs) -> dict:
    """Trains (or resumes) one net with `Trainer(cfg, **kwargs).fit()`; returns the summary."""
    trainer = Trainer(cfg, **kwargs)
    try:
        return trainer.fit()
    finally:
        if trainer.distributed:
            distributed.cleanup()
