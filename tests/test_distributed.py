"""torch.distributed (Gloo, loopback): N processes train like one and resume across sizes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from resnet.engine.checkpoint import load_checkpoint
from resnet.engine.launch import strip_nproc


def _train(*args, timeout=300):
    r = subprocess.run(
        [sys.executable, "-m", "resnet", "train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _train_here(*args) -> None:
    """`resnet train ARGS` in this one process: the single-process runs need no interpreter of
    their own (seconds of imports each); the `--nproc 2` run keeps its processes."""
    import contextlib
    import io

    from resnet.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["train", *args])
    assert code == 0, err.getvalue()[-3000:]


@pytest.mark.slow
def test_two_processes_match_one_and_resume_under_one(digits_folder, tmp_path):
    # 240 training images, global batch 80: three optimiser steps an epoch.
    common = [
        "--data",
        str(digits_folder),
        "--batch-size",
        "80",
        "--seed",
        "1",
        "--quiet",
        "--precision",
        "fp32",
        "--opt",
        "norm=group",
        "--lr",
        "0.002",
    ]
    _train_here(*common, "--epochs", "1", "--out", str(tmp_path / "one"))
    two = _train(*common, "--epochs", "1", "--out", str(tmp_path / "two"), "--nproc", "2")
    assert "2 processes" in two.stdout
    a = load_checkpoint(tmp_path / "one" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "last.pt")
    diff = max(
        (a["model"][k].double() - b["model"][k].double()).abs().max().item() for k in a["model"]
    )
    assert diff <= 1e-5, diff
    assert a["history"][0]["train_loss"] == pytest.approx(b["history"][0]["train_loss"], abs=1e-5)
    # Only rank 0 wrote: exactly one run folder, no stray folders from rank 1.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits", "one", "two"]
    # The 2-process checkpoint resumes under 1 process (a different world size).
    _train_here("--resume", str(tmp_path / "two"), "--epochs", "2")
    c = load_checkpoint(tmp_path / "two" / "last.pt")
    assert c["epoch"] == 1 and len(c["history"]) == 2
    assert c["history"][0] == b["history"][0]
    assert all(torch.isfinite(v).all() for v in c["model"].values())


def test_nproc_is_stripped_for_the_launched_command():
    assert strip_nproc(["train", "--nproc", "2", "--epochs", "3"]) == ["train", "--epochs", "3"]
    assert strip_nproc(["train", "--nproc=4"]) == ["train"]


def test_tensor_loader_shards_cover_the_global_batch():
    from resnet.data.loaders import TensorLoader

    x, y = torch.randn(40, 1, 4, 4), torch.arange(40)
    shards = [
        list(TensorLoader(x, y, batch_size=8, shuffle=True, seed=2, rank=r, world_size=4))
        for r in range(4)
    ]
    full = list(TensorLoader(x, y, batch_size=8, shuffle=True, seed=2))
    for i, (_, yb) in enumerate(full):
        assert torch.equal(torch.cat([s[i][1] for s in shards]), yb)
