"""Inference benchmark: torchvision's eager fp32 model against each of our CPU modes, same process.

Reports batch-1 latency, batch-N throughput, achieved GFLOP/s (2 x MACs per image), the fraction
of a matmul peak measured in the same run, and each mode's top-1 agreement with eager fp32 on
real images (and accuracy where a labelled test split is given).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from tqdm import tqdm

from ..data.transforms import make_preprocessing
from ..device import cpu_has_bf16
from ..engine.checkpoint import load_model
from ..errors import ResNetError
from ..models import ForeignSpec, count_macs, create, foreign, get_entry, model_for_spec
from ..normalization import IMAGENET_MEAN, IMAGENET_STD
from .fast import COMPUTE_DTYPE, MODES, ONNX_BASED, build, cpu_flags
from .onnx import onnx_bytes, session
from .samples import (
    fashion_mnist_split,  # noqa: F401  (re-exported for the CLI and benchmarks)
    real_inputs,
)

AGREEMENT_TARGET = 0.99


@dataclass
class Subject:
    """One model under test."""

    label: str
    model: torch.nn.Module
    preprocessing: dict[str, Any]
    macs: int
    anchor: torch.nn.Module | None = None  # torchvision's twin, when it has one
    anchor_name: str = "torchvision_eager_fp32"
    test: tuple[torch.Tensor, torch.Tensor] | None = None  # (inputs, labels)
    calibration: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 0.6) -> float:
    """Best GFLOP/s of an n x n matmul over `seconds` (the compute ceiling on this machine)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def int8_matmul_peak(n: int = 1024, seconds: float = 0.6, threads: int | None = None) -> float:
    """Best GOP/s of ONNX Runtime's uint8 x int8 MatMulInteger (the int8 modes' ceiling)."""
    # onnx is an optional heavy dependency (protobuf schemas): loaded only when int8 is timed.
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "mm",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = session(proto.SerializeToString(), threads)
    rng = np.random.default_rng(0)
    feed = {
        "a": rng.integers(0, 255, (n, n), dtype=np.uint8),
        "b": rng.integers(-127, 127, (n, n), dtype=np.int8),
    }
    sess.run(None, feed)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def measure_peaks(threads: int | None = None, seconds: float = 0.6) -> dict[str, float]:
    """Matmul ceilings of each compute type this machine runs: fp32, bf16 (if native), int8."""
    peaks = {"fp32": matmul_peak(torch.float32, seconds=seconds)}
    if cpu_has_bf16():
        peaks["bf16"] = matmul_peak(torch.bfloat16, seconds=seconds)
    try:
        peaks["int8"] = int8_matmul_peak(seconds=seconds, threads=threads)
    except Exception:  # noqa: BLE001 - no ONNX Runtime: int8 modes compare with fp32
        pass
    return peaks


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    flags = cpu_flags()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "onnxruntime": runtime_version("onnxruntime"),
        "openvino": runtime_version("openvino"),
        "bf16_native": cpu_has_bf16(),
        "avx512_vnni": "avx512_vnni" in flags,
        "amx": "amx_tile" in flags,
        "load_average_1min_at_start": load,
    }


def runtime_version(package: str) -> str | None:
    """An optional runtime's installed version (ONNX Runtime, OpenVINO), or None."""
    try:  # read from the package metadata: importing the runtime only for this costs seconds
        return version(package)
    except PackageNotFoundError:
        return None


def _preprocessing(in_chans: int, size: int) -> dict[str, Any]:
    """Preprocessing for a named model: ImageNet statistics for RGB, else mean 0.5, std 0.25."""
    if in_chans == 3:
        return make_preprocessing(3, (size, size), list(IMAGENET_MEAN), list(IMAGENET_STD))
    return make_preprocessing(in_chans, (size, size), [0.5] * in_chans, [0.25] * in_chans)


def subject(
    spec: str,
    *,
    image_size: int | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> Subject:
    """A model to benchmark: a registered name (random weights, torchvision twin copied from it
    where torchvision has one) or a checkpoint path (its preprocessing and classes)."""
    path = Path(spec)
    if path.suffix == ".pt" or path.is_dir() or path.exists():
        model, state = load_model(path)
        pre = dict(state["preprocessing"])
        label = f"{getattr(model, 'arch', 'custom')} ({path})"
    else:
        entry = get_entry(spec)
        torch.manual_seed(seed)
        c = in_chans or 3
        model = create(entry.name, in_chans=c, num_classes=num_classes).eval()
        pre = _preprocessing(c, image_size or entry.input_size)
        label = entry.name
        recalibrate_norms(model, pre)
    h, w = pre["size"]
    if h != w:
        raise ResNetError("the benchmark needs square inputs")
    # Count on a weightless (meta) copy of whatever kind of net this is: no compute, no memory.
    if isinstance(model.spec, ForeignSpec):  # also builders that read tensor values (RegNet)
        shadow = foreign.on_meta(model.spec, **model.options)
    else:
        with torch.device("meta"):
            shadow = model_for_spec(model.spec, **model.options)
    s = Subject(
        label=label,
        model=model.eval(),
        preprocessing=pre,
        macs=count_macs(shadow, h, pre["in_chans"]),
    )
    s.anchor = _torchvision_twin(model)
    if s.anchor is None:
        s.anchor_name = "eager_fp32"
        s.notes.append("torchvision has no twin of this model: the anchor is our eager fp32")
    return s


@torch.no_grad()
def recalibrate_norms(
    model: torch.nn.Module, pre: dict[str, Any], images: int = 32, seed: int = 2000
) -> None:
    """Sets a random-weight model's BatchNorm statistics from real photo crops.

    Freshly initialised running statistics (mean 0, var 1) leave activations unnormalised: such
    a net maps every photo to nearly the same logits, so "top-1 agreement" would compare
    near-ties. With statistics taken from real images (disjoint crops from the agreement set)
    activations have a trained net's scale and predictions differ between photos.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batch
    model.train()
    model(real_inputs(pre, images, seed=seed))
    model.eval()
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum


def _torchvision_twin(model: torch.nn.Module) -> torch.nn.Module | None:
    """torchvision's model of the same name with our weights (same parameter names), or None."""
    arch = getattr(model, "arch", "")
    builder = getattr(torchvision.models, arch, None)
    if (
        builder is None
        or model.options.get("in_chans", 3) != 3
        or model.options.get("small_input")
        or model.spec.stem != "imagenet"
    ):
        return None
    # Same parameter names but another function: torchvision's nets are ReLU, average-pool,
    # strided-3x3 ones (options without parameters would load and compute something else).
    o = model.options
    if (
        o.get("act", "relu") != "relu"
        or o.get("global_pool", "avg") != "avg"
        or (model.spec.stride_on != "3x3")
    ):
        return None
    twin = builder(weights=None, num_classes=model.options["num_classes"]).eval()
    try:
        twin.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError:
        return None
    return twin


def _logits(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 32
) -> torch.Tensor:
    """Logits of `x` in full batches (the last one padded: no new shapes to compile)."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            chunk = x[i : i + batch_size]
            n = len(chunk)
            if n < batch_size and len(x) >= batch_size:
                out.append(fn(x[len(x) - batch_size :]).float()[batch_size - n :])
            else:
                out.append(fn(chunk).float())
    return torch.cat(out)


def top1(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 32
) -> torch.Tensor:
    """Top-1 classes of `x`, in full batches of `batch_size` (the last one padded)."""
    return _logits(fn, x, batch_size).argmax(1)


@dataclass
class _Plan:
    """What `run_benchmark` was asked for, shared by its steps."""

    modes: list[str]
    batch_sizes: Sequence[int]
    threads: int
    agreement_images: int
    min_seconds: float
    rounds: int
    bar: Any
    log: Callable[[str], None]

    @property
    def big(self) -> int:
        """The largest batch size: throughput is measured there."""
        return max(self.batch_sizes)


def run_benchmark(
    subjects: Sequence[Subject],
    *,
    batch_sizes: Sequence[int] = (1, 32),
    modes: Sequence[str] = MODES,
    threads: int | None = None,
    agreement_images: int = 32,
    min_seconds: float = 1.0,
    rounds: int = 3,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Times each subject's anchor and `modes` at `batch_sizes`; returns the results dict.

    Shape: {label: {anchor: {...}, mode: {...}, "best": {...}, "info": {...}}, "machine": {...},
    "date": ..., "peak_gflops": {...}}. Latency is the median batch-1 call; throughput is
    batch / median call at the largest batch size.
    """
    for m in modes:
        if m not in MODES:
            raise ResNetError(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ResNetError("batch sizes must be positive integers")
    threads = threads or torch.get_num_threads()  # follows OMP_NUM_THREADS
    torch.set_num_threads(threads)
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    modes = [m for m in modes if COMPUTE_DTYPE.get(m) != "bf16" or cpu_has_bf16()]
    plan = _Plan(
        modes=modes,
        batch_sizes=batch_sizes,
        threads=threads,
        agreement_images=agreement_images,
        min_seconds=min_seconds,
        rounds=rounds,
        bar=None,
        log=log or (lambda s: None),
    )
    peak_seconds = min(0.6, max(0.1, min_seconds))
    peaks = measure_peaks(threads, peak_seconds)
    plan.log("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    plan.bar = tqdm(
        total=len(subjects) * (len(modes) + 1 + len(batch_sizes)),
        desc="benchmark",
        unit="step",
        disable=not progress,
        leave=False,
    )
    for s in subjects:
        result[s.label] = _benchmark_subject(s, plan)
        # The ceiling is re-measured after each subject and the best kept: under contention a
        # single short measurement understates it (and would inflate the fractions).
        for k, v in measure_peaks(threads, peak_seconds).items():
            peaks[k] = max(peaks.get(k, 0.0), v)
    plan.bar.close()
    result["peak_gflops"] = {k: round(v, 1) for k, v in peaks.items()}
    _add_fractions_of_peak(result, peaks)
    return result


def _benchmark_subject(s: Subject, plan: _Plan) -> dict[str, Any]:
    """One subject's entry: fp32 references, then every mode prepared, timed and summarised."""
    pre = s.preprocessing
    photos = real_inputs(pre, plan.agreement_images, seed=0)
    calibration = s.calibration if s.calibration is not None else real_inputs(pre, 64, seed=1000)
    sets = {"photos": photos}
    if s.test is not None:
        sets["test"] = s.test[0]
    entry, refs = _reference_entry(s, plan, photos, sets)
    inputs = {
        b: photos[:b] if len(photos) >= b else photos.repeat(-(-b // len(photos)), 1, 1, 1)[:b]
        for b in plan.batch_sizes
    }
    runners = _prepare_modes(s, plan, entry, photos, calibration, sets, refs, inputs)
    _time_modes(s, plan, entry, runners, inputs)
    _summarise(s, plan, entry)
    _ratios(entry, s.anchor_name)
    return entry


def _reference_entry(
    s: Subject, plan: _Plan, photos: torch.Tensor, sets: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The entry's "info" block and the eager fp32 top-1 of each image set (computed once)."""
    pre = s.preprocessing
    eager = build(s.model, "eager_fp32", example=photos)
    ref_logits = {k: _logits(eager, v, plan.big) for k, v in sets.items()}
    refs = {k: v.argmax(1) for k, v in ref_logits.items()}
    margins = {
        k: round(float((v.topk(2, dim=1).values @ torch.tensor([1.0, -1.0])).median()), 4)
        for k, v in ref_logits.items()
    }
    entry: dict[str, Any] = {
        "info": {
            "input": [pre["in_chans"], *pre["size"]],
            "macs": s.macs,
            "anchor": s.anchor_name,
            "threads": plan.threads,
            "agreement_images": {k: len(v) for k, v in sets.items()},
            "distinct_fp32_top1": {k: len(set(v.tolist())) for k, v in refs.items()},
            "median_fp32_top2_margin": margins,
            "timing": "modes interleaved round by round; median of the rounds",
            "notes": list(s.notes),
        }
    }
    return entry, refs


def _prepare_modes(
    s: Subject,
    plan: _Plan,
    entry: dict[str, Any],
    photos: torch.Tensor,
    calibration: torch.Tensor,
    sets: dict[str, torch.Tensor],
    refs: dict[str, torch.Tensor],
    inputs: dict[int, torch.Tensor],
) -> dict[str, Callable]:
    """Prepares the anchor and every mode (export, quantize, compile), warms each up at every
    batch size and measures its agreement with fp32 (and accuracy) on the real images."""
    candidates = [(s.anchor_name, s.anchor if s.anchor is not None else s.model)]
    candidates += [(m, None) for m in plan.modes if not (m == "eager_fp32" and s.anchor is None)]
    runners: dict[str, Callable] = {}
    onnx_fp32 = None
    for name, anchor_model in candidates:
        plan.bar.set_description(f"{s.label}: prepare {name}")
        t0 = time.perf_counter()
        if anchor_model is not None:
            fn = build(anchor_model, "eager_fp32", example=photos)
        else:
            if name in ONNX_BASED and onnx_fp32 is None:  # one export for ORT and OpenVINO
                onnx_fp32 = onnx_bytes(s.model, photos[:2], dynamic_batch=True)
            try:
                fn = build(
                    s.model,
                    name,
                    example=photos,
                    calibration=calibration,
                    threads=plan.threads,
                    onnx_model=onnx_fp32,
                )
            except ResNetError as e:  # a missing package, an unsupported CPU: noted, skipped
                entry["info"].setdefault("unavailable", {})[name] = str(e)
                plan.log(f"{s.label} {name}: unavailable: {e}")
                plan.bar.update(1)
                continue
        for b in plan.batch_sizes:  # compile / first-call costs stay out of the timings
            for _ in range(2 if name == "compile_bf16" else 1):
                fn(inputs[b])
        row: dict[str, Any] = {"prepare_s": round(time.perf_counter() - t0, 2)}
        if name != s.anchor_name or s.anchor is not None:
            preds = {k: top1(fn, v, plan.big) for k, v in sets.items()}
            row["top1_agreement"] = {
                k: round(float((preds[k] == refs[k]).float().mean()), 4) for k in sets
            }
        else:
            preds = {"test": top1(fn, s.test[0], plan.big)} if s.test is not None else {}
        if s.test is not None:
            row["test_accuracy"] = round(float((preds["test"] == s.test[1]).float().mean()), 4)
        runners[name] = fn
        entry[name] = row
        plan.bar.update(1)
    return runners


def time_interleaved(
    runners: dict[str, Callable[[torch.Tensor], Any]],
    x: torch.Tensor,
    min_seconds: float,
    rounds: int = 3,
) -> dict[str, list[float]]:
    """Seconds per call of each runner on `x`, one figure per round: each round calls every
    runner in turn for `min_seconds / rounds`, so load from other processes on a shared machine
    falls on all of them alike."""
    per_call: dict[str, list[float]] = {n: [] for n in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            calls, t0 = 0, time.perf_counter()
            while calls == 0 or time.perf_counter() - t0 < min_seconds / rounds:
                fn(x)
                calls += 1
            per_call[name].append((time.perf_counter() - t0) / calls)
    return per_call


def _time_modes(
    s: Subject,
    plan: _Plan,
    entry: dict[str, Any],
    runners: dict[str, Callable],
    inputs: dict[int, torch.Tensor],
) -> None:
    """Times the prepared modes interleaved: each round calls every mode in turn, so load from
    other processes on a shared machine falls on all modes alike."""
    for b in plan.batch_sizes:
        plan.bar.set_description(f"{s.label}: timing batch {b}")
        per_call = time_interleaved(runners, inputs[b], plan.min_seconds, plan.rounds)
        for name, times in per_call.items():
            med = statistics.median(times)
            entry[name][f"batch{b}"] = {
                "median_ms": round(med * 1e3, 3),
                "best_ms": round(min(times) * 1e3, 3),
                "rounds": len(times),
                "img_s": round(b / med, 2),
                "gflops": round(2 * s.macs * b / med / 1e9, 1),
            }
        plan.bar.update(1)


def _summarise(s: Subject, plan: _Plan, entry: dict[str, Any]) -> None:
    """Adds each row's headline latency and throughput, and logs them."""
    small = min(plan.batch_sizes)
    for name, row in entry.items():
        if name == "info":
            continue
        row["latency_ms"] = row[f"batch{small}"]["median_ms"]
        row["throughput_img_s"] = row[f"batch{plan.big}"]["img_s"]
        plan.log(
            f"{s.label} {name}: {row['latency_ms']:.2f} ms @{small}, "
            f"{row['throughput_img_s']:.1f} img/s @{plan.big}"
            + (f", agreement {row['top1_agreement']}" if "top1_agreement" in row else "")
        )


def _add_fractions_of_peak(result: dict[str, Any], peaks: dict[str, float]) -> None:
    """Adds to every timed cell the fraction of the matmul peak of its mode's arithmetic."""
    for entry in result.values():
        if isinstance(entry, dict) and "info" in entry:
            for name, row in entry.items():
                for key, cell in row.items() if name != "info" and "best" not in name else ():
                    if key.startswith("batch"):
                        peak = peaks.get(COMPUTE_DTYPE.get(name, "fp32"), peaks["fp32"])
                        cell["fraction_of_peak"] = round(cell["gflops"] / peak, 3)


def _ratios(entry: dict[str, Any], anchor: str) -> None:
    """Adds speed-ups against the anchor and picks the best mode that keeps agreement."""
    base = entry[anchor]
    for name, row in entry.items():
        if name in ("info", "best", anchor) or not isinstance(row, dict):
            continue
        row["latency_speedup"] = round(base["latency_ms"] / row["latency_ms"], 2)
        row["throughput_speedup"] = round(row["throughput_img_s"] / base["throughput_img_s"], 2)
    pick_best(entry, anchor)


def pooled(sets: dict[str, float], counts: dict[str, int]) -> float:
    """Agreement over all images of all sets (each set weighted by its image count)."""
    total = sum(counts[k] for k in sets)
    return sum(v * counts[k] for k, v in sets.items()) / total


def pick_best(
    entry: dict[str, Any],
    anchor: str,
    agreement: dict[str, dict[str, float]] | None = None,
    counts: dict[str, int] | None = None,
    rule: str | None = None,
) -> dict[str, Any] | None:
    """Sets entry["best"]: the highest geometric-mean speed-up (latency x throughput) among
    modes whose top-1 agreement with fp32, over all the real images measured, is >= 99 %.

    Args:
        entry: one subject's results.
        anchor: the anchor's key (not a candidate).
        agreement: {mode: {set: agreement}} to judge by instead of the entry's own (e.g. a
            trained model's agreement for a random-weight subject), with `counts` its sets'
            image counts.
        rule: text describing where the agreement came from.
    """
    if agreement is None:
        agreement = {
            n: r["top1_agreement"]
            for n, r in entry.items()
            if isinstance(r, dict) and "top1_agreement" in r
        }
        counts = entry["info"]["agreement_images"]
    best, best_score = None, 0.0
    for name, row in entry.items():
        if name in ("info", anchor) or name.startswith("best") or not agreement.get(name):
            continue
        score = (row["latency_speedup"] * row["throughput_speedup"]) ** 0.5
        if pooled(agreement[name], counts) >= AGREEMENT_TARGET and score > best_score:
            best, best_score = name, score
    entry.pop("best", None)
    if best is None:
        return None
    row = entry[best]
    entry["best"] = {
        "mode": best,
        "latency_ms": row["latency_ms"],
        "throughput_img_s": row["throughput_img_s"],
        "top1_agreement": round(pooled(agreement[best], counts), 4),
        "top1_agreement_by_set": agreement[best],
        "latency_speedup": row["latency_speedup"],
        "throughput_speedup": row["throughput_speedup"],
        "rule": rule
        or f"highest geometric-mean speed-up among modes whose top-1 "
        f"agreement with fp32 over all real images measured is "
        f">= {AGREEMENT_TARGET:.0%}",
    }
    return entry["best"]


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of `run_benchmark`'s result."""
    lines = []
    for label, entry in result.items():
        if not isinstance(entry, dict) or "info" not in entry:
            continue
        anchor = entry["info"]["anchor"]
        lines.append(
            f"{label}  input {'x'.join(map(str, entry['info']['input']))}, "
            f"{entry['info']['macs'] / 1e6:.0f} M MACs, anchor {anchor}"
        )
        head = (
            f"  {'mode':<24}{'lat ms':>9}{'x':>7}{'img/s':>9}{'x':>7}{'GFLOP/s':>9}"
            f"{'%peak':>7}  agreement"
        )
        lines.append(head)
        for name, row in entry.items():
            if name == "info" or name.startswith("best"):
                continue
            big = row[max((k for k in row if k.startswith("batch")), key=lambda k: int(k[5:]))]
            agree = ", ".join(f"{k} {v:.1%}" for k, v in row.get("top1_agreement", {}).items())
            if "test_accuracy" in row:
                agree += f"; test acc {row['test_accuracy']:.2%}"
            lines.append(
                f"  {name:<24}{row['latency_ms']:>9.2f}{row.get('latency_speedup', 1.0):>7.2f}"
                f"{row['throughput_img_s']:>9.1f}{row.get('throughput_speedup', 1.0):>7.2f}"
                f"{big['gflops']:>9.1f}{big['fraction_of_peak']:>7.1%}  {agree}"
            )
        for name, why in entry["info"].get("unavailable", {}).items():
            lines.append(f"  {name:<24}unavailable: {why}")
        for key in ("best", "best_strict_random_weights"):
            b = entry.get(key)
            if b:
                lines.append(
                    f"  {key}: {b['mode']} ({b['latency_speedup']}x latency, "
                    f"{b['throughput_speedup']}x throughput, agreement "
                    f"{b['top1_agreement']:.1%})"
                )
    return "\n".join(lines)
