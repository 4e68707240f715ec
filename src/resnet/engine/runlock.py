"""One writer per run folder: a lock file naming the process that trains into it.

`RUN/.lock` holds the PID, host and start time of the process training into RUN. A second
`resnet train` into the same folder (or a `--resume` of it) is refused with those, instead of
two processes interleaving checkpoint writes. A lock left by a process that died (same host,
PID gone) is stale and is taken over; a lock from another host is respected, with the command
that removes it by hand if that process is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import ResNetError
from ..storage import DISK_PROBLEMS

LOCK = ".lock"


def _alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder(folder: Path) -> dict | None:
    """Who holds the folder's lock ({pid, host, started}), or None when free or stale."""
    try:
        info = json.loads((folder / LOCK).read_text())
        pid, host = int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no lock (or no folder), or a torn one (its writer died mid-write): free
    if host == socket.gethostname() and (pid == os.getpid() or not _alive(pid)):
        return None
    return info


def check_free(folder: Path) -> None:
    """Refuses a folder another live process is training into (one line naming it)."""
    info = holder(folder)
    if info is None:
        return
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("started", 0))))
    raise ResNetError(
        f"{folder} is being trained by PID {info['pid']} on {info['host']} since {since}; "
        f"wait for it or use another --out (if that process is gone: rm {folder / LOCK})"
    )


def _create(folder: Path) -> None:
    """Writes the lock file exclusively (O_EXCL: of two racing processes one wins)."""
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    fd = os.open(folder / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@contextmanager
def run_lock(folder: Path):
    """Holds `folder`'s lock while the block runs; refuses a folder held by a live process or
    one that cannot be written (read-only, full), before any training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_free(folder)
        try:
            _create(folder)
        except FileExistsError:  # stale (checked above) or raced: one more try, then refuse
            check_free(folder)
            (folder / LOCK).unlink(missing_ok=True)
            _create(folder)
    except FileExistsError:
        check_free(folder)
        raise ResNetError(f"{folder}: another process took the run folder's lock") from None
    except OSError as e:
        problem, fix = DISK_PROBLEMS.get(e.errno, (e.strerror or str(e), None))
        advice = f"{fix} or pick another --out" if fix else "pick a writable --out"
        raise ResNetError(f"cannot write to the run folder {folder}: {problem}; {advice}") from None
    try:
        yield
    finally:
        if holder(folder) is None:  # still ours (or gone): release it
            (folder / LOCK).unlink(missing_ok=True)
