"""The training loop: `train(config)` runs a whole training job and writes its run folder.

Random choices are functions of (seed, epoch): data order and augmentation come from a generator
seeded per epoch, dropout / drop-path from the global generator reseeded per epoch. A checkpoint
is written at the end of each epoch, so a run killed at any moment resumes from the last epoch end
and replays the interrupted epoch exactly; on the CPU a resumed run ends with the same weights.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from ..data import DataBundle, load_data
from ..data.loaders import epoch_seed
from ..device import autocast, resolve_device, resolve_precision
from ..errors import ResNetError
from ..models.resnet import SMALL_STEMS
from ..storage import write_json
from . import distributed
from .checkpoint import build_model as build_model_from_state
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import evaluate
from .optim import build_optimizer, epochs_within, lr_factor, set_lr
from .report import plot_confusion, plot_curves, write_metrics_csv


def ema_update(decay: float):
    """An EMA step for `AveragedModel` whose decay warms up as min(decay, (1 + n) / (10 + n)).

    Without the warm-up a short run's average keeps a large share of its first, barely trained
    weights (0.995 ** 500 = 8 %); with it the average follows the net closely early on and
    settles to `decay` (timm's ModelEma and airbench do the same).
    """

    @torch.no_grad()
    def update(ema: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        if torch.is_floating_point(ema[0]):
            torch._foreach_lerp_(ema, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's batch counter): follow the net
            for e, c in zip(ema, current, strict=True):
                e.copy_(c)

    return update


def build_model(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    entry = models.get_entry(cfg.model.name)
    options = dict(cfg.model.options)
    if entry.spec.stem not in SMALL_STEMS and max(data.preprocessing["size"]) <= 64:
        options.setdefault("small_input", True)  # the 7x7/2 + max-pool stem wastes a 28-64 px image
    kwargs = dict(num_classes=len(data.classes), in_chans=data.in_chans, **options)
    if cfg.finetune.weights:
        kwargs["weights"] = cfg.finetune.weights
    try:
        return models.create(cfg.model.name, **kwargs)
    except TypeError as e:
        raise ResNetError(str(e)) from None


def _with_run_overrides(cfg: TrainConfig, epochs: int | None, time_limit: float | None,
                        time_budget: float | None = None):
    run = {k: v for k, v in (("epochs", epochs), ("time_limit", time_limit),
                             ("time_budget", time_budget)) if v is not None}
    return cfg.updated({"run": run}) if run else cfg


def check_model_config(cfg: TrainConfig) -> None:
    """Refuses an unknown model name or option before any data is loaded."""
    models.get_entry(cfg.model.name)
    if cfg.model.whiten_stem and cfg.finetune.weights:
        raise ResNetError("whiten_stem initialises a net trained from scratch; it cannot be "
                          "combined with --weights")
    if cfg.model.freeze_whitened and not cfg.model.whiten_stem:
        raise ResNetError("freeze_whitened keeps the whitened first conv fixed; it needs "
                          "whiten_stem")
    if cfg.model.freeze_whitened and (cfg.finetune.freeze != "none" or cfg.finetune.unfreeze):
        raise ResNetError("freeze_whitened cannot be combined with --freeze or finetune.unfreeze")
    unknown = set(cfg.model.options) - models.registry.OPTIONS
    if unknown:
        raise ResNetError(f"unknown model option(s) {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(sorted(models.registry.OPTIONS))}")


def default_out(cfg: TrainConfig) -> Path:
    data = Path(cfg.data.source).stem if cfg.data.source != "fashion-mnist" else "fashion-mnist"
    base = Path("runs") / f"{cfg.model.name}-{data}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}{n}")
    return out


def _seed_epoch(seed: int, epoch: int) -> None:
    torch.manual_seed(epoch_seed(seed, epoch) + 7919)  # offset: not the data generator's stream


class Trainer:
    """The pieces of one run; `fit()` trains. Use `train(config)` unless you need the parts."""

    def __init__(
        self,
        cfg: TrainConfig | None = None,
        *,
        resume: str | Path | None = None,
        epochs: int | None = None,
        time_limit: float | None = None,
        time_budget: float | None = None,
        progress: bool = True,
        log=print,
    ):
        state = None
        if resume is not None:
            resume = Path(resume)
            ckpt = resume / "last.pt" if resume.is_dir() else resume
            state = load_checkpoint(ckpt)
            if "optimizer" not in state:
                raise ResNetError(f"{ckpt} holds no training state to resume")
            cfg = TrainConfig.from_dict(state["config"])
            if epochs is not None:  # resuming may lengthen a run; nothing else may change
                if epochs <= state["epoch"] + 1:
                    raise ResNetError(f"{ckpt} already finished epoch {state['epoch'] + 1}")
            # A longer run, a new limit or a new budget (the whole run's training time, resumed
            # parts included); the config validates them.
            cfg = _with_run_overrides(cfg, epochs, time_limit, time_budget)
            used, left = state.get("train_seconds", 0.0), state["epoch"] + 1 < cfg.run.epochs
            if left and cfg.run.time_limit and used >= cfg.run.time_limit:
                raise ResNetError(
                    f"{ckpt} has trained {used:.0f} s, at or past the time limit of "
                    f"{cfg.run.time_limit:.0f} s; resume with a larger --time-limit (the whole "
                    f"run's training time) to go on"
                )
        elif cfg is None:
            raise ValueError("a TrainConfig or a run folder to resume is needed")
        else:
            cfg = _with_run_overrides(cfg, epochs, time_limit, time_budget)
        if cfg.run.ensemble > 1:
            raise ResNetError("a Trainer trains one net; run.ensemble > 1 trains through "
                              "engine.train (members one after another)")
        check_model_config(cfg)  # a typo in the model fails before the data set is read
        self.device = resolve_device(cfg.run.device)
        if cfg.run.sync_bn and self.device.type != "cuda":
            raise ResNetError("--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); on CPU "
                              "processes use --opt norm=group for small per-process batches")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick kernels
        self.distributed = distributed.setup(self.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        self.log = log if self.main else (lambda *a, **k: None)
        self.progress = progress and self.main
        if state is not None:
            self.out = ckpt.parent
        else:
            # Rank 0 picks the folder (and refuses one holding a run); the others follow it.
            out, problem = None, None
            if self.main:
                out = Path(cfg.run.out) if cfg.run.out else default_out(cfg)
                if (out / "last.pt").exists():
                    problem = f"{out} already holds a run; use --resume {out} or another --out"
            out, problem = distributed.broadcast_object((out, problem))
            if problem:
                raise ResNetError(problem)
            self.out = out
        self.cfg = cfg
        torch.manual_seed(cfg.run.seed)
        self.data = load_data(cfg.data)
        if cfg.finetune.weights and state is None:
            from .finetune import eval_preprocessing_for

            pre = eval_preprocessing_for(cfg.finetune.weights, self.data.preprocessing,
                                         arch=cfg.model.name)
            if pre and pre != self.data.preprocessing:
                self.data.set_preprocessing(pre)
        elif state is not None and state["preprocessing"] != self.data.preprocessing:
            self.data.set_preprocessing(state["preprocessing"])  # a fine-tuning run resumed
        if self.device.type == "cuda" and self.data.in_memory:
            self.data.to(self.device)
        if cfg.run.tta_shift >= min(self.data.preprocessing["size"]):
            raise ResNetError(f"tta_shift {cfg.run.tta_shift} px must be smaller than the "
                              f"{min(self.data.preprocessing['size'])} px images")
        self.model = build_model(cfg, self.data)
        if cfg.model.whiten_stem and state is None:
            self._whiten_stem()
        if cfg.run.sync_bn and self.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.amp_dtype, needs_scaler = resolve_precision(cfg.run.precision, self.device)
        fmt = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=fmt)
        self._finetune_setup()
        if cfg.model.freeze_whitened:  # after the fine-tuning hooks, which may unfreeze the stem
            self._freeze_whitened()
        self.optimizer = build_optimizer(self.model, cfg.optim, cfg.finetune.backbone_lr_mult)
        self.scaler = torch.amp.GradScaler(self.device.type) if needs_scaler else None
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
        self.ema = None
        if cfg.optim.ema_decay:
            from torch.optim.swa_utils import AveragedModel

            self.ema = AveragedModel(
                self.model, multi_avg_fn=ema_update(cfg.optim.ema_decay), use_buffers=True
            )
        self.lookahead = None
        if cfg.optim.lookahead_steps:
            from .optim import Lookahead

            self.lookahead = Lookahead(
                self.model, cfg.optim.lookahead_steps, cfg.optim.lookahead_alpha
            )
        self.start_epoch, self.history, self.best = 0, [], -1.0
        self.train_seconds, self.epoch_seconds = 0.0, []
        if state is not None:
            self._restore(state)
        self._wrap()

    def _wrap(self) -> None:
        self.net = self.model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.cfg.run.compile:
            self.net = torch.compile(self.net)

    def _whiten_stem(self, count: int = 5000) -> None:
        from .whiten import whiten_first_conv_

        images = self.data.train.images
        if images is None:  # streamed data: the first batches of the first epoch
            loader = self.data.loader("train", self.cfg.data, train=True, seed=self.cfg.run.seed)
            loader.set_epoch(0)
            batches, n = [], 0
            for x, _ in loader:
                batches.append(x)
                n += x.shape[0]
                if n >= count:
                    break
            images = torch.cat(batches)
        try:
            n = whiten_first_conv_(self.model, images, max_images=count)
        except ValueError as e:
            raise ResNetError(str(e)) from None
        self.log(f"first conv: {n} filters set to the training patches' whitening")

    def _freeze_whitened(self) -> None:
        """Keeps the first conv fixed (resumed runs too: the checkpoint holds its filters)."""
        from .whiten import first_conv, whitenable_filters

        conv = first_conv(self.model)
        whitened = whitenable_filters(conv)
        if conv.out_channels > whitened:
            raise ResNetError(
                f"freeze_whitened: only {whitened} of the first conv's {conv.out_channels} filters "
                f"are whitened, the rest are random; use a net whose stem has at most {whitened} "
                f"filters, or train the first conv"
            )
        conv.weight.requires_grad_(False)

    # -- fine-tuning hooks (weights / freezing), provided by engine.finetune -----------------
    def _finetune_setup(self) -> None:
        ft = self.cfg.finetune
        if ft.freeze != "none" or ft.bn_eval or ft.unfreeze:
            from . import finetune

            finetune.apply_freeze(self.model, ft.freeze)
        self._bn_eval = ft.bn_eval

    def _train_mode(self) -> None:
        self.model.train()
        ft = self.cfg.finetune
        if ft.freeze != "none" or ft.bn_eval:
            from . import finetune

            finetune.set_bn_eval(self.model, only_frozen=not ft.bn_eval)

    def _maybe_unfreeze(self, epoch: int) -> None:
        mode = self.cfg.finetune.unfreeze.get(epoch) or self.cfg.finetune.unfreeze.get(str(epoch))
        if mode is None:
            return
        from . import finetune

        finetune.apply_freeze(self.model, mode)
        self.optimizer = build_optimizer(
            self.model, self.cfg.optim, self.cfg.finetune.backbone_lr_mult
        )
        if hasattr(self, "net"):
            self._wrap()  # DDP's reducer must see the new set of trainable parameters
        self.log(f"epoch {epoch + 1}: trainable parts now '{mode}'")

    # -- state ---------------------------------------------------------------------------
    def eval_model(self) -> nn.Module:
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
            "train_seconds": self.train_seconds,
            "planned_epochs": self.planned_epochs,
            # For the record: resuming reseeds from (seed, epoch), which replays exactly.
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
        raw = state.get("raw_model", state["model"])
        self.model.load_state_dict(raw)
        if self.ema is not None:
            self.ema.module.load_state_dict(state["model"])
            self.ema.n_averaged.copy_(state["ema_n_averaged"])
        if self.lookahead is not None:
            if "lookahead" not in state:
                raise ResNetError("this checkpoint's config asks for lookahead but it holds no "
                                  "lookahead state (a damaged or edited checkpoint)")
            self.lookahead.load_state_dict(state["lookahead"])
        for epoch in sorted(int(e) for e in self.cfg.finetune.unfreeze if int(e) <= state["epoch"]):
            self._maybe_unfreeze(epoch)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.history = list(state["history"])
        self.best = state["best_val_acc"]
        self.train_seconds = state.get("train_seconds", 0.0)
        self.epoch_seconds = [row["seconds"] for row in self.history]
        # With a time budget: the plan the uninterrupted run made after this epoch (the same
        # inputs give the same plan), or a new one for a new budget.
        budget = self.cfg.run.time_budget
        if budget and self.plan(self.start_epoch) <= self.start_epoch < self.cfg.run.epochs:
            raise ResNetError(
                f"{self.out} has trained {self.train_seconds:.0f} s of its time budget of "
                f"{budget:.0f} s; resume with a larger --time-budget (the whole run's training "
                f"time) to go on"
            )
        self.log(f"resuming {self.out} after epoch {self.start_epoch}")

    def _save(self, epoch: int, step: int, improved: bool) -> None:
        if not self.main:
            return
        state = self._state(epoch, step)
        # best.pt first: a kill between the two writes never leaves last.pt ahead of best.pt.
        if improved:
            save_checkpoint(self.out / "best.pt", self.eval_model(), **state)
        save_checkpoint(self.out / "last.pt", self.eval_model(), **state)

    # -- the loop ------------------------------------------------------------------------
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
        fits = epochs_within(run.time_budget, self.train_seconds, self.epoch_seconds, done,
                             10**9)
        fits = distributed.broadcast_object(fits)  # rank 0's times: every rank stops together
        if fits > run.epochs and not self._capped:
            self._capped = True
            self.log(f"time budget: {fits} epochs would fit in {run.time_budget:.0f} s; "
                     f"run.epochs caps the run at {run.epochs} (raise --epochs to use it all)")
        self._set_plan(min(fits, run.epochs))
        return self.planned_epochs

    def train_one_epoch(self, epoch: int) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        self._train_mode()
        self.train_loader.set_epoch(epoch)
        _seed_epoch(cfg.run.seed, epoch)
        size = None  # progressive resizing: smaller images in the first epochs
        if epoch < cfg.data.early_epochs:
            size = (cfg.data.early_size, cfg.data.early_size)
        mix = None
        if cfg.data.augment == "strong":
            from ..data.transforms import mixup_cutmix

            mix = mixup_cutmix(len(self.data.classes))
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.float64)
        seen = 0
        step0 = epoch * self.steps_per_epoch
        t0 = time.perf_counter()
        bar = tqdm(
            self.train_loader,
            total=self.steps_per_epoch,
            leave=False,
            unit="batch",
            desc=f"epoch {epoch + 1}/{self.planned_epochs}" + (f" @{size[0]}px" if size else ""),
            disable=not self.progress,
            dynamic_ncols=True,
        )
        lr = 0.0
        for i, (x, y) in enumerate(bar):
            step = step0 + i
            lr = set_lr(
                self.optimizer,
                cfg.optim.lr,
                lr_factor(step, self.total_steps, cfg.optim.schedule, self.warmup_steps),
            )
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if size is not None:
                x = F.interpolate(x, size=size, mode="bilinear", antialias=True)
            target = y
            if mix is not None:
                x, target = mix(x, y)
            with autocast(self.device, self.amp_dtype):
                out = self.net(x)
                loss = F.cross_entropy(
                    out.float(), target, label_smoothing=cfg.optim.label_smoothing
                )
            bad = (~torch.isfinite(loss.detach())).float()
            if self.distributed:  # every rank stops together, or the others wait forever
                distributed.all_reduce_sum(bad)
            if bad.item():
                raise ResNetError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}; stopped. The "
                    f"last good checkpoint is {self.out / 'last.pt'} (try a lower --lr)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if cfg.optim.clip_grad:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.lookahead is not None:
                self.lookahead.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            n = y.shape[0]
            seen += n
            loss_sum += loss.detach().double().cpu() * n
            correct += (out.detach().argmax(1) == y).sum().cpu()
            if self.progress and (i % 10 == 0 or i == self.steps_per_epoch - 1):
                rate = seen * self.world / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(
                    loss=f"{loss_sum.item() / seen:.4f}",
                    acc=f"{100 * correct.item() / seen:.2f}%",
                    lr=f"{lr:.4f}",
                    img_s=f"{rate:.0f}",
                )
        bar.close()
        totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64)])
        distributed.all_reduce_sum(totals)
        seconds = time.perf_counter() - t0
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

    def fit(self) -> dict:
        cfg = self.cfg
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / "config.yaml")
            where = "in memory" if self.data.in_memory else "streamed from disk"
            self.log(
                f"{cfg.model.name} on {self.data.name}: {len(self.data.train)} training images "
                f"({where}), {len(self.data.classes)} classes, "
                f"{self.data.in_chans}x{self.data.preprocessing['size'][0]}x"
                f"{self.data.preprocessing['size'][1]}; {self.device}, "
                f"{'fp32' if self.amp_dtype is None else str(self.amp_dtype).split('.')[-1]}"
                f"{', ' + str(self.world) + ' processes' if self.world > 1 else ''}; "
                f"run folder {self.out}"
            )
        epoch = self.start_epoch - 1
        while epoch + 1 < self.planned_epochs:
            epoch += 1
            self._maybe_unfreeze(epoch)
            row = {"epoch": epoch + 1, **self.train_one_epoch(epoch)}
            last = epoch + 1 >= self.plan(epoch + 1)
            improved = False
            if "val" in self.eval_loaders and ((epoch + 1) % cfg.run.eval_every == 0 or last):
                m = self.evaluate("val")
                row |= {"val_loss": m["loss"], "val_acc": m["top1"], "val_top5": m["top5"]}
                improved = m["top1"] > self.best
                self.best = max(self.best, m["top1"])
            elif "val" not in self.eval_loaders:
                improved = True  # no validation split: the latest weights are the best we know
            self.history.append(
                {k: (float(v) if isinstance(v, float) else v) for k, v in row.items()}
            )
            self._save(epoch, (epoch + 1) * self.steps_per_epoch, improved)
            if self.main:
                write_metrics_csv(self.out / "metrics.csv", self.history)
                plot_curves(
                    self.history, self.out / "curves.png", f"{cfg.model.name} on {self.data.name}"
                )
                val = (
                    f", val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%"
                    if "val_acc" in row
                    else ""
                )
                self.log(
                    f"epoch {epoch + 1}/{self.planned_epochs}: train loss {row['train_loss']:.4f} "
                    f"acc {100 * row['train_acc']:.2f}%{val} "
                    f"({row['seconds']:.1f}s, {row['img_s']:.0f} img/s)"
                )
            # Rank 0's clock decides, so no rank starts an epoch the others have left.
            over = bool(cfg.run.time_limit and self.train_seconds >= cfg.run.time_limit)
            if distributed.broadcast_object(over) and not last:
                self.log(f"time limit of {cfg.run.time_limit:.0f}s reached after epoch {epoch + 1}")
                break
        return self.finish(epoch)

    def finish(self, epoch: int) -> dict:
        """Final evaluation with the best weights: summary.json and the confusion matrix."""
        cfg = self.cfg
        summary = {
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
        best_path = self.out / "best.pt"
        model = self.eval_model()
        distributed.barrier()  # rank 0 has written best.pt; every rank now sees the same files
        if best_path.exists() and "val" in self.eval_loaders:
            state = load_checkpoint(best_path)
            model = build_model_from_state(state)
            fmt = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
            model.to(self.device, memory_format=fmt)
            summary["best_epoch"] = state["epoch"] + 1
        split = (
            "test" if "test" in self.eval_loaders else "val" if "val" in self.eval_loaders else None
        )
        if split:
            m = self.evaluate(split, model)
            summary |= {
                f"{split}_acc": m["top1"],
                f"{split}_top5": m["top5"],
                f"{split}_loss": m["loss"],
                f"{split}_macro_f1": m["macro_f1"],
            }
            if self.main:
                plot_confusion(
                    torch.tensor(m["confusion_matrix"]),
                    self.data.classes,
                    self.out / "confusion_matrix.png",
                    f"{cfg.model.name}, {split} split: {100 * m['top1']:.2f}% top-1",
                )
                write_json(self.out / f"{split}_metrics.json", m)
        if self.main:
            write_json(self.out / "summary.json", summary)
            acc = summary.get(f"{split}_acc") if split else None
            self.log(
                f"done in {self.train_seconds:.0f}s of training"
                + (f": {split} accuracy {100 * acc:.2f}%" if acc is not None else "")
                + f"; run folder {self.out}"
            )
        return summary


def train(
    cfg: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    epochs: int | None = None,
    time_limit: float | None = None,
    time_budget: float | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Trains as `cfg` says (or resumes the run folder `resume`); returns the run's summary.

    A resumed run may get more `epochs`, a larger `time_limit` or a new `time_budget` (seconds
    of training over the whole run, resumed parts included); nothing else about it can change. With
    `cfg.run.ensemble` > 1 (or an ensemble folder to resume) it trains the members in turn
    (`engine.ensemble.train_ensemble`).
    """
    from .ensemble import is_ensemble_run, train_ensemble

    if resume is not None and is_ensemble_run(resume):
        if epochs is not None or time_limit is not None or time_budget is not None:
            raise ResNetError("an ensemble resumes as it was configured (no --epochs, "
                              "--time-limit or --time-budget)")
        cfg = TrainConfig.load(Path(resume) / "config.yaml").updated({"run": {"out": str(resume)}})
        return train_ensemble(cfg, progress=progress, log=log)
    if resume is None and cfg is not None and cfg.run.ensemble > 1:
        return train_ensemble(cfg, progress=progress, log=log)
    trainer = Trainer(
        cfg, resume=resume, epochs=epochs, time_limit=time_limit, time_budget=time_budget,
        progress=progress, log=log
    )
    try:
        return trainer.fit()
    finally:
        distributed.cleanup() if trainer.distributed else None
