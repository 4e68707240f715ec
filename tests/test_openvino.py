"""OpenVINO IR export and runtime: parity, rt_info metadata, NNCF int8, scans, bad files."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from test_export import CLASSES, PRE
from tiny_runs import assert_bad_files_refused, assert_predicts_as_checkpoint, predict_json

# Fixtures shared with other modules, requested by name (`x as x`: imported on purpose).
from tiny_runs import digit_pngs as digit_pngs
from tiny_runs import digits as digits
from tiny_runs import one_torch_thread as one_torch_thread
from tiny_runs import trained as trained

from resnet.cli import main
from resnet.data.cohort import write_cohort
from resnet.errors import ResNetError
from resnet.export import detect_format, load_classifier, load_serialized

ov = pytest.importorskip("openvino")


def export_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["export", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def fp32(trained, tmp_path_factory):
    """The checkpoint exported once through the CLI's function (default parity images)."""
    from resnet.export import export_checkpoint

    _, ckpt = trained
    out = tmp_path_factory.mktemp("ov") / "m.openvino.xml"
    return export_checkpoint(ckpt, "openvino", out, num_images=12)


@pytest.fixture(scope="module")
def int8(trained, digit_pngs, tmp_path_factory):
    """NNCF int8, calibrated on the train/ PNGs, judged on the held-out val/ PNGs."""
    from resnet.export import export_checkpoint

    _, ckpt = trained
    held_out = sorted((digit_pngs / "val").rglob("*.png"))
    out = tmp_path_factory.mktemp("ov8") / "q.xml"
    return export_checkpoint(
        ckpt,
        "openvino",
        out,
        int8=True,
        calibration=digit_pngs,
        images=held_out,
        num_images=len(held_out),
    )


def test_fp32_ir_pair_parity_dynamic_batch_and_rt_info(fp32, trained, digits):
    model, _ = trained
    xml, weights = fp32.paths
    assert xml.exists() and weights == xml.with_suffix(".bin") and weights.stat().st_size > 1000
    assert fp32.parity.ok and fp32.parity.batch_sizes == (1, 5)
    assert fp32.parity.max_abs_diff < 1e-4 and fp32.parity.top1_agreement == 1.0
    assert detect_format(xml) == "openvino"
    ir = ov.Core().read_model(str(xml))  # rt_info as any OpenVINO tool sees it
    assert ir.inputs[0].get_partial_shape()[0].is_dynamic
    assert json.loads(ir.get_rt_info(["resnet", "classes"]).astype(str)) == CLASSES
    assert json.loads(ir.get_rt_info(["resnet", "preprocessing"]).astype(str)) == PRE
    run, meta = load_serialized("openvino", xml)
    assert meta["classes"] == CLASSES and meta["preprocessing"] == PRE
    assert meta["format"] == "openvino" and meta["dynamic_batch"] is True
    x = digits[0][1400:1406]  # real held-out digits, at batch sizes other than the example's
    with torch.no_grad():
        for b in (1, 5):
            torch.testing.assert_close(run(x[:b]), model(x[:b]), atol=1e-4, rtol=1e-4)


def test_predict_on_ir_and_backend_openvino_match_the_checkpoint(fp32, trained, digit_pngs, capsys):
    _, ckpt = trained
    images = [str(p) for p in sorted((digit_pngs / "val").rglob("*.png"))[:6]]
    assert_predicts_as_checkpoint(capsys, ckpt, fp32.path, "openvino", images)
    clf = load_classifier(fp32.path)
    assert clf.backend == "openvino" and clf.source == "openvino" and clf.classes == CLASSES
    with pytest.raises(ResNetError, match="runs with --backend openvino"):
        load_classifier(fp32.path, backend="onnxruntime")


def test_int8_agrees_with_fp32_on_held_out_digits(int8, trained, digits):
    model, _ = trained
    assert int8.parity.ok and int8.parity.min_agreement == 0.95
    assert int8.parity.top1_agreement >= 0.95
    assert int8.metadata["quantization"]["method"].startswith("NNCF")
    ir = ov.Core().read_model(str(int8.path))
    assert "FakeQuantize" in {op.get_type_name() for op in ir.get_ops()}
    clf = load_classifier(int8.path)
    assert clf.metadata["quantization"]["calibration"].endswith("digits")
    x, y = digits[0][1400:], digits[1][1400:]  # all 397 held-out digits
    with torch.no_grad():
        ref = model(x).argmax(1)
    got = clf(x).argmax(1)
    assert (got == ref).float().mean() >= 0.95
    assert (got == y).float().mean() >= (ref == y).float().mean() - 0.03


def test_embedded_preprocessing_takes_uint8_pixels(trained, digits, digit_pngs, tmp_path, capsys):
    """The IR with the preprocessing inside takes uint8 NHWC pixels straight from a decoder
    and gives eager's logits for the same pixels; our own tools still run it from floats."""
    from resnet.export import openvino as ove

    model, ckpt = trained
    out = tmp_path / "pixels.xml"
    got = export_json(
        capsys,
        str(ckpt),
        "--format",
        "openvino",
        "--embed-preprocessing",
        "--out",
        str(out),
        "--num-images",
        "6",
    )
    assert got["path"] == str(out)
    ir = ov.Core().read_model(str(out))
    assert ir.inputs[0].get_element_type() == ov.Type.u8
    assert [d.get_length() for d in ir.inputs[0].get_partial_shape()[1:]] == [16, 16, 1]
    x = ove.on_pixel_grid(digits[0][1400:1405], PRE)  # eager sees the same 8-bit pixels
    pixels = ove.to_pixels(x, PRE)
    assert pixels.dtype == np.uint8 and pixels.shape == (5, 16, 16, 1)
    compiled = ove.compile_model(ir)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(compiled(pixels)[0], want, atol=1e-4, rtol=1e-4)
    clf = load_classifier(out)  # normalised floats in, as predict and val feed them
    assert clf.metadata["pixel_input"] is True
    np.testing.assert_allclose(clf(x).numpy(), want, atol=1e-4, rtol=1e-4)
    images = [str(p) for p in sorted((digit_pngs / "val").rglob("*.png"))[:4]]
    eager = predict_json(capsys, str(ckpt), *images)
    from_ir = predict_json(capsys, str(out), *images)
    for e, a in zip(eager, from_ir, strict=True):
        assert a["predictions"][0]["class"] == e["predictions"][0]["class"]


def test_embedded_preprocessing_reorders_rgb_pixels_for_bgr_weights():
    """Caffe-style weights want BGR: the graph takes RGB pixels and reorders them itself."""
    from resnet.data.transforms import ToModelInput, make_preprocessing
    from resnet.export import onnx as onnx_export
    from resnet.export import openvino as ove

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()
    pre = make_preprocessing(3, (8, 8), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]) | {
        "channel_order": "bgr"
    }
    rgb = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)  # as a decoder gives them
    x = ToModelInput(pre)(rgb.permute(0, 3, 1, 2).float() / 255)  # what eager is fed
    onnx_model = onnx_export.onnx_bytes(net, x, dynamic_batch=True)
    ir = ove.embed_preprocessing(ove.ir_bytes(ove.from_onnx(onnx_model)), pre)
    compiled = ove.compile_model(ove.read_model(ir))
    with torch.no_grad():
        want = net(x).numpy()
    np.testing.assert_allclose(compiled(rgb.numpy())[0], want, atol=1e-5, rtol=1e-5)
    assert np.array_equal(ove.to_pixels(x, pre), rgb.numpy())  # and back again


def test_embedded_preprocessing_is_refused_outside_openvino(trained, tmp_path, capsys):
    _, ckpt = trained
    capsys.readouterr()
    assert main(["export", str(ckpt), "--format", "onnx", "--embed-preprocessing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["resnet export: error: --embed-preprocessing applies to --format openvino"]


def test_parity_failure_writes_nothing_and_keeps_the_old_pair(
    fp32, trained, tmp_path, monkeypatch, capsys
):
    import resnet.export.formats as formats
    from resnet.export import openvino as ov_export

    _, ckpt = trained
    xml, weights = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_bytes(b"old xml")
    weights.write_bytes(b"old bin")
    ir = ov_export.IR(fp32.path.read_bytes(), fp32.paths[1].read_bytes())
    real = formats.load_serialized

    def drifting(fmt, data, threads=None):  # an OpenVINO whose logits drift
        run, meta = real(fmt, data, threads)
        return (lambda t: run(t) * 1.1 + 0.1), meta

    monkeypatch.setattr(formats, "serialize", lambda *a, **k: ir)  # the fixture's export, reused
    monkeypatch.setattr(formats, "load_serialized", drifting)
    rc = main(["export", str(ckpt), "--format", "openvino", "--out", str(xml), "--num-images", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "parity FAILED" in err[0]
    assert xml.read_bytes() == b"old xml" and weights.read_bytes() == b"old bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]  # no temp files


def test_a_crash_between_the_renames_is_refused_not_run(fp32, int8, tmp_path, monkeypatch):
    import os

    from resnet.export import openvino as ov_export

    xml = tmp_path / "m.xml"
    shutil.copy(fp32.path, xml)
    shutil.copy(fp32.paths[1], xml.with_suffix(".bin"))
    new = ov_export.IR(int8.path.read_bytes(), int8.paths[1].read_bytes())
    calls, real = [], os.replace

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the .bin was renamed, before the .xml
        real(src, dst)

    monkeypatch.setattr(ov_export.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        ov_export.write_ir(xml, new)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    assert xml.read_bytes() == fp32.path.read_bytes()  # old graph, new weights
    with pytest.raises(ResNetError, match="half-replaced"):
        load_classifier(xml)
    ov_export.write_ir(xml, new)  # the next write completes the pair
    assert load_classifier(xml).metadata["quantization"]


def test_bad_ir_files_are_one_line_errors(fp32, trained, digit_pngs, tmp_path, capsys):
    image = str(next((digit_pngs / "val").rglob("*.png")))
    corrupt = tmp_path / "corrupt.xml"
    corrupt.write_bytes(fp32.path.read_bytes()[: len(fp32.path.read_bytes()) // 2])
    shutil.copy(fp32.paths[1], corrupt.with_suffix(".bin"))
    lonely = tmp_path / "lonely.xml"
    shutil.copy(fp32.path, lonely)
    other = tmp_path / "other.xml"
    other.write_text("<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'/>\n")
    cases = [
        (corrupt, "not a readable OpenVINO IR"),
        (lonely, "no weights file lonely.bin"),
        (other, "not an OpenVINO IR"),
    ]
    assert_bad_files_refused(capsys, "openvino", cases, image)
    _, ckpt = trained
    assert main(["export", str(ckpt), "--format", "openvino", "--out", str(tmp_path / "a.ir")]) == 2
    assert "name the output *.xml" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "argv", "hint"),
    [
        ("openvino", [], "pip install openvino"),
        ("nncf", ["--int8", "--calibration", "fashion-mnist"], "pip install nncf"),
    ],
)
def test_missing_package_is_named_in_one_line(
    trained, tmp_path, monkeypatch, capsys, module, argv, hint
):
    _, ckpt = trained
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    out = tmp_path / "m.xml"
    rc = main(["export", str(ckpt), "--format", "openvino", "--out", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and hint in err[0]
    assert not out.exists()


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    """A resnet10_3d trained one epoch on a tiny synthetic cohort (volumes 4 x 16 x 16)."""
    root = tmp_path_factory.mktemp("cohort")
    write_cohort(root, patients=8, slices=4, size=16, seed=0, max_series=1)
    out = tmp_path_factory.mktemp("volume") / "run"
    argv = ["train", "--data", str(root), "--model", "resnet10_3d", "--volume", "4,16,16"]
    argv += ["--epochs", "1", "--batch-size", "8", "--group-by", "patient", "--device", "cpu"]
    assert main([*argv, "--precision", "fp32", "--quiet", "--out", str(out)]) == 0
    return root, out


def test_scan_model_exports_and_predicts_as_the_checkpoint(volume_run, tmp_path, capsys):
    root, run = volume_run
    xml = tmp_path / "scan.xml"
    report = export_json(
        capsys, str(run), "--format", "openvino", "--out", str(xml), "--num-images", "4"
    )
    assert report["parity"]["ok"] and report["parity"]["max_abs_diff"] < 1e-4
    assert report["preprocessing"]["scan"]["mode"] == "volume"
    series = str(next(p for p in sorted(root.rglob("series1")) if p.is_dir()))
    eager = predict_json(capsys, str(run), series)
    exported = predict_json(capsys, str(xml), series)
    assert exported[0]["predictions"][0]["class"] == eager[0]["predictions"][0]["class"]
    for p, q in zip(eager[0]["predictions"], exported[0]["predictions"], strict=True):
        assert q["probability"] == pytest.approx(p["probability"], abs=1e-4)
