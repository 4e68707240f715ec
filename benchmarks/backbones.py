"""Backbone benchmark: mAP and mIoU on the composite set after a fixed CPU budget.

Compares, with everything else equal (data, seed, steps, batch, schedule):
  detection (FCOS):    resnet18 + FPN,  plain18 + FPN,  resnet18 without FPN (1x1 projections)
  segmentation (U-Net): resnet18,  plain18,  resnet18 without the long U-Net skips
and, with --heads, the training step time of FCOS, RetinaNet and Faster R-CNN on one backbone.

    .venv/bin/python benchmarks/backbones.py                # all six runs, ~12 min on 2 cores
    .venv/bin/python benchmarks/backbones.py --heads-only   # just the head timing (~1 min)

Writes benchmarks/results/backbones.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

from resnet.data.composite import CompositeSet
from resnet.normalization import IMAGENET_MEAN, IMAGENET_STD
from resnet.storage import atomic_write_text
from resnet.tasks import Backbone, train_task
from resnet.tasks.detection import Detector

RUNS = [
    ("detect", "resnet18 + FPN", dict(model="resnet18", neck="fpn")),
    ("detect", "plain18 + FPN", dict(model="plain18", neck="fpn")),
    ("detect", "resnet18, no FPN", dict(model="resnet18", neck="none")),
    ("segment", "resnet18 U-Net", dict(model="resnet18", long_skips=True)),
    ("segment", "plain18 U-Net", dict(model="plain18", long_skips=True)),
    ("segment", "resnet18, no long skips", dict(model="resnet18", long_skips=False)),
]


def time_heads(size: int, batch: int, steps: int = 3) -> dict[str, float]:
    """Seconds per training step of FCOS, RetinaNet and Faster R-CNN on one resnet18 + FPN."""
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    ds = CompositeSet(batch, size, split="val", seed=0)
    images = [ds[i][0].float() / 255 for i in range(batch)]
    targets = [dict(boxes=ds[i][1]["boxes"], labels=ds[i][1]["labels"]) for i in range(batch)]
    common = dict(
        min_size=size,
        max_size=2 * size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    ratios = ((0.5, 1.0, 2.0),) * 3
    sizes = tuple((s, round(s * 1.26), round(s * 1.59)) for s in (16, 32, 64))

    def fpn():
        return Backbone("resnet18", (2, 3, 4)).fpn(64)

    models = {
        "FCOS (4 convs/tower)": Detector("resnet18", 5, head_convs=4, size=size),
        "FCOS (2 convs/tower, ours)": Detector("resnet18", 5, head_convs=2, size=size),
        "RetinaNet": RetinaNet(fpn(), 6, anchor_generator=AnchorGenerator(sizes, ratios), **common),
        "Faster R-CNN": FasterRCNN(
            fpn(),
            6,
            rpn_anchor_generator=AnchorGenerator(sizes, ratios),
            box_roi_pool=MultiScaleRoIAlign(["p3", "p4", "p5"], 7, 2),
            **common,
        ),
    }
    out = {}
    for name, model in models.items():
        torch.manual_seed(0)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        times = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            loss = sum(model(images, targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        out[name] = round(sorted(times[1:])[len(times[1:]) // 2], 3)  # median after a warm-up
        print(f"{name:28s} {out[name]:.3f} s/step", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=120, help="training steps per run")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=128, help="canvas side")
    p.add_argument("--num-val", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heads-only", action="store_true", help="only time the detection heads")
    p.add_argument("--no-heads", action="store_true", help="skip the head timing")
    p.add_argument(
        "--only",
        choices=["detect", "segment"],
        help="run one task's three runs; the other's are kept from --out",
    )
    p.add_argument("--out", default="benchmarks/results/backbones.json")
    p.add_argument("--runs-dir", default="runs/bench-backbones")
    args = p.parse_args(argv)

    result = dict(
        date=datetime.date.today().isoformat(),
        machine=platform.machine(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        command=" ".join(sys.argv),
        budget=dict(
            steps=args.steps,
            batch_size=args.batch_size,
            size=args.size,
            train_images=args.steps * args.batch_size,
            val_images=args.num_val,
        ),
        runs=[],
    )
    if not args.no_heads:
        result["head_step_seconds"] = time_heads(args.size, args.batch_size)
    if not args.heads_only:
        for task, label, options in RUNS:
            if args.only and task != args.only:
                continue
            name = label.replace(" ", "").replace(",", "-").replace("+", "-")
            cfg = dict(
                options,
                num_train=args.steps * args.batch_size,
                num_val=args.num_val,
                size=args.size,
                batch_size=args.batch_size,
                max_steps=args.steps,
                seed=args.seed,
                progress=False,
                out=f"{args.runs_dir}/{task}-{name}",
            )
            t0 = time.perf_counter()
            s = train_task(task, cfg)
            row = dict(
                task=task,
                label=label,
                **options,
                **s["final"],
                first_loss=round(s["first_loss"], 4),
                last_loss=round(s["last_loss"], 4),
                train_seconds=s["train_seconds"],
                train_img_s=s["train_img_s"],
                wall_seconds=round(time.perf_counter() - t0, 1),
            )
            result["runs"].append(row)
            metric = ("val_map", "val_map50") if task == "detect" else ("val_miou", "val_dice")
            print(
                f"{task:8s} {label:26s} {metric[0]}={row[metric[0]]:.4f} "
                f"{metric[1]}={row[metric[1]]:.4f}  loss {row['first_loss']:.3f} -> "
                f"{row['last_loss']:.3f}  {row['train_seconds']:.0f} s",
                flush=True,
            )
    out = Path(args.out)
    if out.exists() and args.heads_only:  # keep earlier runs, refresh the timing
        old = json.loads(out.read_text())
        old["head_step_seconds"] = result["head_step_seconds"]
        result = old
    elif out.exists() and args.only:  # keep the other task's runs (and the timing)
        old = json.loads(out.read_text())
        kept = [r for r in old["runs"] if r["task"] != args.only]
        result["runs"] = sorted(kept + result["runs"], key=lambda r: r["task"])
        result.setdefault("head_step_seconds", old.get("head_step_seconds"))
        result["commands"] = old.get("commands", [old.get("command")]) + [result["command"]]
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
