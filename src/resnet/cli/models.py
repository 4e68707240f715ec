"""`resnet models [PATTERN]`: the table of registered variants."""

from __future__ import annotations

import json

from ..errors import ResNetError
from ..models import list_models, model_info


def add_parser(sub) -> None:
    """Adds `resnet models` to the sub-command parsers `sub`."""
    p = sub.add_parser(
        "models", help="list the registered models (name, depth, params, MACs, paper)"
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'resnet*' or plain")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args) -> int:
    """Prints the registered models matching the pattern, as a table or JSON."""
    names = list_models(args.pattern, dims=None)
    if not names:
        raise ResNetError(f"no model matches {args.pattern!r}")
    rows = [model_info(n) for n in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(format_table(rows))
    return 0


def format_table(rows: list[dict]) -> str:
    """A plain-text table of `model_info` rows."""
    head = (
        f"{'name':<24} {'family':<9} {'depth':>5} {'skips':>5} {'params':>13} {'MACs':>9} "
        f"{'input':>5}  paper"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        macs = f"{r['macs'] / 1e9:.2f}G" if r["macs"] >= 1e9 else f"{r['macs'] / 1e6:.1f}M"
        size = (
            "x".join(map(str, r["input_size"]))
            if isinstance(r["input_size"], tuple | list)
            else r["input_size"]
        )
        lines.append(
            f"{r['name']:<24} {r['family']:<9} {r['depth']:>5} {'yes' if r['skips'] else 'no':>5} "
            f"{r['params']:>13,} {macs:>9} {size:>5}  {r['paper']}"
        )
    return "\n".join(lines)
