"""Fast CPU modes (`export/fast.py`): OpenVINO bf16, the per-stream batch split, OpenVINO's own
int8 pipeline as a reference, and IRs that ask to be compiled in bf16."""

from __future__ import annotations

import pytest
import torch
from test_export import CLASSES, PRE

# Fixtures shared with other modules, requested by name (`x as x`: imported on purpose).
from tiny_runs import digits as digits
from tiny_runs import one_torch_thread as one_torch_thread
from tiny_runs import trained as trained

from resnet.errors import ResNetError
from resnet.export import openvino as ove
from resnet.export import serialize
from resnet.export.benchmark import subject, time_interleaved, top1
from resnet.export.fast import COMPUTE_DTYPE, MODES, build
from resnet.models import model_info

ov = pytest.importorskip("openvino")


def _has_bf16() -> bool:
    return "BF16" in ove._cpu_capabilities(ov)


def test_every_mode_has_a_compute_type():
    assert set(MODES) <= set(COMPUTE_DTYPE)
    assert COMPUTE_DTYPE["openvino_bf16"] == "bf16"
    assert COMPUTE_DTYPE["openvino_int8_reference"] == "int8"


def test_openvino_fp32_splits_big_batches_across_streams_with_the_same_logits(trained, digits):
    model, _ = trained
    x = digits[0][1400:1424]
    run = build(model, "openvino_fp32", example=x[:2], threads=2)
    assert run.fn.queue is not None and run.fn.streams >= 1
    whole = run(x)  # split across the streams when there are several
    one_by_one = torch.cat([run(x[i : i + 1]) for i in range(len(x))])
    assert torch.allclose(whole, one_by_one, atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(whole, model(x), atol=1e-3)
    # batch 1 runs on a compile for batch 1, on whichever thread count measured faster
    assert list(run.fn.request.get_compiled_model().inputs[0].get_partial_shape()) == [1, 1, 16, 16]
    ir = ove.read_model(serialize(model, "openvino", x[:2]))
    one_thread = ove.compile_model(ove.with_batch_one(ir), 1)
    assert run.fn.tune(x, [one_thread], seconds=0.02) in (0, 1)
    assert torch.allclose(run(x[:1]), one_by_one[:1], atol=1e-4)


def test_openvino_bf16_agrees_or_says_why_not(trained, digits):
    model, _ = trained
    x = digits[0][1400:]
    if not _has_bf16():
        with pytest.raises(ResNetError, match="bf16"):
            build(model, "openvino_bf16", example=x[:2])
        return
    run = build(model, "openvino_bf16", example=x[:2], threads=2)
    assert run.fn.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
    agree = (top1(run, x) == top1(model, x)).float().mean()
    assert agree >= 0.98


def test_openvino_int8_reference_is_openvinos_default_pipeline(trained, digits):
    model, _ = trained
    x, y = digits
    with pytest.raises(ResNetError, match="calibration"):
        build(model, "openvino_int8_reference", example=x[:2])
    run = build(model, "openvino_int8_reference", example=x[:2], calibration=x[:64], threads=2)
    conv_precisions = {
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in run.fn.compiled.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    }
    assert conv_precisions & {"u8", "i8"}  # the convolutions run in int8
    held_out = x[1400:]
    agree = (top1(run, held_out) == top1(model, held_out)).float().mean()
    assert agree >= 0.9


def test_an_ir_marked_bf16_is_compiled_in_bf16_and_keeps_its_metadata(trained, digits, tmp_path):
    model, _ = trained
    meta = {"classes": CLASSES, "preprocessing": PRE}
    path = ove.write_ir(
        tmp_path / "m.xml", serialize(model, "openvino", digits[0][:2], metadata=meta)
    )
    with pytest.raises(ResNetError, match="f32 or bf16"):
        ove.set_inference_precision(path, "int4")
    ove.set_inference_precision(path, "bf16" if _has_bf16() else "f32")
    run, read = ove.load(path)
    assert read["classes"] == CLASSES
    want = ov.Type.bf16 if _has_bf16() else ov.Type.f32
    assert run.compiled.get_property("INFERENCE_PRECISION_HINT") == want


def test_time_interleaved_gives_one_figure_per_round_for_each_runner():
    x = torch.zeros(2, 3)
    times = time_interleaved({"a": lambda t: t + 1, "b": lambda t: t * 2}, x, 0.01, rounds=3)
    assert set(times) == {"a", "b"} and all(len(v) == 3 and min(v) > 0 for v in times.values())


@pytest.mark.parametrize("name", ["tv:mobilenet_v3_small", "tv:regnet_y_400mf"])
def test_benchmark_subject_counts_the_macs_of_torchvision_nets(name):
    # RegNet's builder reads tensor values, so its weightless copy is made another way
    s = subject(name, image_size=32)
    assert s.macs == model_info(name, 32)["macs"] > 0
    assert s.preprocessing["size"] == [32, 32]


def test_benchmark_notes_a_mode_that_cannot_run_and_times_the_rest(trained, monkeypatch):
    from resnet.export import benchmark

    _, ckpt = trained
    real = benchmark.build

    def build_or_refuse(model, mode, **kw):
        if mode == "openvino_fp32":
            raise ResNetError("openvino_fp32 is not here")
        return real(model, mode, **kw)

    monkeypatch.setattr(benchmark, "build", build_or_refuse)
    result = benchmark.run_benchmark(
        [benchmark.subject(str(ckpt))],
        batch_sizes=(1, 2),
        modes=("eager_fp32", "channels_last", "openvino_fp32"),
        min_seconds=0.01,
        rounds=1,
        agreement_images=4,
        progress=False,
    )
    (entry,) = [v for v in result.values() if isinstance(v, dict) and "info" in v]
    assert entry["info"]["unavailable"] == {"openvino_fp32": "openvino_fp32 is not here"}
    assert "openvino_fp32" not in entry and entry["channels_last"]["latency_ms"] > 0
    assert "unavailable: openvino_fp32 is not here" in benchmark.format_table(result)
