"""A census of bad input through the real `resnet` command line, one subprocess per case.

Each case gets a folder of its own holding a copy of a small trained run, an image folder and
the bad file it is about; the command runs there. Recorded per case: the exit code, whether
stderr holds a Python traceback, and which files that were there before changed or vanished
(SHA-256 before and after). The goal: every case exits 2 with one line, no traceback, nothing
lost. Results go to benchmarks/results/reliability.json under "bad_inputs".

    .venv/bin/python benchmarks/bad_inputs.py            # all cases, 2 at a time
    .venv/bin/python benchmarks/bad_inputs.py -k predict # the cases whose name holds "predict"
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RESNET = [str(Path(sys.executable).with_name("resnet"))]
ENV = {k: v for k, v in os.environ.items() if k != "RESNET_DEBUG"} | {"OMP_NUM_THREADS": "1"}
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (run inside the case's folder) and what it writes first."""

    name: str
    argv: list[str]
    prepare: Callable[[Path], None] | None = None
    timeout: float = 180.0


# -- bad files -----------------------------------------------------------------------------
def _png(path: Path, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(path)
    return path


def _bomb(path: Path) -> None:
    """A 300-byte PNG that claims 60000 x 60000 pixels (3.6 gigapixels)."""
    raw = bytearray((_png(path.with_suffix(".tmp.png"))).read_bytes())
    path.with_suffix(".tmp.png").unlink()
    raw[16:24] = struct.pack(">II", 60000, 60000)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))  # a valid IHDR checksum
    path.write_bytes(bytes(raw))


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def prepare(c: Path) -> None:
        (c / name).parent.mkdir(parents=True, exist_ok=True)
        (c / name).write_bytes(data.encode() if isinstance(data, str) else data)

    return prepare


def _cut(source: str, name: str, keep: float = 0.5) -> Callable[[Path], None]:
    def prepare(c: Path) -> None:
        raw = (c / source).read_bytes()
        (c / name).write_bytes(raw[: int(len(raw) * keep)])

    return prepare


def _safetensors_lie(c: Path) -> None:
    """A header that promises 4 MB of float32 data the file does not hold."""
    header = json.dumps(
        {"fc.weight": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}
    )
    (c / "lie.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header.encode() + bytes(16)
    )


def _safetensors_huge_header(c: Path) -> None:
    (c / "huge.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")


def _pickled_code(c: Path) -> None:
    torch.save({"format": "resnet-checkpoint", "hook": Case}, c / "evil.pt")  # a class: code


def _zip_not_checkpoint(c: Path) -> None:
    with zipfile.ZipFile(c / "fake.pt", "w") as z:
        z.writestr("readme.txt", "not a checkpoint")


def _plain_state_dict(c: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(3, 3)}, c / "plain.pt")


def _live_lock(c: Path) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    (c / "run" / ".lock").write_text(json.dumps(info))


def _other_classes(c: Path) -> None:
    for k in ("cat", "dog"):
        (c / "other" / k).mkdir(parents=True)
        for i in range(3):
            _png(c / "other" / k / f"{i}.png", seed=i)


def _coco(doc: dict | str) -> Callable[[Path], None]:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return _write("coco.json", text)


def _coco_doc(files: list[str], annotation: dict) -> dict:
    images = [{"id": i + 1, "file_name": f, "height": 16, "width": 16} for i, f in enumerate(files)]
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]} | annotation
    return {"images": images, "annotations": [ann], "categories": [{"id": 1, "name": "thing"}]}


FIVE = [f"imgs/c0/{i}.png" for i in range(5)]
COCO_BAD_BOX = _coco_doc(FIVE, {"bbox": [4, 4, 3, float("nan")]})
COCO_NO_IMAGE = _coco_doc(["gone.png", *FIVE[1:]], {})
COCO_UNKNOWN_CATEGORY = _coco_doc(FIVE, {"category_id": 7})
COCO_TWO_IMAGES = _coco_doc(FIVE[:2], {})


def _scans(name: str) -> Callable[[Path], None]:
    """A labels CSV of four patients whose scans are all the bad file `name`: a truncated
    DICOM, a text file named .dcm, a cut .nii.gz or a NIfTI of noise."""

    def prepare(c: Path) -> None:
        from resnet.data.cohort import ct_source, mri_source

        raw = ct_source().read_bytes()
        (c / "cut.dcm").write_bytes(raw[: len(raw) // 2])
        (c / "text.dcm").write_text("this is not DICOM\n" * 20)
        nii = gzip.compress(mri_source().read_bytes())
        (c / "cut.nii.gz").write_bytes(nii[: len(nii) // 3])
        (c / "noise.nii").write_bytes(np.random.default_rng(0).bytes(400))
        rows = "".join(f"p{i},{name},{'ab'[i % 2]}\n" for i in range(4))
        (c / "scans.csv").write_text("patient,path,label\n" + rows)

    return prepare


TRAIN = ["train", "--data", "imgs", "--epochs", "1", "--image-size", "16", "--quiet"]
TRAIN += ["--device", "cpu", "--precision", "fp32", "--out", "new"]
SCANS = [*TRAIN, "--data", "scans.csv", "--volume", "4,16,16", "--bad-images", "error"]
DETECT = [*TRAIN, "--task", "detect", "--data", "coco.json"]
PNG = "imgs/c0/0.png"


def cases() -> list[Case]:
    """Every case, by command."""
    C = Case
    bad_png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    return [
        # predict: images
        C("predict-corrupt-png", ["predict", "run", "bad.png"], _write("bad.png", bad_png)),
        C("predict-truncated-png", ["predict", "run", "cut.png"], _cut(PNG, "cut.png")),
        C("predict-empty-file", ["predict", "run", "empty.png"], _write("empty.png", b"")),
        C(
            "predict-decompression-bomb",
            ["predict", "run", "bomb.png"],
            lambda c: _bomb(c / "bomb.png"),
        ),
        C(
            "predict-text-named-jpg",
            ["predict", "run", "notes.jpg"],
            _write("notes.jpg", "hello\n"),
        ),
        C("predict-missing-image", ["predict", "run", "gone.png"]),
        C("predict-empty-folder", ["predict", "run", "empty"], lambda c: (c / "empty").mkdir()),
        C("predict-top-k-0", ["predict", "run", PNG, "--top-k", "0"]),
        C("predict-batch-size-0", ["predict", "run", PNG, "--batch-size", "0"]),
        C(
            "predict-unknown-cam-layer",
            ["predict", "run", PNG, "--cam", "--cam-layer", "layer9", "--out", "cam"],
        ),
        C(
            "predict-out-under-a-file",
            ["predict", "run", PNG, "--out", "afile/x"],
            _write("afile", "x"),
        ),
        C("predict-dicom-text", ["predict", "run", "text.dcm"], _scans("text.dcm")),
        # predict: checkpoints and weights
        C("predict-text-checkpoint", ["predict", "text.pt", PNG], _write("text.pt", "hello\n")),
        C(
            "predict-truncated-checkpoint",
            ["predict", "cut.pt", PNG],
            _cut("run/best.pt", "cut.pt"),
        ),
        C("predict-empty-checkpoint", ["predict", "empty.pt", PNG], _write("empty.pt", b"")),
        C("predict-pickled-code", ["predict", "evil.pt", PNG], _pickled_code),
        C("predict-zip-not-checkpoint", ["predict", "fake.pt", PNG], _zip_not_checkpoint),
        C("predict-plain-state-dict", ["predict", "plain.pt", PNG], _plain_state_dict),
        C(
            "predict-safetensors-header-lie",
            ["predict", "--weights", "lie.safetensors", PNG],
            _safetensors_lie,
        ),
        C(
            "predict-safetensors-huge-header",
            ["predict", "--weights", "huge.safetensors", PNG],
            _safetensors_huge_header,
        ),
        C("predict-unknown-weights", ["predict", "--weights", "no-such-weights", PNG]),
        # train: configs and recipes
        C(
            "train-yaml-syntax",
            ["train", "--config", "bad.yaml"],
            _write("bad.yaml", "model: [1,\n"),
        ),
        C(
            "train-yaml-unknown-key",
            ["train", "--config", "k.yaml"],
            _write("k.yaml", "model:\n  nmae: resnet20\n"),
        ),
        C("train-yaml-a-list", ["train", "--config", "l.yaml"], _write("l.yaml", "- 1\n- 2\n")),
        C(
            "train-yaml-wrong-type",
            ["train", "--config", "t.yaml"],
            _write("t.yaml", "optim:\n  lr: fast\n"),
        ),
        C(
            "train-yaml-not-utf8",
            ["train", "--config", "b.yaml"],
            _write("b.yaml", b"\xff\xfe\x00bad"),
        ),
        C("train-unknown-recipe", ["train", "--recipe", "no-such-recipe"]),
        # train: flags and values
        C("train-unknown-model", [*TRAIN, "--model", "resnet9000"]),
        C("train-lr-not-a-number", [*TRAIN, "--lr", "abc"]),
        C("train-negative-epochs", [*TRAIN, "--epochs", "-1"]),
        C("train-batch-size-0", [*TRAIN, "--batch-size", "0"]),
        C("train-val-split-1.5", [*TRAIN, "--val-split", "1.5"]),
        C("train-opt-without-value", [*TRAIN, "--opt", "foo"]),
        C("train-opt-unknown", [*TRAIN, "--opt", "no_such_option=1"]),
        C("train-duration-unitless-tail", [*TRAIN, "--time-limit", "1h30"]),
        # train: data
        C("train-data-missing", [*TRAIN, "--data", "gone"]),
        C("train-data-empty-folder", [*TRAIN, "--data", "empty"], lambda c: (c / "empty").mkdir()),
        C(
            "train-csv-wrong-columns",
            [*TRAIN, "--data", "l.csv"],
            _write("l.csv", "a,b,c\n1,2,3\n"),
        ),
        C(
            "train-csv-missing-files",
            [*TRAIN, "--data", "l.csv"],
            _write("l.csv", "path,label\ngone.png,cat\ngone2.png,dog\n"),
        ),
        C("train-csv-binary", [*TRAIN, "--data", "l.csv"], _write("l.csv", bytes(range(256)) * 4)),
        C("train-coco-invalid-json", DETECT, _coco("{not json")),
        C("train-coco-no-images-key", DETECT, _coco({"annotations": []})),
        C("train-coco-two-images", DETECT, _coco(COCO_TWO_IMAGES)),
        C("train-coco-nan-box", DETECT, _coco(COCO_BAD_BOX)),
        C("train-coco-missing-image", DETECT, _coco(COCO_NO_IMAGE)),
        C(
            "train-coco-unknown-category",
            [*TRAIN, "--task", "segment", "--data", "coco.json"],
            _coco(COCO_UNKNOWN_CATEGORY),
        ),
        C("train-dicom-text", SCANS, _scans("text.dcm")),
        C("train-dicom-truncated", SCANS, _scans("cut.dcm")),
        C("train-nifti-truncated-gz", SCANS, _scans("cut.nii.gz")),
        C("train-nifti-noise", SCANS, _scans("noise.nii")),
        C("train-weights-header-lie", [*TRAIN, "--weights", "lie.safetensors"], _safetensors_lie),
        # train: run folders
        C("train-out-under-a-file", [*TRAIN[:-1], "afile/run"], _write("afile", "x")),
        C("train-out-on-proc", [*TRAIN[:-1], "/proc/resnet-census-run"]),
        C("train-into-an-existing-run", [*TRAIN[:-1], "run"]),
        C("train-resume-locked-run", ["train", "--resume", "run"], _live_lock),
        C("train-resume-with-new-lr", ["train", "--resume", "run", "--lr", "0.5"]),
        C(
            "train-resume-text-checkpoint",
            ["train", "--resume", "text.pt"],
            _write("text.pt", "hi"),
        ),
        C("train-resume-finished-epochs", ["train", "--resume", "run", "--epochs", "1"]),
        # val
        C("val-missing-checkpoint", ["val", "gone.pt"]),
        C("val-data-other-classes", ["val", "run", "--data", "other"], _other_classes),
        C("val-threshold-2", ["val", "run", "--threshold", "2"]),
        C("val-out-under-a-file", ["val", "run", "--out", "afile/v"], _write("afile", "x")),
        C("val-split-test-absent", ["val", "run", "--split", "test"]),
        C("val-truncated-checkpoint", ["val", "cut.pt"], _cut("run/best.pt", "cut.pt", 0.9)),
        # export
        C("export-unknown-format", ["export", "run", "--format", "caffe"]),
        C("export-text-checkpoint", ["export", "text.pt"], _write("text.pt", "hi")),
        C("export-opset-3", ["export", "run", "--opset", "3", "--num-images", "2"]),
        C(
            "export-out-on-proc",
            ["export", "run", "--out", "/proc/resnet.onnx", "--num-images", "2"],
        ),
        C(
            "export-corrupt-parity-image",
            ["export", "run", "--images", "bad.png"],
            _write("bad.png", b"\x89PNGxx"),
        ),
        C("export-int8-torchscript", ["export", "run", "--format", "torchscript", "--int8"]),
        C("export-num-images-0", ["export", "run", "--num-images", "0"]),
        # calibrate
        C("calibrate-missing-run", ["calibrate", "gone"]),
        C("calibrate-truncated-checkpoint", ["calibrate", "cut.pt"], _cut("run/best.pt", "cut.pt")),
        C(
            "calibrate-empty-data",
            ["calibrate", "run", "--data", "empty"],
            lambda c: (c / "empty").mkdir(),
        ),
        # analyze
        C("analyze-unknown-model", ["analyze", "gradients", "resnet9000"]),
        C("analyze-missing-data", ["analyze", "gradients", "resnet20", "--data", "gone"]),
        C("analyze-batch-size-0", ["analyze", "gradients", "resnet20", "--batch-size", "0"]),
        C("analyze-unknown-analysis", ["analyze", "entropy", "resnet20"]),
        # serve: refused before it binds a port
        C("serve-missing-model", ["serve", "--model", "gone.pt", "--port", "0"], timeout=60),
        C(
            "serve-text-model",
            ["serve", "--model", "text.pt", "--port", "0"],
            _write("text.pt", "hi"),
            60,
        ),
        C("serve-port-out-of-range", ["serve", "--port", "99999"], timeout=60),
        C("serve-max-batch-0", ["serve", "--max-batch", "0", "--port", "0"], timeout=60),
        C(
            "serve-runs-is-a-file",
            ["serve", "--runs", "afile", "--port", "0"],
            _write("afile", "x"),
            60,
        ),
        # the command itself
        C("unknown-command", ["fly"]),
    ]


# -- running ---------------------------------------------------------------------------------
def _hashes(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _fixture(work: Path) -> Path:
    """An image folder of 3 classes and a run trained on it for one epoch."""
    base = work / "base"
    for k in range(3):
        (base / "imgs" / f"c{k}").mkdir(parents=True)
        for i in range(10):
            _png(base / "imgs" / f"c{k}" / f"{i}.png", seed=10 * k + i)
    argv = [*TRAIN[:-1], "run", "--model", "resnet20", "--val-split", "0.3"]
    r = subprocess.run([*RESNET, *argv], cwd=base, env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"the fixture run failed: {r.stderr[-800:]}")
    return base


def run_case(case: Case, base: Path, work: Path) -> dict:
    """Runs one case in its own copy of the fixture; what it did."""
    c = work / case.name
    shutil.copytree(base, c)
    if case.prepare is not None:
        case.prepare(c)
    before = _hashes(c)
    t0 = time.perf_counter()
    try:
        r = subprocess.run(
            [*RESNET, *case.argv],
            cwd=c,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=case.timeout,
        )
        code, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        code, err = (
            None,
            (e.stderr or b"").decode(errors="replace")
            if isinstance(e.stderr, bytes)
            else (e.stderr or ""),
        )
    after = _hashes(c)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    result = {
        "case": case.name,
        "command": "resnet " + " ".join(case.argv),
        "exit": code,
        "traceback": TRACEBACK in err,
        "files_lost": [p for p, h in before.items() if after.get(p) != h],
        "stderr_lines": len(lines),
        "message": lines[-1][:300] if lines else "",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    shutil.rmtree(c, ignore_errors=True)
    return result


def main() -> None:
    """Runs the census and records it."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-k", default="", help="only cases whose name holds this")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/reliability.json")
    args = ap.parse_args()
    chosen = [c for c in cases() if args.k in c.name]
    work = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    t0 = time.perf_counter()
    try:
        base = _fixture(work)
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda c: run_case(c, base, work), chosen))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in results:
        flag = "TRACEBACK " if r["traceback"] else ""
        flag += "LOST " if r["files_lost"] else ""
        flag += "" if r["exit"] == 2 else f"EXIT={r['exit']} "
        print(f"{r['case']:34s} {flag or 'ok '}{r['message'][:110]}")
    summary = {
        "tried": len(results),
        "tracebacks": sum(r["traceback"] for r in results),
        "files_lost": sum(bool(r["files_lost"]) for r in results),
        "exit_2": sum(r["exit"] == 2 for r in results),
        "other_exits": {r["case"]: r["exit"] for r in results if r["exit"] != 2},
        "seconds": round(time.perf_counter() - t0, 1),
        "jobs": args.jobs,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "cases": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "cases"}, indent=2))
    if not args.k:
        path = Path(args.out)
        data = json.loads(path.read_text()) if path.exists() else {}
        data["bad_inputs"] = summary
        path.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
