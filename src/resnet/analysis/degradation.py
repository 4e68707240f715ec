"""The degradation experiment (He et al. 2015, Fig. 6): plain and residual twins under one recipe.

Each depth is trained twice, with and without skips, on the same batches and augmentations in
the same order. Training error is measured the paper's way twice over: the running error of the
training mini-batches since the last evaluation (train mode, augmented), and the error of a fixed
subset of the training set in eval mode (no augmentation). The verdict uses the second, which is
deterministic given the weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import models
from ..data import BatchAugment, DataConfig, TensorLoader, load_data
from ..engine.optim import lr_factor, set_lr
from ..engine.report import pyplot, save_figure, write_metrics_csv
from ..errors import ResNetError
from ..storage import atomic_write_text, write_json

SCHEDULES = ("step", "cosine")
CSV_FIELDS = (
    "model",
    "depth",
    "skip",
    "iteration",
    "lr",
    "loss",
    "running_train_error",
    "train_error",
    "test_error",
    "elapsed_s",
)


@dataclass
class TensorData:
    """A labelled data set in memory: normalised float images [N, C, H, W] and int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def in_chans(self) -> int:
        """Channels of the images."""
        return self.train_x.shape[1]


def load_tensors(source: str = "fashion-mnist", subset: int | None = None) -> TensorData:
    """Loads `source` (fashion-mnist, an image folder or a CSV) into memory via `resnet.data`.

    Args:
        source: what `resnet.data.load_data` accepts.
        subset: keep the first N (stratified) training images.
    """
    cfg = DataConfig(source=source, val_split=0.0, subset=subset, in_memory="yes")
    bundle = load_data(cfg)
    test = bundle.test or bundle.val
    if bundle.train.images is None or test is None or test.images is None:
        raise ResNetError(f"{source}: the experiments need a test split that fits in memory")
    return TensorData(
        bundle.name,
        bundle.train.images,
        bundle.train.labels,
        test.images,
        test.labels,
        len(bundle.classes),
    )


@dataclass(frozen=True)
class Recipe:
    """One training recipe, shared by every net of an experiment (the paper's CIFAR one, scaled).

    Attributes:
        iterations: SGD steps per run (the budget).
        batch_size: mini-batch size.
        lr: peak learning rate, reached after `warmup` steps (linear from lr/10).
        momentum, weight_decay: SGD; weight decay on every parameter, as in the paper.
        schedule: "step" (x0.1 at 50 % and 75 % of the budget, as the paper's 32k/48k of 64k)
            or "cosine" (to zero).
        warmup: warm-up steps (the paper warms ResNet-110 up for 400 steps at lr 0.01).
        augment: pad-and-crop + horizontal flip, on whole batches.
        bf16: bfloat16 autocast (about twice as fast on a CPU with AVX-512 bf16).
        channels_last: NHWC memory layout.
        eval_every: steps between evaluations.
        train_eval_size: size of the fixed training subset whose eval-mode error is tracked.
        test_eval_size: test images evaluated (the first N).
        seed: initial weights, batch order and augmentation (the same for every net).
    """

    iterations: int = 1200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    warmup: int = 60
    augment: bool = True
    bf16: bool = True
    channels_last: bool = True
    eval_every: int = 100
    train_eval_size: int = 2000
    test_eval_size: int = 2000
    seed: int = 0

    def __post_init__(self):
        """Refuses an unknown schedule and sizes below one."""
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be {' or '.join(SCHEDULES)}, not {self.schedule!r}")
        for name in ("iterations", "batch_size", "eval_every", "train_eval_size", "test_eval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup < 0 or self.weight_decay < 0:
            raise ValueError("need lr > 0, warmup >= 0 and weight_decay >= 0")

    def lr_at(self, step: int) -> float:
        """Learning rate of step `step` (0-based): a pure function of the step.

        The warm-up is the paper's for deep nets, rising linearly from lr/10; after it, the
        engine's schedule (`resnet.engine.optim.lr_factor`): "step" counts its drops at 50 % and
        75 % from the start of the run, "cosine" decays over the steps after the warm-up.
        """
        if step < self.warmup:
            return self.lr * (0.1 + 0.9 * step / self.warmup)
        if self.schedule == "cosine":
            return self.lr * lr_factor(step - self.warmup, self.iterations - self.warmup, "cosine")
        return self.lr * lr_factor(step, self.iterations, "step")


QUICK = dict(iterations=300, warmup=15, eval_every=50, train_eval_size=1000, test_eval_size=1000)


def twin_names(depths: Sequence[int], family: str = "resnet") -> list[tuple[str, int, bool]]:
    """(name, depth, skip) for the residual and plain nets of each depth, e.g. resnet20/plain20."""
    out = []
    for d in depths:
        name = f"{family}{d}"
        models.get_entry(name)  # unknown depth: one-line error naming the registered ones
        out.append((name, d, True))
        out.append((models.plain_name(name), d, False))
    return out


def batches(data: TensorData, recipe: Recipe) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless augmented training batches, identical for every net built with the same recipe."""
    h = data.train_x.shape[-1]
    aug = BatchAugment("paper" if recipe.augment else "none", h)
    bs = min(recipe.batch_size, len(data.train_y))
    loader = TensorLoader(
        data.train_x,
        data.train_y,
        batch_size=bs,
        shuffle=True,
        augment=aug,
        drop_last=True,
        seed=recipe.seed,
        channels_last=recipe.channels_last,
    )
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def build(name: str, data: TensorData, recipe: Recipe, **options) -> nn.Module:
    """The registered net `name` for `data`, initialised from `recipe.seed`."""
    torch.manual_seed(recipe.seed)
    model = models.create(name, in_chans=data.in_chans, num_classes=data.num_classes, **options)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD with momentum, weight decay on every parameter (as in the paper)."""
    return torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    bf16: bool,
) -> tuple[float, int]:
    """One SGD step; returns (loss, number of mistakes in the batch)."""
    set_lr(opt, lr, 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item(), int((logits.argmax(1) != y).sum())


@torch.no_grad()
def error_rate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    bf16: bool = True,
    channels_last: bool = True,
    batch_size: int = 500,
) -> float:
    """Top-1 error of `model` in eval mode on (x, y)."""
    was_training = model.training
    model.eval()
    wrong = 0
    for i in range(0, len(y), batch_size):
        xb = x[i : i + batch_size]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            wrong += int((model(xb).argmax(1) != y[i : i + batch_size]).sum())
    model.train(was_training)
    return wrong / len(y)


def eval_subsets(data: TensorData, recipe: Recipe):
    """`((x, y), (x, y))`: the fixed training subset and the test images each point evaluates."""
    n_tr = min(recipe.train_eval_size, len(data.train_y))
    n_te = min(recipe.test_eval_size, len(data.test_y))
    return (data.train_x[:n_tr], data.train_y[:n_tr]), (data.test_x[:n_te], data.test_y[:n_te])


def train_curve(
    name: str,
    data: TensorData,
    recipe: Recipe,
    *,
    progress: bool = True,
    on_point: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Trains one net under `recipe`, evaluating every `eval_every` steps and at the end.

    Returns:
        One row per evaluation (see `CSV_FIELDS`); row 0 is the untrained net.
    """
    entry = models.get_entry(name)
    model = build(name, data, recipe).train()
    opt = make_optimizer(model, recipe)
    fixed, test = eval_subsets(data, recipe)
    kw = dict(bf16=recipe.bf16, channels_last=recipe.channels_last)
    rows: list[dict] = []
    start = time.perf_counter()

    def point(step: int, lr: float, loss: float, running: float) -> None:
        row = dict(
            model=name,
            depth=entry.depth,
            skip=entry.spec.skip,
            iteration=step,
            lr=lr,
            loss=loss,
            running_train_error=running,
            train_error=error_rate(model, *fixed, **kw),
            test_error=error_rate(model, *test, **kw),
            elapsed_s=round(time.perf_counter() - start, 2),
        )
        rows.append(row)
        if on_point:
            on_point(row)

    point(0, recipe.lr_at(0), float("nan"), float("nan"))
    seen = wrong = 0
    loss_sum = 0.0
    bar = tqdm(total=recipe.iterations, desc=f"{name:>10}", disable=not progress, leave=True)
    stream = batches(data, recipe)
    for step in range(recipe.iterations):
        x, y = next(stream)
        lr = recipe.lr_at(step)
        loss, mistakes = train_step(model, opt, x, y, lr, recipe.bf16)
        if not math.isfinite(loss):
            raise ResNetError(f"{name}: the loss diverged at step {step} (lr {lr:g})")
        seen, wrong, loss_sum = seen + len(y), wrong + mistakes, loss_sum + loss * len(y)
        bar.update(1)
        done = step + 1
        if done % recipe.eval_every == 0 or done == recipe.iterations:
            point(done, lr, loss_sum / seen, wrong / seen)
            bar.set_postfix(
                train_err=f"{rows[-1]['train_error']:.3f}", test_err=f"{rows[-1]['test_error']:.3f}"
            )
            seen = wrong = 0
            loss_sum = 0.0
    bar.close()
    return rows


@dataclass
class DegradationResult:
    """Every evaluation point of every run, the verdict and what produced them."""

    rows: list[dict]
    verdict: dict
    recipe: Recipe
    depths: list[int]
    data: str
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        """What `verdict.json` holds: the verdict, the recipe, and where it ran."""
        return dict(
            verdict=self.verdict,
            recipe=asdict(self.recipe),
            depths=self.depths,
            data=self.data,
            seconds=self.seconds,
            torch=torch.__version__,
            threads=torch.get_num_threads(),
        )


def final_errors(rows: list[dict]) -> dict[str, dict]:
    """The last evaluation of each run: {name: row}."""
    last: dict[str, dict] = {}
    for r in rows:
        last[r["model"]] = r
    return last


def verdict(rows: list[dict], depths: Sequence[int], family: str = "resnet") -> dict:
    """Does the deepest plain net end with a higher training error than the shallowest, and does
    the deepest residual net end at or below the shallowest residual one?"""
    last = final_errors(rows)
    lo, hi = min(depths), max(depths)
    res_lo, res_hi = f"{family}{lo}", f"{family}{hi}"
    pl_lo, pl_hi = models.plain_name(res_lo), models.plain_name(res_hi)
    table = []
    for d in sorted(depths):
        r, p = last[f"{family}{d}"], last[models.plain_name(f"{family}{d}")]
        table.append(
            dict(
                depth=d,
                plain_train=p["train_error"],
                plain_test=p["test_error"],
                residual_train=r["train_error"],
                residual_test=r["test_error"],
            )
        )
    degr = last[pl_hi]["train_error"] - last[pl_lo]["train_error"]
    fix = last[res_hi]["train_error"] - last[res_lo]["train_error"]
    return dict(
        shallow=lo,
        deep=hi,
        iterations=last[res_lo]["iteration"],
        table=table,
        plain_degrades=bool(degr > 0),
        plain_train_gap=degr,
        residual_not_worse=bool(fix <= 0),
        residual_train_gap=fix,
        residual_beats_plain_at_depth=bool(
            last[res_hi]["train_error"] < last[pl_hi]["train_error"]
        ),
        training_error="eval-mode error on a fixed subset of the training set (no augmentation)",
    )


def verdict_markdown(v: dict) -> str:
    """The verdict as a markdown table plus the two answers."""
    pct = lambda e: f"{100 * e:.2f}"  # noqa: E731
    lines = [
        f"Final errors (%) after {v['iterations']} iterations; "
        f"training error = {v['training_error']}.",
        "",
        "| depth | plain train | plain test | residual train | residual test |",
        "|---:|---:|---:|---:|---:|",
    ]
    for t in v["table"]:
        lines.append(
            f"| {t['depth']} | {pct(t['plain_train'])} | {pct(t['plain_test'])} | "
            f"{pct(t['residual_train'])} | {pct(t['residual_test'])} |"
        )
    yes = lambda b: "**yes**" if b else "**no**"  # noqa: E731
    lo, hi = v["shallow"], v["deep"]
    lines += [
        "",
        f"- plain-{hi} ends with a higher training error than plain-{lo} (degradation): "
        f"{yes(v['plain_degrades'])} ({100 * v['plain_train_gap']:+.2f} points)",
        f"- resnet-{hi} ends at or below resnet-{lo}: {yes(v['residual_not_worse'])} "
        f"({100 * v['residual_train_gap']:+.2f} points)",
        f"- resnet-{hi} below plain-{hi}: {yes(v['residual_beats_plain_at_depth'])}",
    ]
    return "\n".join(lines) + "\n"


def write_curves_csv(path: Path, rows: list[dict]) -> Path:
    """Writes every evaluation point (`CSV_FIELDS`, one row each) as CSV."""
    return write_metrics_csv(path, rows, CSV_FIELDS, lineterminator="\n")


def plot_error_curves(rows: list[dict], key: str, title: str, path: Path) -> None:
    """Error vs iteration: residual solid, plain dashed, one colour per depth (Fig. 6)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    depths = sorted({r["depth"] for r in rows})
    colours = plt.cm.viridis([i / max(len(depths) - 1, 1) * 0.85 for i in range(len(depths))])
    for name in dict.fromkeys(r["model"] for r in rows):
        pts = [r for r in rows if r["model"] == name]
        d, skip = pts[0]["depth"], pts[0]["skip"]
        ax.plot(
            [p["iteration"] for p in pts],
            [100 * p[key] for p in pts],
            ls="-" if skip else "--",
            lw=2 if skip else 1.5,
            color=colours[depths.index(d)],
            label=f"{'resnet' if skip else 'plain'}-{d}",
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(ncol=2, fontsize=8)
    tops = [100 * r[key] for r in rows if r["iteration"] > 0]
    if tops:
        ax.set_ylim(0, min(100, max(tops) * 1.1))
    save_figure(fig, path)


def run_degradation(
    data: TensorData,
    depths: Sequence[int],
    recipe: Recipe,
    out: str | Path,
    *,
    family: str = "resnet",
    progress: bool = True,
) -> DegradationResult:
    """Trains the plain and residual twin of each depth and writes the experiment's files.

    Writes to `out`: curves.csv (every evaluation point; rewritten after each run, so a stopped
    experiment keeps what it finished), training_error.png, test_error.png, verdict.md and
    verdict.json.

    Args:
        data: the data set in memory.
        depths: at least two depths of `family` (e.g. 20, 56 for resnet20/plain20, resnet56/...).
        recipe: the shared training recipe.
        out: output folder.
        family: "resnet" (CIFAR option-A nets and their plain twins) or "preact_resnet".
        progress: tqdm bars.
    """
    depths = sorted(set(int(d) for d in depths))
    if len(depths) < 2:
        raise ResNetError("the degradation experiment needs at least two depths")
    nets = twin_names(depths, family)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    seconds: dict[str, float] = {}
    for name, _, _ in nets:
        t0 = time.perf_counter()
        rows += train_curve(name, data, recipe, progress=progress)
        seconds[name] = round(time.perf_counter() - t0, 1)
        write_curves_csv(out / "curves.csv", rows)
    v = verdict(rows, depths, family)
    result = DegradationResult(rows, v, recipe, depths, data.name, seconds)
    label = f"{data.name}, {recipe.iterations} iterations, batch {recipe.batch_size}"
    plot_error_curves(rows, "train_error", f"Training error ({label})", out / "training_error.png")
    plot_error_curves(rows, "test_error", f"Test error ({label})", out / "test_error.png")
    atomic_write_text(out / "verdict.md", verdict_markdown(v))
    write_json(out / "verdict.json", result.to_json())
    return result
