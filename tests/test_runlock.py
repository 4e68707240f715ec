"""One writer per run folder: a live holder refuses, a dead one's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from resnet.cli import main
from resnet.engine.runlock import LOCK, check_free, holder, run_lock
from resnet.errors import ResNetError


def _lock(folder, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    info = {"pid": pid, "host": host or socket.gethostname(), "started": time.time()}
    (folder / LOCK).write_text(json.dumps(info))


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_live_holder_refuses_with_its_pid_and_host(tmp_path, sleeper):
    _lock(tmp_path / "run", sleeper)
    with pytest.raises(ResNetError, match=f"PID {sleeper} on {socket.gethostname()}"):
        check_free(tmp_path / "run")
    with pytest.raises(ResNetError, match="being trained by"), run_lock(tmp_path / "run"):
        pass
    assert json.loads((tmp_path / "run" / LOCK).read_text())["pid"] == sleeper  # untouched


def test_a_dead_holders_lock_is_taken_over_and_released(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    _lock(tmp_path / "run", int(dead.stdout))
    assert holder(tmp_path / "run") is None
    with run_lock(tmp_path / "run"):
        assert json.loads((tmp_path / "run" / LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / LOCK).exists()


def test_another_hosts_lock_is_respected(tmp_path):
    _lock(tmp_path / "run", 1, host="other-machine")
    with pytest.raises(ResNetError, match="on other-machine"):
        check_free(tmp_path / "run")


def test_train_into_a_held_folder_is_one_line_exit_2(tmp_path, sleeper, capsys):
    out = tmp_path / "run"
    _lock(out, sleeper)
    args = ["train", "--data", "synthetic", "--subset", "8", "--image-size", "16"]
    assert main([*args, "--epochs", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"PID {sleeper}" in err[0]
    assert not (out / "last.pt").exists()


def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # works as root too, unlike a read-only folder
    args = ["train", "--data", "synthetic", "--subset", "8", "--image-size", "16"]
    assert main([*args, "--epochs", "1", "--out", str(blocker / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write to the run folder" in err[0]


def test_a_full_disk_says_free_space_not_pick_another_folder(tmp_path, monkeypatch):
    import errno

    import resnet.engine.runlock as runlock

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runlock.os, "open", full)
    with pytest.raises(ResNetError) as e, run_lock(tmp_path / "run"):
        pass
    assert str(e.value) == (
        f"cannot write to the run folder {tmp_path / 'run'}: no space left on device; "
        "free space or pick another --out"
    )
