"""Named training recipes shipped with the package (YAML files in resnet/recipes/)."""

from __future__ import annotations

from importlib import resources

import yaml

from ..errors import ResNetError
from .config import TrainConfig


def _files() -> dict[str, object]:
    root = resources.files("resnet") / "recipes"
    return {f.name[:-5]: f for f in root.iterdir() if f.name.endswith(".yaml")}


def list_recipes() -> dict[str, str]:
    """Recipe name -> its one-line description (the YAML's `# ` first line)."""
    out = {}
    for name, f in sorted(_files().items()):
        first = f.read_text().splitlines()[0] if f.read_text() else ""
        out[name] = first.lstrip("# ").strip()
    return out


def load_recipe(name: str) -> TrainConfig:
    """The shipped recipe `name` as a TrainConfig (an unknown name lists the known ones)."""
    files = _files()
    if name not in files:
        raise ResNetError(f"unknown recipe {name!r}; known: {', '.join(sorted(files))}")
    return TrainConfig.from_dict(yaml.safe_load(files[name].read_text()) or {})
