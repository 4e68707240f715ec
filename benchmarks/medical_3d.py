"""Peak memory and speed of a 3-D ResNet training step on CT-sized volumes, on this CPU.

Each setting runs in a fresh process (peak resident memory is per process): resnet18_3d, one
input channel, 64^3 volumes, SGD; fp32 or bf16 autocast, with or without activation
checkpointing. Random volumes: the cost of a step does not depend on the values.

    .venv/bin/python benchmarks/medical_3d.py [--size 64] [--steps 3] \
        [--out benchmarks/results/medical_3d.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date

import torch

import resnet
from resnet.storage import write_json

SETTINGS = [  # (batch, precision, checkpointing)
    (8, "fp32", False),
    (8, "fp32", True),
    (4, "fp32", False),
    (4, "bf16", False),
]


def one(model: str, size: int, batch: int, precision: str, ckpt: bool, steps: int) -> dict:
    """One setting, measured in this process: peak RSS (MiB) and volumes per second."""
    torch.manual_seed(0)
    m = resnet.create(model, in_chans=1, num_classes=2, grad_checkpointing=ckpt)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 1, size, size, size), torch.randint(0, 2, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(
        model=model,
        size=size,
        batch=batch,
        precision=precision,
        checkpointing=ckpt,
        peak_rss_mib=round(peak),
        volumes_per_s=round(batch / seconds, 3),
    )


def main() -> None:
    """Runs every setting in its own process and writes the JSON and a table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18_3d")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/medical_3d.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        batch, precision, ckpt = json.loads(args.one)
        print(json.dumps(one(args.model, args.size, batch, precision, ckpt, args.steps)))
        return
    rows = []
    for batch, precision, ckpt in SETTINGS:
        cmd = [
            sys.executable,
            __file__,
            "--model",
            args.model,
            "--size",
            str(args.size),
            "--steps",
            str(args.steps),
            "--one",
            json.dumps([batch, precision, ckpt]),
        ]
        row = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )
        print(
            f"batch {batch}, {precision}, checkpointing {ckpt}: peak {row['peak_rss_mib']} "
            f"MiB, {row['volumes_per_s']} volumes/s"
        )
        rows.append(row)
    write_json(
        args.out,
        {
            "rows": rows,
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}",
            "command": "python benchmarks/medical_3d.py",
        },
    )


if __name__ == "__main__":
    main()
