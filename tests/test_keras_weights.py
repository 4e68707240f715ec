"""Keras' ResNets: same parameters, Keras files load exactly (logits), preprocessing, bad files.

One Keras model per family (ResNet50, ResNet50V2) with random weights and non-trivial BatchNorm
statistics, saved as .weights.h5, .keras, legacy .h5 and the weights-only layout Keras' own
downloads use; nothing is downloaded.
"""

import dataclasses
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")  # no TensorFlow here: Keras runs on torch
keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

import resnet  # noqa: E402
from resnet.data.transforms import eval_transform  # noqa: E402
from resnet.errors import ResNetError  # noqa: E402
from resnet.models import catalogue, count_params, get_entry, plain_name, weight_files  # noqa: E402
from resnet.models.keras_weights import keras_param_count, read_keras_weights  # noqa: E402

torch.set_num_threads(2)
# Keras 3.15 on numpy 2 warns about `__array__(copy=...)` on every weight it converts.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOL = 1e-4
SIZE = (57, 43)  # odd, non-square: every padding and stride choice shows at the borders
# keras.applications count_params() with the 1000-class top (checked once against Keras 3.15
# building each net); Keras counts BatchNorm's moving mean/variance, we keep them as buffers.
KERAS_COUNTS = {
    "keras_resnet50": 25_636_712,
    "keras_resnet101": 44_707_176,
    "keras_resnet152": 60_419_944,
    "keras_resnet50v2": 25_613_800,
    "keras_resnet101v2": 44_675_560,
    "keras_resnet152v2": 60_380_648,
}
STR = h5py.string_dtype()
FAMILIES = {"v1": ("ResNet50", "keras_resnet50"), "v2": ("ResNet50V2", "keras_resnet50v2")}


def _randomise(model, rng) -> None:
    """Random BN statistics, scales and shifts and conv biases (Keras starts them at 0/1)."""
    for layer in model.layers:
        ws = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            shapes = [w.shape for w in ws]
            ws = [
                rng.uniform(0.5, 1.5, shapes[0]),
                rng.normal(0, 0.1, shapes[1]),
                rng.normal(0, 0.1, shapes[2]),
                rng.uniform(0.5, 1.5, shapes[3]),
            ]
        elif len(ws) == 2:
            ws = [ws[0], rng.normal(0, 0.1, ws[1].shape)]
        if ws:
            layer.set_weights([w.astype("float32") for w in ws])


def _weights_only(full_h5, dest) -> None:
    """The layout of Keras' downloads: the model's layer groups at the root, no model config."""
    with h5py.File(full_h5, "r") as src, h5py.File(dest, "w") as out:
        group = src["model_weights"]
        for name in group:
            group.copy(name, out)
        for key, value in group.attrs.items():
            out.attrs[key] = value


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """A Keras net with random weights, its logits on one input, and its four files."""
    keras_name, arch = FAMILIES[request.param]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, keras_name)(
        weights=None, input_shape=(*SIZE, 3), classes=10, classifier_activation=None
    )
    _randomise(model, np.random.default_rng(0))
    d = tmp_path_factory.mktemp(arch)
    files = {s: d / f"{arch}{s}" for s in (".weights.h5", ".keras", ".h5")}
    model.save_weights(files[".weights.h5"])
    model.save(files[".keras"])
    model.save(files[".h5"])  # Keras 3 writes the legacy (Keras 2) HDF5 layout for .h5
    files["weights-only"] = d / f"{arch}_weights_tf_dim_ordering_tf_kernels.h5"
    _weights_only(files[".h5"], files["weights-only"])
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    logits = keras.ops.convert_to_numpy(model(x.permute(0, 2, 3, 1).numpy(), training=False))
    counts = (model.count_params(), sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    return dict(arch=arch, files=files, x=x, logits=torch.from_numpy(logits), counts=counts)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("arch", sorted(KERAS_COUNTS))
def test_parameter_counts_equal_keras_published(arch):
    with torch.device("meta"):
        model = resnet.create(arch)
    assert keras_param_count(model) == KERAS_COUNTS[arch]
    twin = get_entry(plain_name(arch))  # every Keras net has its plain twin
    assert twin.spec == dataclasses.replace(get_entry(arch).spec, skip=False)


def test_keras_logits_equal_ours_from_every_file_format(family):
    keras_total, keras_trainable = family["counts"]
    files = family["files"]
    model = resnet.models.model_from_weights(files[".keras"])  # the file says which net it is
    assert model.arch == family["arch"] and model.num_classes == 10
    assert count_params(model) == keras_trainable and keras_param_count(model) == keras_total
    assert model.weights_report.head == "loaded" and not model.weights_report.missing
    pre = model.pretrained_cfg["preprocessing"]  # Keras' preprocessing travels with the file
    assert pre == catalogue.keras_preprocessing(v2=family["arch"].endswith("v2"))
    with torch.no_grad():
        diff = (model(family["x"]) - family["logits"]).abs().max().item()
    print(f"{family['arch']}: max |logit difference| vs Keras {diff:.2e}")
    assert diff <= TOL
    # The other formats give the very same tensors (Keras' own weights-only layout: the cache
    # test below loads it through the catalogue).
    state = model.state_dict()
    for key in (".weights.h5", ".h5"):
        other, meta = read_keras_weights(files[key], family["arch"])
        assert meta["arch"] == family["arch"]
        assert all(torch.equal(other[k], state[k]) for k in other), key
        assert set(state) - set(other) <= {k for k in state if k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("v2", [False, True])
def test_eval_transform_equals_keras_preprocess_input(v2):
    from sklearn.datasets import load_sample_image

    pre = catalogue.keras_preprocessing(v2)
    assert pre.get("channel_order", "rgb") == ("rgb" if v2 else "bgr")
    pixels = np.array(load_sample_image("china.jpg")[:200, :300])  # a real photo, uint8 HWC RGB
    h, w = pixels.shape[:2]
    ours = eval_transform(dict(pre, size=[h, w], resize=None))(
        torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    )
    module = keras.applications.resnet_v2 if v2 else keras.applications.resnet
    theirs = module.preprocess_input(pixels.astype("float32"))  # BGR - mean (0-255), or [-1, 1]
    theirs = torch.from_numpy(np.ascontiguousarray(theirs.transpose(2, 0, 1)))
    assert (ours - theirs).abs().max().item() <= TOL


def test_training_transform_honours_the_channel_order():
    from resnet.data.transforms import train_transform

    pre = catalogue.keras_preprocessing(v2=False)
    x = torch.rand(3, 8, 8)
    tf = train_transform(dict(pre, size=[8, 8]), "flip", flip=False)  # resize, then normalise
    want = (x.flip(0) - torch.tensor(pre["mean"]).view(3, 1, 1)) / torch.tensor(pre["std"]).view(
        3, 1, 1
    )
    assert torch.allclose(tf(x), want, atol=1e-4)
    with pytest.raises(ValueError, match="channel_order"):
        eval_transform(dict(pre, channel_order="grb"))


def test_a_file_of_another_architecture_names_the_first_mismatched_layer(family):
    files, arch = family["files"], family["arch"]
    other, first = (
        ("keras_resnet50v2", "conv2_block1_preact_bn")
        if arch == "keras_resnet50"
        else ("keras_resnet50", "conv1_bn")
    )
    with pytest.raises(ResNetError) as e:
        resnet.create(other, weights=files[".weights.h5"])
    msg = _one_line(e)
    assert f"Keras layer {first}" in msg and f"holds {arch}" in msg
    with pytest.raises(ResNetError) as e:  # torchvision's layouts have no conv biases
        resnet.create(
            "resnet50_v1" if arch == "keras_resnet50" else "resnet50", weights=files[".h5"]
        )
    assert "Keras layer conv1_conv holds 2 arrays" in _one_line(e)


def _edited_copy(family, tmp_path, edit):
    if family["arch"] != "keras_resnet50":
        pytest.skip("one family is enough for hand-edited files")
    path = tmp_path / "edited.h5"
    shutil.copy(family["files"]["weights-only"], path)
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def _strings(values) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], object)


def test_missing_extra_and_misshapen_layers_are_named(family, tmp_path):
    def drop(f):
        del f["conv3_block2_2_conv"]

    def add(f):
        g = f.create_group("conv6_block1_1_conv")
        g.attrs.create("weight_names", _strings(["conv6_block1_1_conv/kernel:0"]), dtype=STR)
        g["conv6_block1_1_conv/kernel:0"] = np.zeros((1, 1, 2, 2), "float32")
        names = _strings([*f.attrs["layer_names"], "conv6_block1_1_conv"])
        f.attrs.create("layer_names", names, dtype=STR)

    def widen(f):
        g = f["conv4_block1_2_conv"]
        key = next(k for k in _strings(g.attrs["weight_names"]) if k.endswith("kernel"))
        shape = g[key].shape
        del g[key]
        g[key] = np.zeros((*shape[:3], shape[3] + 1), "float32")

    for edit, words in (
        (drop, "Keras layer conv3_block2_2_conv (for layer2.1.conv2) is missing"),
        (add, "Keras layer conv6_block1_1_conv has no place in keras_resnet50"),
        (widen, "Keras layer conv4_block1_2_conv kernel has shape (3, 3, 256, 257)"),
    ):
        path = _edited_copy(family, tmp_path, edit)
        with pytest.raises(ResNetError) as e:
            resnet.create("keras_resnet50", weights=path)
        assert words in _one_line(e)


def test_files_without_keras_weights_are_refused(tmp_path):
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f["not_a_layer"] = np.zeros(3)
    not_hdf5 = tmp_path / "text.h5"
    not_hdf5.write_text("not an HDF5 file")
    not_zip = tmp_path / "model.keras"
    not_zip.write_bytes(b"PK but no zip")
    for path, words in (
        (empty, "no Keras weights"),
        (not_hdf5, "not a readable HDF5"),
        (not_zip, "not a Keras archive"),
    ):
        with pytest.raises(ResNetError, match=words) as e:
            resnet.create("keras_resnet50", weights=path)
        _one_line(e)


def test_catalogue_lists_keras_files_with_their_md5():
    from keras.src.applications import resnet as keras_resnet

    for key, (md5, _notop) in keras_resnet.WEIGHTS_HASHES.items():
        if key.startswith("resnext"):
            continue
        w = catalogue.get_weights(f"keras:{key}", f"keras_{key}")
        assert w.sha256 == f"md5:{md5}" and w.arch == f"keras_{key}"
        assert (
            w.url == f"{keras_resnet.BASE_WEIGHTS_PATH}{key}_weights_tf_dim_ordering_tf_kernels.h5"
        )
        assert w.preprocessing["crop"] == (299 if key.endswith("v2") else 224)
    with pytest.raises(ResNetError, match="not for keras_resnet50"):
        catalogue.get_weights("keras:resnet101", "keras_resnet50")
    with pytest.raises(ResNetError, match="Keras has resnet50"):
        catalogue.get_weights("keras:resnet18")


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_md5_download_is_checked_in_full(tmp_path):
    served = tmp_path / "served.h5"
    served.write_bytes(b"keras weights stand-in" * 100)
    w = dataclasses.replace(
        catalogue.get_weights("keras:resnet50"), url=served.as_uri(), filename="x.h5"
    )
    for wrong in ("md5:" + "0" * 32, "md5:" + _md5(served)[:8]):  # a prefix is not enough
        with pytest.raises(ResNetError, match="MD5 mismatch") as e:
            weight_files.fetch(dataclasses.replace(w, sha256=wrong), root=tmp_path, progress=False)
        _one_line(e)
    path = weight_files.fetch(
        dataclasses.replace(w, sha256="md5:" + _md5(served)), root=tmp_path, progress=False
    )
    assert path == tmp_path / "keras" / "x.h5" and path.read_bytes() == served.read_bytes()
    # A bare hex string is SHA-256 as before, never read as MD5.
    with pytest.raises(ResNetError, match="does not match"):
        weight_files.fetch(dataclasses.replace(w, sha256=_md5(served)), root=tmp_path)


def test_catalogue_weights_from_the_cache_offline(family, tmp_path, monkeypatch):
    if family["arch"] != "keras_resnet50":
        pytest.skip("one family is enough for the cache path")
    monkeypatch.setenv("RESNET_CACHE", str(tmp_path))
    w = catalogue.get_weights("keras:resnet50")
    with pytest.raises(ResNetError) as e:  # offline: which file to put where
        weight_files.fetch(dataclasses.replace(w, url=(tmp_path / "none.h5").as_uri()))
    assert "cannot download" in _one_line(e) and str(w.cache_path()) in str(e.value)

    w.cache_path().parent.mkdir(parents=True, exist_ok=True)
    w.cache_path().symlink_to(family["files"]["weights-only"])  # Keras' layout, not Keras' file
    with pytest.raises(ResNetError, match="MD5 .* does not match") as e:  # not Keras' file
        resnet.create("keras_resnet50", weights="keras:resnet50")
    _one_line(e)
    ours = dataclasses.replace(w, sha256="md5:" + _md5(w.cache_path()))
    monkeypatch.setitem(catalogue.WEIGHTS, "keras:resnet50", ours)
    model = resnet.create("keras_resnet50", weights="keras:resnet50").eval()
    cfg = model.pretrained_cfg
    assert cfg["weights"] == "keras:resnet50" and cfg["sha256"] == ours.sha256
    assert cfg["preprocessing"]["channel_order"] == "bgr" and model.num_classes == 10
    with torch.no_grad():
        assert (model(family["x"]) - family["logits"]).abs().max().item() <= TOL
