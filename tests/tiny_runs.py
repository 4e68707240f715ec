"""Fixtures the export test modules share: real digits as tensors and as PNG folders, test_export's
tiny ResNet trained on them, and one PyTorch thread while a module runs.

A module imports the ones it needs (`from tiny_runs import digits, trained`); each is module
scoped, so every importing module gets its own copy and its tests stay independent of the others.
"""

from __future__ import annotations

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
