"""Layer responses (He et al. 2015, Fig. 7): how large is each block's residual function?

The response of a block is the output of the last layer of its residual branch, before the
addition (post-activation blocks: the last BN; pre-activation blocks: the last convolution). In a
plain twin it is the same layer, which there *is* the block's whole output. Its standard deviation
is taken per channel over images and positions, averaged over channels, in eval mode on held-out
images.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ..engine.report import pyplot, save_figure, write_metrics_csv
from ..storage import atomic_write_text
from .degradation import Recipe, TensorData, error_rate
from .gradients import build_net, train_steps, twin_names

RESPONSE_COLUMNS = ("model", "skip", "block_index", "block", "response_std")


def branch_ends(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(block name, last layer of its residual branch) for every block, input side first."""
    out = []
    for stage_name, stage in zip(model.stage_names, model.stages(), strict=True):
        for i, block in enumerate(stage):
            out.append((f"{stage_name}.{i}", block.last_layer()))
    return out


@torch.no_grad()
def response_stds(model: nn.Module, x: torch.Tensor, batch_size: int = 250) -> list[float]:
    """Std of each block's branch response on images `x`, eval mode, float32."""
    ends = branch_ends(model)
    stats: list[list[torch.Tensor]] = [[] for _ in ends]  # per block: [count, sum, sum of squares]

    def hook(i):
        def fn(_module, _inputs, output):
            o = output.detach().double().transpose(0, 1).reshape(output.shape[1], -1)
            part = [torch.tensor(o.shape[1], dtype=torch.float64), o.sum(1), o.square().sum(1)]
            old = stats[i]
            stats[i] = [a + b for a, b in zip(old, part, strict=True)] if old else part

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, (_, m) in enumerate(ends)]
    was_training = model.training
    model.eval()
    try:
        for j in range(0, len(x), batch_size):
            model(x[j : j + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = []
    for n, s, s2 in stats:
        var = (s2 - s.square() / n) / (n - 1)  # unbiased, per channel
        out.append(float(var.clamp_min(0).sqrt().mean()))
    return out


def response_study(
    name: str,
    data: TensorData,
    *,
    steps: int = 0,
    plain: str | None = None,
    probe_size: int = 500,
    recipe: Recipe | None = None,
    progress: bool = True,
) -> dict:
    """Branch-response stds of `name` and its plain twin after `steps` identical training steps.

    Args:
        name: a registered residual net (or a plain one: its residual twin is found).
        data: training data for the steps; the responses are measured on its first
            `probe_size` test images.
        steps: SGD steps before measuring, one whole run of the recipe's schedule (warm-up,
            then its decays; 0: at initialisation).
        plain: compare against this net instead of the registered plain twin.
        probe_size: test images the responses are measured on.
        recipe: the training recipe (default: the degradation experiment's).
        progress: tqdm bars.

    Returns:
        {"nets": [{"name", "skip", "blocks", "std", "losses", "seconds"}, ...], "steps", ...}.
    """
    recipe = recipe or Recipe()
    x = data.test_x[:probe_size]
    if recipe.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    nets = []
    for net in twin_names(name, plain):
        t0 = time.perf_counter()
        model = build_net(net, data, recipe, checkpointing=False)
        losses = train_steps(model, data, recipe, steps, anneal=True, progress=progress, desc=net)
        stds = response_stds(model, x)
        err = error_rate(
            model, x, data.test_y[:probe_size], bf16=recipe.bf16, channels_last=recipe.channels_last
        )
        nets.append(
            dict(
                name=net,
                skip=model.spec.skip,
                blocks=[n for n, _ in branch_ends(model)],
                std=stds,
                losses=losses,
                test_error=err,
                seconds=round(time.perf_counter() - t0, 1),
            )
        )
    return dict(nets=nets, steps=steps, probe_size=len(x))


def format_responses(result: dict) -> str:
    """The summary table: per net, the blocks' mean, median and largest response std."""
    head = f"{'model':<20} {'blocks':>6} {'mean std':>9} {'median':>8} {'max':>8} {'test err':>9}"
    lines = [head, "-" * len(head)]
    for net in result["nets"]:
        s = sorted(net["std"])
        lines.append(
            f"{net['name']:<20} {len(s):>6} {sum(s) / len(s):>9.3f} "
            f"{s[len(s) // 2]:>8.3f} {s[-1]:>8.3f} {100 * net['test_error']:>8.2f}%"
        )
    return "\n".join(lines)


def write_responses(result: dict, out: str | Path, stem: str) -> list[Path]:
    """Writes `<stem>.csv` (every block's std), `<stem>.png` and `<stem>.md` (the summary)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        dict(
            model=net["name"],
            skip=net["skip"],
            block_index=i + 1,
            block=block,
            response_std=f"{s:.6g}",
        )
        for net in result["nets"]
        for i, (block, s) in enumerate(zip(net["blocks"], net["std"], strict=True))
    ]
    csv_path = write_metrics_csv(out / f"{stem}.csv", rows, RESPONSE_COLUMNS, lineterminator="\n")
    md_path = atomic_write_text(out / f"{stem}.md", "```\n" + format_responses(result) + "\n```\n")
    png_path = out / f"{stem}.png"
    plot_responses(result, png_path)
    return [csv_path, png_path, md_path]


def plot_responses(result: dict, path: Path) -> None:
    """Fig. 7: std per block in network order (left) and sorted by magnitude (right)."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for net in result["nets"]:
        style = dict(
            ls="-" if net["skip"] else "--",
            marker="o",
            ms=2,
            lw=1.2,
            label=f"{net['name']} ({'residual' if net['skip'] else 'plain'})",
        )
        idx = range(1, len(net["std"]) + 1)
        a.plot(idx, net["std"], **style)
        b.plot(idx, sorted(net["std"], reverse=True), **style)
    when = "at initialisation" if not result["steps"] else f"after {result['steps']} steps"
    a.set_title(f"response std per block, network order ({when})", fontsize=9)
    b.set_title("sorted by magnitude", fontsize=9)
    a.set_xlabel("block (input side first)")
    b.set_xlabel("rank")
    a.set_ylabel("std of the branch's last layer output")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)
