"""Kills a training run at random moments (SIGKILL), resumes it each time, and checks that the
final weights equal an uninterrupted run's bit for bit.

Checkpoint writes are slowed down in the harness (each `last.pt` / `best.pt` write sleeps in the
middle of writing its temp file) so that many kills land inside a write: the atomic
write-then-rename must leave the previous checkpoint whole every time.

    .venv/bin/python benchmarks/chaos.py --kills 20   # -> benchmarks/results/reliability.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# The run: small enough for a few seconds per epoch on 2 cores, on data that needs no download.
TRAIN = ["train", "--data", "synthetic", "--subset", "512", "--image-size", "16"]
TRAIN += ["--model", "resnet20", "--batch-size", "64", "--quiet"]
TRAIN += ["--precision", "fp32", "--device", "cpu", "--no-channels-last"]
# Runs `resnet` with every checkpoint write slowed: the kill windows inside writes are wide.
WRAPPER = """
import sys, time
import resnet.engine.checkpoint as ck
from resnet import storage

def slow(path, write):
    def slowly(f):
        write(f)
        f.flush()
        time.sleep(float(sys.argv[1]))
    return storage.atomic_write_bytes(path, slowly)

ck.atomic_write_bytes = slow
from resnet.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _run(args: list[str], delay: float) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", WRAPPER, str(delay), *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "last.pt", weights_only=True)["model"]


def _writing(out: Path) -> bool:
    """Whether a checkpoint's temp file exists: the kill lands inside a write."""
    return any(out.glob(".*.pt.*.tmp"))


def chaos(kills: int, delay: float, seed: int, work: Path, epochs: int) -> dict:
    """The uninterrupted reference run, then a run killed `kills` times and resumed."""
    ref, out = work / "reference", work / "killed"
    train = [*TRAIN, "--epochs", str(epochs)]
    t0 = time.perf_counter()
    p = _run([*train, "--out", str(ref)], delay)
    if p.wait() != 0:
        raise SystemExit(f"reference run failed: {p.stderr.read().decode()[-400:]}")
    reference_seconds = time.perf_counter() - t0
    rng = random.Random(seed)
    landed = {"inside_write": 0, "elsewhere": 0}
    done, lives = 0, 0
    while done < kills:
        resume = (out / "last.pt").exists()
        args = ["train", "--resume", str(out)] if resume else [*train, "--out", str(out)]
        p = _run(args, delay)
        time.sleep(rng.uniform(3.0, 3.0 + reference_seconds / 4))
        lives += 1
        if p.poll() is not None:  # finished (or failed) before the kill
            if p.returncode != 0:
                raise SystemExit(f"a resumed run failed: {p.stderr.read().decode()[-400:]}")
            break
        landed["inside_write" if _writing(out) else "elsewhere"] += 1
        p.send_signal(signal.SIGKILL)
        p.wait()
        done += 1
    while True:  # resume to the end
        p = _run(["train", "--resume", str(out)], delay)
        code = p.wait()
        err = p.stderr.read().decode()
        if code == 0 or "already finished" in err:
            break
        raise SystemExit(f"the final resume failed: {err[-400:]}")
    a, b = _weights(ref), _weights(out)
    equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return {
        "kills": done,
        "lives": lives,
        "kills_inside_checkpoint_writes": landed["inside_write"],
        "kills_elsewhere": landed["elsewhere"],
        "final_weights_bit_identical": equal,
        "reference_seconds": round(reference_seconds, 1),
        "checkpoint_write_delay_s": delay,
        "command": "resnet " + " ".join(train),
    }


def main() -> None:
    """Runs the chaos test and writes its result."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--delay", type=float, default=1.0, help="seconds each checkpoint write sleeps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=24, help="long enough to survive the kills")
    ap.add_argument("--out", default="benchmarks/results/reliability.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        result = chaos(args.kills, args.delay, args.seed, work, args.epochs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result |= {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    path = Path(args.out)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("sigkill_resume", []).append(result)  # one entry per run of this script
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
