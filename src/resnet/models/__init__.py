"""Model definitions: blocks, the ResNet module, the variant specs and their registry."""

from . import specs as _specs  # noqa: F401  (fills the registry)
from .ensemble import Ensemble
from .registry import (
    ModelEntry,
    count_macs,
    count_params,
    create,
    get_entry,
    list_models,
    model_info,
    plain_name,
)
from .resnet import ResNet, ResNetSpec

__all__ = [
    "Ensemble",
    "ModelEntry",
    "ResNet",
    "ResNetSpec",
    "count_macs",
    "count_params",
    "create",
    "get_entry",
    "list_models",
    "model_info",
    "plain_name",
]
