"""Pretrained weights: torchvision / timm files load exactly, adaptation, hashes, bad files."""

import dataclasses
import json
import pathlib

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import resnet
from resnet.engine.checkpoint import save_checkpoint
from resnet.engine.publish import publish_weights
from resnet.errors import ResNetError
from resnet.models import catalogue, factory, loading, weight_files
from resnet.storage import sha256_file

torch.set_num_threads(2)
TOL = 1e-4


@pytest.fixture(scope="module")
def tv18(tmp_path_factory):
    """torchvision's resnet18 with random weights and non-trivial BN statistics, saved twice."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    tv.eval()
    d = tmp_path_factory.mktemp("tv18")
    torch.save(tv.state_dict(), d / "resnet18.pth")
    save_file(tv.state_dict(), str(d / "resnet18.safetensors"))
    return tv, d


def _x(c=3, n=2, size=64, seed=1):
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _features(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_file_reproduces_outputs(tv18, suffix):
    tv, d = tv18
    model = resnet.create("resnet18", weights=str(d / f"resnet18{suffix}")).eval()
    x = _x()
    with torch.no_grad():
        diff = (model(x) - tv(x)).abs().max().item()
    assert diff <= TOL
    assert model.weights_report.loaded == 122  # every tensor of torchvision's resnet18
    assert model.weights_report.head == "loaded" and not model.weights_report.missing


@pytest.mark.parametrize("arch", ["resnet18", "resnet50d"])
def test_timm_state_dict_reproduces_outputs(tmp_path, arch):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model(arch, pretrained=False).eval()
    save_file(ref.state_dict(), str(tmp_path / f"{arch}.safetensors"))
    model = resnet.create(arch, weights=str(tmp_path / f"{arch}.safetensors")).eval()
    x = _x(size=72)  # not a multiple of 32: checks the avg-pool shortcut's ceil_mode too
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() <= TOL


def test_timm_architectures_in_registry_have_our_keys():
    timm = pytest.importorskip("timm")
    for arch in sorted({w.arch for w in catalogue.WEIGHTS.values() if w.source == "timm"}):
        with torch.device("meta"):
            theirs = {k: tuple(v.shape) for k, v in timm.create_model(arch).state_dict().items()}
            ours = {k: tuple(v.shape) for k, v in resnet.create(arch).state_dict().items()}
        assert theirs == ours, arch


@pytest.mark.parametrize("in_chans", [1, 2, 4, 6])
def test_in_chans_adaptation_keeps_grey_response(tv18, in_chans):
    tv, d = tv18
    model = resnet.create("resnet18", in_chans=in_chans, weights=d / "resnet18.pth").eval()
    assert model.conv1.weight.shape[1] == in_chans
    grey = _x(c=1)
    with torch.no_grad():
        ours = model(grey.expand(-1, in_chans, -1, -1))
        rgb = tv(grey.expand(-1, 3, -1, -1))
    assert (ours - rgb).abs().max().item() <= TOL
    assert any("input channels" in a for a in model.weights_report.adapted)


def test_adapt_input_conv_rules():
    w = torch.randn(8, 3, 3, 3)
    one = loading.adapt_input_conv(w, 1)
    assert torch.allclose(one[:, 0], w.sum(1))
    six = loading.adapt_input_conv(w, 6)  # 3 divides 6: every kernel repeated twice, times 3/6
    assert torch.allclose(six, torch.cat([w, w], 1) * 0.5)
    four = loading.adapt_input_conv(w, 4)  # R, G, B, R: the two R copies halved
    assert torch.allclose(four[:, 0], w[:, 0] / 2) and torch.allclose(four[:, 3], w[:, 0] / 2)
    assert torch.allclose(four[:, 1:3], w[:, 1:3])


def test_new_head_is_reported_and_body_loaded(tv18):
    tv, d = tv18
    model = resnet.create("resnet18", num_classes=7, weights=d / "resnet18.pth").eval()
    rep = model.weights_report
    assert rep.head == "new" and "new 7-class head (weights had 1000)" in rep.summary()
    assert model.fc.weight.shape == (7, 512)
    x = _x()
    with torch.no_grad():
        assert (model.forward_features(x) - _features(tv, x)).abs().max().item() <= TOL
    assert model.pretrained_cfg["classes"] is None  # the new head's classes are not ImageNet's
    with pytest.raises(ResNetError, match="1000 outputs"):
        loading.load_weights(
            resnet.create("resnet18", num_classes=7), d / "resnet18.pth", strict_head=True
        )


def test_small_input_stem_is_reinitialised_and_reported(tv18):
    tv, d = tv18
    model = resnet.create("resnet18", small_input=True, weights=d / "resnet18.pth")
    assert "first conv re-initialised" in model.weights_report.summary()
    assert torch.equal(model.layer1[0].conv1.weight, tv.layer1[0].conv1.weight)


def test_unknown_spec_is_one_clear_error():
    with pytest.raises(ResNetError, match="nor a known spec"):
        resnet.create("resnet18", weights="torchvison:IMAGENET1K_V1")


def test_headless_model_drops_the_head(tv18):
    _, d = tv18
    model = resnet.create("resnet18", num_classes=0, weights=d / "resnet18.pth")
    assert model.weights_report.head == "none" and model.weights_report.loaded == 120


def test_prefixes_stripped_ddp_and_compile(tv18, tmp_path):
    tv, _ = tv18
    compiled = torch.compile(torchvision.models.resnet18().eval())  # keys gain "_orig_mod."
    compiled.load_state_dict({f"_orig_mod.{k}": v for k, v in tv.state_dict().items()})
    sd = compiled.state_dict()
    assert next(iter(sd)).startswith("_orig_mod.")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp_compiled.pth")
    model = resnet.create("resnet18", weights=tmp_path / "ddp_compiled.pth").eval()
    assert "stripped prefix module. and _orig_mod." in model.weights_report.summary()
    x = _x()
    with torch.no_grad():
        assert (model(x) - tv(x)).abs().max().item() <= TOL


def test_wrapped_state_dict_and_our_checkpoint(tmp_path):
    torch.manual_seed(0)
    src = resnet.create("resnet20", in_chans=1).eval()
    torch.save({"model": src.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    save_checkpoint(
        tmp_path / "ckpt.pt",
        src,
        classes=[f"c{i}" for i in range(10)],
        preprocessing={
            "in_chans": 1,
            "size": [28, 28],
            "mean": [0.3],
            "std": [0.35],
            "resize": None,
            "crop": None,
        },
    )
    x = _x(c=1, size=28)
    for name in ("wrapped.pth", "ckpt.pt"):
        model = resnet.create("resnet20", weights=tmp_path / name).eval()
        assert model.conv1.weight.shape[1] == 1  # in_chans follows the weights
        with torch.no_grad():
            assert torch.equal(model(x), src(x))
    assert model.pretrained_cfg["classes"][3] == "c3"
    assert model.pretrained_cfg["preprocessing"]["size"] == [28, 28]


def test_wrong_architecture_is_one_clear_error(tv18):
    _, d = tv18
    with pytest.raises(ResNetError, match="do not fit resnet34|do not match resnet34"):
        resnet.create("resnet34", weights=d / "resnet18.pth")
    with pytest.raises(ResNetError, match="differ in shape"):
        resnet.create("resnet50", weights=d / "resnet18.pth")


def test_truncated_files_refused_in_one_line(tv18, tmp_path):
    _, d = tv18
    for name in ("resnet18.pth", "resnet18.safetensors"):
        data = (d / name).read_bytes()
        bad = tmp_path / name
        bad.write_bytes(data[: len(data) // 2])
        with pytest.raises(ResNetError, match="truncated or corrupt") as e:
            resnet.create("resnet18", weights=bad)
        assert "\n" not in str(e.value)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_code_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ResNetError, match="pickled objects") as e:
        resnet.create("resnet18", weights=tmp_path / "evil.pth")
    assert "\n" not in str(e.value)
    assert not marker.exists()


def _entry(url, sha256, name="test:resnet20.x"):
    return catalogue.Weights(
        name=name,
        arch="resnet20",
        source="test",
        url=url,
        filename="w.pth",
        sha256=sha256,
        num_classes=10,
        categories=tuple("abcdefghij"),
        preprocessing={},
    )


def test_download_checks_sha256_and_writes_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_CACHE", str(tmp_path / "cache"))
    served = tmp_path / "served.pth"
    torch.save(resnet.create("resnet20").state_dict(), served)
    digest = sha256_file(served)
    dest = tmp_path / "cache" / "test" / "w.pth"

    with pytest.raises(ResNetError, match="SHA-256 mismatch") as e:
        weight_files.fetch(_entry(served.as_uri(), "deadbeef"), progress=False)
    assert str(dest) in str(e.value) and "\n" not in str(e.value)
    assert not dest.exists() and not list(dest.parent.glob(".*part"))  # nothing half-written

    # a prefix, as torchvision
    path = weight_files.fetch(_entry(served.as_uri(), digest[:8]), progress=False)
    assert path == dest and sha256_file(dest) == digest
    cached = weight_files.fetch(_entry("file:///nonexistent", digest), progress=False)
    assert cached == dest

    dest.write_bytes(b"not the file")  # a cached file that changed
    with pytest.raises(ResNetError, match="does not match"):
        weight_files.fetch(_entry(served.as_uri(), digest[:8]), progress=False)


def test_offline_says_which_file_to_put_where(tmp_path):
    w = catalogue.get_weights("torchvision:DEFAULT", "resnet50")
    missing = (tmp_path / "nowhere.pth").as_uri()
    offline = dataclasses.replace(w, url=missing)
    with pytest.raises(ResNetError) as e:
        weight_files.fetch(offline, root=tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "cannot download" in msg
    assert str(tmp_path / "torchvision" / "resnet50-11ad3fa6.pth") in msg and "11ad3fa6" in msg


def test_no_published_hash_is_pinned_on_first_download(tmp_path):
    served = tmp_path / "served.pth"
    torch.save({"a": torch.ones(2)}, served)
    w = _entry(served.as_uri(), None)
    path = weight_files.fetch(w, root=tmp_path / "c", progress=False)
    assert pathlib.Path(f"{path}.sha256").read_text().strip() == sha256_file(served)
    path.write_bytes(b"changed")
    with pytest.raises(ResNetError, match="does not match"):
        weight_files.fetch(w, root=tmp_path / "c", progress=False)


def test_registry_matches_torchvision():
    for name in catalogue.list_weights("torchvision:*"):
        w = catalogue.WEIGHTS[name]
        enum = torchvision.models.get_model_weights(w.arch)
        tv = enum[name.rsplit(".", 1)[1]]
        assert tv.url == w.url and tv.url.split("-")[-1].startswith(w.sha256)
        assert tv.meta["_metrics"]["ImageNet-1K"]["acc@1"] == w.top1
        t = tv.transforms()
        pre = w.preprocessing
        assert (t.resize_size[0], t.crop_size[0]) == (pre["resize"], pre["crop"])
        assert list(t.mean) == w.preprocessing["mean"] and list(t.std) == w.preprocessing["std"]
    assert len(catalogue.list_weights("torchvision:*")) == sum(
        len(torchvision.models.get_model_weights(a)) for a in catalogue.DEFAULT_TAGS
    )
    for arch, tag in catalogue.DEFAULT_TAGS.items():
        assert torchvision.models.get_model_weights(arch).DEFAULT.name == tag


def test_registry_matches_timm_cfgs():
    pytest.importorskip("timm")
    from timm.models import get_pretrained_cfg

    names = catalogue.list_weights("timm:*")
    assert len(names) > 50
    for name in names:
        w = catalogue.WEIGHTS[name]
        cfg = get_pretrained_cfg(name.split(":", 1)[1])
        assert cfg.hf_hub_id == w.hf_repo
        assert w.url == f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
        assert cfg.interpolation == w.preprocessing["interpolation"]
        assert tuple(cfg.mean) == tuple(w.preprocessing["mean"]) and cfg.num_classes == 1000
        assert cfg.input_size[1] == w.preprocessing["crop"]


def test_specs_resolve_and_explain():
    v2 = catalogue.get_weights("torchvision:IMAGENET1K_V2", "resnet50")
    assert v2.sha256 == "11ad3fa6" and v2.preprocessing["resize"] == 232 and v2.top1 == 80.858
    default18 = catalogue.get_weights("torchvision:DEFAULT", "resnet18")
    assert default18.name == "torchvision:resnet18.IMAGENET1K_V1"
    assert catalogue.get_weights("torchvision:ResNet50_Weights.IMAGENET1K_V1").arch == "resnet50"
    a1 = catalogue.get_weights("timm:resnet50.a1_in1k")
    assert a1.hf_repo == "timm/resnet50.a1_in1k" and a1.sha256 is None
    assert a1.preprocessing["resize"] == 235 and a1.preprocessing["interpolation"] == "bicubic"
    assert catalogue.get_weights("timm:a1_in1k", "resnet50d").name == "timm:resnet50d.a1_in1k"
    with pytest.raises(ResNetError, match="weights for resnet50, not for resnet18"):
        resnet.create("resnet18", weights="timm:resnet50.a1_in1k")
    with pytest.raises(ResNetError, match="known for resnet18: IMAGENET1K_V1"):
        catalogue.get_weights("torchvision:IMAGENET1K_V2", "resnet18")
    assert v2.classes()[0] == "tench" and len(v2.classes()) == 1000


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_CACHE", str(tmp_path))
    assert catalogue.cache_dir() == tmp_path
    path = catalogue.WEIGHTS["timm:resnet50.a1_in1k"].cache_path()
    assert path == tmp_path / "timm" / "resnet50.a1_in1k.safetensors"


def test_shipped_weights_publish_and_load_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(weight_files, "PACKAGE_DIR", tmp_path / "pkg")
    torch.manual_seed(0)
    classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    pre = {
        "in_chans": 1,
        "size": [28, 28],
        "mean": [0.286],
        "std": [0.353],
        "resize": None,
        "crop": None,
    }
    x = _x(c=1, size=28)
    outputs = {}
    for arch, name in (("resnet20", "fashion-mnist"), ("resnet20_b", "fashion-mnist-resnet20_b")):
        src = resnet.create(arch, in_chans=1).eval()
        outputs[arch] = src(x).detach()
        save_checkpoint(
            tmp_path / f"{arch}.pt",
            src,
            classes=classes,
            preprocessing=pre,
            metrics={"test_acc": 0.9},
            config={"epochs": 1},
        )
        st, js = publish_weights(tmp_path / f"{arch}.pt", name, recipe="resnet train --epochs 1")
        meta = json.loads(js.read_text())
        assert meta["arch"] == arch and meta["test_acc"] == 0.9
        assert meta["sha256"] == sha256_file(st)
        assert meta["recipe"] == "resnet train --epochs 1" and meta["classes"] == classes
    assert weight_files.shipped_weights() == ["fashion-mnist", "fashion-mnist-resnet20_b"]

    model = resnet.create("resnet20", weights="fashion-mnist").eval()
    assert model.num_classes == 10 and model.conv1.weight.shape[1] == 1
    assert torch.equal(model(x), outputs["resnet20"])
    assert model.pretrained_cfg["classes"] == classes and model.pretrained_cfg["test_acc"] == 0.9
    other = resnet.create("resnet20_b", weights="fashion-mnist").eval()  # finds its own file
    assert torch.equal(other(x), outputs["resnet20_b"])
    built = factory.model_from_weights("fashion-mnist:resnet20_b")
    assert built.arch == "resnet20_b" and torch.equal(built(x), outputs["resnet20_b"])
    assert factory.model_from_weights("fashion-mnist").pretrained_cfg["preprocessing"] == pre
    with pytest.raises(ResNetError, match="for resnet20, not resnet32"):
        resnet.create("resnet32", weights="fashion-mnist")


@pytest.mark.parametrize("module", [catalogue, weight_files, loading])
def test_weights_module_imports_only_torch_at_import_time(module):
    import ast

    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {
        n.module.split(".")[0]
        for n in tree.body
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0
    }
    assert top - {"__future__", "torch"} <= set(__import__("sys").stdlib_module_names)
