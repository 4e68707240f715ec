"""1 process vs 2 Gloo processes on this machine: training img/s of the default model.

Same global batch (128) and data (a 16,384-image Fashion-MNIST subset, one epoch); one process
gets both cores (2 threads), two processes one core each. Writes benchmarks/results/ddp_cpu.json.

    .venv/bin/python benchmarks/ddp_cpu.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from resnet.engine.checkpoint import load_checkpoint
from resnet.storage import atomic_write_text


def run(nproc: int, threads: int, subset: int) -> float:
    out = Path(tempfile.mkdtemp()) / "run"
    cmd = [
        sys.executable,
        "-m",
        "resnet",
        "train",
        "--subset",
        str(subset),
        "--epochs",
        "1",
        "--val-split",
        "0.02",
        "--quiet",
        "--out",
        str(out),
    ]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return load_checkpoint(out / "last.pt")["history"][0]["img_s"]


def main() -> None:
    subset = 16384
    one = run(1, 2, subset)
    two = run(2, 1, subset)
    res = {
        "one_process_img_s": round(one, 1),
        "two_processes_img_s": round(two, 1),
        "ratio": round(two / one, 3),
        "cores": os.cpu_count(),
        "subset": subset,
        "date": date.today().isoformat(),
        "command": "python benchmarks/ddp_cpu.py",
    }
    atomic_write_text("benchmarks/results/ddp_cpu.json", json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
