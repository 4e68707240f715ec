"""resnet: every residual network of the literature, trained, explained and deployed.

import resnet
model = resnet.create("resnet50", num_classes=3, in_chans=1)
summary = resnet.train(model={"name": "resnet20"}, data={"source": "my_images/"})
"""

from .engine import Callback, TrainConfig, train
from .models import ResNet, ResNetSpec, create, list_models, model_info
from .storage import package_versions
from .tasks.backbone import Backbone

__version__ = package_versions()["resnet"]
__all__ = [
    "Backbone",
    "Callback",
    "ResNet",
    "ResNetSpec",
    "TrainConfig",
    "__version__",
    "create",
    "list_models",
    "model_info",
    "train",
]
