"""LiteRT (.tflite) export and runtime: parity, flatbuffer metadata, ai-edge-quantizer int8,
--backend litert, the benchmark modes, bad files and missing packages."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from test_export import CLASSES, PRE
from tiny_runs import assert_bad_files_refused, assert_predicts_as_checkpoint

# Fixtures shared with other modules, requested by name (`x as x`: imported on purpose).
from tiny_runs import digit_pngs as digit_pngs
from tiny_runs import digits as digits
from tiny_runs import one_torch_thread as one_torch_thread
from tiny_runs import trained as trained

from resnet.cli import main
from resnet.errors import ResNetError
from resnet.export import detect_format, export_checkpoint, load_classifier, load_serialized

# The runtime is light (imported at collection); the converter pulls in JAX and torchao, so it
# is imported by the first test that needs it (the `_converter` fixture), not at collection.
litert = pytest.importorskip(
    "ai_edge_litert.interpreter",
    reason="LiteRT tests need ai-edge-litert (pip install litert-torch ai-edge-litert)",
)


@pytest.fixture(scope="module", autouse=True)
def _converter():
    pytest.importorskip(
        "litert_torch",
        reason="LiteRT export needs litert-torch (pip install litert-torch ai-edge-litert)",
    )


@pytest.fixture(scope="module")
def fp32(trained, tmp_path_factory):
    """The checkpoint exported once through the CLI's function with its defaults: a .tflite
    has a batch of 1 unless a dynamic one is asked for (default parity images)."""
    _, ckpt = trained
    out = tmp_path_factory.mktemp("lt") / "m.tflite"
    return export_checkpoint(ckpt, "tflite", out, num_images=12)


def test_export_checkpoint_makes_a_dynamic_batch_file_when_asked(trained, tmp_path):
    _, ckpt = trained
    result = export_checkpoint(
        ckpt, "tflite", tmp_path / "d.tflite", dynamic_batch=True, num_images=6
    )
    assert result.metadata["dynamic_batch"] is True and result.parity.batch_sizes == (1, 5)
    run, meta = load_serialized("tflite", result.path)
    assert meta["dynamic_batch"] is True and run.fixed_batch is None


@pytest.fixture(scope="module")
def int8(trained, digit_pngs, tmp_path_factory):
    """ai-edge-quantizer int8, calibrated on the train/ PNGs, judged on the held-out val/ PNGs."""
    _, ckpt = trained
    held_out = sorted((digit_pngs / "val").rglob("*.png"))
    return export_checkpoint(
        ckpt,
        "tflite",
        tmp_path_factory.mktemp("lt8") / "q.tflite",
        int8=True,
        calibration=digit_pngs,
        images=held_out,
        num_images=len(held_out),
    )


def metadata_entries(path) -> dict[str, bytes]:
    """The flatbuffer's metadata list as any TFLite tool sees it (the schema LiteRT ships)."""
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        out[entry.Name().decode()] = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return out


def test_fp32_parity_batch_one_file_and_flatbuffer_metadata(fp32, trained, digits):
    model, _ = trained
    assert fp32.path.suffix == ".tflite" and fp32.paths == [fp32.path]
    assert fp32.size_bytes == fp32.path.stat().st_size > 10_000
    assert fp32.parity.ok and fp32.parity.batch_sizes == (1, 5)
    assert fp32.parity.max_abs_diff < 1e-4 and fp32.parity.top1_agreement == 1.0
    assert fp32.parity.runtime == "ai-edge-litert"
    assert detect_format(fp32.path) == "tflite"
    entries = metadata_entries(fp32.path)
    assert json.loads(entries["classes"]) == CLASSES
    assert json.loads(entries["preprocessing"]) == PRE
    assert json.loads(entries["resnet"])["format"] == "tflite"
    interp = litert.Interpreter(model_path=str(fp32.path))
    assert interp.get_signature_list() == {
        "serving_default": {"inputs": ["input"], "outputs": ["logits"]}
    }
    assert list(interp.get_input_details()[0]["shape"]) == [1, 1, 16, 16]  # batch fixed at 1
    run, meta = load_serialized("tflite", fp32.path)
    assert meta["classes"] == CLASSES and meta["preprocessing"] == PRE
    assert meta["format"] == "tflite" and meta["dynamic_batch"] is False
    x = digits[0][1400:]  # all 397 held-out digits, fed image by image
    with torch.no_grad():
        ref = model(x)
    for b in (1, 7, len(x)):
        torch.testing.assert_close(run(x[:b]), ref[:b], atol=1e-4, rtol=1e-4)


def test_predict_on_tflite_and_backend_litert_match_the_checkpoint(
    fp32, trained, digit_pngs, capsys
):
    _, ckpt = trained
    images = [str(p) for p in sorted((digit_pngs / "val").rglob("*.png"))[:6]]
    assert_predicts_as_checkpoint(capsys, ckpt, fp32.path, "litert", images)
    clf = load_classifier(fp32.path)
    assert clf.backend == "litert" and clf.source == "tflite" and clf.classes == CLASSES
    with pytest.raises(ResNetError, match="runs with --backend litert"):
        load_classifier(fp32.path, backend="onnxruntime")


def test_int8_keeps_99_percent_top1_agreement(int8, fp32, trained, digits):
    model, _ = trained
    assert int8.parity.ok and int8.parity.top1_agreement >= 0.95
    assert int8.metadata["quantization"]["method"].startswith("ai-edge-quantizer")
    assert int8.path.stat().st_size < 0.6 * fp32.path.stat().st_size
    interp = litert.Interpreter(model_path=str(int8.path))
    assert interp.get_input_details()[0]["dtype"].__name__ == "int8"  # integer-only file
    clf = load_classifier(int8.path)
    assert clf.classes == CLASSES and clf.metadata["quantization"]["calibration"].endswith("digits")
    x, y = digits[0][1400:], digits[1][1400:]  # all 397 held-out digits
    with torch.no_grad():
        ref = model(x).argmax(1)
    got = clf(x).argmax(1)
    assert (got == ref).double().mean() >= 0.99
    assert (got == y).double().mean() >= (ref == y).double().mean() - 0.02


def test_benchmark_modes_build_runners(trained, digits):
    from resnet.export.fast import COMPUTE_DTYPE, MODES, build

    model, _ = trained
    assert {"litert_fp32", "litert_int8"} <= set(MODES)
    assert COMPUTE_DTYPE["litert_int8"] == "int8"
    x = digits[0]
    with pytest.raises(ResNetError, match="needs calibration images"):
        build(model, "litert_int8", example=x[:2])
    runner = build(model, "litert_int8", example=x[:2], calibration=x[:256], threads=1)
    with torch.no_grad():
        ref = model(x[1400:]).argmax(1)
    assert (runner(x[1400:]).argmax(1) == ref).double().mean() >= 0.99


def test_parity_failure_writes_nothing_and_keeps_the_old_file(
    fp32, trained, tmp_path, monkeypatch, capsys
):
    import resnet.export.formats as formats

    _, ckpt = trained
    out = tmp_path / "m.tflite"
    out.write_bytes(b"old")
    data, real = fp32.path.read_bytes(), formats.load_serialized

    def drifting(fmt, source, threads=None):  # a runtime whose logits drift
        run, meta = real(fmt, source, threads)
        return (lambda t: run(t) * 1.1 + 0.1), meta

    monkeypatch.setattr(formats, "serialize", lambda *a, **k: data)  # the fixture's, reused
    monkeypatch.setattr(formats, "load_serialized", drifting)
    rc = main(["export", str(ckpt), "--format", "tflite", "--out", str(out), "--num-images", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "parity FAILED" in err[0]
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


def test_bad_tflite_files_are_one_line_errors(fp32, digit_pngs, tmp_path, capsys):
    import litert_torch

    image = str(next((digit_pngs / "val").rglob("*.png")))
    data = fp32.path.read_bytes()
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(data[: len(data) // 2])
    other = tmp_path / "other.tflite"
    other.write_bytes(b"not a flatbuffer at all")
    bare = tmp_path / "bare.tflite"  # converted by litert-torch itself: no resnet metadata
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10)).eval()
    bare.write_bytes(litert_torch.convert(net, (torch.zeros(1, 1, 16, 16),)).model_content())
    cases = [
        (corrupt, "not a readable LiteRT model"),
        (other, "no TFL3 flatbuffer identifier"),
        (bare, "carries no resnet metadata"),
    ]
    assert_bad_files_refused(capsys, "tflite", cases, image)


@pytest.mark.parametrize(
    ("module", "command"),
    [("litert_torch", "export"), ("ai_edge_litert", "predict")],
)
def test_missing_package_is_named_in_one_line(
    fp32, trained, digit_pngs, tmp_path, monkeypatch, capsys, module, command
):
    _, ckpt = trained
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    out = tmp_path / "m.tflite"
    if command == "export":
        argv = ["export", str(ckpt), "--format", "tflite", "--out", str(out)]
    else:
        argv = ["predict", str(fp32.path), str(next((digit_pngs / "val").rglob("*.png")))]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pip install litert-torch ai-edge-litert" in err[0]
    assert not out.exists()


def _warmed(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode with BatchNorm statistics from a few random batches (not the
    initial ones), so the logits differ from image to image."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, 3, 32, 32))
    return model.eval()


def _small(shortcut: str, **options) -> torch.nn.Module:
    """A CIFAR-layout ResNet with one basic block a stage (8, 16, 32 channels)."""
    from resnet.models import ResNet, ResNetSpec

    spec = ResNetSpec(
        "basic", (1, 1, 1), (8, 16, 32), stem="cifar", stem_width=8, shortcut=shortcut
    )
    return ResNet(spec, num_classes=10, **options)


@pytest.mark.parametrize(
    "net",
    [
        "resnet20",  # option-A shortcuts: strided slice + zero channels
        "conv-shortcut",  # 1x1 projection shortcuts (option B); an avg+max pool head
    ],
)
def test_dynamic_batch_file_matches_eager_at_any_batch_in_one_invoke(net):
    from resnet.export import litert as litert_export
    from resnet.models import create
    from resnet.models.layers import GlobalPool, PadShortcut

    if net == "resnet20":
        model = _warmed(create("resnet20", num_classes=10))
    else:  # adaptive_max_pool2d, which litert-torch cannot lower, is rewritten too
        model = _warmed(_small("B", global_pool="avgmax"))
    x = torch.randn(5, 3, 32, 32)
    meta = {"format": "tflite", "classes": list("abcdefghij"), "preprocessing": {}}
    data = litert_export.tflite_bytes(
        model, x[:2], {**meta, "dynamic_batch": False}, dynamic_batch=True
    )
    assert litert_export.read_metadata(data)["dynamic_batch"] is True  # what the file has
    run, _ = litert_export.load(data, threads=1)
    assert run.fixed_batch is None and list(run.input["shape_signature"]) == [-1, 3, 32, 32]
    with torch.no_grad():
        ref = model(x)
    for b in (5, 1, 5):  # the input is resized to each batch, and back
        torch.testing.assert_close(run(x[:b]), ref[:b], atol=1e-4, rtol=1e-4)
    assert run(x[:0]).shape == (0, 10)
    with pytest.raises(ResNetError, match=r"inputs of shape \[N, 3, 32, 32\]"):
        run(torch.zeros(2, 3, 16, 16))
    # A rewritten copy was converted: the model keeps its own pool and shortcuts.
    assert type(model.global_pool) is GlobalPool
    assert sum(isinstance(m, PadShortcut) for m in model.modules()) == (net == "resnet20") * 2
    if net == "resnet20":  # int8 keeps the batch dynamic, and batching changes no value
        int8 = litert_export.quantize_tflite(data, x, threads=1)
        assert litert_export.read_metadata(int8)["dynamic_batch"] is True
        q, _ = litert_export.load(int8, threads=1)
        assert q.fixed_batch is None
        one_by_one = torch.cat([q(x[i : i + 1]) for i in range(5)])
        torch.testing.assert_close(q(x), one_by_one, atol=0, rtol=0)


def test_dynamic_batch_is_refused_in_one_line_for_a_net_that_flattens_by_the_batch():
    from resnet.export import litert as litert_export

    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
    with pytest.raises(ResNetError, match=r"dynamic batch .* failed: .*with a batch of 1"):
        litert_export.tflite_bytes(flat, torch.zeros(2, 3, 32, 32), dynamic_batch=True)


def test_3d_nets_are_refused_before_the_converter_crashes():
    from resnet.export import litert as litert_export
    from resnet.models import create

    with pytest.raises(ResNetError, match="3-D net"):
        litert_export.check_supported(create("resnet10_3d", num_classes=2, in_chans=1))
    litert_export.check_supported(create("resnet20", num_classes=2))  # 2-D: fine
