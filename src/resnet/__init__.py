"""resnet: every residual network of the literature, trained, explained and deployed."""

from .models import ResNet, ResNetSpec, create, list_models, model_info
from .storage import package_versions
from .tasks.backbone import Backbone

__version__ = package_versions()["resnet"]
__all__ = ["Backbone", "ResNet", "ResNetSpec", "create", "list_models", "model_info", "__version__"]
