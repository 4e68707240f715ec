"""One fuzz harness under atheris (libFuzzer): `python tests/fuzz/run.py HARNESS [--seconds N]`.

New interesting inputs go to `runs/fuzz/<harness>/corpus/` (not committed: copy the ones worth
keeping into `tests/fuzz/corpus/<harness>/`), crashing inputs to `runs/fuzz/<harness>/crash-*`.
The committed seeds in `tests/fuzz/corpus/<harness>/` are read first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# `resnet` and the third-party parsers it hands bytes to get coverage feedback.
INSTRUMENTED = ["resnet", "harnesses", "pydicom", "nibabel", "yaml", "pycocotools"]

with atheris.instrument_imports(include=INSTRUMENTED):
    import nibabel  # noqa: F401  (imported lazily by the readers: instrumented here)
    import pycocotools.coco  # noqa: F401
    import pydicom  # noqa: F401
    import yaml  # noqa: F401

    sys.path.insert(0, str(HERE))
    import harnesses


def main() -> None:
    """Parses the flags and hands the rest to libFuzzer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("harness", choices=sorted(harnesses.HARNESSES))
    parser.add_argument("--seconds", type=int, default=60, help="total fuzzing time")
    parser.add_argument("--timeout", type=int, default=10, help="seconds allowed per input")
    parser.add_argument("--rss-limit-mb", type=int, default=3072, help="memory limit")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "fuzz")
    args, extra = parser.parse_known_args()
    out = args.out / args.harness
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    seeds = HERE / "corpus" / args.harness
    libfuzzer_args = [
        sys.argv[0],
        f"-max_total_time={args.seconds}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        "-max_len=65536",
        f"-artifact_prefix={out}/",
        *extra,
        str(out / "corpus"),  # the first folder receives new inputs
        str(seeds),
    ]
    atheris.Setup(libfuzzer_args, harnesses.HARNESSES[args.harness])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
