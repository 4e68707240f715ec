"""`resnet <command>`: each command module parses flags into a config and calls the public API."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import ResNetError
from ..storage import package_versions, write_error

# One module per command under resnet.cli; each defines add_parser(subparsers) and run(args).
COMMANDS = (
    "models",
    "train",
    "val",
    "calibrate",
    "predict",
    "export",
    "benchmark",
    "compare",
    "experiment",
    "analyze",
    "serve",
    "doctor",
)


def build_parser() -> argparse.ArgumentParser:
    """The `resnet` parser with one sub-command per module in COMMANDS."""
    parser = argparse.ArgumentParser(
        prog="resnet", description="Residual networks: build, train, explain and deploy."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").add_parser(sub)
    return parser


def _version() -> str:
    """`resnet X.Y.Z`, for --version."""
    return f"resnet {package_versions()['resnet']}"


def main(argv: list[str] | None = None) -> int:
    """Runs one `resnet` command; returns its exit code.

    Errors a user can fix (ResNetError, bad values, missing files) print one line on stderr
    and return 2 (RESNET_DEBUG=1 shows the traceback); Ctrl-C returns 130.
    """
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc relaunches
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"resnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ResNetError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        if os.environ.get("RESNET_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"resnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or read-only disk under a write that is not atomic_write's
        problem = write_error(e)
        if problem is None or os.environ.get("RESNET_DEBUG"):
            raise
        print(f"resnet {args.command}: error: {problem}", file=sys.stderr)
        return 2
