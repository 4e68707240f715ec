"""Data loading: every image kind users bring, folder/CSV layouts, bad input, batch augmentation."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet.data import DataConfig, load_data, transforms
from resnet.data.images import ImageList, load_image, scan
from resnet.data.loaders import FileDataset, StreamLoader, TensorLoader
from resnet.data.splits import stratified_split, stratified_subset
from resnet.data.transforms import BatchAugment
from resnet.errors import ResNetError


def test_every_image_mode_loads_with_its_range(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.jpg", quality=100)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 7)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    deep = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024 + 1
    Image.fromarray(deep).save(tmp_path / "deep16.png")
    Image.fromarray(deep).save(tmp_path / "deep16.tif")

    g = load_image(tmp_path / "grey.png", 1)
    assert g.shape == (1, 8, 8) and torch.allclose(g[0], torch.from_numpy(grey) / 255)
    assert load_image(tmp_path / "rgb.jpg", 3).shape == (3, 8, 8)
    a = load_image(tmp_path / "rgba.png", 3)
    assert a.shape == (3, 8, 8) and torch.allclose(a[0], g[0])  # alpha dropped, not blended
    assert torch.allclose(load_image(tmp_path / "palette.png", 1), g, atol=1 / 255)
    for name in ("deep16.png", "deep16.tif"):
        d = load_image(tmp_path / name, 1)
        # 16-bit keeps its full range: neighbouring values 1024 apart stay distinct.
        assert torch.allclose(d[0], torch.from_numpy(deep.astype(np.float32) / 65535), atol=1e-6), (
            name
        )
    assert load_image(tmp_path / "grey.png", 3).shape == (3, 8, 8)  # grey into an RGB model
    assert load_image(tmp_path / "rgb.jpg", 1).shape == (1, 8, 8)


def _folder(root: Path, classes: dict[str, int], mode: str = "L", size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 255, (size, size, 3) if mode == "RGB" else (size, size), np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_folder_layouts_channels_and_split(tmp_path):
    root = _folder(tmp_path / "flat", {"cat": 10, "dog": 10})
    bundle = load_data(DataConfig(source=str(root), val_split=0.2))
    assert bundle.classes == ["cat", "dog"] and bundle.in_chans == 1 and bundle.in_memory
    assert len(bundle.train) == 16 and len(bundle.val) == 4 and bundle.test is None
    assert bundle.val.labels.tolist().count(0) == 2  # stratified
    _folder(root / "cat", {}, "RGB")
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "cat" / "colour.png")
    assert load_data(DataConfig(source=str(root))).in_chans == 3  # one colour image -> RGB model
    streamed = load_data(DataConfig(source=str(root), in_memory="no"))
    x, y = next(iter(streamed.loader("train", DataConfig(batch_size=4), train=True)))
    assert x.shape == (4, 3, 12, 12) and y.shape == (4,)


def test_csv_source_and_its_errors(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 3, "b": 3})
    rows = [f"{c}/{i}.png,{c}" for c in "ab" for i in range(3)]
    (root / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    items = scan(root / "labels.csv")
    assert items.classes == ["a", "b"] and len(items) == 6
    (tmp_path / "bad_cols.csv").write_text("file,label,extra\na/0.png,a,1\n")
    with pytest.raises(ResNetError, match="needs the columns path,label"):
        scan(tmp_path / "bad_cols.csv")
    # Extra columns (a patient id, a site) are kept for --group-by and otherwise ignored.
    (root / "more.csv").write_text(
        "path,label,patient\n" + "\n".join(f"{r},P{i % 2}" for i, r in enumerate(rows)) + "\n"
    )
    grouped = scan(root / "more.csv", group_by="patient")
    assert grouped.groups == [f"P{i % 2}" for i in range(6)] and grouped.labels == items.labels
    with pytest.raises(ResNetError, match="no such column"):
        scan(root / "more.csv", group_by="site")
    (tmp_path / "imgs" / "missing.csv").write_text("path,label\nnope.png,a\n")
    with pytest.raises(ResNetError, match="file not found"):
        scan(tmp_path / "imgs" / "missing.csv")


def test_bad_folders_and_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResNetError, match="no class folders"):
        scan(tmp_path / "empty")
    root = _folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("not an image")
    with pytest.raises(ResNetError, match="class folder .* has no images"):
        scan(root)
    (root / "c" / "notes.txt").unlink()
    (root / "c").rmdir()
    (root / "a" / "readme.txt").write_text("x")
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning) as record:
        items = scan(root)
    messages = " ".join(str(w.message) for w in record)
    assert "truncated.png" in messages and "non-image" in messages
    assert len(items) == 6 and items.skipped == [str(root / "b" / "truncated.png")]
    with pytest.raises(ResNetError, match="truncated.png"):
        scan(root, on_bad="error")


def _cli(*args):
    """Runs `resnet ARGS` in this process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from resnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse errors
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "/no/such/folder"], "data not found"),
        (["train", "--epochs", "0"], "epochs must be at least 1"),
        (["train", "--batch-size", "0"], "batch size must be at least 1"),
        (["train", "--model", "resnet21"], "did you mean"),
        (["train", "--opt", "nonsense"], "KEY=VALUE"),
        (["val", "/no/such/run"], "checkpoint not found"),
        (["predict", "/no/such.pt", "x.png"], "not found"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(args, message):
    r = _cli(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    import re

    assert re.search(message, lines[0]), lines[0]


def test_bad_checkpoints_are_refused(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "tv.pt")
    r = _cli("val", str(tmp_path / "tv.pt"))
    assert r.returncode == 2 and "not a resnet checkpoint" in r.stderr

    from resnet import create
    from resnet.engine.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "good.pt", create("resnet20"), classes=["a"] * 10)
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 3])
    r = _cli("predict", str(tmp_path / "trunc.pt"), str(tmp_path / "good.pt"))
    assert r.returncode == 2 and "truncated or corrupt" in r.stderr, r.stderr

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "resnet-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    r = _cli("val", str(tmp_path / "evil.pt"))
    assert r.returncode == 2 and "refusing" in r.stderr and "pwned" not in r.stdout

    state = torch.load(tmp_path / "good.pt", weights_only=True)
    state["spec"]["widths"] = [32, 64, 128]  # another architecture than the weights
    torch.save(state, tmp_path / "other.pt")
    r = _cli("val", str(tmp_path / "other.pt"))
    assert r.returncode == 2 and "do not fit" in r.stderr, r.stderr


def test_batch_augment_shifts_flips_and_shards_exactly():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    aug = BatchAugment("paper", 8, flip=True)  # pad 1
    p = {
        "dy": torch.tensor([1, 0]),
        "dx": torch.tensor([1, 2]),
        "flip": torch.tensor([False, True]),
    }
    y = aug.apply(x, p)
    assert torch.equal(y[0], x[0])  # offset (1, 1) of a 1-px pad: no shift
    shifted = torch.zeros(4, 4)
    shifted[1:, :3] = x[1, 0, :3, 1:]  # up-shift by 1 row (dy=0), left-shift by 1 column (dx=2)
    assert torch.equal(y[1, 0], shifted.flip(1))

    images, labels = torch.randn(64, 1, 8, 8), torch.arange(64)
    one = TensorLoader(images, labels, batch_size=16, shuffle=True, augment=aug, seed=5)
    two = [
        TensorLoader(
            images, labels, batch_size=16, shuffle=True, augment=aug, seed=5, rank=r, world_size=2
        )
        for r in range(2)
    ]
    for (xa, ya), (x0, y0), (x1, y1) in zip(one, *two, strict=True):
        assert torch.equal(torch.cat([x0, x1]), xa) and torch.equal(torch.cat([y0, y1]), ya)
    one.set_epoch(1)
    first_e1 = next(iter(one))[1]
    one.set_epoch(0)
    assert not torch.equal(first_e1, next(iter(one))[1])


def test_stratified_helpers():
    labels = [0] * 50 + [1] * 30 + [2] * 20
    tr, va = stratified_split(labels, 0.1, seed=0)
    assert sorted(tr + va) == list(range(100)) and [labels[i] for i in va].count(1) == 3
    sub = stratified_subset(labels, 10)
    assert len(sub) == 10 and {labels[i] for i in sub} == {0, 1, 2}


def test_val_resolves_the_runs_own_splits(tmp_path):
    from resnet.engine import train
    from resnet.engine.config import TrainConfig

    root = _folder(tmp_path / "tr", {"a": 10, "b": 10})
    (tmp_path / "tronly").mkdir()
    root.rename(tmp_path / "tronly" / "train")  # train/ only: val is carved with val_split
    cfg = TrainConfig.from_dict(
        {
            "data": {"source": str(tmp_path / "tronly"), "batch_size": 8, "val_split": 0.2},
            "run": {"epochs": 1, "out": str(tmp_path / "run")},
        }
    )
    train(cfg, progress=False, log=lambda *a: None)
    import json

    r = _cli("val", str(tmp_path / "run"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["samples"] == 4  # the held-out 20 %, not the training images
    r = _cli("val", str(tmp_path / "run"), "--split", "test")
    assert r.returncode == 2 and "no test split" in r.stderr
    other = _folder(tmp_path / "other", {"a": 3, "b": 3})
    r = _cli("val", str(tmp_path / "run"), "--data", str(other), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["samples"] == 6 and json.loads(r.stdout)["split"] == "all"


def test_more_bad_input(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 2})
    (root / "x.csv").write_text("path,label\na/0.png,a,extra\n")
    with pytest.raises(ResNetError, match="expected 2 fields"):
        scan(root / "x.csv")
    r = _cli("train", "--device", "gpu", "--data", str(root))
    assert r.returncode == 2 and "unknown device" in r.stderr
    r = _cli("train", "--resume", str(tmp_path), "--lr", "0.1")
    assert r.returncode == 2 and "only" in r.stderr


def test_recipe_and_config_file_merge(tmp_path):
    import argparse

    from resnet.cli import build_parser
    from resnet.cli.train import config_from_args

    (tmp_path / "c.yaml").write_text("run: {epochs: 5}\noptim: {lr: 1e-3}\n")
    args = build_parser().parse_args(
        ["train", "--recipe", "best", "--config", str(tmp_path / "c.yaml"), "--seed", "4"]
    )
    assert isinstance(args, argparse.Namespace)
    cfg = config_from_args(args)
    from resnet.engine.recipes import load_recipe

    best = load_recipe("best")
    assert (cfg.model.name, cfg.data.augment) == (best.model.name, best.data.augment)  # recipe
    assert best.run.epochs != 5 and best.optim.lr != 0.001 and best.run.seed != 4
    assert cfg.run.epochs == 5 and cfg.optim.lr == 0.001 and cfg.run.seed == 4


@pytest.mark.parametrize(
    "preset, size, pad, flips",
    [
        ("none", 28, 0, False),
        ("flip", 28, 0, True),
        ("light", 28, 1, True),
        ("light", 32, 2, True),
        ("paper", 28, 3, True),
        ("paper", 32, 4, True),
    ],
)
def test_augment_presets_translate_and_flip_as_documented(preset, size, pad, flips):
    aug = BatchAugment(preset, size, flip=True)
    assert (aug.pad, aug.flip) == (pad, flips)
    x = torch.randn(256, 1, size, size)
    y = aug.apply(x, aug.sample(256, torch.Generator().manual_seed(0), size, size))
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(3)).flatten(1).all(1)
    if pad == 0:  # every image is itself or its mirror, and both happen when flips are on
        assert (same | mirrored).all()
        assert mirrored.any() == flips and same.any()
    else:  # some images moved: neither themselves nor their mirror
        assert (~(same | mirrored)).any()
    per_image = transforms.train_transform(
        {"size": (size, size), "mean": [0.0], "std": [1.0]}, preset
    )
    crops = [op for op in per_image.transforms if type(op).__name__ == "RandomCrop"]
    assert (crops[0].padding[0] if crops else 0) == pad


@pytest.mark.parametrize(
    "preset, p", [("paper", 0.0), ("flip_erase", 0.5), ("erase", 0.5), ("strong", 0.25)]
)
def test_random_erasing_presets_blank_one_box_in_the_documented_share(preset, p):
    aug = BatchAugment(preset, 28, flip=False)
    x = torch.randn(4000, 1, 28, 28) + 10.0  # no pixel is 0 before erasing
    y = aug.apply(x, aug.sample(4000, torch.Generator().manual_seed(0), 28, 28))
    # Translation pads with zeros up to 3 px deep; an erased box (2-33 % of the image) almost
    # always reaches further in.
    erased = (y[:, :, 3:-3, 3:-3] == 0).flatten(1).any(1)
    share = erased.float().mean().item()
    assert share == pytest.approx(p, abs=0.03), share
    erasing = [
        op
        for op in transforms.train_transform(
            {"size": (28, 28), "mean": [0.0], "std": [1.0]}, preset
        ).transforms
        if type(op).__name__ == "RandomErasing"
    ]
    assert [op.p for op in erasing] == ([p] if p else [])


def test_cli_augment_choices_are_the_presets():
    from resnet.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    action = next(a for a in train._actions if a.dest == "augment")
    assert tuple(action.choices) == transforms.PRESETS


def _flip_states(batches, originals):
    """{label: mirrored?} for batches of images whose label is their index in `originals`."""
    states = {}
    for x, y in batches:
        for img, i in zip(x, y.tolist(), strict=True):
            same, mirrored = torch.equal(img, originals[i]), torch.equal(img, originals[i].flip(-1))
            assert same != mirrored  # exactly one view, nothing else changed
            states[i] = mirrored
    return [states[i] for i in range(len(originals))]


def test_alternate_flip_mirrors_each_image_in_every_other_epoch(tmp_path):
    images, labels = torch.randn(64, 1, 8, 8), torch.arange(64)
    aug = BatchAugment("flip", 8, flip=True, alternate_flip=True)
    loader = TensorLoader(images, labels, batch_size=16, shuffle=True, augment=aug, seed=3)
    epochs = []
    for e in range(4):
        loader.set_epoch(e)
        epochs.append(torch.tensor(_flip_states(loader, images)))
    assert 16 < int(epochs[0].sum()) < 48  # the first choice is a coin toss per image
    for a, b in zip(epochs, epochs[1:], strict=False):
        assert torch.equal(a, ~b)  # every image changes view every epoch
    coin = BatchAugment("flip", 8, flip=True)  # the default: independent tosses
    random_loader = TensorLoader(images, labels, batch_size=16, shuffle=True, augment=coin, seed=3)
    tosses = []
    for e in range(2):
        random_loader.set_epoch(e)
        tosses.append(torch.tensor(_flip_states(random_loader, images)))
    assert (tosses[0] == tosses[1]).any()
    ranks = [
        TensorLoader(
            images, labels, batch_size=16, shuffle=True, augment=aug, seed=3, rank=r, world_size=2
        )
        for r in range(2)
    ]
    for r in ranks:
        r.set_epoch(3)
    for (xa, _), (x0, _), (x1, _) in zip(loader, *ranks, strict=True):  # loader is at epoch 3
        assert torch.equal(torch.cat([x0, x1]), xa)  # two processes see the same views as one

    # Streamed files: the same schedule, applied after the per-image transform.
    for i in range(12):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (8, 8), np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    items = ImageList([tmp_path / f"{i}.png" for i in range(12)], list(range(12)), ["x"] * 12, 1)
    plain = torch.stack([load_image(p, 1) for p in items.paths])
    ds = FileDataset(items, lambda x: x, alternate_flip_seed=3)
    stream = StreamLoader(ds, batch_size=4, shuffle=True, workers=0, seed=3)
    views = []
    for e in range(3):
        stream.set_epoch(e)
        views.append(torch.tensor(_flip_states(stream, plain)))
    assert torch.equal(views[0], ~views[1]) and torch.equal(views[1], ~views[2])
    with pytest.raises(ValueError, match="alternate_flip needs flips"):
        DataConfig(augment="none", alternate_flip=True)


def test_adopting_bgr_weights_reverses_in_memory_channels():
    from resnet.data import DataBundle, Split, make_preprocessing

    raw = torch.rand(4, 3, 8, 8)
    pre = make_preprocessing(3, (8, 8), [0.5, 0.4, 0.3], [0.2, 0.2, 0.2])
    m, s = torch.tensor(pre["mean"]).view(1, 3, 1, 1), torch.tensor(pre["std"]).view(1, 3, 1, 1)
    bundle = DataBundle("x", ["a"], pre, Split(torch.zeros(4), (raw - m) / s), None, None)
    bgr = dict(make_preprocessing(3, (8, 8), [0.1, 0.2, 0.3], [0.5, 0.5, 0.5]), channel_order="bgr")
    bundle.set_preprocessing(bgr)
    expected = (raw.flip(1) - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5
    assert torch.allclose(bundle.train.images, expected, atol=1e-6)
    assert bundle.preprocessing["channel_order"] == "bgr"
