"""Export (ONNX, TorchScript, ExportedProgram) with parity checks, runtimes, int8, benchmark CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from resnet.cli import main
from resnet.data.transforms import make_preprocessing
from resnet.engine.checkpoint import save_checkpoint
from resnet.errors import ResNetError
from resnet.export import (
    FORMATS,
    ParityError,
    check_parity,
    detect_format,
    export_checkpoint,
    load_classifier,
    load_serialized,
    top1_agreement,
)
from resnet.models import ResNet, ResNetSpec

CLASSES = [f"digit{i}" for i in range(10)]
PRE = make_preprocessing(1, (16, 16), [0.3], [0.4])
TINY = ResNetSpec("basic", (1, 1, 1), (8, 16, 32), stem="cifar", stem_width=8, shortcut="A")
# The single-file formats; the OpenVINO IR pair, Keras and LiteRT have their own modules
# (tests/test_openvino.py, tests/test_keras_export.py, tests/test_litert.py).
FILE_FORMATS = tuple(f for f in FORMATS if f not in ("openvino", "keras", "tflite"))


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's real handwritten digits at 16 px, normalised as PRE says."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False)
    return (x - 0.3) / 0.4, torch.tensor(d.target)


@pytest.fixture(scope="module")
def digits():
    return _digits()


def train_tiny(digits, tmp_path_factory):
    """The tiny ResNet trained 5 epochs on 1,400 real digits (the other 397 held out), saved as
    a checkpoint: (model, path). Other export test modules train theirs the same way."""
    x, y = digits
    torch.manual_seed(0)
    model = ResNet(TINY, num_classes=10, in_chans=1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        model.train()
        perm = torch.randperm(1400, generator=g)
        for i in range(0, 1400, 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, model, classes=CLASSES, preprocessing=PRE)
    return model, path


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """A tiny ResNet trained for a few seconds on 1,400 digits (held out: the other 397)."""
    return train_tiny(digits, tmp_path_factory)


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    """Each format exported once (dynamic batch), with its ExportResult."""
    _, ckpt = trained
    out = tmp_path_factory.mktemp("exports")
    suffix = {"onnx": "m.onnx", "torchscript": "m.torchscript.pt", "exported-program": "m.pt2"}
    return {f: export_checkpoint(ckpt, f, out / suffix[f], num_images=12) for f in FILE_FORMATS}


def test_trained_fixture_really_learned(trained, digits):
    model, _ = trained
    x, y = digits
    with torch.no_grad():
        acc = (model(x[1400:]).argmax(1) == y[1400:]).float().mean().item()
    assert acc > 0.8  # chance is 0.1


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_export_parity_dynamic_batch_and_metadata_round_trip(fmt, exports, trained, digits):
    model, _ = trained
    result = exports[fmt]
    assert result.path.exists() and result.parity.ok
    assert result.parity.max_abs_diff < 1e-4 and result.parity.top1_agreement == 1.0
    assert result.parity.batch_sizes == (1, 5)
    assert detect_format(result.path) == fmt
    run, meta = load_serialized(fmt, result.path)  # read back from the file on disk
    assert meta["classes"] == CLASSES and meta["preprocessing"] == PRE
    assert meta["dynamic_batch"] is True and meta["arch"] == "custom"
    x = digits[0][1400:1406]
    with torch.no_grad():
        for b in (1, 5):  # batch sizes other than the export example's (2)
            got = run(x[:b])
            assert got.shape == (b, 10)
            torch.testing.assert_close(got, model(x[:b]), atol=1e-4, rtol=1e-4)


def test_onnx_graph_has_symbolic_batch_and_metadata_props(exports):
    import onnx

    proto = onnx.load(str(exports["onnx"].path))
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # symbolic, not fixed
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == CLASSES
    assert json.loads(props["preprocessing"]) == PRE


def test_static_batch_export_is_fixed_and_refuses_other_batches(trained, tmp_path):
    _, ckpt = trained
    result = export_checkpoint(ckpt, "onnx", tmp_path / "s.onnx", dynamic_batch=False, num_images=3)
    clf = load_classifier(result.path)
    assert clf.metadata["dynamic_batch"] is False
    assert clf(torch.zeros(1, 1, 16, 16)).shape == (1, 10)
    with pytest.raises(ResNetError, match="fixed batch size of 1"):
        clf(torch.zeros(5, 1, 16, 16))


def test_check_parity_reports_a_mismatch_as_error():
    ref = torch.nn.Linear(4, 3)
    x = torch.randn(10, 4)
    ok = check_parity(ref, ref, x)
    # The same model on batches of 1, 5 and 10: equal up to the GEMM kernel's last bit.
    assert ok.ok and ok.max_abs_diff <= 1e-6
    with pytest.raises(ParityError, match="parity FAILED"):
        check_parity(ref, lambda t: ref(t) + 0.5, x)
    report = check_parity(ref, lambda t: ref(t).flip(1), x, raise_on_failure=False)
    assert not report.ok and report.top1_agreement < 1.0


def test_cli_parity_failure_exits_nonzero_one_line_and_keeps_old_file(
    trained, tmp_path, monkeypatch, capsys
):
    import resnet.export.formats as formats

    _, ckpt = trained
    out = tmp_path / "m.torchscript.pt"
    out.write_bytes(b"previous good export")
    real = formats.load_serialized

    def broken(fmt, data, threads=None):  # a runtime whose logits drift
        run, meta = real(fmt, data, threads)
        return (lambda x: run(x) * 1.1 + 0.1), meta

    monkeypatch.setattr(formats, "load_serialized", broken)
    rc = main(
        ["export", str(ckpt), "--format", "torchscript", "--out", str(out), "--num-images", "4"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "parity FAILED" in err[0]
    assert out.read_bytes() == b"previous good export"


def test_cli_export_prints_parity_and_writes_file(trained, tmp_path, capsys):
    _, ckpt = trained
    out = tmp_path / "cli.onnx"
    assert main(["export", str(ckpt), "--out", str(out), "--num-images", "6", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity"]["ok"] and report["parity"]["images"] == 6
    assert report["classes"] == CLASSES and out.exists()
    assert main(["export", str(tmp_path / "missing.pt")]) == 2


def test_load_classifier_backends_agree(trained, exports, digits):
    _, ckpt = trained
    x = digits[0][1400:1408]
    eager = load_classifier(ckpt)
    assert eager.backend == "torch" and eager.model is not None and eager.classes == CLASSES
    via_ort = load_classifier(ckpt, backend="onnxruntime")
    onnx_file = load_classifier(exports["onnx"].path)
    assert onnx_file.backend == "onnxruntime" and onnx_file.preprocessing == PRE
    torch.testing.assert_close(via_ort(x), eager(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(onnx_file(x), eager(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ResNetError, match="runs with --backend onnxruntime"):
        load_classifier(exports["onnx"].path, backend="torch")
    with pytest.raises(ResNetError, match="--backend torch"):
        load_classifier(exports["torchscript"].path, backend="onnxruntime")


def test_int8_static_quantization_agrees_with_fp32_on_held_out_digits(trained, digits):
    import onnx

    from resnet.export import serialize
    from resnet.export.onnx import OrtRunner, session
    from resnet.export.quantize import quantize_onnx

    model, _ = trained
    x, y = digits
    fp32 = serialize(model, "onnx", x[:2])
    int8 = quantize_onnx(fp32, x[:256])  # calibrated on training images only
    ops = {n.op_type for n in onnx.load_from_string(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    held_out = x[1400:]
    q = OrtRunner(session(int8))
    agreement = top1_agreement(model, q, held_out)
    assert agreement >= 0.95
    with torch.no_grad():
        acc_fp32 = (model(held_out).argmax(1) == y[1400:]).float().mean().item()
    acc_int8 = (q(held_out).argmax(1) == y[1400:]).float().mean().item()
    assert acc_int8 >= acc_fp32 - 0.03


def test_benchmark_cli_json(trained, tmp_path, capsys):
    _, ckpt = trained
    out = tmp_path / "bench.json"
    rc = main(
        [
            "benchmark",
            str(ckpt),
            "--batch-sizes",
            "1,4",
            "--modes",
            "eager_fp32,onnxruntime_fp32",
            "--min-seconds",
            "0.05",
            "--json",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    (label,) = [k for k, v in result.items() if isinstance(v, dict) and "info" in v]
    entry = result[label]
    assert entry["info"]["anchor"] == "eager_fp32"  # torchvision has no twin of this model
    row = entry["onnxruntime_fp32"]
    assert row["latency_ms"] > 0 and row["throughput_img_s"] > 0
    assert row["top1_agreement"]["photos"] == 1.0
    assert row["batch4"]["gflops"] > 0 and 0 < row["batch4"]["fraction_of_peak"]
    assert result["peak_gflops"]["fp32"] > 0 and "machine" in result
    assert json.loads(capsys.readouterr().out)[label]["best"]["mode"] == "onnxruntime_fp32"


def test_cli_int8_export_calibrates_on_a_folder_and_checks_agreement(trained, tmp_path, capsys):
    import onnx
    from conftest import write_digits_folder

    _, ckpt = trained
    root = write_digits_folder(tmp_path / "digits", per_class=10)
    held_out = sorted(str(p) for p in (root / "val").rglob("*.png"))
    out = tmp_path / "q.onnx"
    rc = main(
        [
            "export",
            str(ckpt),
            "--int8",
            "--calibration",
            str(root),
            "--out",
            str(out),
            "--images",
            *held_out,
            "--num-images",
            str(len(held_out)),
            "--json",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity"]["ok"] and report["parity"]["top1_agreement"] >= 0.95
    proto = onnx.load(str(out))
    assert "QuantizeLinear" in {n.op_type for n in proto.graph.node}
    meta = load_classifier(out).metadata
    assert meta["quantization"]["calibration"] == str(root) and meta["classes"] == CLASSES
    assert main(["export", str(ckpt), "--format", "torchscript", "--int8"]) == 2


def test_torchvision_anchor_only_for_nets_that_compute_what_torchvision_computes():
    import resnet
    from resnet.export.benchmark import _torchvision_twin

    x = torch.randn(1, 3, 64, 64)
    plain = resnet.create("resnet18", num_classes=10).eval()
    twin = _torchvision_twin(plain)
    assert twin is not None and torch.allclose(twin(x), plain(x), atol=1e-5)
    for option in (dict(act="gelu"), dict(global_pool="max")):  # same parameters, other function
        assert _torchvision_twin(resnet.create("resnet18", num_classes=10, **option)) is None
