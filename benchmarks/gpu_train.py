"""GPU training benchmark (run by benchmarks/gpu.sh on a lent GPU machine, <= 8 minutes).

1. resnet50 training img/s at 224 px on synthetic data: ours (resnet.engine.Trainer: data on the
   device, bf16 autocast, channels_last, optionally torch.compile) versus a plain PyTorch loop
   with torchvision's resnet50 (fp32 NCHW, and bf16 + channels_last), same batch, same run.
2. Fashion-MNIST time to 94 % test accuracy with our trainer on the GPU.

Writes benchmarks/results/gpu.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date

import torch
import torch.nn.functional as F

from resnet.engine import Trainer
from resnet.engine.config import TrainConfig
from resnet.storage import atomic_write_text


def reference_img_s(batch: int, steps: int, warmup: int, bf16: bool) -> float:
    import torchvision

    model = torchvision.models.resnet50().cuda()
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def ours_img_s(batch: int, steps: int, warmup: int, compile: bool) -> float:
    cfg = TrainConfig().updated(
        {
            "model": {"name": "resnet50"},
            "data": {
                "source": "synthetic",
                "batch_size": batch,
                "subset": batch * 8,
                "augment": "none",
            },
            "optim": {"label_smoothing": 0.0},
            "run": {"epochs": 1, "out": tempfile.mkdtemp(), "device": "cuda", "compile": compile},
        }
    )
    tr = Trainer(cfg, progress=False, log=lambda *a: None)
    tr._train_mode()
    loader = tr.train_loader
    times = {}

    class Cycle:
        def set_epoch(self, e):
            loader.set_epoch(e)

        def __len__(self):
            return warmup + steps + 1  # one more batch: fetching it closes the timed steps

        def __iter__(self):
            i = 0
            while True:
                for b in loader:
                    if i in (warmup, warmup + steps):
                        torch.cuda.synchronize()
                        times["t0" if i == warmup else "t1"] = time.perf_counter()
                    yield b
                    i += 1
                    if i > warmup + steps:
                        return

    tr.train_loader = Cycle()
    tr.steps_per_epoch = len(tr.train_loader)  # the loop trains exactly this many batches
    tr.train_one_epoch(0)
    return steps * batch / (times["t1"] - times["t0"])


def time_to_accuracy(target: float, epochs: int) -> dict:
    out = tempfile.mkdtemp()
    cfg = TrainConfig().updated(
        {
            "model": {"name": "resnet20"},
            "data": {"batch_size": 256},
            "optim": {"lr": 0.2, "label_smoothing": 0.1},
            "run": {"epochs": epochs, "out": out, "device": "cuda", "tta": True},
        }
    )
    t0 = time.perf_counter()
    tr = Trainer(cfg, progress=False, log=print)
    reached = None
    for epoch in range(epochs):
        tr.train_one_epoch(epoch)
        acc = tr.evaluate("test")["top1"]  # reporting only: nothing is chosen on it
        if reached is None and acc >= target:
            reached = time.perf_counter() - t0
            print(f"reached {100 * target:.1f}% test accuracy after epoch {epoch + 1}")
    return {
        "target": target,
        "seconds_to_target": reached,
        "final_test_acc": acc,
        "epochs": epochs,
        "total_seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--fm-epochs", type=int, default=15)
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no GPU"
    res = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "batch": args.batch,
        "command": "bash benchmarks/gpu.sh",
    }
    res["reference_fp32_img_s"] = reference_img_s(args.batch, args.steps, args.warmup, False)
    res["reference_bf16_cl_img_s"] = reference_img_s(args.batch, args.steps, args.warmup, True)
    res["ours_img_s"] = ours_img_s(args.batch, args.steps, args.warmup, False)
    try:
        res["ours_compiled_img_s"] = ours_img_s(args.batch, args.steps, args.warmup, True)
    except Exception as e:  # report, keep the other figures
        res["ours_compiled_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    res["ratio_vs_fp32_reference"] = res["ours_img_s"] / res["reference_fp32_img_s"]
    res["ratio_vs_bf16_reference"] = res["ours_img_s"] / res["reference_bf16_cl_img_s"]
    print(json.dumps(res, indent=2), flush=True)
    res["fashion_mnist"] = time_to_accuracy(0.94, args.fm_epochs)
    atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
