"""Model definitions: blocks, the ResNet module, the variant specs, their registry and weights.

`registry` names the variants; `catalogue` lists known pretrained weights, `weight_files`
downloads and reads them, `loading` fits them into a model, and `factory.create` puts the two
together. `foreign` makes torchvision's and timm's classifiers ("tv:NAME", "timm:NAME") models of
the same kind.
"""

from . import specs as _specs  # noqa: F401  (fills the registry)
from .catalogue import Weights, get_weights, list_weights
from .ensemble import Ensemble
from .factory import create, model_from_weights
from .foreign import ForeignSpec, list_foreign
from .loading import LoadReport, load_weights
from .registry import (
    ModelEntry,
    build,
    count_macs,
    count_params,
    get_entry,
    list_models,
    model_for_spec,
    model_info,
    plain_name,
    spec_from_dict,
)
from .resnet import ResNet, ResNetSpec
from .video import VideoResNet, VideoResNetSpec
from .weight_files import WeightsSource, open_weights
from .wrappers import unwrap

__all__ = [
    "Ensemble",
    "ForeignSpec",
    "LoadReport",
    "ModelEntry",
    "ResNet",
    "ResNetSpec",
    "VideoResNet",
    "VideoResNetSpec",
    "Weights",
    "WeightsSource",
    "build",
    "count_macs",
    "count_params",
    "create",
    "get_entry",
    "get_weights",
    "list_foreign",
    "list_models",
    "list_weights",
    "load_weights",
    "model_from_weights",
    "model_for_spec",
    "model_info",
    "open_weights",
    "plain_name",
    "spec_from_dict",
    "unwrap",
]
