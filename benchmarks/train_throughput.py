"""Training throughput of the default model: our loop versus a plain PyTorch loop, same run.

The baseline is what a tutorial writes: torchvision's FashionMNIST + per-image transforms + a
DataLoader, fp32, NCHW, the same model (resnet20, 1 input channel, 10 classes) and the same
batch size. Ours is `resnet.train` on its defaults (in-memory tensors, batch
augmentation, bf16 autocast where the CPU has it, channels_last).

    .venv/bin/python benchmarks/train_throughput.py [--steps 150] \
        [--demo-summary runs/demo/summary.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

import resnet
from resnet.data.fashion_mnist import DEBIAN_DIR, FILES
from resnet.engine import Callback, StepProgress, train
from resnet.engine.config import TrainConfig
from resnet.storage import atomic_write_text


def unpack_for_torchvision(root: Path) -> Path:
    """torchvision's FashionMNIST reads unpacked IDX files from <root>/FashionMNIST/raw/."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stems in FILES.values():
        for stem in stems:
            with gzip.open(DEBIAN_DIR / f"{stem}.gz") as src, open(raw / stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return root


def baseline_img_s(steps: int, batch: int, warmup: int) -> float:
    from torchvision import datasets, transforms

    root = unpack_for_torchvision(Path(tempfile.mkdtemp()))
    tf = transforms.Compose(
        [
            transforms.RandomCrop(28, padding=3),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.2860,), (0.3530,)),
        ]
    )
    ds = datasets.FashionMNIST(str(root), train=True, transform=tf, download=False)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=2, drop_last=True, persistent_workers=True
    )
    torch.manual_seed(0)
    model = resnet.create("resnet20", in_chans=1, num_classes=10)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    model.train()
    seen, t0 = 0, None
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            t0, seen = time.perf_counter(), 0
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
        if i == warmup + steps - 1:
            break
    shutil.rmtree(root, ignore_errors=True)
    return seen / (time.perf_counter() - t0)


def ours_img_s(steps: int, batch: int, warmup: int) -> float:
    """Steps `warmup`..`warmup + steps` of the default run, timed by a callback that then
    stops the run (the public training API; the loop itself is untouched)."""

    class Timer(Callback):
        def on_step(self, event: StepProgress) -> None:
            if event.global_step == warmup:
                self.t0 = time.perf_counter()
            elif event.global_step == warmup + steps:
                self.t1 = time.perf_counter()
                self.request_stop()

    cfg = TrainConfig().updated(
        {"data": {"batch_size": batch}, "run": {"out": tempfile.mkdtemp(), "epochs": 1}}
    )
    timer = Timer()
    train(cfg, callbacks=[timer], progress=False, log=None)
    return steps * batch / (timer.t1 - timer.t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--demo-summary", default="runs/demo/summary.json")
    ap.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    base = baseline_img_s(args.steps, args.batch, args.warmup)
    print(f"baseline (torchvision FashionMNIST + DataLoader, fp32): {base:.0f} img/s")
    ours = ours_img_s(args.steps, args.batch, args.warmup)
    print(f"ours (in-memory, batch augmentation, bf16 autocast, channels_last): {ours:.0f} img/s")
    print(f"ratio: {ours / base:.2f}x")
    result = {
        "ours_img_s": round(ours, 1),
        "baseline_img_s": round(base, 1),
        "ratio": round(ours / base, 3),
        "batch_size": args.batch,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "date": date.today().isoformat(),
        "command": "make demo; .venv/bin/python benchmarks/train_throughput.py",
    }
    summary = Path(args.demo_summary)
    if summary.exists():
        s = json.loads(summary.read_text())
        result |= {
            "demo_test_acc": s.get("test_acc"),
            "demo_seconds": s.get("train_seconds"),
            "demo_epochs": s.get("epochs"),
        }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
