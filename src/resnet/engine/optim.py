"""Optimisers and learning-rate schedules (the rate is a pure function of the step)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    backbone_lr_mult: float = 1.0,
    norm_bias_lr_mult: float = 1.0,
    head_prefix: str = "fc.",
    include_frozen: bool = False,
) -> list[dict]:
    """Parameter groups: no weight decay on norms and biases (1-D tensors), the classifier at the
    base rate and the backbone at `backbone_lr_mult` of it. Frozen parameters are left out unless
    `include_frozen` (then unfreezing needs no new optimizer: SGD skips tensors without grad).

    Each group carries `name` and `lr_mult`; `set_lr` multiplies it by the scheduled rate.
    """
    model = getattr(model, "module", model)
    groups: dict[tuple[bool, bool], dict] = {}
    for name, p in model.named_parameters():
        if not (p.requires_grad or include_frozen):
            continue
        head = name.startswith(head_prefix)
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
    return list(groups.values())


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, backbone_lr_mult: float = 1.0
) -> torch.optim.Optimizer:
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
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, total: int, schedule: str, warmup: int = 0) -> float:
    """Multiplier of the base rate at `step` of `total`, after a linear warm-up of `warmup` steps.

    step: /10 at 50 % and 75 % of training (the paper's CIFAR schedule); cosine: to zero;
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
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "onecycle":
        return max(0.0, 1.0 - t)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}")


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
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
        self.count += 1
        if self.count % self.k:
            return
        fast = [p.detach() for p in self.params]
        torch._foreach_lerp_(self.slow, fast, self.alpha)
        torch._foreach_copy_(fast, self.slow)

    def state_dict(self) -> dict:
        return {"count": self.count, "slow": [s.cpu() for s in self.slow]}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        for s, saved in zip(self.slow, state["slow"], strict=True):
            s.copy_(saved)
