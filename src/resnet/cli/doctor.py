"""`resnet doctor`: checks an installation and prints what is wrong, one line per check.

What a user pastes into a bug report: versions, the CPU's and GPU's features, the optional
backends, the data set, the cache folder, and a self-test that trains a small net for a few
steps. Each line is "ok", "warn" (works, but something is missing or slow) or "FAIL"; the exit
code is 1 when anything failed.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from ..export.keras_export import require_keras

OPTIONAL = {  # module -> (pip name, what it is for)
    "onnxruntime": ("onnxruntime", "ONNX export checks and --backend onnxruntime"),
    "openvino": ("openvino", "--format openvino and --backend openvino"),
    "nncf": ("nncf", "OpenVINO int8 export"),
    "keras": ("keras", "Keras weights and .keras export"),
    "timm": ("timm", "timm: weights"),
    "pydicom": ("pydicom", "DICOM scans"),
    "nibabel": ("nibabel", "NIfTI scans"),
    "fastapi": ("fastapi", "resnet serve"),
}
CPU_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16",
             "avx512_vnni": "VNNI", "amx_tile": "AMX"}  # fmt: skip


def add_parser(sub) -> None:
    """Adds `resnet doctor`."""
    p = sub.add_parser("doctor", help="check the installation; one line per problem")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--no-self-test", action="store_true", help="skip the 5-second training test")
    p.set_defaults(run=run)


def _versions() -> list[tuple[str, str, str]]:
    import torch
    import torchvision

    from ..storage import package_versions

    text = (
        f"resnet {package_versions()['resnet']}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
    return [("ok", "versions", text)]


def _cpu() -> list[tuple[str, str, str]]:
    import torch

    from ..device import cpu_has_bf16

    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    have = [name for flag, name in CPU_FLAGS.items() if flag in flags]
    text = f"{os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads"
    text += f"; {', '.join(have) or 'no AVX2/AVX-512 flags seen'}"
    bf16 = cpu_has_bf16()
    text += "; bf16 autocast " + ("used by --precision auto" if bf16 else "not fast here (fp32)")
    return [("ok" if "AVX2" in have or not flags else "warn", "cpu", text)]


def _gpu() -> list[tuple[str, str, str]]:
    import torch

    if not torch.cuda.is_available():
        return [("ok", "gpu", "none (CUDA not available): training runs on the CPU")]
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [("ok", "gpu", f"{len(names)} CUDA device(s): {', '.join(names)}")]


def _optional() -> list[tuple[str, str, str]]:
    out = []
    for module, (pip, purpose) in OPTIONAL.items():
        try:
            loaded = require_keras() if module == "keras" else importlib.import_module(module)
            version = getattr(loaded, "__version__", "?")
            out.append(("ok", module, f"{version} ({purpose})"))
        except Exception as e:  # an optional package may fail to import in many ways
            why = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
            out.append(("warn", module, f"unavailable ({why}): pip install {pip}"))
    return out


def _data() -> list[tuple[str, str, str]]:
    from ..data.fashion_mnist import _candidates, _find

    found = _find("train-images-idx3-ubyte", _candidates())
    if found:
        return [("ok", "fashion-mnist", str(found.parent))]
    return [("warn", "fashion-mnist", "not found: apt-get install dataset-fashion-mnist or set "
             "RESNET_DATA (the default `resnet train` needs it)")]  # fmt: skip


def _cache() -> list[tuple[str, str, str]]:
    root = Path(os.environ.get("RESNET_CACHE", Path.home() / ".cache" / "resnet"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root):
            pass
    except OSError as e:
        return [("FAIL", "cache", f"{root} is not writable ({e.strerror}): set RESNET_CACHE")]
    return [("ok", "cache", f"{root} is writable")]


def _self_test() -> list[tuple[str, str, str]]:
    """Trains resnet20 for a few steps on random data: the loss must be finite and fall."""
    import torch
    import torch.nn.functional as F

    from ..models import create

    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    torch.manual_seed(0)
    model = create("resnet20", num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    if not all(torch.isfinite(torch.tensor(losses))) or losses[-1] >= losses[0]:
        return [("FAIL", "self-test", f"resnet20's loss did not fall: {losses[0]:.3f} -> "
                 f"{losses[-1]:.3f}")]  # fmt: skip
    speed = 8 * 32 / seconds
    return [("ok", "self-test", f"resnet20 trained 8 steps, loss {losses[0]:.3f} -> "
             f"{losses[-1]:.3f}, {speed:.0f} img/s at 32 px")]  # fmt: skip


def checks(self_test: bool = True) -> list[dict]:
    """Every check as {"status", "check", "detail"}."""
    parts = [_versions, _cpu, _gpu, _optional, _data, _cache]
    if self_test:
        parts.append(_self_test)
    rows = []
    for part in parts:
        try:
            rows += part()
        except Exception as e:  # a check that breaks is itself a finding, not a crash
            rows.append(("FAIL", part.__name__.strip("_"), f"{type(e).__name__}: {e}"))
    return [{"status": s, "check": c, "detail": d} for s, c, d in rows]


def run(args) -> int:
    """Prints the checks; exit code 1 when one failed."""
    rows = checks(not args.no_self_test)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['status']:<5} {r['check']:<14} {r['detail']}")
    return 1 if any(r["status"] == "FAIL" for r in rows) else 0
