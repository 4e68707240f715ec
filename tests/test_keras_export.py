"""Keras 3 export (.keras): parity with the eager net, metadata in the archive, predict, refusals.

Keras runs on its torch backend here (no TensorFlow): `keras_export.require_keras` sets
KERAS_BACKEND=torch before the first import when nothing chose a backend.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

keras = pytest.importorskip("keras")

import resnet  # noqa: E402
from resnet.cli import main  # noqa: E402
from resnet.data.transforms import make_preprocessing  # noqa: E402
from resnet.engine.checkpoint import save_checkpoint  # noqa: E402
from resnet.errors import ResNetError  # noqa: E402
from resnet.export import detect_format, export_checkpoint, load_classifier  # noqa: E402
from resnet.export.samples import random_views, sample_photos  # noqa: E402

# Keras' torch backend converts its variables with np.array(tensor) when it saves (Keras' own).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
CLASSES = [f"class{i}" for i in range(10)]
# name, model options, preprocessing (the 64 px one with Caffe's BGR order: the flip layer)
CASES = {
    "resnet20": ({}, make_preprocessing(3, (32, 32), [0.49, 0.48, 0.45], [0.25, 0.24, 0.26])),
    "resnet18": (
        {"small_input": True},
        make_preprocessing(3, (64, 64), [0.40, 0.46, 0.48], [1 / 255] * 3)
        | {"channel_order": "bgr"},
    ),
}


@pytest.fixture(scope="module", autouse=True)
def _two_torch_threads():
    """At most two PyTorch threads: the machine's two cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


def _photos(n: int, size, seed: int) -> torch.Tensor:
    """`n` crops of the bundled photos resized to `size`: RGB [0, 1], [N, 3, H, W]."""
    views = random_views(sample_photos(), n, seed=seed, min_scale=0.3)
    size = tuple(size) if isinstance(size, list | tuple) else (size, size)
    resize = torch.nn.functional.interpolate
    return torch.cat([resize(v[None], size=size, mode="bilinear", antialias=True) for v in views])


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode with non-trivial BatchNorm statistics and affines (a fresh net's
    mean 0 / var 1 would hide a swapped statistic)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def _checkpoint(folder, name: str):
    options, pre = CASES[name]
    torch.manual_seed(0)
    model = _randomised(resnet.create(name, num_classes=10, **options))
    path = save_checkpoint(folder / f"{name}.pt", model, classes=CLASSES, preprocessing=pre)
    return path, model, pre


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    """A checkpoint of `name` (random weights, real-image parity) exported to .keras."""
    folder = tmp_path_factory.mktemp(request.param)
    ckpt, model, pre = _checkpoint(folder, request.param)
    result = export_checkpoint(ckpt, "keras")
    return dict(name=request.param, ckpt=ckpt, model=model, pre=pre, result=result)


def test_export_passes_parity_at_batch_1_and_5_and_keras_opens_it(exported):
    result, pre = exported["result"], exported["pre"]
    assert result.path.name == f"{exported['name']}.keras" and result.path.is_file()
    assert result.parity.ok and result.parity.batch_sizes == (1, 5)
    assert result.parity.max_abs_diff <= result.parity.tolerance
    print(exported["name"], result.parity.line())
    assert detect_format(result.path) == "keras"
    # A Keras user's view: load_model alone, fed RGB [0, 1] NHWC images (the archive's extra
    # resnet.json entry does not bother it).
    km = keras.saving.load_model(result.path)
    assert km.layers[1].name == ("rgb_to_bgr" if pre.get("channel_order") else "normalize")
    views = _photos(5, pre["size"], seed=1)
    got = keras.ops.convert_to_numpy(km(views.permute(0, 2, 3, 1).numpy(), training=False))
    ours = resnet.export.load_classifier(exported["ckpt"]).transform()(views)
    with torch.no_grad():
        ref = exported["model"](ours).numpy()
    assert np.abs(got - ref).max() <= 1e-3 + 1e-3 * np.abs(ref).max()


JAX_CHECK = """
import sys, numpy as np, keras
assert keras.backend.backend() == "jax", keras.backend.backend()
km = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(km.predict(x, verbose=0)))
"""


def test_the_keras_file_runs_on_the_jax_backend(tmp_path):
    """A JAX user's view: the file written on the torch backend, run by Keras on JAX, gives
    the same logits (resnet18 with the BGR flip: the ImageNet layout and every layer kind)."""
    pytest.importorskip("jax")
    import subprocess

    ckpt, model, pre = _checkpoint(tmp_path, "resnet18")
    path = export_checkpoint(ckpt, "keras").path
    views = _photos(3, pre["size"], seed=2)
    np.save(tmp_path / "x.npy", views.permute(0, 2, 3, 1).numpy())
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", JAX_CHECK, str(path), "x.npy", "y.npy"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ours = resnet.export.load_classifier(ckpt).transform()(views)
    with torch.no_grad():
        ref = model(ours).numpy()
    got = np.load(tmp_path / "y.npy")
    assert np.abs(got - ref).max() <= 1e-3 + 1e-3 * np.abs(ref).max()


def test_classes_and_preprocessing_are_in_the_archive(exported):
    with zipfile.ZipFile(exported["result"].path) as z:
        meta = json.loads(z.read("resnet.json"))
    assert meta["classes"] == CLASSES and meta["preprocessing"] == exported["pre"]
    assert meta["format"] == "keras" and "NHWC" in meta["input_layout"]
    clf = load_classifier(exported["result"].path)
    assert clf.backend == "keras" and clf.source == "keras" and clf.classes == CLASSES


def test_predict_on_keras_file_gives_the_checkpoints_top_class(exported, tmp_path, capsys):
    from PIL import Image

    images = []
    for i, v in enumerate(_photos(2, exported["pre"]["size"], seed=3)):
        path = tmp_path / f"photo{i}.png"
        Image.fromarray((v.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
        images.append(str(path))

    def top(*argv):
        assert main(["predict", argv[0], *images, *argv[1:], "--json", "--device", "cpu"]) == 0
        return [r["predictions"][0]["class"] for r in json.loads(capsys.readouterr().out)]

    eager = top(str(exported["ckpt"]))
    assert top(str(exported["result"].path)) == eager
    if exported["name"] == "resnet20":  # a checkpoint exported in memory, parity-checked
        assert top(str(exported["ckpt"]), "--backend", "keras") == eager


@pytest.mark.slow  # ~20 s: Keras builds and loads a ResNet-50 three times
def test_keras_resnet50_round_trips_keras_ours_keras(tmp_path):
    """keras.applications ResNet50 -> our keras_resnet50 -> .keras -> Keras: equal logits."""
    from test_keras_weights import _randomise

    keras.utils.set_random_seed(0)
    original = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    _randomise(original, np.random.default_rng(0))
    original.save(tmp_path / "orig.keras")
    with pytest.raises(ResNetError, match="carries no resnet metadata"):
        load_classifier(tmp_path / "orig.keras")  # a Keras archive, but not one of ours
    model = resnet.models.model_from_weights(tmp_path / "orig.keras").eval()
    pre = model.pretrained_cfg["preprocessing"] | {"size": [32, 32], "resize": None}
    ckpt = save_checkpoint(tmp_path / "k50.pt", model, classes=CLASSES, preprocessing=pre)
    result = export_checkpoint(ckpt, "keras", num_images=6)
    print("keras_resnet50", result.parity.line())
    again = keras.saving.load_model(result.path)
    x = _photos(3, 32, seed=2).permute(0, 2, 3, 1).numpy()
    caffe = keras.applications.resnet.preprocess_input(x * 255.0)
    want = keras.ops.convert_to_numpy(original(caffe, training=False))
    got = keras.ops.convert_to_numpy(again(x, training=False))
    assert np.abs(got - want).max() <= 1e-3 + 1e-3 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).all()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unsupported_family_is_one_line_and_exit_2(tmp_path, capsys):
    model = resnet.create("resnext50_32x4d", num_classes=10).eval()
    pre = make_preprocessing(3, (32, 32), [0.5] * 3, [0.25] * 3)
    ckpt = save_checkpoint(tmp_path / "x.pt", model, classes=CLASSES, preprocessing=pre)
    assert main(["export", str(ckpt), "--format", "keras"]) == 2
    line = _one_line_error(capsys)
    assert "Keras export covers" in line and "cifar" in line and "resnext50_32x4d" in line
    assert not (tmp_path / "x.keras").exists()


def test_missing_keras_names_pip_install(tmp_path, capsys, monkeypatch):
    ckpt, _, _ = _checkpoint(tmp_path, "resnet20")
    monkeypatch.setitem(sys.modules, "keras", None)  # `import keras` raises ImportError
    assert main(["export", str(ckpt), "--format", "keras"]) == 2
    assert "pip install keras" in _one_line_error(capsys)
    assert not (tmp_path / "resnet20.keras").exists()
