"""resnet: every residual network of the literature, trained, explained and deployed."""

from .models import ResNet, ResNetSpec, create, list_models, model_info
from .tasks.backbone import Backbone

__version__ = "0.1.0"
__all__ = ["Backbone", "ResNet", "ResNetSpec", "create", "list_models", "model_info", "__version__"]
