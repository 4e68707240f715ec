"""Very deep nets on a CPU: peak memory of a training step with and without activation
checkpointing, and a short training run that shows the loss falling.

Peak memory is the process's resident-set high-water mark (`resource.getrusage`), taken in a fresh
subprocess per setting so that one setting's peak cannot hide another's; the reported step memory
is that peak minus the resident set just before the step (model, optimizer and data included in
the baseline). `tracemalloc` does not see torch's allocations, and torch has no CPU allocator
statistics, hence the subprocess.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import models
from ..engine.report import moving_average, pyplot, save_figure, write_metrics_csv
from ..errors import ResNetError
from ..storage import atomic_write_text, write_json
from .degradation import Recipe, TensorData
from .gradients import train_steps

DEEP_MODELS = ("preact_resnet1001", "resnet1202")


def _rss_mb() -> float:
    """The process's resident set now, in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """The process's resident-set high-water mark, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def step_memory_here(
    name: str,
    checkpointing: bool,
    batch_size: int,
    size: int = 28,
    in_chans: int = 1,
    num_classes: int = 10,
    bf16: bool = True,
) -> dict:
    """Runs one training step of `name` in this process and reports its memory and time.

    Meant to run in a fresh process (`measure_step_memory` does that): the peak is the
    process's high-water mark.
    """
    torch.manual_seed(0)
    model = models.create(
        name, in_chans=in_chans, num_classes=num_classes, grad_checkpointing=checkpointing
    )
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, in_chans, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,))
    base, peak_before = _rss_mb(), _peak_mb()
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    seconds = time.perf_counter() - t0
    peak = _peak_mb()
    return dict(
        model=name,
        checkpointing=checkpointing,
        batch_size=batch_size,
        size=size,
        bf16=bf16,
        baseline_mb=round(base, 1),
        peak_mb=round(peak, 1),
        step_mb=round(peak - base, 1),
        earlier_peak_mb=round(peak_before, 1),
        step_s=round(seconds, 2),
        loss=float(loss),
    )


def measure_step_memory(
    name: str,
    checkpointing: bool,
    batch_size: int,
    size: int = 28,
    bf16: bool = True,
    timeout: float = 900,
) -> dict:
    """`step_memory_here` in a fresh Python process; returns its result."""
    args = json.dumps(
        dict(name=name, checkpointing=checkpointing, batch_size=batch_size, size=size, bf16=bf16)
    )
    code = (
        "import json, sys; from resnet.analysis.deep import step_memory_here; "
        "print(json.dumps(step_memory_here(**json.loads(sys.argv[1]))))"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ResNetError(f"{name}: one training step took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
        raise ResNetError(f"{name} (checkpointing={checkpointing}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_table(
    names: list[str], batch_size: int, size: int = 28, bf16: bool = True, progress: bool = True
) -> list[dict]:
    """Step memory of each net with and without checkpointing, one subprocess per setting."""
    rows = []
    settings = [(n, c) for n in names for c in (False, True)]
    for name, ckpt in tqdm(settings, desc="memory", disable=not progress):
        rows.append(measure_step_memory(name, ckpt, batch_size, size, bf16))
    return rows


def format_memory(rows: list[dict]) -> str:
    """The memory table: step and peak MiB and step seconds per net and setting."""
    head = (
        f"{'model':<20} {'checkpointing':>13} {'batch':>5} {'step MiB':>9} {'peak MiB':>9} "
        f"{'step s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<20} {'yes' if r['checkpointing'] else 'no':>13} "
            f"{r['batch_size']:>5} {r['step_mb']:>9.0f} {r['peak_mb']:>9.0f} "
            f"{r['step_s']:>7.1f}"
        )
    return "\n".join(lines)


def train_deep(
    name: str,
    data: TensorData,
    steps: int,
    *,
    recipe: Recipe | None = None,
    zero_init_residual: bool = False,
    progress: bool = True,
) -> dict:
    """Trains `name` with activation checkpointing for `steps` steps; the loss of every step.

    The learning rate warms up from lr/10 to lr over the steps (the paper's warm-up for its
    110- and 1202-layer nets). `zero_init_residual` starts every block as the identity.
    """
    recipe = recipe or Recipe(batch_size=32)
    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed)
    model = models.create(
        name,
        in_chans=data.in_chans,
        num_classes=data.num_classes,
        grad_checkpointing=True,
        zero_init_residual=zero_init_residual,
    )
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    losses = train_steps(model, data, recipe, steps, progress=progress, desc=name)
    label = f"{name}{' (zero-init residual)' if zero_init_residual else ''}"
    return dict(
        model=label,
        steps=steps,
        batch_size=recipe.batch_size,
        losses=losses,
        seconds=round(time.perf_counter() - t0, 1),
    )


def write_deep(memory: list[dict], runs: list[dict], out: str | Path) -> list[Path]:
    """Writes deep_memory.{json,md}, deep_loss.csv and deep_loss.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if memory:
        paths.append(write_json(out / "deep_memory.json", memory))
        md = "```\n" + format_memory(memory) + "\n```\n"
        paths.append(atomic_write_text(out / "deep_memory.md", md))
    if runs:
        rows = [
            dict(model=r["model"], step=i + 1, loss=f"{v:.6g}")
            for r in runs
            for i, v in enumerate(r["losses"])
        ]
        columns = ("model", "step", "loss")
        paths.append(write_metrics_csv(out / "deep_loss.csv", rows, columns, lineterminator="\n"))
        paths.append(plot_deep_losses(runs, out / "deep_loss.png"))
    return paths


def plot_deep_losses(runs: list[dict], path: Path) -> Path:
    """The loss of every step of each run, raw and smoothed over a tenth of the run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in runs:
        ax.plot(range(1, len(r["losses"]) + 1), r["losses"], lw=1, alpha=0.5)
        smooth = moving_average(r["losses"], max(1, len(r["losses"]) // 10))
        ax.plot(
            range(1, len(smooth) + 1),
            smooth,
            lw=2,
            label=f"{r['model']} (batch {r['batch_size']}, {r['seconds']:.0f} s)",
            color=ax.lines[-1].get_color(),
        )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title("Very deep nets with activation checkpointing")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
