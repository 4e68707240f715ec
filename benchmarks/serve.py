"""`resnet serve` under load: throughput and p50/p99 latency, micro-batching on and off, baseline.

Starts each server in its own process on 127.0.0.1 (a free port; nothing leaves this machine)
and drives it with httpx + asyncio, bounded in requests and seconds per cell:

  models:  the shipped Fashion-MNIST resnet20 (28 px grey), resnet50 at 224 px (random weights:
           the speed does not depend on them)
  servers: "batched"   resnet serve, --max-batch 32 (backend auto)
           "unbatched" resnet serve, --max-batch 1 (backend auto)
           "baseline"  a plain FastAPI endpoint calling the eager model once per request
  load:    concurrency 1, 8 and 32; then an endurance run of --requests at concurrency 32 on the
           batched Fashion-MNIST server, with its resident memory (VmRSS) at start and end.

    .venv/bin/python benchmarks/serve.py                      # a few minutes on 2 cores
    .venv/bin/python benchmarks/serve.py --requests 10000     # the full endurance run

Writes benchmarks/results/serve.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from fastapi import FastAPI, UploadFile
from PIL import Image

from resnet.storage import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "serve.json"
CONCURRENCY = (1, 8, 32)


def make_models(folder: Path) -> dict[str, dict]:
    """Checkpoints the servers load, and one encoded request image per model."""
    from resnet import create
    from resnet.engine import save_checkpoint
    from resnet.models import model_from_weights
    from resnet.normalization import IMAGENET_MEAN, IMAGENET_STD

    fm = model_from_weights("fashion-mnist")
    cfg = fm.pretrained_cfg
    save_checkpoint(
        folder / "fashion-mnist.pt", fm, classes=cfg["classes"], preprocessing=cfg["preprocessing"]
    )
    torch.manual_seed(0)
    r50 = create("resnet50").eval()
    pre = {
        "in_chans": 3,
        "size": [224, 224],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "resize": None,
        "crop": None,
    }
    save_checkpoint(
        folder / "resnet50.pt", r50, classes=[f"class{i}" for i in range(1000)], preprocessing=pre
    )
    rng = np.random.default_rng(0)
    return {
        "fashion-mnist": {"path": folder / "fashion-mnist.pt", "image": _png(rng, 28)},
        "resnet50": {"path": folder / "resnet50.pt", "image": _jpeg(rng, 224)},
    }


def _png(rng, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(rng, size: int) -> bytes:
    buf = io.BytesIO()
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def batch1_ms(path: Path, backend: str | None, image: bytes, runs: int = 20) -> float:
    """The model's own median batch-1 latency (decode and preprocessing included)."""
    from resnet.data.images import decode_image, image_to_tensor
    from resnet.export import load_classifier

    clf = load_classifier(path, backend)
    tf = clf.transform()
    times = []
    for i in range(runs + 3):
        t0 = time.perf_counter()
        with decode_image(image) as img:
            x = tf(image_to_tensor(img, clf.preprocessing["in_chans"]))[None]
        clf(x)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def baseline_app(path: str):
    """A plain FastAPI app: one endpoint, the eager model called once per request."""
    from resnet.data import eval_transform
    from resnet.data.images import decode_image, image_to_tensor
    from resnet.engine.inference import TorchClassifier

    clf = TorchClassifier.from_checkpoint(path)
    tf, chans = eval_transform(clf.preprocessing), clf.preprocessing["in_chans"]
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/v1/predict")
    def predict(files: list[UploadFile]) -> dict:
        out = []
        for f in files:
            with decode_image(f.file.read()) as img:
                x = tf(image_to_tensor(img, chans))[None]
            top = torch.softmax(clf(x), 1)[0].topk(5)
            out.append(
                [
                    {"index": int(i), "prob": float(v)}
                    for v, i in zip(top.values, top.indices, strict=True)
                ]
            )
        return {"predictions": out}

    return app


def run_server(spec: str) -> None:
    """The server process: `spec` is JSON {kind, path, port, max_batch}."""
    import uvicorn

    s = json.loads(spec)
    if s["kind"] == "baseline":
        app = baseline_app(s["path"])
    else:
        from resnet.serve import ServeSettings, create_app

        app = create_app(
            ServeSettings(
                runs=Path(s["runs"]),
                models=[s["path"]],
                max_batch=s["max_batch"],
                backend="auto",
            )
        )
    uvicorn.run(app, host="127.0.0.1", port=s["port"], log_level="warning", access_log=False)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB (from /proc: psutil is not installed)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """One server process, started and waited for; stopped on exit."""

    def __init__(self, kind: str, path: Path, runs: Path, max_batch: int = 32):
        self.port = free_port()
        spec = json.dumps(
            dict(kind=kind, path=str(path), port=self.port, max_batch=max_batch, runs=str(runs))
        )
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", spec])
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            self.stop()
            raise RuntimeError(f"{kind} server did not become ready")
        self.startup_s = time.perf_counter() - t0

    def backend(self) -> str:
        """The backend the server chose (baseline: eager)."""
        try:
            return httpx.get(self.url + "/v1/models", timeout=10).json()[0]["backend"]
        except (httpx.HTTPError, KeyError, ValueError):
            return "eager"

    def stop(self) -> None:
        """Ends the server process (the one this object started)."""
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def load(url: str, image: bytes, requests: int, concurrency: int, seconds: float) -> dict:
    """`requests` POSTs at `concurrency` (stopping early after `seconds`): throughput, latency."""
    latencies, failures, issued = [], 0, 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        t_end = time.perf_counter() + seconds

        async def worker():
            nonlocal failures, issued
            while issued < requests and time.perf_counter() < t_end:
                issued += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        "/v1/predict", files=[("files", ("x.png", image, "image/png"))]
                    )
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                failures += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "failures": failures,
        "seconds": round(wall, 2),
        "throughput": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


def bench_model(name: str, m: dict, runs: Path, args) -> dict:
    """Every server kind at every concurrency for one model."""
    n = args.requests_small if name == "fashion-mnist" else args.requests_large
    out = {"batch1_ms": {}, "servers": {}}
    for kind, batch in (("batched", 32), ("unbatched", 1), ("baseline", 1)):
        server = Server(kind, m["path"], runs, batch)
        try:
            backend = server.backend()
            cells = {}
            for c in CONCURRENCY:
                asyncio.run(load(server.url, m["image"], min(8, n), c, 30))  # warm connections
                cells[str(c)] = asyncio.run(load(server.url, m["image"], n, c, args.seconds))
                print(f"{name:14s} {kind:9s} c={c:2d} {cells[str(c)]}", flush=True)
            out["servers"][kind] = {
                "backend": backend,
                "max_batch": batch,
                "startup_s": round(server.startup_s, 1),
                "rss_mb": round(rss_mb(server.proc.pid), 1),
                "cells": cells,
            }
        finally:
            server.stop()
    for backend in {out["servers"]["batched"]["backend"], "eager"}:
        out["batch1_ms"][backend] = round(
            batch1_ms(m["path"], None if backend == "eager" else backend, m["image"]), 2
        )
    return out


def endurance(m: dict, runs: Path, args) -> dict:
    """`--requests` at concurrency 32 on the batched server: failures and memory, start to end."""
    server = Server("batched", m["path"], runs, 32)
    try:
        asyncio.run(load(server.url, m["image"], 64, 32, 30))
        start = rss_mb(server.proc.pid)
        result = asyncio.run(load(server.url, m["image"], args.requests, 32, args.endurance_s))
        end = rss_mb(server.proc.pid)
    finally:
        server.stop()
    return {
        **result,
        "rss_start_mb": round(start, 1),
        "rss_end_mb": round(end, 1),
        "rss_growth_pct": round(100 * (end - start) / start, 2),
    }


def goals(results: dict) -> dict:
    """The issue's goals for resnet50, measured here."""
    r50 = results["models"]["resnet50"]
    s = r50["servers"]
    ratio = s["batched"]["cells"]["32"]["throughput"] / s["baseline"]["cells"]["32"]["throughput"]
    own = r50["batch1_ms"][s["batched"]["backend"]]
    p99 = s["batched"]["cells"]["1"]["p99_ms"]
    return {
        "throughput_ratio_c32_vs_baseline": round(ratio, 2),
        "throughput_goal_3x_met": ratio >= 3,
        "p99_c1_over_batch1": round(p99 / own, 2),
        "p99_goal_1_5x_met": p99 / own <= 1.5,
    }


def table(results: dict) -> str:
    """The results as Markdown."""
    lines = [
        "| model | server | backend | c | req/s | p50 ms | p99 ms | failures | vs baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        base = r["servers"]["baseline"]["cells"]
        for kind, s in r["servers"].items():
            for c, cell in s["cells"].items():
                ratio = cell["throughput"] / base[c]["throughput"]
                lines.append(
                    f"| {name} | {kind} | {s['backend']} | {c} | {cell['throughput']} "
                    f"| {cell['p50_ms']} | {cell['p99_ms']} | {cell['failures']} "
                    f"| {ratio:.2f}× |"
                )
    return "\n".join(lines)


def main() -> None:
    """Runs the benchmark (or, with --serve, one server process)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--requests", type=int, default=2000, help="endurance requests at c=32")
    p.add_argument("--requests-small", type=int, default=300, help="per cell, Fashion-MNIST")
    p.add_argument("--requests-large", type=int, default=64, help="per cell, resnet50")
    p.add_argument("--seconds", type=float, default=30, help="time cap per cell")
    p.add_argument("--endurance-s", type=float, default=600, help="time cap, endurance")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if args.serve:
        run_server(args.serve)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = make_models(folder)
        results = {
            "date": datetime.date.today().isoformat(),
            "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"{platform.processor() or platform.platform()}",
            "torch": torch.__version__,
            "note": "resnet50 has random weights (speed only); latency includes HTTP and decode",
            "models": {
                name: bench_model(name, m, folder / "runs", args) for name, m in models.items()
            },
        }
        results["endurance"] = endurance(models["fashion-mnist"], folder / "runs", args)
    results["goals"] = goals(results)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(json.dumps({"endurance": results["endurance"], "goals": results["goals"]}, indent=2))


if __name__ == "__main__":
    main()
