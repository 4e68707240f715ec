"""Are the validation images closer to the training images than the test images are?

A validation split carved from the training set can overstate test accuracy when it shares
near-duplicates with the images left for training. This prints, for the validation split and
the test set, the share of images whose nearest training image (root-mean-square difference of
the normalised pixels) lies within a few distances, and the median distance.

    .venv/bin/python benchmarks/split_overlap.py [--val-split 0.1]
"""

from __future__ import annotations

import argparse

import torch

from resnet.data import DataConfig, load_data


def nearest_distance(queries: torch.Tensor, reference: torch.Tensor, chunk: int = 1000):
    """RMS pixel distance of each query to its nearest reference image."""
    r2 = (reference * reference).sum(1)
    out = []
    for i in range(0, len(queries), chunk):
        q = queries[i : i + chunk]
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ reference.T + r2
        out.append(d2.clamp_min(0).min(1).values.sqrt())
    return torch.cat(out) / reference.shape[1] ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--val-split", type=float, default=0.1)
    args = ap.parse_args()
    data = load_data(DataConfig(source=args.data, val_split=args.val_split))
    if data.val is None or data.test is None or data.train.images is None:
        raise SystemExit("needs an in-memory data set with validation and test splits")
    train = data.train.images.flatten(1)
    dist = {s: nearest_distance(getattr(data, s).images.flatten(1), train) for s in ("val", "test")}
    print(f"{len(train)} training, {len(dist['val'])} validation, {len(dist['test'])} test images")
    print("| nearest training image closer than | validation | test |\n|---:|---:|---:|")
    for t in (0.05, 0.1, 0.2, 0.3):
        v, te = ((dist[s] < t).float().mean().item() * 100 for s in ("val", "test"))
        print(f"| {t} | {v:.2f} % | {te:.2f} % |")
    print(f"| median distance | {dist['val'].median():.3f} | {dist['test'].median():.3f} |")


if __name__ == "__main__":
    main()
