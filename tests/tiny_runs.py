"""Fixtures the export test modules share: real digits as tensors and as PNG folders, test_export's
tiny ResNet trained on them, and one PyTorch thread while a module runs.

A module imports the ones it needs (`from tiny_runs import digits, trained`); each is module
scoped, so every importing module gets its own copy and its tests stay independent of the others.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_digits_folder
from test_export import _digits, train_tiny


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One PyTorch thread: these nets are tiny, and two threads spinning against other
    processes on a shared 2-core machine made training here ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's real handwritten digits at 16 px, normalised as test_export's PRE says."""
    return _digits()


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """test_export's tiny ResNet, trained the same way: (model, checkpoint path)."""
    return train_tiny(digits, tmp_path_factory)


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    """Digits as PNG class folders: train/ calibrates int8, val/ is held out."""
    return write_digits_folder(tmp_path_factory.mktemp("pngs") / "digits", per_class=10)


def predict_json(capsys, *argv: str) -> list[dict]:
    """`resnet predict ARGV --json` on the CPU: its parsed output."""
    from resnet.cli import main

    capsys.readouterr()
    assert main(["predict", *argv, "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_predicts_as_checkpoint(capsys, ckpt, exported, backend: str, images: list[str]):
    """The exported file and the checkpoint run in `backend` give the checkpoint's ranking,
    the file also its probabilities (within 1e-4)."""
    eager = predict_json(capsys, str(ckpt), *images)
    from_file = predict_json(capsys, str(exported), *images)
    in_memory = predict_json(capsys, str(ckpt), *images, "--backend", backend)
    for e, a, b in zip(eager, from_file, in_memory, strict=True):
        top = [p["class"] for p in e["predictions"]]
        assert [p["class"] for p in a["predictions"]] == top
        assert [p["class"] for p in b["predictions"]] == top
        for p, q in zip(e["predictions"], a["predictions"], strict=True):
            assert q["probability"] == pytest.approx(p["probability"], abs=1e-4)


def assert_bad_files_refused(capsys, fmt: str, cases, image: str) -> None:
    """Each (path, message): detected as `fmt`, refused by load_classifier with `message`,
    and by `resnet predict` with exit 2 and that one line."""
    from resnet.cli import main
    from resnet.errors import ResNetError
    from resnet.export import detect_format, load_classifier

    for path, message in cases:
        assert detect_format(path) == fmt
        with pytest.raises(ResNetError, match=message):
            load_classifier(path)
        capsys.readouterr()
        assert main(["predict", str(path), image]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
