"""Optimisers and learning-rate schedules (the rate is a pure function of the step)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.sgd import sgd as sgd_step  # torch.optim.SGD's own update, as a function

from ..errors import ResNetError
from ..models import unwrap
from ..models.foreign import head_prefixes
from .config import OptimConfig


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    backbone_lr_mult: float = 1.0,
    norm_bias_lr_mult: float = 1.0,
    head_prefix: str = "fc.",
    include_frozen: bool = False,
    lr: float | None = None,
) -> list[dict]:
    """Parameter groups: no weight decay on norms and biases (1-D tensors), the classifier at the
    base rate and the backbone at `backbone_lr_mult` of it. Frozen parameters are left out unless
    `include_frozen` (then unfreezing needs no new optimizer: SGD skips tensors without grad).

    Each group carries `name` and `lr_mult`; `set_lr` multiplies it by the scheduled rate. With
    `lr`, each group also gets its own rate `lr * lr_mult` (for an optimiser built directly).
    """
    if backbone_lr_mult < 0:
        raise ResNetError(f"backbone_lr_mult must be >= 0, got {backbone_lr_mult}")
    model = unwrap(model)  # DDP, torch.compile
    heads = head_prefixes(model) or (head_prefix,)  # a tv: / timm: net names its own head
    groups: dict[tuple[bool, bool], dict] = {}
    for name, p in model.named_parameters():
        if not (p.requires_grad or include_frozen):
            continue
        head = name.startswith(heads)
        no_decay = p.ndim <= 1
        key = (head, no_decay)
        if key not in groups:
            mult = 1.0 if head else backbone_lr_mult
            if no_decay and not head:
                mult *= norm_bias_lr_mult
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_mult": mult,
                "name": ("head" if head else "backbone") + ("_no_decay" if no_decay else ""),
            }
        groups[key]["params"].append(p)
    if lr is not None:
        return [dict(g, lr=lr * g["lr_mult"]) for g in groups.values()]
    return list(groups.values())


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, backbone_lr_mult: float = 1.0
) -> torch.optim.Optimizer:
    """The configured optimiser (SGD, AdamW or Muon) over `param_groups` of the model."""
    groups = param_groups(
        model,
        cfg.weight_decay,
        backbone_lr_mult=backbone_lr_mult,
        norm_bias_lr_mult=cfg.norm_bias_lr_mult,
    )
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "muon":
        spec = getattr(getattr(model, "module", model), "spec", None)
        if cfg.muon_normalize and (spec is None or getattr(spec, "preact", True)):
            raise ValueError(
                "muon_normalize keeps each filter bank's norm fixed, which is right only where a "
                "norm layer follows every conv (post-activation ResNets); set "
                "optim.muon_normalize: false for this model"
            )
        for g in groups:  # the backbone's filters (conv weights); the head and 1-D tensors: SGD
            if g["name"] == "backbone":
                g.update(
                    muon=True,
                    lr_mult=g["lr_mult"] * cfg.muon_lr / cfg.lr,
                    momentum=cfg.muon_momentum,
                    normalize=cfg.muon_normalize,
                )
        return Muon(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Newton-Schulz quintic iteration (Jordan et al. 2024, the coefficients of torch.optim.Muon):
    approximately U V^T for g = U S V^T, in bfloat16. `g` is a matrix."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024) for convolution filters, SGD for everything else: one optimiser.

    Groups with `muon=True` take torch.optim.Muon's step (momentum, Nesterov, the update
    orthogonalised by Newton-Schulz, scaled by sqrt(max(1, rows / cols)), decoupled weight
    decay), applied to each filter bank as the (out, in * kh * kw) matrix it is, which
    torch.optim.Muon (2-D parameters only) does not do. With `normalize` a filter bank is
    rescaled after each step to the norm it had before the first (as airbench's Muon does;
    right where a BatchNorm follows the conv, so the scale is free, and it keeps the step size
    relative to the weights constant; weight decay then has nothing to do). Other groups are
    plain SGD (momentum, Nesterov, L2 weight decay), as torch.optim.SGD steps them.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, nesterov: bool = True):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=0.0,
            muon=False,
            normalize=False,
            ns_steps=5,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One Muon step for conv filters and an SGD step for every other parameter."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["muon"]:
                for p in params:
                    self._muon_step(p, group)
                continue
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            sgd_step(
                params,
                [p.grad for p in params],
                bufs,
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=0.0,
                nesterov=group["nesterov"],
                maximize=False,
            )
            for p, buf in zip(params, bufs, strict=True):
                self.state[p]["momentum_buffer"] = buf
        return loss

    def _muon_step(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
            if group["normalize"]:
                state["norm"] = p.norm()
        buf, mu, lr = state["momentum_buffer"], group["momentum"], group["lr"]
        buf.lerp_(p.grad, 1 - mu)
        update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
        rows = update.shape[0]
        cols = update.numel() // max(rows, 1)
        update = orthogonalize(update.reshape(rows, cols), group["ns_steps"]).reshape(p.shape)
        if not group["normalize"]:
            p.mul_(1 - lr * group["weight_decay"])
        p.add_(update.to(p.dtype), alpha=-lr * max(1.0, rows / cols) ** 0.5)
        if group["normalize"]:  # before a norm layer only the direction matters
            norm = state["norm"]  # (a zero-initialised bank has no direction to keep: left free)
            p.mul_(torch.where(norm > 0, norm / p.norm().clamp(min=1e-12), 1.0))


def lr_factor(
    step: int, total: int, schedule: str, warmup: int = 0, *, floor: float = 0.0
) -> float:
    """Multiplier of the base rate at `step` of `total`, after a linear warm-up of `warmup` steps.

    step: /10 at 50 % and 75 % of training (the paper's CIFAR schedule); cosine: to `floor`
    (default zero; the detection and segmentation runs end at 5 %);
    onecycle: linear warm-up then linear decay to zero; constant.
    """
    warmup = min(warmup, total // 2)  # a short run still decays
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "step":  # drops at 50 % and 75 % of the whole run, as in the paper
        t = step / max(1, total)
        return 1.0 if t < 0.5 else 0.1 if t < 0.75 else 0.01
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "onecycle":
        return max(0.0, 1.0 - t)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}")


def epochs_within(
    budget_s: float, used_s: float, epoch_seconds: list[float], done: int, most: int
) -> int:
    """How many epochs a run with a training-time budget plans, after `done` epochs.

    The remaining budget over the mean of the last three epochs' times, rounded down (the run
    stops a part of an epoch early rather than late); at least `done` (it stops now) and at
    most `most` (run.epochs caps it). Re-planned after every epoch, so a machine that slows
    down or speeds up moves the end of the learning-rate schedule with it.
    """
    if done == 0 or not epoch_seconds:
        return most  # nothing measured yet: plan the cap (warm-up does not depend on it)
    recent = epoch_seconds[-3:]
    per_epoch = max(sum(recent) / len(recent), 1e-9)
    more = max(0, math.floor((budget_s - used_s) / per_epoch))
    return max(done, min(most, done + more))


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    """Sets every group's rate to base_lr * its lr_mult * factor; returns base_lr * factor."""
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g.get("lr_mult", 1.0) * factor
    return base_lr * factor


class Lookahead:
    """Lookahead (Zhang et al. 2019) around any optimiser: call `step()` after each of its steps.

    Every `k` steps the slow weights move `alpha` of the way towards the trained (fast) weights,
    and the fast weights restart from them; buffers (BatchNorm statistics) are left alone.
    """

    def __init__(self, model: torch.nn.Module, k: int, alpha: float):
        self.params = [p for p in model.parameters() if torch.is_floating_point(p)]
        self.slow = [p.detach().clone() for p in self.params]
        self.k, self.alpha, self.count = k, alpha, 0

    @torch.no_grad()
    def step(self) -> None:
        """Counts a step of the inner optimiser; every k-th pulls the slow weights forward."""
        self.count += 1
        if self.count % self.k:
            return
        fast = [p.detach() for p in self.params]
        torch._foreach_lerp_(self.slow, fast, self.alpha)
        torch._foreach_copy_(fast, self.slow)

    def state_dict(self) -> dict:
        """The slow weights and the step count, for a checkpoint."""
        return {"count": self.count, "slow": [s.cpu() for s in self.slow]}

    def load_state_dict(self, state: dict) -> None:
        """Restores what `state_dict` returned."""
        self.count = int(state["count"])
        for s, saved in zip(self.slow, state["slow"], strict=True):
            s.copy_(saved)


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
