"""Turns one of our checkpoints into weights shipped with the package: safetensors + JSON metadata.

    python -m resnet.engine.publish runs/demo/best.pt fashion-mnist --test-acc 0.93

writes `src/resnet/weights/fashion-mnist.safetensors` and `fashion-mnist.json`; then
`resnet.create("resnet20", weights="fashion-mnist")` and `model_from_weights("fashion-mnist")`
work offline from an installed package. Name a second model `fashion-mnist-<arch>`
(loaded as `weights="fashion-mnist"` by that arch, or `"fashion-mnist:<arch>"`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from ..errors import ResNetError
from ..models import weight_files as W
from ..storage import atomic_write_bytes, atomic_write_text, package_versions, sha256_file
from .checkpoint import load_checkpoint


def _ema_state(state: dict) -> dict[str, torch.Tensor]:
    ema = state.get("ema")
    for candidate in (
        ema,
        (ema or {}).get("model") if isinstance(ema, dict) else None,
        (ema or {}).get("state_dict") if isinstance(ema, dict) else None,
    ):
        if W.is_state_dict(candidate):
            return W.strip_prefixes(candidate)[0]
    raise ResNetError("the checkpoint holds no EMA state_dict; publish without use_ema")


def _recorded_test_acc(checkpoint: str | os.PathLike, metrics) -> float | None:
    """The test accuracy the checkpoint's metrics, or its run folder's summary.json, record."""
    acc = metrics.get("test_acc") if isinstance(metrics, dict) else None
    if acc is None:  # a run folder's summary.json (resnet train) records it
        folder = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
        if (folder / "summary.json").exists():
            acc = json.loads((folder / "summary.json").read_text()).get("test_acc")
    return acc


def _metadata(
    state: dict, name: str, recipe, test_acc, metrics, use_ema: bool, licence: str
) -> dict:
    """The JSON that describes published weights (hash and source added by the caller)."""
    return {
        "format": W.PACKAGE_FORMAT,
        "version": 1,
        "name": name,
        "arch": state.get("arch", "custom"),
        "spec": state["spec"],
        "model_options": state["model_options"],
        "classes": state.get("classes"),
        "preprocessing": state.get("preprocessing"),
        "recipe": recipe,
        "config": state.get("config"),
        "test_acc": test_acc,
        "metrics": metrics,
        "epoch": state.get("epoch"),
        "ema": use_ema,
        "licence": licence,
        "versions": package_versions(),
    }


def publish_weights(
    checkpoint: str | os.PathLike,
    name: str,
    *,
    out_dir: str | os.PathLike | None = None,
    test_acc: float | None = None,
    recipe: str | dict | None = None,
    use_ema: bool = False,
    licence: str = "MIT (this project)",
) -> tuple[Path, Path]:
    """Writes `<out_dir>/<name>.safetensors` and `<name>.json` from a checkpoint, atomically.

    Args:
        checkpoint: one of our checkpoints (or a run folder holding best.pt / last.pt).
        name: the weights' name: "fashion-mnist" for the default model, "fashion-mnist-<arch>"
            for others.
        out_dir: where to write (default: the package's `resnet/weights/`).
        test_acc: the measured test accuracy (default: the checkpoint's metrics["test_acc"], else
            the run folder's summary.json).
        recipe: how they were trained (default: the checkpoint's train config); give the command
            that reproduces them where there is one.
        use_ema: ship the EMA weights instead of the raw ones.
        licence: the weights' licence.

    Returns:
        The two paths written.
    """
    from safetensors.torch import save

    if not name or "/" in name or name.startswith("."):
        raise ResNetError(f"bad weights name {name!r}")
    state = load_checkpoint(checkpoint)
    tensors = _ema_state(state) if use_ema else state["model"]
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    metrics = state.get("metrics") or {}
    if test_acc is None:
        test_acc = _recorded_test_acc(checkpoint, metrics)
    out = Path(out_dir or W.PACKAGE_DIR)
    blob = save(
        tensors,
        metadata={
            "format": W.PACKAGE_FORMAT,
            "name": name,
            "arch": str(state.get("arch", "custom")),
        },
    )
    st_path = atomic_write_bytes(out / f"{name}.safetensors", lambda f: f.write(blob))
    meta = _metadata(state, name, recipe, test_acc, metrics, use_ema, licence)
    meta |= {"sha256": sha256_file(st_path), "source_checkpoint": Path(checkpoint).name}
    meta["versions"] = meta.pop("versions")  # last, as it always was
    json_path = atomic_write_text(
        out / f"{name}.json", json.dumps(meta, indent=2, default=str) + "\n"
    )
    return st_path, json_path


def main(argv: list[str] | None = None) -> int:
    """`python -m resnet.engine.publish CHECKPOINT NAME`: writes the packaged weights files."""
    p = argparse.ArgumentParser(prog="python -m resnet.engine.publish", description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("name", help="fashion-mnist or fashion-mnist-<arch>")
    p.add_argument("--out-dir", default=None)
    p.add_argument("--test-acc", type=float, default=None)
    p.add_argument("--recipe", default=None, help="the command that reproduces the weights")
    p.add_argument("--ema", action="store_true", help="ship the EMA weights")
    args = p.parse_args(argv)
    try:
        paths = publish_weights(
            args.checkpoint,
            args.name,
            out_dir=args.out_dir,
            test_acc=args.test_acc,
            recipe=args.recipe,
            use_ema=args.ema,
        )
    except ResNetError as e:
        print(f"publish: error: {e}")
        return 2
    print("\n".join(str(x) for x in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
