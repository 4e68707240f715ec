"""Gradient flow: the loss gradient's norm at every layer of a net and of its plain twin.

The norm of each main-path convolution's weight gradient (shortcut projections left out), in
depth order, on one fixed batch in train mode (batch statistics, as in training), at
initialisation and after K training steps of the degradation recipe.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import models
from ..engine.report import pyplot, save_figure, write_metrics_csv
from ..errors import ResNetError
from ..storage import atomic_write_text
from .degradation import Recipe, TensorData, batches, make_optimizer, train_step

GRADIENT_COLUMNS = ("model", "skip", "layer_index", "layer", "grad_norm_init", "grad_norm_trained")


def twin_names(name: str, plain: str | None = None) -> tuple[str, str]:
    """(residual, plain) registered names for `name`, which may name either of the two."""
    entry = models.get_entry(name)
    if entry.spec.skip:
        twin = plain or models.plain_name(entry.name)
        models.get_entry(twin)
        return entry.name, twin
    for other in models.list_models("*"):
        if models.plain_name(other) == entry.name and models.get_entry(other).spec.skip:
            return other, plain or entry.name
    raise ResNetError(f"{name} is a plain net without a registered residual twin")


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Main-path convolutions in depth order (registration order), without shortcut projections."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and ".downsample" not in n
    ]


def gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """L2 norm of d(loss)/d(weight) for each main-path convolution, first layer first.

    One forward and backward pass in train mode and float32; the model's gradients are cleared
    before and after, and its weights are not changed (BN running statistics are restored).
    """
    buffers = {
        k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k
    }
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    norms = [
        float(m.weight.grad.float().norm()) if m.weight.grad is not None else float("nan")
        for _, m in conv_layers(model)
    ]
    model.zero_grad(set_to_none=True)
    model.load_state_dict(buffers, strict=False)
    model.train(was_training)
    return norms


def build_net(name: str, data: TensorData, recipe: Recipe, checkpointing: bool) -> nn.Module:
    """The registered net `name` for `data`, initialised from `recipe.seed`."""
    torch.manual_seed(recipe.seed)
    model = models.create(
        name, in_chans=data.in_chans, num_classes=data.num_classes, grad_checkpointing=checkpointing
    )
    return model.to(memory_format=torch.channels_last) if recipe.channels_last else model


def train_steps(
    model: nn.Module,
    data: TensorData,
    recipe: Recipe,
    steps: int,
    *,
    anneal: bool = False,
    progress: bool = True,
    desc: str = "",
) -> list[float]:
    """`steps` SGD steps of `recipe` on `data`; returns the losses.

    Without `anneal` the learning rate warms up over all the steps (lr/10 to lr, the paper's
    warm-up for deep nets); with it, the steps are a whole run of the recipe's schedule (5 %
    warm-up, then its decays), so the net ends in a settled state.
    """
    if steps <= 0:
        return []
    warmup = max(1, steps // 20) if anneal else steps
    recipe = replace(recipe, iterations=steps, warmup=warmup)
    opt = make_optimizer(model, recipe)
    stream = batches(data, recipe)
    model.train()
    losses = []
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        x, y = next(stream)
        losses.append(train_step(model, opt, x, y, recipe.lr_at(step), recipe.bf16)[0])
        if not math.isfinite(losses[-1]):
            break
    return losses


def gradient_flow(
    name: str,
    data: TensorData,
    *,
    steps: int = 0,
    plain: str | None = None,
    probe_size: int = 64,
    recipe: Recipe | None = None,
    checkpointing: bool | None = None,
    progress: bool = True,
) -> dict:
    """Per-layer gradient norms of `name` and its plain twin, at init and after `steps` steps.

    Args:
        name: a registered residual net (or a plain one: its residual twin is found).
        data: training data; the probe batch is its first `probe_size` training images.
        steps: training steps between the two measurements (0: init only).
        plain: compare against this net instead of the registered plain twin.
        probe_size: images in the probe batch.
        recipe: the training recipe (default: the degradation experiment's).
        checkpointing: activation checkpointing (default: on for nets deeper than 300 layers;
            gradients are the same, memory is not).
        progress: tqdm bars.

    Returns:
        {"nets": [{"name", "skip", "layers", "init", "trained", "losses", "seconds"}, ...],
         "steps", "probe_size"}; "init"/"trained" are lists of norms, first layer first.
    """
    recipe = recipe or Recipe()
    pair = twin_names(name, plain)
    x, y = data.train_x[:probe_size], data.train_y[:probe_size]
    if recipe.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    nets = []
    for net in pair:
        t0 = time.perf_counter()
        ckpt = models.get_entry(net).depth > 300 if checkpointing is None else checkpointing
        model = build_net(net, data, recipe, ckpt)
        init = gradient_norms(model, x, y)
        losses = train_steps(model, data, recipe, steps, progress=progress, desc=net)
        trained = gradient_norms(model, x, y) if steps > 0 else None
        nets.append(
            dict(
                name=net,
                skip=models.get_entry(net).spec.skip,
                layers=[n for n, _ in conv_layers(model)],
                init=init,
                trained=trained,
                losses=losses,
                seconds=round(time.perf_counter() - t0, 1),
            )
        )
        del model
    return dict(nets=nets, steps=steps, probe_size=len(y))


def first_last_ratio(norms: list[float]) -> float:
    """Gradient norm at the first layer over the norm at the last one (nan if either overflowed)."""
    return norms[0] / norms[-1] if norms[-1] else float("inf")


def summary_rows(result: dict) -> list[dict]:
    """One row per (net, moment): first and last layer norms and their ratio."""
    rows = []
    for net in result["nets"]:
        for when in ("init", "trained"):
            norms = net[when]
            if norms is None:
                continue
            label = "init" if when == "init" else f"after {result['steps']} steps"
            finite = [v for v in norms if math.isfinite(v)] or [float("nan")]
            rows.append(
                dict(
                    model=net["name"],
                    when=label,
                    layers=len(norms),
                    first=norms[0],
                    last=norms[-1],
                    ratio=first_last_ratio(norms),
                    min=min(finite),
                    max=max(finite),
                    nonfinite=len(norms) - len([v for v in norms if math.isfinite(v)]),
                )
            )
    return rows


def format_summary(result: dict) -> str:
    """The summary table; `max/min` is over finite norms, `inf/nan` counts float32 overflows."""
    head = (
        f"{'model':<20} {'when':<16} {'layers':>6} {'first':>10} {'last':>10} "
        f"{'first/last':>11} {'max/min':>10} {'inf/nan':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in summary_rows(result):
        spread = r["max"] / r["min"] if r["min"] else float("inf")
        lines.append(
            f"{r['model']:<20} {r['when']:<16} {r['layers']:>6} {r['first']:>10.3g} "
            f"{r['last']:>10.3g} {r['ratio']:>11.3g} {spread:>10.3g} "
            f"{r['nonfinite']:>7}"
        )
    return "\n".join(lines)


def write_gradient_flow(result: dict, out: str | Path, stem: str) -> list[Path]:
    """Writes `<stem>.csv` (every layer's norm), `<stem>.png` and `<stem>.md` (the summary)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for net in result["nets"]:
        trained = net["trained"] or [None] * len(net["init"])
        for i, (layer, a, b) in enumerate(zip(net["layers"], net["init"], trained, strict=True)):
            rows.append(
                dict(
                    model=net["name"],
                    skip=net["skip"],
                    layer_index=i + 1,
                    layer=layer,
                    grad_norm_init=f"{a:.6g}",
                    grad_norm_trained=None if b is None else f"{b:.6g}",
                )
            )
    csv_path = write_metrics_csv(out / f"{stem}.csv", rows, GRADIENT_COLUMNS, lineterminator="\n")
    md = "```\n" + format_summary(result) + "\n```\n"
    md_path = atomic_write_text(out / f"{stem}.md", md)
    png_path = out / f"{stem}.png"
    plot_gradient_flow(result, png_path)
    return [csv_path, png_path, md_path]


def plot_gradient_flow(result: dict, path: Path) -> None:
    """Gradient norm vs layer on a log scale: residual and plain side by side."""
    plt = pyplot()
    nets = result["nets"]
    fig, axes = plt.subplots(1, len(nets), figsize=(5.5 * len(nets), 4), sharey=True, squeeze=False)
    for ax, net in zip(axes[0], nets, strict=True):
        idx = range(1, len(net["init"]) + 1)
        ax.semilogy(idx, _finite(net["init"]), "o-", ms=2, lw=1, label="at initialisation")
        if net["trained"] is not None:
            ax.semilogy(
                idx,
                _finite(net["trained"]),
                "s-",
                ms=2,
                lw=1,
                label=f"after {result['steps']} steps",
            )
        bad = sum(not math.isfinite(v) for v in net["init"])
        ratio = (
            f"first/last at init {first_last_ratio(net['init']):.3g}"
            if not bad
            else f"float32 overflow (inf/nan) at {bad} of {len(net['init'])} layers"
        )
        ax.set_title(
            f"{net['name']} ({'residual' if net['skip'] else 'plain'}); {ratio}", fontsize=9
        )
        ax.set_xlim(0, len(net["init"]) + 1)
        ax.set_xlabel("layer (convolution, input side first)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("‖∂loss/∂W‖ (L2)")
    save_figure(fig, path)


def _finite(values: list[float]) -> list[float]:
    """The values with infinities as nan (matplotlib leaves both out of a log plot)."""
    return [v if math.isfinite(v) else float("nan") for v in values]
