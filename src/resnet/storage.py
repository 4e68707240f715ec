"""Files that survive a crash: atomic writes, tensor-only `torch.load`, SHA-256 of a file.

The base layer: every other part of the package writes and reads through these, so a kill
mid-write never leaves a half-written file and no file can run pickled code when loaded.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import ResNetError

# errno -> (what happened, what the user does about it): the disk, not the program, failed.
DISK_PROBLEMS = {
    errno.ENOSPC: ("no space left on device", "free space"),
    errno.EDQUOT: ("disk quota exceeded", "free space"),
    errno.EROFS: ("read-only file system", "make it writable"),
    errno.EACCES: ("permission denied", "make the folder writable"),
    errno.EPERM: ("permission denied", "make the folder writable"),
}

# errno of a destination that cannot hold the file: no such place, a file in a folder's way.
BAD_PLACE = (errno.ENOENT, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG)


class WriteError(ResNetError):
    """A file could not be written for a reason of the disk (full, over quota, read-only,
    permission lost); what was written before is intact.

    Attributes:
        path: the file being written.
        problem: what happened ("no space left on device").
        fix: what frees the way ("free space").
    """

    def __init__(self, path: Path, problem: str, fix: str, then: str = "run the command again"):
        self.path, self.problem, self.fix = path, problem, fix
        super().__init__(f"{problem} writing {path}: {fix} and {then}")

    def then(self, then: str) -> WriteError:
        """The same error with another last step (e.g. how to resume a run)."""
        return WriteError(self.path, self.problem, self.fix, then)


def write_error(e: OSError, path: str | os.PathLike | None = None) -> WriteError | None:
    """`e` as a WriteError when the disk refused a write (full, quota, read-only, permission),
    else None: other errors are bugs or other problems, and are left to propagate."""
    if e.errno not in DISK_PROBLEMS:
        return None
    problem, fix = DISK_PROBLEMS[e.errno]
    return WriteError(Path(path if path is not None else e.filename or "?"), problem, fix)


def _write_all(fd: int, data, path: Path) -> None:
    """Writes all of `data` to the descriptor `fd` (the temp file of `path`): the one place the
    atomic writer's bytes reach the disk."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


class _Sink:
    """The file object an atomic write hands its writer: unbuffered, write-only. It keeps the
    first OSError of a write, because some writers (torch.save) re-raise it without its errno."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path, self.pos, self.error = fd, path, 0, None

    def write(self, data) -> int:
        """Writes all of `data`; returns its length in bytes."""
        try:
            _write_all(self.fd, data, self.path)
        except OSError as e:
            self.error = self.error or e
            raise
        n = memoryview(data).nbytes
        self.pos += n
        return n

    def tell(self) -> int:
        """Bytes written so far."""
        return self.pos

    def flush(self) -> None:
        """Nothing is buffered."""

    def writable(self) -> bool:
        """Always: the sink only writes."""
        return True


def atomic_write_bytes(path: str | os.PathLike, write) -> Path:
    """Calls `write(file_object)` on a temp file beside `path`, then renames it into place.

    A crash or kill mid-write leaves the previous file intact. A full, over-quota or read-only
    disk (or a lost permission) raises `WriteError`, one line naming `path`; other errors pass.
    """
    path = Path(path)
    try:
        return _write_replace(path, write)
    except OSError as e:
        problem = write_error(e, path)
        if problem is None:
            raise
        raise problem from None


def _write_replace(path: Path, write) -> Path:
    """The atomic write itself: temp file, `write`, fsync, rename; the temp file never stays."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if e.errno not in BAD_PLACE:
            raise
        raise ResNetError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are for the group too
            _fill(_Sink(fd, path), write)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fill(sink: _Sink, write) -> None:
    """Runs `write(sink)`; an error it raised because a write failed is that write's OSError."""
    try:
        write(sink)
    except Exception as e:
        if sink.error is not None and e is not sink.error:
            raise sink.error from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` (UTF-8) to `path` atomically."""
    return atomic_write_bytes(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes `obj` as indented JSON to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def torch_load_safe(path: str | os.PathLike, what: str = "file", mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` with one-line errors: pickled code is refused, a
    truncated or corrupt file named as such. `mmap`: tensors stay on disk until touched (cheap
    when only the plain data is wanted; files of the legacy non-zip format cannot be mapped)."""
    try:
        mmap = mmap and Path(path).is_file() and zipfile.is_zipfile(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise ResNetError(
            f"{path} holds pickled objects beyond tensors and plain data; refusing to load it "
            f"(weights_only=True): re-save its state_dict ({_first_line(e, 80)})"
        ) from None
    # torch's weights-only unpickler raises KeyError / IndexError / struct.error (and its
    # persistent-id check an AssertionError) on a damaged pickle stream: as corrupt as a
    # truncated zip.
    except (
        AssertionError,
        TypeError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        struct.error,
    ) as e:
        raise ResNetError(
            f"{path} is not a readable {what} (truncated or corrupt?): {_first_line(e, 120)}"
        ) from None


def _first_line(e: BaseException, limit: int) -> str:
    """An exception's first line (its type name when it has no message), cut to `limit`."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]


def package_versions() -> dict[str, str]:
    """The versions of resnet, torch and torchvision, recorded in every checkpoint and export."""
    from importlib.metadata import PackageNotFoundError, version

    import torchvision

    try:
        own = version("resnet")
    except PackageNotFoundError:  # running from a source tree that was never installed
        own = "0+unknown"
    return {
        "resnet": own,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }
