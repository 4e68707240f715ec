"""`--backend auto`: the fastest mode that agrees with fp32, measured once per file and cached."""

from __future__ import annotations

import json

import pytest
from test_export import CLASSES, PRE, _digits, train_tiny

# Fixtures shared with other modules, requested by name (`x as x`: imported on purpose).
from tiny_runs import digit_pngs as digit_pngs
from tiny_runs import digits as digits
from tiny_runs import one_torch_thread as one_torch_thread

from resnet.cli import main
from resnet.engine.checkpoint import save_checkpoint
from resnet.export import auto, load_classifier
from resnet.export.auto import AGREEMENT_TARGET, choose_backend

pytest.importorskip("onnxruntime")
SMALL_MODES = ("eager_fp32", "channels_last", "onnxruntime_fp32", "onnxruntime_int8")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test caches its choices in its own folder."""
    monkeypatch.setenv("RESNET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained(digits, digit_pngs, tmp_path_factory):
    """test_export's tiny ResNet, saved with a folder of digit PNGs as its data source (its
    train/ calibrates int8, its val/ is held out for the agreement)."""
    model, _ = train_tiny(digits, tmp_path_factory)
    path = tmp_path_factory.mktemp("auto") / "best.pt"
    config = {"data": {"source": str(digit_pngs)}}
    save_checkpoint(path, model, classes=CLASSES, preprocessing=PRE, config=config)
    return model, path, digit_pngs


@pytest.fixture
def counted(monkeypatch):
    """Counts measurements; times each mode only briefly and tries only SMALL_MODES."""
    calls = []
    real = auto.choose_backend

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **{**kwargs, "modes": SMALL_MODES, "min_seconds": 0.03})

    monkeypatch.setattr(auto, "choose_backend", spy)
    return calls


def test_choice_is_the_fastest_agreeing_mode_and_says_why_others_are_out(trained, digits):
    model, _, _ = trained
    x, _ = digits
    choice = choose_backend(
        model,
        x[:2],
        calibration=None,
        agreement=x[1400:1600],
        modes=("channels_last", "onnxruntime_fp32", "onnxruntime_int8", "nope"),
        min_seconds=0.03,
        batch_sizes=(1, 8),
    )
    table = choice.table
    assert list(table)[0] == "eager_fp32" and table["eager_fp32"]["agreement"] == 1.0
    assert "calibration" in table["onnxruntime_int8"]["error"]
    assert "unknown inference mode" in table["nope"]["error"]
    agreeing = {m: r for m, r in table.items() if r.get("agreement", 0) >= AGREEMENT_TARGET}
    assert set(agreeing) >= {"eager_fp32", "channels_last", "onnxruntime_fp32"}
    assert choice.mode == min(agreeing, key=lambda m: agreeing[m]["latency_ms"])
    assert choice.latency_ms == table[choice.mode]["latency_ms"] > 0
    assert choice.throughput_img_s > 0 and choice.agreement >= AGREEMENT_TARGET


def test_load_measures_once_caches_and_a_changed_file_measures_again(trained, counted, tmp_path):
    model, ckpt, _ = trained
    lines: list[str] = []
    first = load_classifier(ckpt, backend="auto", log=lines.append)
    assert counted == [1] and first.choice.mode in SMALL_MODES
    assert first.backend == auto.MODE_BACKEND[first.choice.mode]
    assert "measured now" in lines[-1] and first.choice.mode in lines[-1]
    (stored,) = (tmp_path / "cache" / auto.CACHE_FOLDER).glob("*.json")
    assert json.loads(stored.read_text())["mode"] == first.choice.mode

    second = load_classifier(ckpt, backend="auto", log=lines.append)
    assert counted == [1] and "cached choice" in lines[-1]
    assert second.choice.table == first.choice.table
    x = _digits()[0][1400:1420]
    agree = (second(x).argmax(1) == model(x).argmax(1)).float().mean()
    assert agree >= 0.9

    changed = tmp_path / "changed.pt"
    save_checkpoint(changed, model, classes=CLASSES, preprocessing=PRE, config={"x": 1})
    load_classifier(changed, backend="auto", log=lines.append)
    assert counted == [1, 1] and len(list(stored.parent.glob("*.json"))) == 2


def test_predict_backend_auto_from_the_cli(trained, counted, capsys):
    _, ckpt, folder = trained
    pngs = sorted(str(p) for p in (folder / "val").rglob("*.png"))[:6]
    assert main(["predict", str(ckpt), *pngs, "--json", "--device", "cpu"]) == 0
    torch_preds = json.loads(capsys.readouterr().out)
    assert main(["predict", str(ckpt), *pngs, "--backend", "auto", "--json"]) == 0
    captured = capsys.readouterr()
    auto_preds = json.loads(captured.out)
    assert "backend auto:" in captured.err and counted == [1]
    same = [
        a["predictions"][0]["class"] == t["predictions"][0]["class"]
        for a, t in zip(auto_preds, torch_preds, strict=True)
    ]
    assert sum(same) >= 5


def test_export_backend_auto_writes_the_picked_format(trained, counted, tmp_path, capsys):
    from resnet.engine.checkpoint import load_model_or_ensemble
    from resnet.export import detect_format

    _, ckpt, _ = trained
    choice, cached = auto.choose_for_checkpoint(ckpt, *load_model_or_ensemble(ckpt))
    assert not cached and counted == [1]
    fmt, int8 = auto.EXPORT_FORMAT[choice.mode]
    from resnet.export.formats import SUFFIXES

    out = tmp_path / ("model" + SUFFIXES[fmt])  # the picked format's own file name
    assert main(["export", str(ckpt), "--backend", "auto", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["format"] == fmt == detect_format(out)
    assert "cached choice" in captured.err and counted == [1]
    assert ("QuantizeLinear" in out.read_bytes().decode("latin1")) == (int8 and fmt == "onnx")
    assert main(["export", str(ckpt), "--backend", "auto", "--format", "onnx"]) == 2
