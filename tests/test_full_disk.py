"""A disk that fills (or turns read-only) mid-run: one line naming the file, exit 2, the last
complete checkpoint and a readable metrics.csv kept, and a resume that ends as if nothing
happened."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import pytest
import torch

from resnet import storage
from resnet.cli import main
from resnet.engine.checkpoint import load_checkpoint
from resnet.errors import ResNetError

TRAIN = ["train", "--data", "synthetic", "--subset", "32", "--image-size", "16"]
TRAIN += ["--model", "resnet20", "--batch-size", "16", "--device", "cpu", "--precision", "fp32"]
TRAIN += ["--epochs", "3", "--quiet"]


def _fill_disk_at(monkeypatch, target: str, nth: int, code: int = errno.ENOSPC) -> None:
    """From the `nth` time a file named `target` is written on, every write fails with `code`
    (a disk that filled stays full)."""
    real, started, full = storage._write_all, {}, []

    def write_all(fd, data, path):
        if os.lseek(fd, 0, os.SEEK_CUR) == 0:  # the first bytes of a new file
            started[path.name] = started.get(path.name, 0) + 1
        if full or started.get(target, 0) >= nth:
            full.append(path.name)
            raise OSError(code, os.strerror(code))
        real(fd, data, path)

    monkeypatch.setattr(storage, "_write_all", write_all)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("full-disk") / "reference"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return load_checkpoint(out / "last.pt")["model"]


def _metrics_rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("target", "epochs_kept", "rows_kept"),
    [("last.pt", 1, 1), ("metrics.csv", 2, 1), ("curves.png", 2, 2)],
)
def test_a_full_disk_stops_in_one_line_and_resumes_exactly(
    tmp_path, monkeypatch, capsys, reference, target, epochs_kept, rows_kept
):
    out = tmp_path / "run"
    _fill_disk_at(monkeypatch, target, nth=2)  # epoch 2's write of `target` meets a full disk
    assert main([*TRAIN, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"no space left on device writing {out / target}: free space" in err[0]
    assert f"resnet train --resume {out}" in err[0]
    assert "Traceback" not in err[0]
    assert load_checkpoint(out / "last.pt")["epoch"] + 1 == epochs_kept
    assert [int(r["epoch"]) for r in _metrics_rows(out)] == list(range(1, rows_kept + 1))
    assert not list(out.glob(".*.tmp")) and not (out / ".lock").exists()

    monkeypatch.undo()  # space freed
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    final = load_checkpoint(out / "last.pt")["model"]
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)
    assert [int(r["epoch"]) for r in _metrics_rows(out)] == [1, 2, 3]
    assert (out / "curves.png").stat().st_size > 0


def test_a_disk_full_before_the_first_checkpoint_says_run_it_again(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _fill_disk_at(monkeypatch, "config.yaml", nth=1, code=errno.EDQUOT)
    assert main([*TRAIN, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"disk quota exceeded writing {out / 'config.yaml'}" in err[0]
    assert err[0].endswith("run the same command again")
    monkeypatch.undo()
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0


def test_a_read_only_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    storage.write_json(path, {"v": 1})
    _fill_disk_at(monkeypatch, "a.json", nth=1, code=errno.EROFS)
    with pytest.raises(storage.WriteError, match="read-only file system writing .*a.json"):
        storage.write_json(path, {"v": 2})
    assert path.read_text() == '{\n  "v": 1\n}\n'


def test_other_write_errors_are_not_swallowed(tmp_path, monkeypatch):
    """An I/O error is not the user's to fix: it passes as itself (with its errno) even when
    torch.save wraps it, and the previous file stays."""
    path = tmp_path / "w.pt"
    storage.atomic_write_bytes(path, lambda f: torch.save({"x": torch.ones(3)}, f))
    _fill_disk_at(monkeypatch, "w.pt", nth=1, code=errno.EIO)
    with pytest.raises(OSError) as caught:
        storage.atomic_write_bytes(path, lambda f: torch.save({"x": torch.zeros(3)}, f))
    assert caught.value.errno == errno.EIO and not isinstance(caught.value, ResNetError)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_killed_writes_temp_file_goes_when_the_run_resumes(tmp_path):
    """SIGKILL inside a checkpoint write leaves its temp file (a checkpoint's size); the next
    process to hold the folder's lock deletes it, and nothing else."""
    out = tmp_path / "run"
    assert main([*TRAIN[:-3], "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    stale = out / ".last.pt.k1ll3d.tmp"
    stale.write_bytes((out / "last.pt").read_bytes()[:1000])
    other = out / ".job.json.x.tmp"
    other.write_text("{}")  # not a checkpoint's: another writer's, left alone
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    assert not stale.exists() and other.exists()
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
