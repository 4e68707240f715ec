"""`resnet train --nproc N`: starts torchrun's launcher on this machine for the user."""

from __future__ import annotations

import sys


def strip_nproc(argv: list[str]) -> list[str]:
    """The command line without its --nproc option, as each torchrun worker gets it."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out


def launch_local(nproc: int, argv: list[str] | None = None) -> int:
    """Runs `torchrun --standalone --nproc-per-node N -m resnet <the same command>`."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    args = strip_nproc(list(sys.argv[1:] if argv is None else argv))
    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "resnet", *args])
    except ChildFailedError:
        return 2  # each process has already printed its own one-line error
    return 0
