"""`resnet models [PATTERN]`: the table of registered variants; `--all` adds torchvision's and
timm's classifiers (tv:NAME, timm:NAME), counted when a pattern narrows them."""

from __future__ import annotations

import json
import sys

from ..errors import ResNetError
from ..models import get_entry, list_foreign, list_models, model_info

FOREIGN_ERRORS = (
    ResNetError,
    RuntimeError,
    TypeError,
    ValueError,
    AssertionError,
    ImportError,
    NotImplementedError,
)  # what another library's builder or a forward at an unsuitable size raises


def add_parser(sub) -> None:
    """Adds `resnet models` to the sub-command parsers `sub`."""
    p = sub.add_parser(
        "models", help="list the registered models (name, depth, params, MACs, paper)"
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'resnet*' or plain")
    p.add_argument("--filter", help="names containing this word (or a shell pattern): as PATTERN")
    p.add_argument(
        "--all",
        action="store_true",
        help="also torchvision's (tv:NAME) and timm's (timm:NAME) classifiers; their params and "
        "MACs are counted when a pattern or --filter narrows them",
    )
    p.add_argument("--size", type=int, help="input side for MACs (default: each model's own)")
    p.add_argument(
        "--limit",
        type=int,
        default=50,
        help="with --all: count params and MACs of at most this many of them (default 50)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args) -> int:
    """Prints the models matching the pattern, as a table or JSON."""
    pattern = args.filter or args.pattern
    if args.size is not None and args.size < 1:
        raise ResNetError(f"--size must be a positive number of pixels, not {args.size}")
    rows = [
        model_info(n, args.size if get_entry(n).dims == 2 else None)
        for n in list_models(pattern, dims=None)
    ]
    if args.all:
        rows += foreign_rows(list_foreign(pattern), pattern != "*", args.size, args.limit)
    if not rows:
        raise ResNetError(f"no model matches {pattern!r}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(format_table(rows))
    return 0


def _name_row(name: str) -> dict:
    """A row with the name only (params and MACs not counted)."""
    family = "torchvision" if name.startswith("tv:") else "timm"
    return dict(
        name=name,
        family=family,
        depth=0,
        skips=None,
        params=None,
        macs=None,
        input_size=None,
        num_classes=None,
        paper="",
    )


def foreign_rows(names: list[str], count: bool, size: int | None, limit: int) -> list[dict]:
    """Rows for torchvision / timm names: counted (on the meta device) for the first `limit`
    when `count`, names only for the rest; a net that cannot be built at `size` keeps "-"."""
    from tqdm import tqdm  # a progress bar only when nets are counted

    counted = names[: max(limit, 0)] if count else []
    rows = []
    bar = tqdm(
        counted, desc="counting", unit="net", leave=False, file=sys.stderr, disable=len(counted) < 3
    )
    for name in bar:
        try:
            rows.append(model_info(name, size))
        except FOREIGN_ERRORS:
            rows.append(_name_row(name))
    rows += [_name_row(n) for n in names[len(counted) :]]
    if count and len(names) > len(counted):
        print(
            f"params and MACs counted for {len(counted)} of {len(names)} matches; narrow the "
            "pattern or raise --limit",
            file=sys.stderr,
        )
    return rows


def _macs(macs: int | None) -> str:
    if macs is None:
        return "-"
    return f"{macs / 1e9:.2f}G" if macs >= 1e9 else f"{macs / 1e6:.1f}M"


def _size(size) -> str:
    if size is None:
        return "-"
    return "x".join(map(str, size)) if isinstance(size, tuple | list) else str(size)


def format_table(rows: list[dict]) -> str:
    """A plain-text table of `model_info` rows ("-" where a value is not counted)."""
    width = max([24] + [len(r["name"]) for r in rows])
    head = (
        f"{'name':<{width}} {'family':<11} {'depth':>5} {'skips':>5} {'params':>13} {'MACs':>9} "
        f"{'input':>5}  paper"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        skips = "-" if r["skips"] is None else ("yes" if r["skips"] else "no")
        params = "-" if r["params"] is None else f"{r['params']:,}"
        lines.append(
            f"{r['name']:<{width}} {r['family']:<11} {r['depth'] or '-':>5} {skips:>5} "
            f"{params:>13} {_macs(r['macs']):>9} {_size(r['input_size']):>5}  {r['paper']}"
        )
    return "\n".join(lines)
