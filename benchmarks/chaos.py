"""Kills, full disks and dead processes during training; each run is resumed and its final
weights compared bit for bit with an uninterrupted run's.

Three modes, each writing its entry in benchmarks/results/reliability.json:

    .venv/bin/python benchmarks/chaos.py --kills 20  # "sigkill_resume_20": one run, 20 kills
    .venv/bin/python benchmarks/chaos.py --torchrun  # "torchrun_rank_kill": a rank killed
    .venv/bin/python benchmarks/chaos.py --tmpfs     # "full_disk": a real tmpfs fills mid-run

SIGKILLs: checkpoint writes are slowed down in the harness (each `last.pt` / `best.pt` write
sleeps in the middle of writing its temp file) and most kills wait for such a write, so the
atomic write-then-rename must leave the previous checkpoint whole every time. Each life of the
run is let to finish 0 to 2 checkpoints first, so the run moves on between kills.
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
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _run(args: list[str], delay: float = 0.0) -> subprocess.Popen:
    cmd = [sys.executable, "-c", WRAPPER, str(delay), *args]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(args: list[str], what: str, delay: float = 0.0) -> float:
    """Runs `resnet ARGS` to the end; its seconds (exits on failure)."""
    t0 = time.perf_counter()
    p = _run(args, delay)
    if p.wait() != 0:
        raise SystemExit(f"{what} failed: {p.stderr.read().decode()[-600:]}")
    return time.perf_counter() - t0


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "last.pt", weights_only=True)["model"]


def _same(a: Path, b: Path) -> bool:
    x, y = _weights(a), _weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _writing(out: Path, stale: set[str] = frozenset()) -> str | None:
    """The checkpoint whose temp file exists (a kill now lands inside its write), or None;
    `stale`: temp files a killed life left (the next life deletes them once it holds the lock)."""
    temps = [t for t in out.glob(".*.pt.*.tmp") if t.name not in stale]
    return temps[0].name.split(".pt.")[0].lstrip(".") + ".pt" if temps else None


def _version(path: Path) -> tuple[int, int] | None:
    """Which write of `path` is in place: (inode, mtime in ns); inode numbers alone get reused."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _wait(p: subprocess.Popen, ready, timeout: float = 600.0) -> bool:
    """Polls `ready()` every 10 ms; False if the process finished first (exits if it failed
    or time ran out)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return True
        if p.poll() is not None:
            if p.returncode != 0:
                raise SystemExit(f"a run failed: {p.stderr.read().decode()[-600:]}")
            return False
        time.sleep(0.01)
    p.kill()
    raise SystemExit(f"nothing happened in {timeout:.0f} s")


# -- one process, many SIGKILLs --------------------------------------------------------------
def _one_life(out: Path, train: list[str], delay: float, rng: random.Random) -> dict | None:
    """Starts (or resumes) the run, lets it write 0-2 checkpoints, kills it; None if it ended."""
    resume = (out / "last.pt").exists()
    stale = {t.name for t in out.glob(".*.tmp")}
    p = _run(["train", "--resume", str(out)] if resume else [*train, "--out", str(out)], delay)
    saved = rng.choices([0, 1, 2], weights=[1, 5, 4])[0]
    inside = rng.random() < 0.85
    seen = [_version(out / "last.pt")]

    def saved_enough() -> bool:
        now = _version(out / "last.pt")
        if now != seen[-1]:
            seen.append(now)
        return len(seen) > saved

    if not _wait(p, saved_enough):
        return None
    if inside:  # the next best.pt write, or the next last.pt write (best.pt just written)
        which = rng.choice(["best.pt", "last.pt"])
        if not _wait(p, lambda: _writing(out, stale) == which):
            return None
        time.sleep(rng.uniform(0.0, 0.8 * delay))
    else:
        time.sleep(rng.uniform(0.0, 2.0))
    if p.poll() is not None:
        return None
    where = _writing(out, stale)
    p.send_signal(signal.SIGKILL)
    p.wait()
    state = torch.load(out / "last.pt", weights_only=True)  # the survivor must load
    return {"inside": where, "epochs_done": state["epoch"] + 1}


def kills_in_one_run(kills: int, delay: float, seed: int, work: Path, epochs: int) -> dict:
    """The uninterrupted reference run, then one run killed `kills` times and resumed."""
    ref, out = work / "reference", work / "killed"
    train = [*TRAIN, "--epochs", str(epochs)]
    reference_seconds = _finish([*train, "--out", str(ref)], "the reference run", delay)
    rng = random.Random(seed)
    log, lives, t0 = [], 0, time.perf_counter()
    while len(log) < kills:
        lives += 1
        kill = _one_life(out, train, delay, rng)
        if kill is None:
            break  # the run finished before this kill
        log.append(kill)
    _finish(["train", "--resume", str(out)], "the final resume", delay)
    inside = [k["inside"] for k in log if k["inside"]]
    return {
        "kills": len(log),
        "lives": lives + 1,
        "kills_inside_checkpoint_writes": len(inside),
        "inside_best_pt": inside.count("best.pt"),
        "inside_last_pt": inside.count("last.pt"),
        "kills_elsewhere": len(log) - len(inside),
        "last_pt_loadable_after_every_kill": True,  # _one_life's torch.load raises otherwise
        "epochs_done_at_each_kill": [k["epochs_done"] for k in log],
        "final_weights_bit_identical": _same(ref, out),
        "temp_files_left_at_the_end": sorted(t.name for t in out.glob(".*.tmp")),
        "reference_seconds": round(reference_seconds, 1),
        "killed_run_seconds": round(time.perf_counter() - t0, 1),
        "checkpoint_write_delay_s": delay,
        "command": "resnet " + " ".join(train),
    }


# -- two processes, one SIGKILLed ----------------------------------------------------------
def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids


def _ranks(agent: int) -> dict[int, int]:
    """torchrun's workers under the agent process: {rank: pid}."""
    ranks = {}
    for pid in _children(agent):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = [e[5:] for e in env if e.startswith(b"RANK=")]
        if rank:
            ranks[int(rank[0])] = pid
    return ranks


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _rank_kill(out: Path, train: list[str], victim: int, hang_limit: float) -> dict:
    """Starts the 2-process run, SIGKILLs rank `victim` after its first checkpoint, times the
    other rank's and the job's exits."""
    p = _run([*train, "--out", str(out)])
    if not _wait(p, lambda: (out / "last.pt").exists()):
        raise SystemExit(f"the 2-process run ended early: {p.stderr.read().decode()[-600:]}")
    time.sleep(1.0)  # inside the second epoch
    ranks = _ranks(p.pid)
    os.kill(ranks[victim], signal.SIGKILL)
    t0 = time.perf_counter()
    other = ranks[1 - victim]
    while _alive(other) and time.perf_counter() - t0 < hang_limit:
        time.sleep(0.02)
    other_s = time.perf_counter() - t0
    try:
        code = p.wait(timeout=max(hang_limit - other_s, 1.0))
    except subprocess.TimeoutExpired:
        p.kill()
        code = None
    err = p.stderr.read().decode()
    return {
        "killed_rank": victim,
        "epochs_done_before_kill": torch.load(out / "last.pt", weights_only=True)["epoch"] + 1,
        "other_rank_exit_s": round(other_s, 2),
        "job_exit_s": round(time.perf_counter() - t0, 2),
        "hung": code is None,
        "exit_code": code,
        "traceback_in_stderr": "Traceback (most recent call last)" in err,
        "stderr_lines": len(err.strip().splitlines()),
    }


def torchrun_rank_kill(work: Path, epochs: int, hang_limit: float) -> dict:
    """An uninterrupted 2-process run, then per rank: a run with that rank killed, resumed
    with 2 processes; final weights compared."""
    train = [*TRAIN, "--epochs", str(epochs), "--nproc", "2"]
    ref = work / "reference2"
    reference_seconds = _finish([*train, "--out", str(ref)], "the 2-process reference")
    trials = []
    for victim in (1, 0):
        out = work / f"rank{victim}-killed"
        trial = _rank_kill(out, train, victim, hang_limit)
        t0 = time.perf_counter()
        _finish(["train", "--resume", str(out), "--nproc", "2"], "the 2-process resume")
        trial["resume_seconds"] = round(time.perf_counter() - t0, 1)
        trial["final_weights_bit_identical"] = _same(ref, out)
        trials.append(trial)
    return {
        "trials": trials,
        "reference_seconds": round(reference_seconds, 1),
        "hang_limit_s": hang_limit,
        "command": "resnet " + " ".join(train),
    }


# -- a real full disk ------------------------------------------------------------------------
def _mount(folder: Path, size: int, remount: bool = False) -> str | None:
    """Mounts (or resizes) a tmpfs of `size` bytes at `folder`; the reason if it cannot."""
    opts = f"{'remount,' if remount else ''}size={size // 1024}k"
    cmd = ["mount", "-o", opts, str(folder)] if remount else ["mount", "-t", "tmpfs"]
    cmd += [] if remount else ["-o", opts, "tmpfs", str(folder)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def full_disk(work: Path, epochs: int) -> dict:
    """A run into a tmpfs with room for two checkpoints and a little: epoch 1 fits, epoch 2's
    first checkpoint write (a third copy while it is written) fills the disk. Then the tmpfs
    is enlarged and the run resumed."""
    train = [*TRAIN, "--epochs", str(epochs)]
    ref = work / "reference"
    _finish([*train, "--out", str(ref)], "the reference run")
    checkpoint = (ref / "last.pt").stat().st_size
    size = int(2.6 * checkpoint)
    disk = work / "disk"
    disk.mkdir()
    problem = _mount(disk, size)
    if problem:
        return {"measured": False, "why": f"cannot mount a tmpfs here: {problem}"}
    try:
        out = disk / "run"
        p = _run([*train, "--out", str(out)])
        code, err = p.wait(), p.stderr.read().decode().strip()
        state = torch.load(out / "last.pt", weights_only=True)
        rows = (out / "metrics.csv").read_text().strip().splitlines()[1:]
        leftovers = [f.name for f in out.iterdir() if f.name.endswith(".tmp")]
        resized = _mount(disk, 8 * checkpoint, remount=True)
        resumed = _run(["train", "--resume", str(out)]).wait() if resized is None else None
        same = resumed == 0 and _same(ref, out)
        final_rows = len((out / "metrics.csv").read_text().strip().splitlines()) - 1
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    return {
        "measured": True,
        "tmpfs_bytes": size,
        "checkpoint_bytes": checkpoint,
        "exit_code": code,
        "stderr_lines": len(err.splitlines()),
        "message": err.splitlines()[-1] if err else "",
        "traceback_in_stderr": "Traceback (most recent call last)" in err,
        "epochs_in_last_pt": state["epoch"] + 1,
        "metrics_csv_rows": len(rows),
        "temp_files_left": leftovers,
        "resume_exit_code": resumed,
        "metrics_csv_rows_after_resume": final_rows,
        "final_weights_bit_identical": same,
        "command": "resnet " + " ".join(train),
    }


def main() -> None:
    """Runs the chosen mode and records its result."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--delay", type=float, default=1.0, help="seconds each checkpoint write sleeps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, help="default: 36 (kills), 6 (torchrun), 3 (tmpfs)")
    ap.add_argument("--torchrun", action="store_true", help="2 processes, one rank SIGKILLed")
    ap.add_argument("--hang-limit", type=float, default=120.0, help="seconds that count as a hang")
    ap.add_argument("--tmpfs", action="store_true", help="train into a tmpfs that fills mid-run")
    ap.add_argument("--out", default="benchmarks/results/reliability.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        if args.torchrun:
            key, result = (
                "torchrun_rank_kill",
                torchrun_rank_kill(work, args.epochs or 6, args.hang_limit),
            )
        elif args.tmpfs:
            key, result = "full_disk", full_disk(work, args.epochs or 3)
        else:
            key = "sigkill_resume_20"
            result = kills_in_one_run(args.kills, args.delay, args.seed, work, args.epochs or 36)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result |= {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    path = Path(args.out)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = result
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
