"""ResNets against their successors on this machine: two `resnet compare` runs, one report.

(a) Fashion-MNIST from scratch at a fixed time budget per run (10,000 training images, one seed);
(b) scikit-learn's real handwritten digits (8x8, upsampled to 28x28 grey, written as a train/test
image folder) from scratch, two seeds. Each part is one `resnet compare` command, run in a
subprocess with one PyTorch thread (the machine's two cores are shared); running this script
again resumes both (finished runs are kept). The tables and plots are copied to
docs/figures/architectures/ and the figures of both to benchmarks/results/architectures.json.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/architectures.py [--budget 60s]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "arch"
FIGURES = ROOT / "docs" / "figures" / "architectures"
RESULTS = ROOT / "benchmarks" / "results" / "architectures.json"
FMNIST = "resnet20,resnet56,wrn_16_4,tv:mobilenet_v3_large,tv:efficientnet_b0"
# The nets of 0.2-1 GMAC per 28-px image (stride-1 stems) train only on the digits: every run
# trains at least one epoch, and on 10,000 Fashion-MNIST images that alone takes 10-40 minutes
# per run on one shared core.
# Inference: the fastest of these that agrees with fp32 (OpenVINO int8 is left out for time:
# its NNCF calibration takes minutes per model here).
BACKENDS = "eager_fp32,channels_last,onnxruntime_fp32,onnxruntime_int8,openvino_fp32"
MODELS = {
    "fashion_mnist": FMNIST,
    "digits": "resnet20,resnet56,wrn_16_4,resnet18,resnext50_32x4d,tv:mobilenet_v3_large,"
    "tv:efficientnet_b0,tv:regnet_y_800mf,tv:convnext_tiny",
}
# ViT-B/16 needs at least 16-px patches of a 224-px image; at 28 px it would see 1 token, so it is
# compared only where a 224-px image makes sense (the command in docs/architectures.md).


def write_digits(folder: Path, test_fraction: float = 0.3, seed: int = 0) -> Path:
    """scikit-learn's 1,797 digits as `folder/{train,test}/<digit>/<i>.png` (28x28 grey)."""
    if (folder / "test").is_dir():
        return folder
    d = load_digits()
    images = (d.images / 16.0 * 255).astype(np.uint8)
    idx = np.arange(len(images))
    train, test = train_test_split(
        idx, test_size=test_fraction, stratify=d.target, random_state=seed
    )
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, rows in (("train", train), ("test", test)):
        for i in rows:
            path = tmp / split / f"digit{d.target[i]}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).resize((28, 28), Image.BILINEAR).save(path)
    tmp.rename(folder)
    return folder


def compare(
    data: str, models: str, out: Path, seeds: int, budget: str, extra: list[str]
) -> list[str]:
    """Runs one `resnet compare` (resuming what an earlier call left); returns its command."""
    cmd = [
        "resnet", "compare", "--data", data, "--models", models, "--seeds", str(seeds),
        "--time-budget", budget, "--precision", "fp32", "--backends", BACKENDS,
        "--out", str(out.relative_to(ROOT)),
        *extra,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    exe = str(Path(sys.executable).with_name("resnet"))
    subprocess.run([exe, *cmd[1:]], cwd=ROOT, env=env, check=True)
    return cmd


def main(argv: list[str] | None = None) -> int:
    """Runs both comparisons, then gathers their tables, plots and figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", default="60s", help="training time per run (default 60s)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    digits = write_digits(OUT / "digits")
    parts = {
        "fashion_mnist": ("fashion-mnist", OUT / "fmnist", 1, ["--subset", "10000"]),
        "digits": (str(digits.relative_to(ROOT)), OUT / "digits-compare", 2, []),
    }
    report = {"date": time.strftime("%Y-%m-%d"), "parts": {}}
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name, (data, out, seeds, extra) in parts.items():
        cmd = compare(data, MODELS[name], out, seeds, args.budget, extra)
        record = json.loads((out / "compare.json").read_text())
        report["parts"][name] = {"command": "OMP_NUM_THREADS=1 " + " ".join(cmd), **record}
        for f in ["compare.md", *[q.name for q in out.glob("*.png")]]:
            shutil.copy(out / f, FIGURES / f"{name}_{f}")
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS.relative_to(ROOT)} and {FIGURES.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
